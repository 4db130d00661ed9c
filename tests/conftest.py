"""Shared test setup: import the flat top-level scripts, find ../shared/realdata, and point the
tests that need trained models at the shipped ones (models/).

Run the whole suite from the repository root with `python -m pytest -q tests`.
"""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REALDATA = ROOT.parent / "shared" / "realdata"

import recipe  # noqa: E402 (after sys.path)
from deepfeat import AutoencoderConfig, ModalityAutoencoder  # noqa: E402


@pytest.fixture
def realdata():
    """Path to the shared real third-party files; skips cleanly where they are absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} not found")
    return REALDATA


def tiny_ae(modality, bands, latent):
    """An untrained ModalityAutoencoder of the --quick size (recipe.PRESETS["quick"])."""
    return ModalityAutoencoder(AutoencoderConfig(modality, tuple(bands), latent,
                                                 **recipe.PRESETS["quick"]["autoencoder"]["model"]))


@pytest.fixture(scope="session")
def quick_models():
    """The shipped models/ (s1/, s2/, fusion/ with checkpoint.pt, log.csv, test_metrics.csv): the
    quick start's three training commands run to the end of the --quick preset (docs/learning.md),
    for the tests that need an embedding that carries information (PCA vs land cover, GPP vs
    climatology) and the fusion ablation."""
    return ROOT / "models"


@pytest.fixture(scope="session")
def trained_fusion(quick_models):
    """The shipped fusion checkpoint."""
    return quick_models / "fusion" / "checkpoint.pt"


def stop_after(n, write):
    """`write` that works n times, then raises KeyboardInterrupt (an interruption between two files)."""
    done = []

    def stopping(*args):
        if len(done) == n:
            raise KeyboardInterrupt
        done.append(args)
        write(*args)
    return stopping


def write_areas(folder, seeds, prefix, size=24, more=None):
    """Synthetic areas of half a year (2020-03 .. 2020-08), one per seed: PREFIXk_s1.nc, PREFIXk_s2.nc and,
    for more(s2) = {NAME: cube}, PREFIXk_NAME.nc. Returns the folder."""
    import synthetic
    for k, seed in enumerate(seeds):
        s1, s2, _ = synthetic.make_synthetic_cube(seed, size=size, start="2020-03-01", end="2020-08-31")
        for name, cube in {"s1": s1, "s2": s2, **(more(s2) if more else {})}.items():
            synthetic.write_cube(cube, folder / f"{prefix}{k}_{name}.nc")
    return folder

