"""Interrupted anywhere, nothing lost: each command is killed with SIGKILL at seeded random moments
and run again; the result must equal an uninterrupted run, and no half-written file may ever be
taken for a whole one.

    embed.py          the embedding file byte for byte, unsharded and as shard 1/2 + merge
    train_s2.py       --resume from the last checkpoint: the final weights equal, tensor for tensor
    cache preparation modalities.load_splits(cache=...): the prepared arrays equal a fresh preparation
The kill moments are drawn in (0.05, 0.95) of the uninterrupted run's work (its time after the
imports, measured alone), so they land in the middle of the work on any machine; every process
runs with one torch thread.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import modalities
import train
from conftest import ROOT, stop_after, write_areas

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(args, kill_after=None):
    """Run `python args` in the repository; with kill_after (s), SIGKILL it then unless it has ended.
    -> (seconds, returncode or None when killed); a run that ends must succeed."""
    tic = time.time()
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=kill_after if kill_after is not None else 600)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return time.time() - tic, None
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    return time.time() - tic, proc.returncode


def kill_moments(seconds, imports, seed, n=2):
    """n moments (s from the start) inside the work of a run that took `seconds`, `imports` of them
    importing modules."""
    work = max(seconds - imports, 0.1)
    return imports + np.random.default_rng(seed).uniform(0.05, 0.95, n) * work


@pytest.fixture(scope="module")
def small_cubes(tmp_path_factory):
    """Three 24 x 24 px S1/S2 pairs, half a year: train, val and test of a tiny split."""
    return write_areas(tmp_path_factory.mktemp("kill"), (8, 9, 10), "k")


def test_embedding_killed_anywhere_equals_the_uninterrupted_file(small_cubes, tmp_path):
    """The final netCDF is either absent or whole after a kill, and the rerun writes the same bytes;
    the same for shard 1/2 killed, rerun, then shard 2/2 and merge (one seeded moment each)."""
    common = ["embed.py", "--s2", small_cubes / "k0_s2.nc", "--s1", small_cubes / "k0_s1.nc", "--checkpoint",
              ROOT / "models" / "fusion" / "checkpoint.pt", "--block-pixels", "48"]
    imports, _ = run(["-c", "import embed"])
    seconds, _ = run([*common, "--out", tmp_path / "whole.nc"])
    whole = (tmp_path / "whole.nc").read_bytes()
    for k, moment in enumerate(kill_moments(seconds, imports, seed=1, n=1)):
        out = tmp_path / f"killed{k}.nc"
        run([*common, "--out", out], kill_after=moment)
        assert not out.exists() or out.read_bytes() == whole
        run([*common, "--out", out])
        assert out.read_bytes() == whole
    out = tmp_path / "sharded.nc"
    run([*common, "--out", out, "--shard", "1/2"], kill_after=kill_moments(seconds / 2, imports, seed=2, n=1)[0])
    run([*common, "--out", out, "--shard", "1/2"])
    run([*common, "--out", out, "--shard", "2/2"])
    run(["embed.py", "merge", out])
    assert out.read_bytes() == whole


def test_training_killed_anywhere_resumes_to_the_same_weights(small_cubes, tmp_path):
    """Killed at any moment, `--resume` (or a fresh start when no checkpoint was written yet) ends
    with the weights of the uninterrupted run, tensor for tensor, and every checkpoint left loads."""
    common = ["train_s2.py", "--quick", "--cubes", small_cubes, "--max-steps", "12", "--cache", tmp_path / "cache"]
    imports, _ = run(["-c", "import train_s2"])
    seconds, _ = run([*common, "--out", tmp_path / "whole"])
    whole = train.load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    assert whole["epoch"] > 2                                  # several checkpoints to resume from
    for k, moment in enumerate(kill_moments(seconds, imports, seed=3)):
        out = tmp_path / f"killed{k}"
        run([*common, "--out", out], kill_after=moment)
        resume = ["--resume"] if (out / "checkpoint.pt").is_file() else []
        if resume:
            train.load_checkpoint(out / "checkpoint.pt")          # whole, or it would not load
        run([*common, "--out", out, *resume])
        final = train.load_checkpoint(out / "checkpoint.pt")
        assert final["step"] == whole["step"]
        for name, tensor in whole["model"].items():
            assert torch.equal(final["model"][name], tensor), name


def test_cache_preparation_killed_anywhere_prepares_the_same_arrays(small_cubes, tmp_path):
    """A killed preparation leaves no folder that passes for finished: the rerun's arrays equal a
    preparation that was never interrupted."""
    script = "import sys, modalities; modalities.load_splits([sys.argv[1]], ('s1', 's2'), 0, cache=sys.argv[2])"
    imports, _ = run(["-c", "import modalities"])
    seconds, _ = run(["-c", script, small_cubes, tmp_path / "whole"])
    whole = {p.relative_to(tmp_path / "whole"): np.load(p) for p in (tmp_path / "whole").rglob("*.npy")}
    assert whole
    for k, moment in enumerate(kill_moments(seconds, imports, seed=4)):
        cache = tmp_path / f"killed{k}"
        run(["-c", script, small_cubes, cache], kill_after=moment)
        run(["-c", script, small_cubes, cache])
        got = {p.relative_to(cache): np.load(p) for p in cache.rglob("*.npy")}
        assert got.keys() == whole.keys()
        for name, array in whole.items():
            np.testing.assert_array_equal(got[name], array)


def test_cache_interrupted_between_two_files_is_prepared_again(small_cubes, tmp_path, monkeypatch):
    """The deterministic companion of the kill above (whose moments rarely fall between two writes):
    stopped after its second array file, a preparation is redone in full by the next call, and its
    arrays equal a preparation that was never interrupted."""
    real = np.save
    monkeypatch.setattr(np, "save", stop_after(2, real))
    with pytest.raises(KeyboardInterrupt):
        modalities.load_splits([small_cubes], ("s1", "s2"), 0, cache=tmp_path / "stopped")
    monkeypatch.setattr(np, "save", real)
    modalities.load_splits([small_cubes], ("s1", "s2"), 0, cache=tmp_path / "stopped")
    modalities.load_splits([small_cubes], ("s1", "s2"), 0, cache=tmp_path / "whole")
    whole = {p.relative_to(tmp_path / "whole"): p for p in (tmp_path / "whole").rglob("*.npy")}
    got = {p.relative_to(tmp_path / "stopped"): p for p in (tmp_path / "stopped").rglob("*.npy")}
    assert got.keys() == whole.keys()
    for name, path in whole.items():
        np.testing.assert_array_equal(np.load(got[name]), np.load(path))
