"""Shared test setup: import the flat top-level scripts and find ../shared/realdata.

Run the whole suite from the repository root with `python -m pytest -q tests`.
"""
import dataclasses
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REALDATA = ROOT.parent / "shared" / "realdata"

from deepfeat import AutoencoderConfig, FusionConfig, FusionModel, ModalityAutoencoder  # noqa: E402 (after sys.path)


@pytest.fixture
def realdata():
    """Path to the shared real third-party files; skips cleanly where they are absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} not found")
    return REALDATA


def tiny_ae(modality, bands, latent, dropout=0.25):
    """A ModalityAutoencoder small enough to train in a test (width 8, d_model 64, one layer)."""
    cfg = AutoencoderConfig(modality, tuple(bands), latent, width=8, token_channels=4, n_heads=4, n_layers=1,
                            dropout=dropout)
    return ModalityAutoencoder(cfg)


@pytest.fixture(scope="session")
def trained_fusion(tmp_path_factory):
    """Fusion checkpoint of tiny models trained like the quick start, shared by the tests that need
    an embedding that carries information (PCA vs land cover, GPP vs climatology).

    The S1 and S2 autoencoders, then the fusion layers on both frozen, each train 150 steps at
    lr 1e-3 on the five sample_data/ cubes (patches at spatial stride 5): ~2.5 min on 2 cores.
    """
    import data
    import losses
    import train
    from train_fusion import fusion_loss_fn

    folder = tmp_path_factory.mktemp("trained")
    cfg = train.TrainConfig(epochs=1000, max_steps=150, lr=1e-3, warmup_steps=20, batch_size=32, device="cpu")
    stages = (("s1", data.S1_BANDS, 2, data.S1_SAMPLING, losses.s1_loss),
              ("s2", data.S2_BANDS, 9, data.S2_SAMPLING, losses.s2_loss),
              ("fusion", None, None, data.FUSION_SAMPLING, None))
    autoencoders = {}
    for stage, bands, latent, sampling, objective in stages:
        torch.manual_seed(0)
        cubes = data.load_training_cubes(data.find_cubes(ROOT / "sample_data", stage), stage)
        key = "s2" if stage == "fusion" else stage
        batches = train.patch_batches(cubes, dataclasses.replace(sampling, s_stride=5), key, cfg.batch_size, seed=0)
        if stage == "fusion":
            model = FusionModel(autoencoders, FusionConfig(d_model=32, n_heads=4, n_layers=1, dropout=0.0))
            weights = {m: losses.context_weights(centre_weight=losses.FUSION_CENTRE_WEIGHT[m]) for m in autoencoders}
            params, loss_fn = model.trainable_parameters(), fusion_loss_fn(weights)
        else:
            model = autoencoders[stage] = tiny_ae(stage, bands, latent, dropout=0.0)
            train.init_output_bias(model, batches)
            params, loss_fn = model.parameters(), train.autoencoder_loss_fn(objective, losses.context_weights())
        kind = "fusion" if stage == "fusion" else "autoencoder"
        train.fit(model, params, loss_fn, batches, lambda: batches(0), cfg, folder / stage, {"kind": kind})
    return folder / "fusion" / "checkpoint.pt"
