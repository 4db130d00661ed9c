"""Tests for exercises/check.py: every code exercise's checker passes on the reference solution,
fails on the untouched stub ("not implemented yet") and on a planted typical bug; the run-only
checkers (exercises 7 and 8) read tiny fake log.csv / test_metrics.csv files, so nothing trains.

Run: python -m pytest -q tests/test_exercises.py     (~10 s on 2 cores)
"""
import ast
import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "exercises"
CODE_EXERCISES = (1, 2, 3, 4, 5, 6, 9, 10)


@pytest.fixture(scope="module")
def check():
    """exercises/check.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("exercise_check", EXERCISES / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(check, capsys, *argv):
    """check.main(argv) -> (exit status, printed text)."""
    status = check.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


@pytest.mark.parametrize("n", CODE_EXERCISES)
def test_reference_solution_passes(check, capsys, n):
    status, out = run(check, capsys, n, "--solution")
    assert status == 0, out
    assert f"exercise {n}: OK" in out


@pytest.mark.parametrize("n", CODE_EXERCISES)
def test_untouched_stub_is_not_implemented_yet(check, capsys, n):
    """(Fails for an exercise solved in its stub file: solve it in a copy and check with --file.)"""
    status, out = run(check, capsys, n)
    assert status == 1
    assert f"exercise {n}: not implemented yet" in out


def signatures(path):
    """{name: (arguments, docstring)} of every function and class defined in a file."""
    tree = ast.parse(path.read_text())
    return {node.name: (ast.unparse(node.args) if isinstance(node, ast.FunctionDef) else "", ast.get_docstring(node))
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


@pytest.mark.parametrize("n", CODE_EXERCISES)
def test_stub_and_solution_share_signatures_and_docstrings(check, n):
    """The stub is the learner's specification: it must not drift from what the solution implements
    (the solution may add inner helper functions of its own)."""
    name = check.EXERCISES[n][0]
    stub, solution = signatures(EXERCISES / name), signatures(EXERCISES / "solutions" / name)
    assert stub == {k: v for k, v in solution.items() if k in stub}
    assert all(doc for fn, (_, doc) in stub.items() if fn != "__init__"), "a stub function lacks its docstring"


# One typical mistake per exercise, planted in a copy of the solution: (exercise, solution text,
# buggy text, what the checker must print). Each is a mistake the exercise's README entry names.
PLANTED = [
    (1, "alpha ** (d - 1)", "alpha ** d",                                   # off-by-one ring distance
     "context_weights(): max abs difference 0.0655 at (5, 7, 7)"),
    (1, "return w / w.sum() if normalise else w", "return w",               # unnormalised kernel
     "context_weights(): max abs difference"),
    (2, "c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2",      # constants not squared
     "c1, c2 = 0.01 * data_range, 0.03 * data_range", "ssim_map(pred, target): max abs difference"),
    (3, "return torch.arccos(cos).mean()", "return torch.rad2deg(torch.arccos(cos)).mean()",  # degrees
     "sam of single spectra, index (b, t, y, x): max abs difference 71.5"),
    (4, "x = x * self.channel_gate(x)\n        return x * self.spatial_gate(x)",   # spatial gate first
     "x = x * self.spatial_gate(x)\n        return x * self.channel_gate(x)", "forward(x), (N, C, H, W)"),
    (5, "offsets = (days - days[:, :1]).to(torch.float32)",                 # frame index, not day offset
     "offsets = torch.arange(days.shape[1], dtype=torch.float32).expand(days.shape)",
     "first differing index (0, 1, 0)"),
    (6, "return module.eval()", "return module",                            # BatchNorm left in train mode
     "frozen tensors changed in one optimizer step"),
    (6, "not torch.equal(tensor, after[name])", "not torch.allclose(tensor.double(), after[name].double())",
     "changed_tensors after changing one ulp of a weight: got []"),
    (9, "centred = X - mean ", "centred = X ", "components (sign-aligned)"),   # not centred
    (10, "np.isin(years[days], list(split_years)).all()",                   # only the target's year checked
     "np.isin(years[target], list(split_years))", "outside the split's years (2020,): leakage"),
]


@pytest.mark.parametrize("n, old, new, expected", PLANTED, ids=[f"ex{p[0]}-{i}" for i, p in enumerate(PLANTED)])
def test_planted_bug_fails_with_a_useful_message(check, capsys, tmp_path, n, old, new, expected):
    name = check.EXERCISES[n][0]
    source = (EXERCISES / "solutions" / name).read_text()
    assert source.count(old) == 1, "the planted bug no longer matches the solution's text"
    buggy = tmp_path / name
    buggy.write_text(source.replace(old, new))
    status, out = run(check, capsys, n, "--file", buggy)
    assert status == 1, out
    assert expected in out, out
    assert f"exercise {n}: OK" not in out


def test_pca_checker_reads_an_embedding_cube(check, capsys, tmp_path):
    """Exercise 9's --cube: a tiny embedding netCDF as embed.py writes it (time, y, x, feature), NaN gaps."""
    values = np.random.default_rng(0).normal(size=(3, 4, 5, 4)) * [3.0, 2.0, 1.0, 0.5]   # (T, H, W, F)
    values[0, :2] = np.nan                                                    # pixel-dates without embedding
    xr.Dataset({"embedding": (("time", "y", "x", "feature"), values)},
               coords={"feature": [f"s2_{i}" for i in range(4)]}).to_netcdf(tmp_path / "emb.nc")
    status, out = run(check, capsys, 9, "--solution", "--cube", tmp_path / "emb.nc")
    assert status == 0, out
    assert "50 valid pixel-dates x 4 features" in out


def test_command_line_from_the_repository_root():
    """The README's command, as a learner runs it: the exit status is the verdict."""
    done = subprocess.run([sys.executable, "exercises/check.py", "10", "--solution"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exercise 10: OK" in done.stdout


# ---------------------------------------------------------------- run-only exercises (7, 8)

def fake_run(out, val_centre_mae, steps=60, ssim=0.4):
    """A train_s2.py output folder with the columns the checkers read: log.csv (one row per epoch)
    and test_metrics.csv."""
    out.mkdir(parents=True)
    n = len(val_centre_mae)
    with open(out / "log.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "step", "train_centre_mae", "val_centre_mae", "val_centre_sam", "val_ssim"])
        for i, mae in enumerate(val_centre_mae):
            writer.writerow([i + 1, steps * (i + 1) // n, mae + 0.001, mae, 0.2, ssim])
    with open(out / "test_metrics.csv", "w", newline="") as f:
        csv.writer(f).writerows([["metric", "value"], ["centre_mae", 0.028], ["centre_sam", 0.09],
                                 ["ssim", ssim], ["context_mae", 0.031]])
    return out


def test_training_run_checker(check, capsys, tmp_path):
    falling = fake_run(tmp_path / "falling", [0.0406, 0.0367, 0.0339, 0.0344])
    status, out = run(check, capsys, 7, "--run", falling)
    assert status == 0 and "validation centre MAE fell 0.0406 -> 0.0344 (15 % lower)" in out, out
    rising = fake_run(tmp_path / "rising", [0.0406, 0.0420])
    status, out = run(check, capsys, 7, "--run", rising)
    assert status == 1 and "did not fall" in out, out
    status, out = run(check, capsys, 7, "--run", tmp_path / "never_ran")
    assert status == 1 and "not found: run the exercise's training command first" in out, out


def test_loss_ablation_checker(check, capsys, tmp_path):
    hybrid = fake_run(tmp_path / "hybrid", [0.041, 0.034], ssim=0.358)
    mae = fake_run(tmp_path / "mae", [0.040, 0.033], ssim=0.651)
    status, out = run(check, capsys, 8, "--run", hybrid, mae)
    assert status == 0 and "exercise 8: OK" in out, out
    status, out = run(check, capsys, 8, "--run", mae, hybrid)             # swapped
    assert status == 1 and "in the order hybrid, mae" in out, out
    shorter = fake_run(tmp_path / "shorter", [0.040, 0.033], steps=30, ssim=0.651)
    status, out = run(check, capsys, 8, "--run", hybrid, shorter)
    assert status == 1 and "compare equal --max-steps" in out, out
