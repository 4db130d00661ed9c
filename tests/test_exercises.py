"""Tests for exercises/check.py: every code exercise's checker passes on its solution (copied into a
mywork folder, as a learner's file), reports "not implemented yet" on the untouched stub, fails on
planted typical bugs with a useful message and the exercise's hints, and refuses files that use the
project's own implementation; `--start N` copies a stub once and never overwrites; the committed stubs
are untouched stubs. The run-only checkers (exercises 7 and 8) read tiny fake log.csv /
test_metrics.csv files, so nothing trains. The tests never read exercises/mywork/, the learner's
git-ignored copies: solving an exercise there cannot turn this suite red.

Run: python -m pytest -q tests/test_exercises.py     (~20 s on 2 busy cores, 92 tests)
"""
import ast
import csv
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "exercises"
CODE_EXERCISES = (1, 2, 3, 4, 5, 6, 9, 10, 11, 12)


@pytest.fixture(scope="module")
def check():
    """exercises/check.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("exercise_check", EXERCISES / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def mywork(check, tmp_path, monkeypatch):
    """A fresh mywork folder in place of exercises/mywork/ (never the learner's own)."""
    monkeypatch.setattr(check, "MYWORK", tmp_path / "mywork")
    return tmp_path / "mywork"


def run(check, capsys, *argv):
    """check.main(argv) -> (exit status, printed text)."""
    status = check.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_the_exercise_table(check):
    assert [n for n in check.EXERCISES if check.EXERCISES[n][0]] == list(CODE_EXERCISES)
    assert set(check.HINTS) == set(CODE_EXERCISES), "every code exercise has hints for after a failure"


# ---------------------------------------------------------------- solutions, stubs and --start

@pytest.mark.parametrize("n", CODE_EXERCISES)
def test_solution_passes_as_a_learners_file(check, capsys, mywork, n):
    """The default path: exercises/mywork/<file>, here holding the reference solution."""
    name = check.EXERCISES[n][0]
    mywork.mkdir()
    shutil.copyfile(EXERCISES / "solutions" / name, mywork / name)
    status, out = run(check, capsys, n)
    assert status == 0, out
    assert f"exercise {n}: OK" in out and "hints" not in out


@pytest.mark.parametrize("n", CODE_EXERCISES)
def test_started_stub_is_not_implemented_yet(check, capsys, mywork, n):
    status, out = run(check, capsys, "--start", n)
    assert status == 0 and (mywork / check.EXERCISES[n][0]).is_file(), out
    status, out = run(check, capsys, n)
    assert status == 1
    assert f"exercise {n}: not implemented yet" in out and "hints" not in out


def test_start_never_overwrites(check, capsys, mywork):
    run(check, capsys, "--start", 1)
    mine = mywork / "ex01_context_kernel.py"
    mine.write_text("# my work\n")
    status, out = run(check, capsys, "--start", 1)
    assert status == 1
    assert out.strip().splitlines() == [f"exercise 1: {mine} exists already and was not overwritten "
                                        "(delete it yourself to start again)"]
    assert mine.read_text() == "# my work\n"


def test_missing_learners_file_says_how_to_start(check, capsys, mywork):
    status, out = run(check, capsys, 3)
    assert status == 1
    assert out.strip().splitlines() == [f"exercise 3: {mywork / 'ex03_sam.py'} not found: "
                                        "run python exercises/check.py --start 3 first"]


def test_mywork_is_ignored_by_git():
    assert "exercises/mywork/" in (ROOT / ".gitignore").read_text().splitlines()


def functions(path):
    """{qualified name: node} of the functions and methods of a file."""
    tree = ast.parse(path.read_text())
    found = {}
    for node in tree.body:
        for fn in node.body if isinstance(node, ast.ClassDef) else [node]:
            if isinstance(fn, ast.FunctionDef):
                found[f"{node.name}.{fn.name}" if fn is not node else fn.name] = fn
    return found


def code(fn):
    """The statements of a function without its docstring, as one comparable string."""
    body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
    return ast.dump(ast.Module(body=body, type_ignores=[]))


@pytest.mark.parametrize("n", CODE_EXERCISES)
def test_committed_stub_is_untouched(check, n):
    """Each stub function only raises NotImplementedError, or is code given to the learner (equal to the
    solution's). Fails when someone solves a stub in exercises/ itself instead of exercises/mywork/:
    restore it with `git checkout exercises/`."""
    name = check.EXERCISES[n][0]
    stub, solution = functions(EXERCISES / name), functions(EXERCISES / "solutions" / name)
    raising = [q for q, fn in stub.items() if code(fn).startswith("Module(body=[Raise(exc=Call(func=Name(id="
                                                                  "'NotImplementedError'") and len(fn.body) == 2]
    assert raising, f"{name}: no function raises NotImplementedError"
    given = [q for q in stub if q not in raising]
    assert all(q in solution and code(stub[q]) == code(solution[q]) for q in given), \
        f"{name}: {given} differ from the solution: the stub was edited"


def signatures(path):
    """{name: (arguments, docstring)} of every function and class defined in a file."""
    tree = ast.parse(path.read_text())
    return {node.name: (ast.unparse(node.args) if isinstance(node, ast.FunctionDef) else "", ast.get_docstring(node))
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


@pytest.mark.parametrize("n", CODE_EXERCISES)
def test_stub_and_solution_share_signatures_and_docstrings(check, n):
    """The stub is the learner's specification: it must not drift from what the solution implements
    (the solution may add helpers and methods of its own)."""
    name = check.EXERCISES[n][0]
    stub, solution = signatures(EXERCISES / name), signatures(EXERCISES / "solutions" / name)
    assert stub == {k: v for k, v in solution.items() if k in stub}
    assert all(doc for fn, (_, doc) in stub.items() if fn != "__init__"), "a stub function lacks its docstring"


# ---------------------------------------------------------------- planted bugs

# Typical mistakes planted in a copy of the solution: (exercise, solution text, buggy text, what the
# checker must print). Each is a mistake the exercise's hints name.
PLANTED = [
    (1, "alpha ** (d - 1)", "alpha ** d",                                   # off-by-one ring distance
     "context_weights(): max abs difference 0.0655 at (5, 7, 7)"),
    (1, "return w / w.sum() if normalise else w", "return w",               # unnormalised kernel
     "context_weights(): max abs difference"),
    (1, "dt = abs(t - T // 2)", "dt = abs(t - (T - 1) // 2)",               # even T: the earlier middle frame
     "context_weights(T=4, H=6, W=8, alpha=0.5, centre_weight=2.0, ring_weight=0.3, normalise=False): max abs"),
    (1, "abs(y - H // 2)", "abs(y - (H - 1) / 2)",                          # even H: a centre between pixels
     "context_weights(T=4, H=6, W=8, alpha=0.5, centre_weight=2.0, ring_weight=0.3, normalise=False): max abs"),
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
    (6, "return module.eval()", "module.eval()",                            # nothing returned
     "freeze(module) returned NoneType, expected the module itself"),
    (6, "not torch.equal(tensor, after[name])", "not torch.allclose(tensor.double(), after[name].double())",
     "changed_tensors after changing one ulp of a weight: got []"),
    (6, "return [name for name, tensor in before.items() if not torch.equal(tensor, after[name])]",
     "return [name for name, tensor in after.items() if not torch.equal(tensor, before[name])]",  # after's order
     "changed_tensors after changing three tensors: got ['enc_blocks.1.norm.num_batches_tracked'"),
    (6, "return [name for name, tensor in before.items() if not torch.equal(tensor, after[name])]",
     "return {name for name, tensor in before.items() if not torch.equal(tensor, after[name])}",  # a set
     "changed_tensors after changing nothing: got a set"),
    (9, "centred = X - mean ", "centred = X ", "components (sign-aligned)"),   # not centred
    (9, "np.argsort(eigenvalues)[::-1][:k]", "np.argsort(eigenvalues)[::-1][:3]",   # k hard-coded
     "k=1): components (sign-aligned), index (component, feature): shape (3, 7), expected (1, 7)"),
    (9, "np.argsort(eigenvalues)[::-1][:k]", "np.argsort(eigenvalues)[:k]",  # ascending
     "k=3): components (sign-aligned)"),
    (9, "eigenvalues[order] / eigenvalues.sum()", "eigenvalues[order] / eigenvalues[order].sum()",  # over kept
     "k=3): explained variance ratio: max abs difference"),
    (10, "np.isin(years[days], list(split_years)).all()",                   # only the target's year checked
     "np.isin(years[target], list(split_years))", "outside the split's years (2020,): leakage"),
    (11, "return values[complete].mean()", "return values.mean()",          # every window averaged
     "ssim(pred, target, valid): max abs difference"),
    (11, "target, pred.detach())", "target, torch.zeros_like(target))",     # clouds filled with 0
     "ssim_map(pred, target) (NaN clouds): max abs difference"),
    (11, "target, pred.detach())", "target, pred)",                         # fill not detached
     "gradient of ssim_map(pred, target, valid).sum() with respect to pred: max abs difference"),
    (11, "valid & finite", "valid",                                         # a valid NaN counts
     "ssim_map(pred, target, valid): max abs difference"),
    (11, "windows.all(dim=-1).all(dim=-1)", "windows[..., window // 2, window // 2]",   # centre pixel only
     "ssim(pred, target, valid): max abs difference"),
    (11, "    if not complete.any():\n        return torch.ones((), dtype=pred.dtype)\n", "",   # 0 / 0
     "ssim_loss(pred, a target that is all NaN) (no complete window): max abs difference"),
    (12, '''    def train(self, mode=True):
        """nn.Module.train sets the mode of every submodule, the frozen autoencoders too: back to eval."""
        super().train(mode)
        self.fusion.autoencoders.eval()
        return self

''', "", "after stage.train(): fusion.autoencoders (ModuleDict) is in train mode"),   # the train() trap
    (12, "        fusion.autoencoders.requires_grad_(False)\n", "",        # eval mode only
     "after FusionStage(fusion): autoencoders.s1.enc_blocks.0.conv.branches.0.weight requires a gradient"),
    (12, "fusion.autoencoders.requires_grad_(False)", "fusion.requires_grad_(False)",   # all frozen
     "after FusionStage(fusion): modality_token does not require a gradient"),
    (12, "        fusion.autoencoders.eval()\n", "",                         # frozen but in train mode
     "after FusionStage(fusion): fusion.autoencoders (ModuleDict) is in train mode"),
    (12, "        self.fusion.autoencoders.eval()\n        return self", "        self.fusion.autoencoders.eval()",
     "stage.train() returned NoneType, expected the stage itself"),
    (12, "return [p for name, p in self.fusion.named_parameters() if not name.startswith(\"autoencoders.\")]",
     "return list(self.parameters())", "trainable_parameters(): 243 tensors, 220 of them of the autoencoders"),
    (12, "self.fusion.named_parameters() if", "sorted(self.fusion.named_parameters()) if",  # order lost
     "23 tensors, 0 of them of the autoencoders; expected the 23 fusion-layer parameters in"),
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
    assert f"hints, the usual mistakes of exercise {n}:" in out, "the hints come after a failure"
    assert out.rstrip().endswith("check(s) failed"), out


# ---------------------------------------------------------------- shortcuts are refused

# (exercise, file using the project's own implementation, the line the checker must print)
CHEATS = [
    (1, "from losses import context_weights\n", "refused: line 1 imports losses, a module of this repository:"),
    (2, "import losses\n\n\ndef ssim_map(pred, target, window=7, sigma=1.5, data_range=1.0):\n"   # a one-line wrapper
        "    return losses.ssim_map(pred, target, None, window, sigma, data_range).reshape(\n"
        "        *pred.shape[:3], pred.shape[3] - window + 1, -1)\n\n\nssim_loss = losses.ssim_loss\n",
     "refused: line 1 imports losses, a module of this repository (line 5 uses losses.ssim_map)"),
    (3, "import losses as L\n\n\ndef sam(pred, target, eps=1e-8):\n    return L.sam(pred, target, eps=eps)\n",
     "refused: line 1 imports losses, a module of this repository (line 5 uses L.sam)"),
    (3, "import importlib\n\n\ndef sam(pred, target, eps=1e-8):\n"
        "    return importlib.import_module('losses').sam(pred, target)\n", "refused: line 1 imports importlib"),
    (3, "def sam(pred, target, eps=1e-8):\n    return __import__('losses').sam(pred, target)\n",
     "refused: line 2 uses __import__"),
    (3, "import sys\n\n\ndef sam(pred, target, eps=1e-8):\n    return sys.modules['losses'].sam(pred, target)\n",
     "refused: line 5 reads sys.modules"),
    (4, "import torch\nfrom deepfeat import CBAM\n", "refused: line 2 imports deepfeat"),
    (6, "import train\n\nfreeze = train.freeze\n", "refused: line 1 imports train"),
    (9, "import numpy as np\nimport embed\n\n\ndef pca_fit(X, k=3):\n    return embed.pca_fit(X, k)\n",
     "refused: line 2 imports embed, a module of this repository (line 6 uses embed.pca_fit)"),
    (10, "from gpp import make_windows\n", "refused: line 1 imports gpp"),
    (11, "from exercises.solutions.ex11_masked_ssim import ssim_map, ssim, ssim_loss\n",
     "refused: line 1 imports exercises.solutions.ex11_masked_ssim"),
    (12, "exec(open('exercises/solutions/ex12_fusion_freezing.py').read())\n", "refused: line 1 uses exec"),
]


@pytest.mark.parametrize("n, source, expected", CHEATS, ids=[f"ex{c[0]}-{i}" for i, c in enumerate(CHEATS)])
def test_shortcut_is_refused(check, capsys, tmp_path, n, source, expected):
    cheat = tmp_path / check.EXERCISES[n][0]
    cheat.write_text(source)
    status, out = run(check, capsys, n, "--file", cheat)
    assert status == 1, out
    assert out.strip().splitlines()[-1].startswith(f"exercise {n}: {expected}"), out


def test_project_names_as_plain_words_are_no_shortcut(check):
    """model.train(), a variable called embed: attribute and variable names are not imports."""
    assert check.shortcut("def f(model, embed):\n    model.train()\n    return embed.sum()\n", "f.py") is None


# ---------------------------------------------------------------- options and the command line

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
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
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
