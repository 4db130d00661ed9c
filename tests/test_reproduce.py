"""reproduce.py: verdict rules, the two reconstruction baselines by hand, and a tiny end-to-end run."""
import csv
import json

import numpy as np
import pytest
import torch

import learning
import reproduce


def test_compare_rule():
    """Supported only when the paired difference favours the claim by more than its sd."""
    assert reproduce.compare([1.0, 1.0, 1.0], [2.0, 2.1, 1.9], "A")[0] == "supported"
    verdict, why = reproduce.compare([2.0, 2.1, 1.9], [1.0, 1.0, 1.0], "A")
    assert verdict == "not supported" and "opposite" in why
    # mean difference 0.1, sd 0.5: within the spread
    verdict, why = reproduce.compare([1.0, 1.0, 1.0], [1.6, 0.5, 1.2], "A")
    assert verdict == "not supported" and "within the spread" in why and "2 of 3 seeds" in why
    assert reproduce.compare([1.0], [2.0], "A")[0] == "not checkable here"


def test_mean_sd_text():
    assert reproduce.mean_sd([1.0, 2.0, 3.0]) == "2.0000 ± 1.0000"


def _patches():
    """Two patches (B 2, T 11, C 3, 15 x 15) whose centre pixel is clear on frames 4 and 7 only."""
    x = torch.full((2, 11, 3, 15, 15), float("nan"))
    x[:, 4, :, 7, 7] = torch.tensor([0.1, 0.2, 0.3])
    x[:, 7, :, 7, 7] = torch.tensor([0.7, 0.8, 0.9])
    x[:, 5, :, 7, 7] = torch.tensor([0.4, 0.5, 0.6])             # the centre itself
    x[1, 7, 1, 7, 7] = float("nan")                               # patch 1: frame 7 not clear
    days = torch.arange(11, dtype=torch.float32).repeat(2, 1) * 10
    days[:, 4] = 40.0                                             # frame 4: 10 days before the centre (day 50)
    days[:, 7] = 54.0                                             # frame 7: 4 days after, nearer in days
    return x, days


def test_nearest_clear_date_is_nearest_in_days():
    """Frame 4 is nearer in frame count, frame 7 in days: the baseline must take frame 7; a frame
    with one missing band is not clear; the centre frame is never its own baseline."""
    x, days = _patches()
    mean = torch.zeros(3, dtype=torch.float64)
    out = learning.baseline_centres(x, days, mean, torch.eye(3, dtype=torch.float64))
    assert torch.allclose(out["nearest"][0], torch.tensor([0.7, 0.8, 0.9]))
    assert torch.allclose(out["nearest"][1], torch.tensor([0.1, 0.2, 0.3]))


def test_pca_baseline_by_hand():
    """All C components reconstruct any spectrum exactly; one component keeps only the projection
    on the leading axis (spectra on the line (1, 1, 0) + a small orthogonal spread)."""
    x, days = _patches()
    rng = np.random.default_rng(0)
    t = rng.normal(size=(500, 1))
    spectra = torch.tensor(np.c_[t, t, 0.01 * rng.normal(size=(500, 1))])
    mean, basis = learning.pca_basis(spectra, 3)
    assert torch.allclose(learning.baseline_centres(x, days, mean, basis)["pca"][0], torch.tensor([0.4, 0.5, 0.6]),
                          atol=1e-6)
    mean, basis = learning.pca_basis(spectra, 1)
    axis = torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64) / 2 ** 0.5
    assert torch.allclose(basis[:, 0].abs(), axis, atol=1e-3)
    centre = torch.tensor([0.4, 0.5, 0.6], dtype=torch.float64)
    expected = mean + ((centre - mean) @ axis) * axis
    assert torch.allclose(learning.baseline_centres(x, days, mean, basis)["pca"][0].double(), expected, atol=1e-3)


def test_tiny_run_writes_the_table(tmp_path):
    """Three claims at 2 steps and 2 seeds: the table, the CSV and the figure are written, every
    verdict is one of the three, S1's 2-of-2 PCA reconstructs the centre exactly, and a rerun reuses
    every finished run."""
    work, out = tmp_path / "work", tmp_path / "docs"
    argv = ["--quick", "--claim", "hybrid_loss", "baselines", "consistency", "--max-steps", "2", "--seeds", "2",
            "--work", str(work), "--out", str(out)]
    reproduce.main(argv)
    rows = list(csv.DictReader(open(out / "claims.csv")))
    assert {r["verdict"] for r in rows} <= {"supported", "not supported", "not checkable here"}
    assert {r["claim"][0] for r in rows} == {"1", "8", "9"}
    gain = next(r for r in rows if r["quantity"].startswith("centre MAE improvement"))
    assert len(gain["values"].split(";")) == 2
    pca_s1 = next(r for r in rows if r["quantity"].startswith("S1 centre MAE, PCA with 2 of 2"))
    assert max(abs(float(v)) for v in pca_s1["values"].split(";")) < 1e-6
    table = (out / "claims.md").read_text()
    assert "| 1. hybrid S2 loss" in table and "claims.png" in table and (out / "claims.png").stat().st_size > 0
    markers = {p: p.stat().st_mtime_ns for p in work.rglob("done.json")}
    assert len(markers) == 6                                       # s2 hybrid, s2 mae, s1: 2 seeds each
    assert json.loads((work / "s2_mae/seed1/done.json").read_text())[-4:-2] == ["--loss", "mae"]
    assert json.loads((work / "s2_hybrid/seed1/done.json").read_text())[-4:-2] == ["--loss", "hybrid"]   # Eq. 5
    reproduce.main(argv)
    assert {p: p.stat().st_mtime_ns for p in work.rglob("done.json")} == markers


def test_claim_or_quick_required():
    with pytest.raises(SystemExit):
        reproduce.main([])
