"""reproduce.py: the verdict rule and its boundaries, the paired bootstrap, the baselines by hand on
tiny cases, the fixed split across seeds, and a tiny end-to-end run."""
import csv
import json

import numpy as np
import pytest
import torch

import data
import embed
import gpp
import modalities
import recipe
import reproduce
import train

ROOT = reproduce.ROOT
UP = reproduce.above(0)


def test_rule_three_verdicts():
    """Inside the region with a margin over the sd: supported; outside: contradicted; else inconclusive."""
    assert reproduce.verdict([1.0, 1.1, 0.9], [0.5, 1.5], UP)[0] == "supported"
    assert reproduce.verdict([-1.0, -1.1, -0.9], [-1.5, -0.5], UP)[0] == "contradicted"
    assert reproduce.verdict([1.0, 1.1, 0.9], [-0.1, 1.5], UP)[0] == "inconclusive"      # interval crosses 0
    assert reproduce.verdict([1.0, 1.1, 0.9], [0.5, 1.5], reproduce.below(0))[0] == "contradicted"
    # an interval region: 0.8 .. 1.25
    r = reproduce.between(0.8, 1.25)
    assert reproduce.verdict([1.0, 1.01, 0.99], [0.9, 1.1], r)[0] == "supported"
    assert reproduce.verdict([1.4, 1.41, 1.39], [1.3, 1.5], r)[0] == "contradicted"
    assert reproduce.verdict([1.2, 1.21, 1.19], [1.1, 1.3], r)[0] == "inconclusive"
    assert reproduce.verdict([1.0, 1.1], [0.5, 1.5], UP)[0] == "inconclusive"               # 2 < MIN_SEEDS


def test_rule_sd_is_the_sample_sd_and_the_margin_strict():
    """[-0.1, 0.9, 1.9]: mean 0.9, sample sd 1.0, population sd 0.82. The margin 0.9 beats the population
    sd but not the sample sd: inconclusive. A margin equal to the sd is not 'more than the sd'."""
    v, mean, sd, ci = reproduce.verdict([-0.1, 0.9, 1.9], [0.5, 1.2], UP)
    assert (v, mean, sd) == ("inconclusive", pytest.approx(0.9), pytest.approx(1.0))
    assert reproduce.verdict([0.0, 1.0, 2.0], [0.5, 1.5], UP)[0] == "inconclusive"          # margin 1 = sd 1
    assert reproduce.verdict([0.01, 1.01, 2.01], [0.5, 1.5], UP)[0] == "supported"          # margin 1.01 > sd
    assert ci == (pytest.approx(0.5 + 0.025 * 0.7), pytest.approx(1.2 - 0.025 * 0.7))   # percentiles of the draws


def test_bootstrap_weights_and_weighted_mean():
    w = reproduce.resample(7, draws=50, seed=3)
    assert w.shape == (50, 7) and (w.sum(1) == 7).all() and (w == np.round(w)).all()
    assert (w == reproduce.resample(7, draws=50, seed=3)).all()
    # by hand: unit 3 is NaN for seed 0 and does not count; weights 2 and 1 on units 1 and 2
    values = np.array([[1.0, 3.0, np.nan], [2.0, 2.0, 2.0]])
    out = reproduce.wmean(values, np.array([[2.0, 1.0, 5.0], [1.0, 1.0, 1.0]]))
    assert out == pytest.approx(np.array([[5 / 3, 2.0], [2.0, 2.0]]))


def test_bootstrap_is_paired():
    """B = A + 0.5 on every unit: the paired interval of the difference is exactly 0.5, however much
    the units themselves vary; two different unit sets are drawn independently."""
    rng = np.random.default_rng(0)
    a = rng.exponential(1.0, (3, 200))
    b = a + 0.5
    v, mean, sd, ci, per_seed = reproduce.judge(reproduce.difference(reproduce.mean_of(b), reproduce.mean_of(a)),
                                                {"test": 200}, UP)
    assert ci == (pytest.approx(0.5), pytest.approx(0.5)) and per_seed == pytest.approx([0.5] * 3)
    _, _, _, ci, _ = reproduce.judge(lambda w: reproduce.wmean(b, w["val"]) - reproduce.wmean(a, w["test"]),
                                     {"test": 200, "val": 200}, UP)
    assert ci[1] - ci[0] > 0.1


def test_patch_errors_by_hand():
    """One context value off by 1: the flat-weight context MAE is 1 / (values outside the centre); one
    of two centre bands off by 0.2: centre MAE 0.1; a patch without a centre observation: NaN."""
    x = torch.rand(2, 11, 2, 15, 15) + 0.1
    pred = x.clone()
    pred[0, 0, 0, 0, 0] += 1.0
    pred[0, 5, 1, 7, 7] += 0.2
    x[1, 5, :, 7, 7] = float("nan")
    out = reproduce.patch_errors(pred, x)
    assert out["context_mae_flat"][0] == pytest.approx(1 / (11 * 2 * 225 - 2), rel=1e-4)
    assert out["centre_mae"][0] == pytest.approx(0.1, rel=1e-4)
    assert np.isnan(out["centre_mae"][1]) and out["centre_sam"][0] > 0


def test_ridge_pca_ndvi_and_probe_by_hand():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    y = X @ np.array([[1.0], [-2.0], [0.5]]) + 3.0
    assert reproduce.ridge_fit(X, y, lam=1e-9)(X) == pytest.approx(y, abs=1e-6)        # exact data, no penalty
    shrunk = reproduce.ridge_fit(X, y, lam=1e4)(X)
    assert abs(shrunk - 3.0).max() < abs(y - 3.0).max() / 10                              # the penalty spares the intercept
    t = rng.normal(size=(500, 1))
    mean, comps, _ = embed.pca_fit(np.c_[t, t, 0.01 * rng.normal(size=(500, 1))], 1)      # the PCA-7 baselines
    assert np.abs(comps[0]) == pytest.approx(np.array([1, 1, 0]) / 2 ** 0.5, abs=1e-3)
    inputs = np.array([[0.1, 0.5], [0.2, 0.2]])                                          # B04, B08
    assert reproduce.ndvi(inputs, ["B04", "B08"])[:, 0] == pytest.approx([0.4 / 0.6, 0.0])
    # a separable probe is always right; balanced accuracy by hand: class 0 2 of 3, class 1 1 of 1
    labels = np.array([0, 0, 1, 1])
    feats = np.array([[-1.0], [-2.0], [1.0], [2.0]])
    assert reproduce.probe_correct(feats, labels, feats, labels, np.array([0, 1])) == pytest.approx([1, 1, 1, 1])
    # XOR: class 1 where exactly one coordinate is positive. No line separates it (the linear probe
    # is right on at most 3 of the 4 quadrants); the k-NN probe reads each quadrant from its
    # neighbours (k = 3, and the probe's 15, of 20 training points per quadrant), scaled by the
    # training rows' sd (unscaled, the second axis alone would decide).
    quadrants = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], float)
    train_x = np.repeat(quadrants, 20, axis=0) * [1, 100] + rng.normal(0, 0.1, (80, 2)) * [1, 100]
    train_y = np.repeat([0, 0, 1, 1], 20)
    test_x, test_y = quadrants * [2, 200], np.array([0, 0, 1, 1])
    assert reproduce.knn_predict(train_x, train_y, test_x, np.array([0, 1]), k=3) == pytest.approx(test_y)
    assert reproduce.probe_correct(train_x, train_y, test_x, test_y, np.array([0, 1]), "k-NN").sum() == 4
    assert reproduce.probe_correct(train_x, train_y, test_x, test_y, np.array([0, 1])).sum() <= 3
    ba = reproduce.balanced_accuracy(np.array([[1.0, 1.0, 0.0, 1.0]]), np.array([0, 0, 0, 1]), np.array([0, 1]))
    assert ba({"heldout": np.ones((1, 4))})[0] == pytest.approx([5 / 6])


def _site(name, gpp_value, years=(2017, 2018, 2019, 2020)):
    time = np.arange(np.datetime64(f"{years[0]}-01-01"), np.datetime64(f"{years[-1] + 1}-01-01"))
    days = data.day_offsets(time.astype("datetime64[ns]"))
    year = time.astype("datetime64[Y]").astype(int) + 1970
    doy = (time - time.astype("datetime64[Y]")).astype(int) + 1
    g = np.full(len(time), float(gpp_value))
    f = np.sin(days / 50.0)[:, None]
    return gpp.SiteData(name, time, days, year, doy, g + f[:, 0], {"fused": f})


def test_climatology_pooled_for_an_unseen_tower_and_ridge_without_leakage():
    """A held-out tower gets the pooled cycle of the training towers; ridge predictions exist only on
    the validation days and do not change when the validation targets do (no leakage)."""
    a, b, c = _site("a", 1.0), _site("b", 3.0), _site("c", 10.0)
    clim = reproduce.climatology_predictions([a, b, c], (2017, 2018, 2019), ["a", "b"], ["c", "a"])
    own = {s.site: gpp.climatology(s.doy, s.gpp, s.year < 2020)[s.doy - 1] for s in (a, b)}
    assert np.allclose(clim["a"], own["a"])                                  # a trains: its own cycle
    assert np.allclose(clim["c"], (own["a"] + own["b"]) / 2)                 # c unseen: the pooled cycle
    pred = reproduce.ridge_predictions([a, b, c], "fused", 30, (2017, 2018, 2019), ["a", "b", "c"], (2020,), ["a"])
    assert set(pred) == {"a"} and np.isfinite(pred["a"][a.year == 2020]).sum() > 300
    assert not np.isfinite(pred["a"][a.year < 2020]).any()
    a.gpp[a.year == 2020] += 100.0
    again = reproduce.ridge_predictions([a, b, c], "fused", 30, (2017, 2018, 2019), ["a", "b", "c"], (2020,), ["a"])
    assert np.allclose(pred["a"], again["a"], equal_nan=True)


def test_window_summary_block_means():
    values = np.arange(90, dtype=float)[:, None]                                         # (N, F)
    out = reproduce.window_summary(values, np.array([0]), 90)
    assert out[0] == pytest.approx([4.5 + 10 * k for k in range(9)])


def test_split_is_fixed_across_seeds(tmp_path):
    """--seed moves the training patches, never the split or the val/test patches (--split-seed does)."""
    cubes, _ = modalities.load_splits([ROOT / "sample_data"], "s2", seed=0, cache=tmp_path / "cache")
    sampling = modalities.S2.sampling

    def index(seed, split_seed, split):
        b = recipe.split_batches(cubes, sampling, "s2", train.TrainConfig(batch_size=8, seed=seed, split_seed=split_seed))
        ds = (b[split](0) if split == "train" else b[split]()).dataset
        return np.c_[ds.cube[ds.order], ds.y0[ds.order], ds.x0[ds.order]]
    for split in ("val", "test"):
        assert np.array_equal(index(0, 0, split), index(1, 0, split))
        assert not np.array_equal(index(0, 0, split), index(0, 1, split))
    assert not np.array_equal(index(0, 0, "train"), index(1, 0, "train"))
    parser = data.ArgumentParser()
    recipe.add_common_args(parser, out=str(tmp_path))
    cfg, _, _ = recipe.start_stage(parser.parse_args(["--seed", "4", "--out", str(tmp_path / "o")]),
                                   modalities.S2.sampling, "autoencoder")
    assert (cfg.seed, cfg.split_seed) == (4, 0)


def test_tiny_run_writes_the_tables(tmp_path):
    """Two claims at 2 steps and 3 seeds: both tables, the CSV and the figure are written, every
    verdict is one of the rule's, the values of every seed are kept, and a rerun retrains nothing."""
    work, out = tmp_path / "work", tmp_path / "docs"
    argv = ["--quick", "--claim", "hybrid_loss", "offline", "--max-steps", "2", "--work", str(work), "--out", str(out)]
    reproduce.main(argv)
    rows = list(csv.DictReader(open(out / "claims.csv")))
    assert {r["verdict"] for r in rows} <= {"supported", "inconclusive", "contradicted", "not checked"}
    gain = next(r for r in rows if r["quantity"].startswith("θ = 100 (1 - centre MAE Eq. 5"))
    assert len(gain["values"].split(";")) == 3 and gain["region"] == "θ > 0"
    table = (out / "claims.md").read_text()
    assert "## The paper's claims" in table and "## This project's hypotheses" in table
    assert (out / "claims.png").stat().st_size > 0
    markers = {p: p.stat().st_mtime_ns for p in work.rglob("done.json")}
    assert len(markers) == 6                                             # s2 (MAE) and s2_hybrid, 3 seeds
    assert json.loads((work / "s2_hybrid/seed1/done.json").read_text())[-5:-3] == ["--loss", "hybrid"]
    scores = {p: p.stat().st_mtime_ns for p in work.rglob("scores.npz")}
    reproduce.main(argv)
    assert {p: p.stat().st_mtime_ns for p in work.rglob("done.json")} == markers
    assert {p: p.stat().st_mtime_ns for p in work.rglob("scores.npz")} == scores


def test_claim_or_quick_required():
    with pytest.raises(SystemExit):
        reproduce.main([])
