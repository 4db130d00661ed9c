"""Shared test setup: import the flat top-level scripts, find ../shared/realdata, and run the
quick start's training once for the tests that need trained models.

Run the whole suite from the repository root with `python -m pytest -q tests`.
"""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REALDATA = ROOT.parent / "shared" / "realdata"

import train  # noqa: E402 (after sys.path)
from deepfeat import AutoencoderConfig, ModalityAutoencoder  # noqa: E402


@pytest.fixture
def realdata():
    """Path to the shared real third-party files; skips cleanly where they are absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} not found")
    return REALDATA


def tiny_ae(modality, bands, latent):
    """An untrained ModalityAutoencoder of the --quick size (train.QUICK_AUTOENCODER)."""
    return ModalityAutoencoder(AutoencoderConfig(modality, tuple(bands), latent, **train.QUICK_AUTOENCODER))


@pytest.fixture(scope="session")
def quick_models(tmp_path_factory):
    """The quick start's three training commands (train_s1/s2/fusion.py --quick on sample_data/,
    ~2.5 min on 2 cores), run once and shared: by the tests that need an embedding that carries
    information (PCA vs land cover, GPP vs climatology) and by the stage-CLI test.
    Returns the output folder with s1/, s2/, fusion/ (checkpoint.pt, log.csv, test_metrics.csv)."""
    import train_fusion
    import train_s1
    import train_s2

    out = tmp_path_factory.mktemp("quick")
    common = ["--quick", "--cubes", str(ROOT / "sample_data")]
    train_s1.main([*common, "--out", str(out / "s1")])
    train_s2.main([*common, "--out", str(out / "s2")])
    train_fusion.main([*common, "--out", str(out / "fusion"), "--s1-checkpoint", str(out / "s1" / "checkpoint.pt"),
                       "--s2-checkpoint", str(out / "s2" / "checkpoint.pt")])
    return out


@pytest.fixture(scope="session")
def trained_fusion(quick_models):
    """The quick start's fusion checkpoint."""
    return quick_models / "fusion" / "checkpoint.pt"
