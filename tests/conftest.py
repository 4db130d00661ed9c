"""Shared test setup: import the flat top-level scripts and find ../shared/realdata.

Run the whole suite from the repository root with `python -m pytest -q tests`.
"""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REALDATA = ROOT.parent / "shared" / "realdata"


@pytest.fixture
def realdata():
    """Path to the shared real third-party files; skips cleanly where they are absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} not found")
    return REALDATA
