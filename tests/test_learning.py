"""Tests of learning.py (the trivial predictors of the centre) and of the recipes' ability to learn.

    python -m pytest -q tests/test_learning.py

The learning test trains the real S2 and S1 recipes (train_s2.py / train_s1.py --quick) for a few
hundred steps on sample_data and asks for a centre MAE clearly below the constant spectrum of the
training split on the held-back val patches: a detached decoder input, a frozen optimiser group or
Eq. 5's SAM term drowning the MAE (docs/learning.md) each keep it above.
"""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import data
import learning
import losses
import recipe
import train_s1
import train_s2
from deepfeat import AutoencoderConfig, ModalityAutoencoder

ROOT = Path(__file__).resolve().parents[1]


def test_baseline_centres_by_hand():
    """One patch of 5 frames, 3 x 3 px, 2 bands, centre frame 2 at day 20. The centre pixel reads
    (frame: value of both bands): 0: 1, 1: NaN (cloud), 2: 9 (the centre), 3: 4, 4: 6; days 0, 17, 20,
    28, 40. window mean = (1 + 4 + 6) / 3 = 11/3 (the centre and the cloud left out); nearest clear
    date: frame 1 is 3 days away but cloudy, so frame 3 (8 days), value 4; constant = the given mean;
    PCA with the one axis (1, 1) / sqrt 2 through mean (0, 0) keeps (9, 9); a centre of (9, 1) keeps
    its mean along the axis, (5, 5)."""
    x = torch.zeros(1, 5, 2, 3, 3)
    x[0, :, :, 1, 1] = torch.tensor([1.0, float("nan"), 9.0, 4.0, 6.0])[:, None]
    days = torch.tensor([[0.0, 17.0, 20.0, 28.0, 40.0]])
    mean = torch.tensor([0.5, 0.25], dtype=torch.float64)
    axis = torch.tensor([[1.0], [1.0]], dtype=torch.float64) / 2 ** 0.5
    got = learning.baseline_centres(x, days, mean, axis, series_mean=torch.tensor([[2.0, float("nan")]]))
    torch.testing.assert_close(got["window_mean"], torch.full((1, 2), 11 / 3))
    torch.testing.assert_close(got["nearest"], torch.full((1, 2), 4.0))
    torch.testing.assert_close(got["constant"], mean.float()[None])
    torch.testing.assert_close(got["series_mean"], torch.tensor([[2.0, 0.25]]))       # NaN -> the mean
    x[0, 2, :, 1, 1] = torch.tensor([9.0, 1.0])
    got = learning.baseline_centres(x, days, torch.zeros(2, dtype=torch.float64), axis)
    torch.testing.assert_close(got["pca"], torch.tensor([[5.0, 5.0]]))
    assert "series_mean" not in got


def test_series_means_match_a_plain_loop(tmp_path):
    """Each patch's centre pixel averaged over every other date of its own cube, checked against a
    loop over the dates, on two cubes of different sizes (a mix-up of cubes or of y and x shows)."""
    rng = np.random.default_rng(0)
    cubes = []
    for k, (T, H, W) in enumerate([(24, 20, 26), (30, 18, 17)]):
        a = rng.random((T, 2, H, W)).astype(np.float32)
        a[rng.random(a.shape) < 0.2] = np.nan
        cubes.append({"name": f"c{k}", "arrays": {"s2": a}, "days": {"s2": np.arange(T) * 5.0}})
    sampling = data.SamplingConfig(seq_len=20, t_stride=7, s_stride=2)
    loader = recipe.patch_batches(cubes, sampling, "s2", 16, seed=0, shuffle=False)(0)
    batches = loader.dataset
    got = np.concatenate([m.numpy() for m in learning.series_means(batches, "s2")])
    c, f = sampling.patch // 2, sampling.n_frames // 2
    want = []
    for k, frames, y, x in zip(batches.cube, batches.frames, batches.y0, batches.x0):
        a = cubes[k]["arrays"]["s2"]
        others = [a[t, :, y + c, x + c] for t in range(len(a)) if t != frames[f]]
        want.append(np.nanmean(others, axis=0))
    assert len(got) == len(batches.cube) > 10 and set(batches.cube) == {0, 1}
    np.testing.assert_allclose(got, want, rtol=1e-5)


def val_scores(out):
    """The run's last val centre MAE (log.csv) and the constant spectrum's on the same val patches,
    scored as `learning.py --score OUT` scores it (the command read from the checkpoint)."""
    with open(out / "log.csv") as f:
        last = list(csv.DictReader(f))[-1]
    result = learning.score_run(out)
    (modality,) = result["val"]
    (line,) = learning.score_lines("run", result)
    assert line.startswith(f"run {modality.upper()} test: centre MAE model") and "centre singular values" in line
    return float(last["val_centre_mae"]), result["val"][modality]["constant", "centre_mae"]


@pytest.mark.parametrize("script, steps, ratio", [(train_s2, 250, 0.63), (train_s1, 250, 0.8)])
def test_the_recipe_learns(script, steps, ratio, tmp_path):
    """A few hundred steps of the --quick recipe beat the constant spectrum clearly on val patches.

    Measured (seed 0, with the centre path): S2 0.43 of the constant at 250 steps, where Eq. 5
    (--loss hybrid) reads 0.97; S1 0.50. A stalled model stays at ~1."""
    argv = ["--quick", "--max-steps", str(steps), "--cubes", str(ROOT / "sample_data"),
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path)]
    script.main(argv)
    learned, constant = val_scores(tmp_path)
    assert learned < ratio * constant, (learned, constant)


def test_centre_jacobian_by_hand():
    """A copy of the centre gives the identity (singular values 1, det 1); a model that rebuilds the
    centre from the other frames gives 0; one that returns (2 x band 0, band 0 + band 1) gives
    [[2, 0], [1, 1]] (det 2). Finite differences of a linear map are exact up to float rounding."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 5, 2, 3, 3, generator=g)
    batches = [{"s1": (x[:2], torch.arange(5.0).expand(2, 5))}, {"s1": (x[2:], torch.arange(5.0).expand(2, 5))}]

    def copy(batch):
        return batch["s1"][0].clone()

    def context(batch):
        x = batch["s1"][0]
        out = x.clone()
        out[:, 2] = x[:, [0, 1, 3, 4]].mean(1)
        return out

    def mixed(batch):
        out = copy(batch)
        c = batch["s1"][0][:, 2, :, 1, 1]
        out[:, 2, :, 1, 1] = torch.stack([2 * c[:, 0], c[:, 0] + c[:, 1]], 1)
        return out
    J, sv, det = learning.centre_jacobian(copy, batches, "s1")
    torch.testing.assert_close(J, torch.eye(2, dtype=torch.float64), atol=1e-4, rtol=0)
    assert abs(det - 1) < 1e-3
    J, sv, det = learning.centre_jacobian(context, batches, "s1")
    assert J.abs().max() < 1e-6 and abs(det) < 1e-9
    J, sv, det = learning.centre_jacobian(mixed, batches, "s1")
    torch.testing.assert_close(J, torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64), atol=1e-4, rtol=0)
    assert abs(det - 2) < 1e-3 and sv[0] > sv[1]


def test_principal_gains_by_hand():
    """Spectra that vary along band 0 (sd 3) and band 1 (sd 1), never band 2: the axes holding 99 %
    of the variance are bands 0 and 1. A Jacobian that copies bands 0 and 1 and drops band 2 gains
    (1, 1) there; one that halves band 1 gains (1, 0.5); one that moves band 2 alone gains nothing."""
    g = torch.Generator().manual_seed(0)
    spectra = torch.stack([3 * torch.randn(2000, generator=g), torch.randn(2000, generator=g),
                           torch.full((2000,), 0.5)], 1)
    for diagonal, want in (((1.0, 1.0, 0.0), (1.0, 1.0)), ((1.0, 0.5, 7.0), (1.0, 0.5)), ((0.0, 0.0, 1.0), (0.0, 0.0))):
        got = learning.principal_gains(torch.diag(torch.tensor(diagonal, dtype=torch.float64)), spectra)
        torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-3, rtol=0)


def train_on_independent_pixels(blind, steps=200):
    """A tiny autoencoder with the centre path (5 frames, 7 x 7 px, 2 bands, 4-d latent) trained on
    independent uniform values, where nothing but the centre predicts the centre; blind: its central
    pixel-date is hidden from the input (NaN) but kept in the loss. -> centre singular values."""
    torch.manual_seed(0)
    cfg = AutoencoderConfig("s1", ("vv", "vh"), 4, n_frames=5, patch=7, width=4, token_channels=2, n_heads=1,
                            n_layers=1, dropout=0.0, centre_path=True)
    model = ModalityAutoencoder(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    weights = losses.context_weights(5, 7, 7)
    g = torch.Generator().manual_seed(0)
    days = torch.cumsum(torch.full((16, 5), 6.0), 1)
    for _ in range(steps):
        x = 0.2 + 0.6 * torch.rand(16, 5, 2, 7, 7, generator=g)
        seen = x.clone()
        if blind:
            seen[:, 2, :, 3, 3] = float("nan")
        loss = losses.weighted_mae(model(seen, days)[0], x, weights, torch.isfinite(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x = 0.2 + 0.6 * torch.rand(64, 5, 2, 7, 7, generator=g)
    return learning.centre_jacobian(lambda b: model(*b["s1"])[0], [{"s1": (x, days[:1].expand(64, 5))}], "s1")[1]


def test_the_centre_gets_through():
    """In a world of independent pixels the centre path carries the centre: 200 steps give a leading
    centre singular value of 0.74-0.96 over seeds 0-3 (1 = a copy); the same model whose centre never
    reaches its input stays near 0 (0.01); so does a model whose loss leaves the centre out (Eq. 1
    centre weight 0). At this tiny size (7 x 7 px) the paper's architecture passes one direction
    too, so a centre path that is not wired is caught by the known-value test in test_deepfeat.py,
    not here."""
    assert train_on_independent_pixels(blind=False)[0] > 0.5
    assert train_on_independent_pixels(blind=True)[0] < 0.1
