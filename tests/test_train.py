"""Tests of train.py and the stage scripts: real learning, checkpoints, resume, CLI smoke runs.

Run: python -m pytest -q tests/test_train.py   (~4 min on 2 CPU cores, most of it conftest.py's quick start)
"""
import argparse
import dataclasses

import numpy as np
import pytest
import torch

import data
import losses
import train
import train_fusion
from conftest import ROOT
from deepfeat import AutoencoderConfig, ModalityAutoencoder


def tiny_s2():
    cfg = AutoencoderConfig("s2", data.S2_BANDS, 9, width=16, token_channels=4, n_heads=4, n_layers=1, dropout=0.0)
    return ModalityAutoencoder(cfg)


@pytest.fixture(scope="module")
def cubes():
    """Two small synthetic S2 cubes (train, val) in the format load_training_cubes returns."""
    out = []
    for seed in (21, 22):
        _, s2, _ = data.make_synthetic_cube(seed, size=24, start="2020-01-01", end="2020-12-31")
        out.append({"name": f"c{seed}", "arrays": {"s2": data.cube_array(s2, data.S2_BANDS)},
                    "days": {"s2": data.day_offsets(s2.time)}})
    return out


def setup(cubes, tmp_path, **overrides):
    sampling = dataclasses.replace(data.S2_SAMPLING, s_stride=1)      # ~150 overlapping patches per epoch
    train_b = train.patch_batches(cubes[:1], sampling, "s2", 16, seed=0)
    val_b = train.patch_batches(cubes[1:], sampling, "s2", 64, seed=0, shuffle=False)
    cfg = train.TrainConfig(**{"epochs": 2, "batch_size": 16, "lr": 1e-3, "warmup_steps": 5, **overrides})
    loss_fn = train.autoencoder_loss_fn(losses.s1_loss, losses.context_weights())
    return train_b, (lambda: val_b(0)), cfg, loss_fn


def test_short_training_beats_predict_the_mean(cubes, tmp_path):
    """~100 steps of a tiny S2 autoencoder: centre MAE far below predicting each band's mean.

    Measured on the training cube with a fresh draw of frames (epoch 99): one small cube is too
    little data to generalise to another, so this tests learning, not generalisation.
    """
    torch.manual_seed(0)
    model = tiny_s2()
    train_b, val_b, cfg, loss_fn = setup(cubes, tmp_path, epochs=10)
    train.init_output_bias(model, train_b)
    history = train.fit(model, model.parameters(), loss_fn, train_b, val_b, cfg, tmp_path, {"kind": "autoencoder"})
    x = np.concatenate([b["s2"][0].numpy() for b in train_b(99)])          # (N, T, C, H, W)
    baseline = np.nanmean(np.abs(x[:, 5, :, 7, 7] - np.nanmean(x[:, 5, :, 7, 7], axis=0)))
    learned = train.evaluate(model, loss_fn, train_b(99), torch.device("cpu"))["centre_mae"]
    assert learned < 0.7 * baseline, (learned, baseline)
    assert history[-1]["train_centre_mae"] < 0.5 * history[0]["train_centre_mae"]
    assert (tmp_path / "log.csv").read_text().count("\n") == 11 and (tmp_path / "loss_curves.png").exists()


def test_checkpoint_round_trip_and_resume(cubes, tmp_path):
    train_b, val_b, cfg, loss_fn = setup(cubes, tmp_path)
    torch.manual_seed(0)
    straight = tiny_s2()
    train.fit(straight, straight.parameters(), loss_fn, train_b, val_b, cfg, tmp_path / "a", {"kind": "autoencoder"})
    loaded, ckpt = train.load_model(tmp_path / "a" / "checkpoint.pt", "autoencoder", "s2")
    x, days = next(iter(val_b()))["s2"]
    with torch.no_grad():
        assert torch.equal(loaded(x, days)[1], straight.eval()(x, days)[1])
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2

    torch.manual_seed(0)
    interrupted = tiny_s2()
    train.fit(interrupted, interrupted.parameters(), loss_fn, train_b, val_b, dataclasses.replace(cfg, epochs=1),
              tmp_path / "b", {"kind": "autoencoder"})
    resumed = tiny_s2()                          # fresh weights: everything must come from the checkpoint
    history = train.fit(resumed, resumed.parameters(), loss_fn, train_b, val_b, cfg, tmp_path / "b",
                        {"kind": "autoencoder"}, resume=True)
    assert [row["epoch"] for row in history] == [1, 2]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_mismatched_checkpoints_are_clear_errors(cubes, tmp_path):
    model = tiny_s2()
    train.save_checkpoint(tmp_path / "s2.pt", {"format": train.CHECKPOINT_FORMAT, "kind": "autoencoder",
                                               "model_config": train.model_config_dict(model),
                                               "model": model.state_dict()})
    with pytest.raises(SystemExit, match="holds the s2 autoencoder, expected the s1"):
        train.load_model(tmp_path / "s2.pt", "autoencoder", "s1")
    with pytest.raises(SystemExit, match="expected a fusion model"):
        train.load_model(tmp_path / "s2.pt", "fusion")
    with pytest.raises(SystemExit, match="not found"):
        train.load_model(tmp_path / "missing.pt")


def test_quick_preset_keeps_an_explicit_max_steps():
    parser = argparse.ArgumentParser()
    train.add_common_args(parser, out="runs/x")
    assert train.train_config_from_args(parser.parse_args(["--quick"])).max_steps == 150
    cfg = train.train_config_from_args(parser.parse_args(["--quick", "--max-steps", "2"]))
    assert (cfg.max_steps, cfg.lr) == (2, 1e-3)


def test_stage_clis_in_quick_mode(quick_models, tmp_path):
    """The README's three training commands (run once by conftest.py): each writes its checkpoint
    and test metrics from a by-cube split, the quick preset's small model, and fusion refuses an
    S2 checkpoint given as S1."""
    for stage in ("s1", "s2", "fusion"):
        assert (quick_models / stage / "test_metrics.csv").exists()
        ckpt = train.load_checkpoint(quick_models / stage / "checkpoint.pt")
        assert set(ckpt["meta"]["splits"]) == {"train", "val", "test"}
        assert ckpt["step"] == 150
    s2 = train.load_checkpoint(quick_models / "s2" / "checkpoint.pt")["model_config"]
    assert {k: s2[k] for k in train.QUICK_AUTOENCODER} == train.QUICK_AUTOENCODER
    wrong = ["--quick", "--max-steps", "2", "--cubes", str(ROOT / "sample_data"), "--out", str(tmp_path),
             "--s1-checkpoint", str(quick_models / "s2" / "checkpoint.pt"),
             "--s2-checkpoint", str(quick_models / "s2" / "checkpoint.pt")]
    with pytest.raises(SystemExit, match="expected the s1"):
        train_fusion.main(wrong)
