"""Tests of train.py and the stage scripts: real learning, checkpoints, resume, CLI smoke runs.

Run: python -m pytest -q tests/test_train.py   (~4 min on 2 CPU cores, most of it conftest.py's quick start)
"""
import argparse
import dataclasses
import itertools
import re
import types

import numpy as np
import pytest
import torch

import data
import gpp
import modalities
import recipe
import synthetic
import readers
import losses
import train
import train_fusion
import train_s1
import train_s2
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
        _, s2, _ = synthetic.make_synthetic_cube(seed, size=24, start="2020-01-01", end="2020-12-31")
        out.append({"name": f"c{seed}", "arrays": {"s2": data.cube_array(s2, data.S2_BANDS)},
                    "days": {"s2": data.day_offsets(s2.time)}})
    return out


def setup(cubes, tmp_path, **overrides):
    sampling = dataclasses.replace(modalities.S2.sampling, s_stride=1)      # ~150 overlapping patches per epoch
    train_b = recipe.patch_batches(cubes[:1], sampling, "s2", 16, seed=0)
    val_b = recipe.patch_batches(cubes[1:], sampling, "s2", 64, seed=0, shuffle=False)
    cfg = train.TrainConfig(**{"epochs": 2, "batch_size": 16, "lr": 1e-3, "warmup_steps": 5, **overrides})
    loss_fn = recipe.autoencoder_loss_fn(losses.s1_loss, losses.context_weights())
    return train_b, (lambda: val_b(0)), cfg, loss_fn


def test_short_training_beats_predict_the_mean(cubes, tmp_path):
    """~100 steps of a tiny S2 autoencoder: centre MAE far below predicting each band's mean.

    Measured on the training cube with a fresh draw of frames (epoch 99): one small cube is too
    little data to generalise to another, so this tests learning, not generalisation.
    """
    torch.manual_seed(0)
    model = tiny_s2()
    train_b, val_b, cfg, loss_fn = setup(cubes, tmp_path, epochs=10)
    recipe.init_output_bias(model, train_b)
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


@dataclasses.dataclass
class ScalarConfig:
    name: str = "scalar"


class Scalar(torch.nn.Module):
    """One parameter w (starts at 0): the smallest model fit and its checkpoints accept."""

    def __init__(self):
        super().__init__()
        self.cfg = ScalarConfig()
        self.w = torch.nn.Parameter(torch.zeros(()))


def plateau_loss(model, batch):
    """Training loss -w (gradient -1 every step: Adam moves w by exactly lr per step); the monitored
    metric max(1 - w, 0.65) improves for three epochs, then sits on the floor 0.65 for good."""
    loss = -(model.w * batch["x"]).sum()
    return loss, {"plateau": torch.clamp(1 - model.w.detach(), min=0.65)}


class Interrupted(Exception):
    pass


def scalar_batches(interrupt_at=None):
    def batches(epoch):
        if epoch == interrupt_at:
            raise Interrupted(f"killed during epoch {epoch + 1}")
        yield {"x": torch.ones(1)}                                       # one step per epoch
    return batches


def steady_clock(monkeypatch):
    """train.time.time() advancing 1 s per call (a fast epoch never lasts 0.00 s), and no loss-curve
    figure (matplotlib would be most of the run time)."""
    ticks = itertools.count()
    monkeypatch.setattr(train, "time", types.SimpleNamespace(time=lambda: float(next(ticks))))
    monkeypatch.setattr(train, "plot_history", lambda history, path: None)


def test_resume_restores_lr_and_plateau_state(tmp_path, monkeypatch):
    """Guards against a resume that drops (or mis-restores) the ReduceLROnPlateau state or the lr.

    lr 0.1, one step per epoch, patience 2, factor 0.5. w after epoch k (while lr = 0.1) is 0.1 k, so
    the monitor max(1 - w, 0.65) reads 0.9, 0.8, 0.7, then 0.65 from epoch 4 on (w = 0.4 -> 0.6 < 0.65).
    Scheduler by hand: epoch 4 is the last improvement (best 0.65, bad 0); epochs 5, 6 bad 1, 2;
    epoch 7 bad 3 > 2 -> lr 0.05, bad 0; epochs 8, 9 bad 1, 2; epoch 10 -> lr 0.025.
    The run is killed during epoch 9: its checkpoint (epoch 8) is mid-plateau, after one reduction,
    with lr 0.05 and 1 bad epoch. Resumed to 10 epochs it must match the straight run: lr per epoch,
    optimizer lr, w and the whole scheduler state (best, num_bad_epochs, _last_lr, last_epoch). A
    scheduler restarted fresh would take epoch 9 as a new best and end at lr 0.05, not 0.025; an
    optimizer restarted fresh would train epoch 9 at lr 0.1 again.
    """
    steady_clock(monkeypatch)
    cfg = train.TrainConfig(epochs=10, batch_size=1, lr=0.1, weight_decay=0.0, warmup_steps=0, clip=1e9,
                            device="cpu", plateau_factor=0.5, plateau_patience=2, min_lr=1e-6,
                            monitor="plateau", log_every=1000)
    meta = {"kind": "scalar"}
    val = lambda: iter([{"x": torch.ones(1)}])                             # noqa: E731
    straight = Scalar()
    history = train.fit(straight, straight.parameters(), plateau_loss, scalar_batches(), val, cfg,
                        tmp_path / "a", meta)
    lrs = [0.1] * 6 + [0.05] * 3 + [0.025]
    np.testing.assert_allclose([row["lr"] for row in history], lrs, rtol=1e-12)
    np.testing.assert_allclose([row["val_plateau"] for row in history[:4]], [0.9, 0.8, 0.7, 0.65], atol=1e-6)

    killed = Scalar()
    with pytest.raises(Interrupted):
        train.fit(killed, killed.parameters(), plateau_loss, scalar_batches(interrupt_at=8), val, cfg,
                  tmp_path / "b", meta)
    mid = train.load_checkpoint(tmp_path / "b" / "checkpoint.pt", "scalar")
    assert mid["epoch"] == 8 and mid["scheduler"]["num_bad_epochs"] == 1      # killed mid-plateau
    assert mid["scheduler"]["best"] == pytest.approx(0.65) and mid["optimizer"]["param_groups"][0]["lr"] == 0.05

    resumed = Scalar()                          # fresh: everything must come from the checkpoint
    resumed_history = train.fit(resumed, resumed.parameters(), plateau_loss, scalar_batches(), val, cfg,
                                tmp_path / "b", meta, resume=True)
    assert [row["epoch"] for row in resumed_history] == list(range(1, 11))
    np.testing.assert_allclose([row["lr"] for row in resumed_history], lrs, rtol=1e-12)
    a = train.load_checkpoint(tmp_path / "a" / "checkpoint.pt", "scalar")
    b = train.load_checkpoint(tmp_path / "b" / "checkpoint.pt", "scalar")
    assert b["scheduler"] == a["scheduler"]
    assert (a["scheduler"]["num_bad_epochs"], a["scheduler"]["_last_lr"]) == (0, [0.025])
    assert b["optimizer"]["param_groups"][0]["lr"] == a["optimizer"]["param_groups"][0]["lr"] == 0.025
    assert torch.equal(resumed.w, straight.w)


def test_fit_survives_an_epoch_shorter_than_the_clock_resolution(tmp_path, monkeypatch):
    """Guards against dividing by a measured duration that can be 0: an epoch (or a log interval)
    faster than the clock's resolution (time.time() ticks in ~16 ms steps on Windows; a one-batch
    epoch of a small model takes ~2 ms, which round(seconds, 2) makes 0.0) must not crash fit with
    ZeroDivisionError. Here the clock stands still: every duration is exactly 0."""
    monkeypatch.setattr(train, "time", types.SimpleNamespace(time=lambda: 1000.0))
    monkeypatch.setattr(train, "plot_history", lambda history, path: None)
    cfg = train.TrainConfig(epochs=2, batch_size=1, lr=0.1, warmup_steps=0, device="cpu",
                            monitor="plateau", log_every=1)
    model = Scalar()
    history = train.fit(model, model.parameters(), plateau_loss, scalar_batches(),
                        lambda: iter([{"x": torch.ones(1)}]), cfg, tmp_path, {"kind": "scalar"})
    assert [row["epoch"] for row in history] == [1, 2]


UNPICKLED = []


def _record_unpickling(text):
    """What a hostile pickle would run on load; here it only records that it ran."""
    UNPICKLED.append(text)
    return text


class Payload:
    def __reduce__(self):
        return _record_unpickling, ("code ran while loading",)


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    """Guards against torch.load(..., weights_only=False) in load_checkpoint: a checkpoint that is
    valid in every other way (format, kind, config) but pickles an arbitrary object, whose __reduce__
    runs code on unpickling, must end in SystemExit and must not run that code."""
    UNPICKLED.clear()
    model = tiny_s2()
    torch.save({"format": train.CHECKPOINT_FORMAT, "kind": "autoencoder",
                "model_config": train.model_config_dict(model), "model": model.state_dict(),
                "meta": {"note": Payload()}}, tmp_path / "hostile.pt")
    with pytest.raises(SystemExit, match="cannot be read"):
        train.load_checkpoint(tmp_path / "hostile.pt", "autoencoder")
    with pytest.raises(SystemExit, match="cannot be read"):
        train.load_model(tmp_path / "hostile.pt", "autoencoder", "s2")
    assert UNPICKLED == []


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


def test_an_explicit_flag_wins_over_the_preset():
    """recipe.resolve, the one preset rule: --quick fills only the flags not given; without it the paper's
    (authors' code) settings hold; fusion's quick step budget is its own; gpp.py reads the same table."""
    parser = argparse.ArgumentParser()
    recipe.add_common_args(parser, out="runs/x")
    quick = recipe.resolve(parser.parse_args(["--quick"]), "autoencoder")
    assert quick == recipe.PRESETS["quick"]["autoencoder"] and quick["lr"] == 1e-3 and quick["s_stride"] == 5
    fusion = recipe.resolve(parser.parse_args(["--quick"]), "fusion")
    assert fusion["max_steps"] == 1500 != quick["max_steps"]
    given = ["--quick", "--max-steps", "2", "--lr", "3e-4", "--batch-size", "5", "--warmup-steps", "0",
             "--epochs", "7", "--schedule", "plateau", "--s-stride", "3"]
    for stage in ("autoencoder", "fusion"):
        got = recipe.resolve(parser.parse_args(given), stage)
        assert [got[k] for k in ("max_steps", "lr", "batch_size", "warmup_steps", "epochs", "schedule", "s_stride")] == \
            [2, 3e-4, 5, 0, 7, "plateau", 3]
    paper = recipe.resolve(parser.parse_args([]), "autoencoder")
    assert (paper["lr"], paper["warmup_steps"], paper["schedule"], paper["s_stride"]) == (1e-4, 30000, "plateau", None)


def _gpp_quick(argv):
    gpp.main(["--quick", "--features", "ndvi", "--epochs", "1", *argv])


QUICK_STAGES = {
    "train_s1.py": lambda argv: train_s1.main(["--quick", "--max-steps", "2", *argv]),
    "train_s2.py": lambda argv: train_s2.main(["--quick", "--max-steps", "2", *argv]),
    "train_fusion.py": lambda argv: train_fusion.main(["--quick", "--max-steps", "2", *argv, "--s1-checkpoint",
                                                       str(ROOT / "models" / "s1" / "checkpoint.pt"), "--s2-checkpoint",
                                                       str(ROOT / "models" / "s2" / "checkpoint.pt")]),
    "gpp.py": _gpp_quick,
}


@pytest.mark.parametrize("stage", QUICK_STAGES)
def test_quick_lr_flag_trains_at_that_rate(stage, tmp_path, monkeypatch):
    """Every stage CLI: `--quick --lr X` trains at X (recorded, and the optimizer's rate at the warm-up
    peak), not at the preset's 1e-3."""
    monkeypatch.chdir(ROOT)                                       # gpp --quick reads sample_data/tower/
    extra = ["--out", str(tmp_path)] + ([] if stage == "gpp.py" else
                                        ["--warmup-steps", "1", "--cubes", str(ROOT / "sample_data")])
    QUICK_STAGES[stage](["--lr", "2e-4", *extra])
    (path,) = tmp_path.rglob("checkpoint.pt")
    ckpt = train.load_checkpoint(path)
    assert ckpt["train_config"]["lr"] == 2e-4
    if stage != "gpp.py":
        assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2e-4, rel=1e-6)   # step 1 of 2: the peak


def test_cosine_schedule_by_hand():
    """Warm-up 4 steps from 0.001 x lr, then (1 + cos(pi p)) / 2 down to min_lr at total_steps: at
    p = 1/2 the rate is halfway between lr and min_lr; plateau leaves the rate to the scheduler."""
    cfg = train.TrainConfig(lr=1.0, warmup_steps=4, min_lr=0.1, schedule="cosine")
    assert train.scheduled_lr(0, cfg, 14) == pytest.approx(0.001 + 0.999 / 4)
    assert train.scheduled_lr(3, cfg, 14) == pytest.approx(1.0)
    assert train.scheduled_lr(4, cfg, 14) == pytest.approx(1.0)                       # p = 0
    assert train.scheduled_lr(9, cfg, 14) == pytest.approx(0.55)                      # p = 1/2
    assert train.scheduled_lr(14, cfg, 14) == pytest.approx(0.1)                      # p = 1
    assert train.scheduled_lr(4, dataclasses.replace(cfg, schedule="plateau"), 14) is None


def test_stage_clis_in_quick_mode(tmp_path):
    """The README's three training commands, 2 steps each: checkpoint, log and test metrics from a
    by-cube split, the quick preset's small model, the command and seed recorded in the meta; fusion
    refuses an S2 checkpoint given as S1; --no-centre-path overrides the preset's centre path."""
    common = ["--quick", "--max-steps", "2", "--cubes", str(ROOT / "sample_data"), "--cache", str(tmp_path / "cache")]
    train_s1.main([*common, "--no-centre-path", "--out", str(tmp_path / "s1")])
    train_s2.main([*common, "--out", str(tmp_path / "s2")])
    checkpoints = ["--s1-checkpoint", str(tmp_path / "s1" / "checkpoint.pt"),
                   "--s2-checkpoint", str(tmp_path / "s2" / "checkpoint.pt")]
    train_fusion.main([*common, "--out", str(tmp_path / "fusion"), *checkpoints])
    for stage in ("s1", "s2", "fusion"):
        assert (tmp_path / stage / "test_metrics.csv").exists()
        ckpt = train.load_checkpoint(tmp_path / stage / "checkpoint.pt")
        assert set(ckpt["meta"]["splits"]) == {"train", "val", "test"}
        assert ckpt["step"] == 2 and ckpt["meta"]["seed"] == 0
        trained = ckpt["meta"]["trained"]                           # how long and on what
        assert trained["steps"] == 2 and trained["seconds"] > 0 and trained["device"].startswith("cpu x 1 process")
        assert ckpt["meta"]["command"][:2] == [f"train_{stage}.py", "--quick"]
    s2 = train.load_checkpoint(tmp_path / "s2" / "checkpoint.pt")
    quick = recipe.PRESETS["quick"]["autoencoder"]["model"]
    assert {k: s2["model_config"][k] for k in quick} == quick and quick["centre_path"]
    assert train.load_checkpoint(tmp_path / "s1" / "checkpoint.pt")["model_config"]["centre_path"] is False
    assert s2["meta"]["loss"]["loss"] == modalities.QUICK_S2_LOSS
    wrong = [*common, "--out", str(tmp_path / "wrong"), "--s1-checkpoint", checkpoints[3], "--s2-checkpoint", checkpoints[3]]
    with pytest.raises(SystemExit, match="expected the s1"):
        train_fusion.main(wrong)


@pytest.mark.parametrize("stage", ["s1", "s2"])
def test_shipped_checkpoint_reruns_its_command(stage, tmp_path, monkeypatch):
    """models/STAGE loads with weights_only, is the --quick recipe fully trained, and its recorded
    command, rerun for its first epoch only, logs the same first-epoch training loss."""
    ckpt = torch.load(ROOT / "models" / stage / "checkpoint.pt", map_location="cpu", weights_only=True)
    command = ckpt["meta"]["command"]
    assert command[0] == f"train_{stage}.py" and "--quick" in command and ckpt["meta"]["seed"] == 0
    assert ckpt["step"] == recipe.PRESETS["quick"]["autoencoder"]["max_steps"]
    argv = list(command[1:])
    for flag, value in (("--out", tmp_path / "rerun"), ("--cache", tmp_path / "cache")):
        argv[argv.index(flag) + 1] = str(value)
    monkeypatch.chdir(ROOT)                                       # the recorded --cubes is relative
    {"s1": train_s1, "s2": train_s2}[stage].main([*argv, "--epochs", "1"])
    rerun = train.load_checkpoint(tmp_path / "rerun" / "checkpoint.pt")["history"][0]
    first = ckpt["history"][0]
    assert rerun["step"] == first["step"]
    assert rerun["train_weighted_mae"] == pytest.approx(first["train_weighted_mae"], rel=1e-3)


def test_one_cube_is_split_by_tiles(tmp_path):
    """One cube cannot be split by cube: it is cut into 28 px tiles 8 px apart (64 px: tiles at 0 and
    36 along y and x, 4 tiles -> train 2, val 1, test 1). Splits share no pixel and no two tiles of
    different splits come closer than 8 px; each tile holds exactly the cube's pixels there."""
    _, s2, _ = synthetic.make_synthetic_cube(seed=1, size=64, start="2020-03-01", end="2020-07-31")
    synthetic.write_cube(s2, tmp_path / "one_s2.nc")
    loaded, splits = modalities.load_splits([tmp_path / "one_s2.nc"], "s2", seed=0)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    whole = data.cube_array(readers.open_s2(tmp_path / "one_s2.nc"), data.S2_BANDS)          # (T, C, 64, 64)
    boxes = {}
    for split, cubes in loaded.items():
        for c in cubes:
            y0, y1, x0, x1 = map(int, re.fullmatch(r"one\[(\d+):(\d+),(\d+):(\d+)\]", c["name"]).groups())
            assert (y1 - y0, x1 - x0) == (data.TILE_SIZE, data.TILE_SIZE)
            np.testing.assert_array_equal(c["arrays"]["s2"], whole[:, :, y0:y1, x0:x1])
            boxes[c["name"]] = (split, y0, y1, x0, x1)
    for a, (sa, *ba) in boxes.items():
        for b, (sb, *bb) in boxes.items():
            if sa != sb:                                        # gap along y or x >= TILE_GAP
                gap = max(bb[0] - ba[1], ba[0] - bb[1], bb[2] - ba[3], ba[2] - bb[3])
                assert gap >= data.TILE_GAP, (a, b)


def test_one_real_area_trains_from_its_10m_and_20m_files(realdata, tmp_path):
    """A user with one real tile can train: the Romania 10 m + 20 m files are one cube (six bands from
    two resolutions), cut into 9 tiles; two steps run and the checkpoint records the tile split."""
    folder = realdata / "s2_l2a_romania"
    files = [str(folder / f"sentinel2_cube_subset_romania_{r}.nc") for r in ("10m", "20m")]
    train_s2.main(["--quick", "--cubes", *files, "--bands", "B02", "B03", "B04", "B08", "B8A", "B11",
                   "--max-steps", "2", "--s-stride", "13", "--out", str(tmp_path)])
    splits = train.load_checkpoint(tmp_path / "checkpoint.pt")["meta"]["splits"]
    assert [len(splits[k]) for k in ("train", "val", "test")] == [6, 2, 1]
    assert all(n.startswith("sentinel2_cube_subset_romania[") for v in splits.values() for n in v)


def test_loss_switch_mae_drops_ssim_and_sam(monkeypatch):
    """`train_s2.py --loss mae` trains on the context-weighted MAE alone (the baseline of the paper's
    42 % claim): its objective equals the weighted MAE, while the default is Eq. 5 with (0.23, 0.03, 0.74)
    and --lambdas sets other weights."""
    captured = {}
    monkeypatch.setattr(recipe, "pretrain", lambda args, modality: captured.update(
        zip(("objective", "meta"), modality.objective_from_flags(args))))
    torch.manual_seed(0)
    pred, target = torch.rand(2, 11, 10, 15, 15), torch.rand(2, 11, 10, 15, 15)
    valid, weights = torch.isfinite(target), losses.context_weights()
    for argv, (l_mae, l_ssim, l_sam) in ((["--loss", "mae"], (1.0, 0.0, 0.0)), ([], (0.23, 0.03, 0.74)),
                                         (["--quick"], (1.0, 0.0, 0.0)), (["--quick", "--loss", "hybrid"], (0.23, 0.03, 0.74)),
                                         (["--lambdas", "0.5", "0.2", "0.3"], (0.5, 0.2, 0.3))):
        train_s2.main(argv)
        total, parts = captured["objective"](pred, target, valid, weights)
        expected = l_mae * parts["weighted_mae"] + l_ssim * parts["ssim"] + l_sam * parts["sam"]
        assert float(total) == pytest.approx(float(expected), rel=1e-6)
        assert tuple(captured["meta"]["lambdas"]) == (l_mae, l_ssim, l_sam)
    assert float(parts["ssim"]) > 0.1 and float(parts["sam"]) > 0.1           # the terms --loss mae drops
    train_s2.main(["--loss", "balanced"])                                     # lambda * log(term), summed
    total, parts = captured["objective"](pred, target, valid, weights)
    expected = sum(l * torch.log(parts[k]) for l, k in zip(losses.S2_LAMBDAS, ("weighted_mae", "ssim", "sam")))
    assert float(total) == pytest.approx(float(expected), rel=1e-6) and captured["meta"]["loss"] == "balanced"


def test_kernel_flags_set_eq1(tmp_path):
    """--kernel-alpha/--kernel-ring reach Eq. 1: defaults give the authors' kernel, 1/1 a flat one."""
    parser = data.ArgumentParser()
    recipe.add_common_args(parser, out=str(tmp_path))
    default = recipe.context_weights_from_args(parser.parse_args([]), modalities.S2.sampling)
    torch.testing.assert_close(default, losses.context_weights())
    flat = recipe.context_weights_from_args(parser.parse_args(["--kernel-alpha", "1", "--kernel-ring", "1"]),
                                            modalities.S2.sampling)
    torch.testing.assert_close(flat, torch.full((11, 15, 15), 1 / (11 * 15 * 15)))


def test_unfreeze_trains_the_encoders(quick_models, tmp_path):
    """`train_fusion.py --unfreeze` (joint fine-tuning) changes the pretrained encoder weights; the
    default leaves them bit-identical (train_fusion.check_frozen would stop the run otherwise)."""
    args = ["--quick", "--cubes", str(ROOT / "sample_data"), "--max-steps", "2",
            "--s1-checkpoint", str(quick_models / "s1" / "checkpoint.pt"),
            "--s2-checkpoint", str(quick_models / "s2" / "checkpoint.pt")]
    train_fusion.main([*args, "--unfreeze", "--out", str(tmp_path / "joint")])
    saved = train.load_checkpoint(quick_models / "s2" / "checkpoint.pt")["model"]
    joint = train.load_checkpoint(tmp_path / "joint" / "checkpoint.pt")
    assert joint["meta"]["unfrozen"] is True
    changed = [k for k, v in saved.items() if not torch.equal(joint["model"][f"autoencoders.s2.{k}"], v)]
    assert any(k.startswith("enc_") for k in changed)
