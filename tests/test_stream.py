"""Tests of the training data at scale: cubes prepared once on disk and read patch by patch
(modalities.load_splits with a cache, recipe.PatchBatches), and DDP training under torchrun.

Run: python -m pytest -q tests/test_stream.py   (~1 min on 2 CPU cores; the DDP test starts 2 processes)
"""
import math
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch

import data
import modalities
import recipe
import synthetic
import train
from conftest import ROOT, tiny_ae

SAMPLING = data.SamplingConfig(seq_len=20, t_stride=9, s_stride=4)       # overlapping: many patches per cube


@pytest.fixture(scope="module")
def one_cube(tmp_path_factory):
    """One real-format synthetic S2 file (clouds, SCL) of 40 x 40 px, half a year."""
    folder = tmp_path_factory.mktemp("one")
    _, s2, _ = synthetic.make_synthetic_cube(seed=7, size=40, start="2020-03-01", end="2020-08-31")
    synthetic.write_cube(s2, folder / "one_s2.nc")
    return folder / "one_s2.nc"


def reference_batches(cubes, seed, epoch, batch_size, key="s2"):
    """The in-memory definition: data.sample_patches on each whole cube in order (one rng), the
    patches of all cubes concatenated, then one permutation -> [{modality: (x, days)}]."""
    rng = np.random.default_rng([seed, epoch])
    parts = [data.sample_patches(c["arrays"], c["days"], SAMPLING, rng, key) for c in cubes]
    merged = {m: [np.concatenate([p[m][i] for p in parts]) for i in (0, 1)] for m in parts[0]}
    order = rng.permutation(len(merged[key][0]))
    return [{m: (x[order[i:i + batch_size]], d[order[i:i + batch_size]]) for m, (x, d) in merged.items()}
            for i in range(0, len(order), batch_size)]


def assert_same_batches(streamed, expected):
    assert len(streamed) == len(expected) > 3
    for batch, ref in zip(streamed, expected):
        assert batch.keys() == ref.keys()
        for m, (x, d) in ref.items():
            np.testing.assert_array_equal(batch[m][0].numpy(), x)                 # NaN in the same places
            np.testing.assert_array_equal(batch[m][1].numpy(), d.astype(np.float32))


def test_streamed_batches_are_the_in_memory_samples(one_cube, tmp_path):
    """Read from the prepared cache, batch by batch, an epoch holds exactly the patches (values, NaN
    and days) of data.sample_patches for the same seed and epoch, in the same order; another epoch
    draws other frames. A shifted corner, a wrong frame or a dropped centre check would differ."""
    in_memory = modalities.load_training_cubes([one_cube], "s2")
    (cached,) = modalities.cache_cube(one_cube, "s2", None, None, None, tmp_path / "cache")
    assert isinstance(cached["arrays"]["s2"], os.PathLike)                    # a file, not an array in memory
    for epoch in (0, 3):
        streamed = list(recipe.patch_batches([cached], SAMPLING, "s2", 16, seed=5)(epoch))
        assert_same_batches(streamed, reference_batches(in_memory, seed=5, epoch=epoch, batch_size=16))
    first = [b["s2"][0] for b in recipe.patch_batches([cached], SAMPLING, "s2", 16, seed=5)(0)]
    other = [b["s2"][0] for b in recipe.patch_batches([cached], SAMPLING, "s2", 16, seed=5)(1)]
    assert not torch.equal(torch.nan_to_num(first[0]), torch.nan_to_num(other[0]))


def test_streamed_fusion_batches_of_two_cubes_are_the_in_memory_samples(tmp_path):
    """Two S1/S2 pairs (fusion): both modalities share each patch's frames and corners, each cube's
    patches come from that cube with that cube's S1 and S2 days (a wrong cube index or the S2 days
    given to S1 would differ), across the shuffled order of the two cubes' patches."""
    for k, seed in enumerate((3, 4)):
        s1, s2, _ = synthetic.make_synthetic_cube(seed, size=24 + 8 * k, start="2020-03-01", end="2020-08-31")
        synthetic.write_cube(s1, tmp_path / f"p{k}_s1.nc")
        synthetic.write_cube(s2, tmp_path / f"p{k}_s2.nc")
    entries = modalities.find_cubes([tmp_path], ("s1", "s2"))
    in_memory = modalities.load_training_cubes(entries, ("s1", "s2"))
    cached = [c for e in entries for c in modalities.cache_cube(e, ("s1", "s2"), None, None, None, tmp_path / "cache")]
    streamed = list(recipe.patch_batches(cached, SAMPLING, "s2", 8, seed=2)(1))
    assert_same_batches(streamed, reference_batches(in_memory, seed=2, epoch=1, batch_size=8))
    assert {int(k) for k in recipe.PatchBatches(cached, SAMPLING, "s2", 8, seed=2).cube} == {0, 1}


def test_rank_shares_partition_each_global_batch(one_cube, tmp_path):
    """Under DDP rank r of W takes samples r, r + W, ... of every global batch: the shares of the two
    ranks are disjoint and together the batch one process gets; a last batch too small for every
    rank is left out on all ranks alike (each rank must take the same number of steps)."""
    (cached,) = modalities.cache_cube(one_cube, "s2", None, None, None, tmp_path / "cache")
    whole = recipe.PatchBatches([cached], SAMPLING, "s2", 10, seed=1)
    shares = [recipe.PatchBatches([cached], SAMPLING, "s2", 10, seed=1, rank=r, world=2) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == len(whole) - (len(whole.order) % 10 == 1)
    for i in range(len(shares[0])):
        x = whole[i]["s2"][0]
        a, b = (s[i]["s2"][0] for s in shares)
        assert len(a) + len(b) == len(x) and len(a) >= len(b) > 0
        torch.testing.assert_close(a, x[0::2], equal_nan=True)
        torch.testing.assert_close(b, x[1::2], equal_nan=True)


def fake_cubes(folder, n, T=30, C=10, size=40):
    """n cubes as prepared cache files (random reflectance, 10 % NaN): the layout cache_cube writes."""
    rng = np.random.default_rng(0)
    cubes = []
    for k in range(n):
        a = rng.random((T, C, size, size), dtype=np.float32)
        a[rng.random(a.shape) < 0.1] = np.nan
        np.save(folder / f"{k}.npy", a)
        np.save(folder / f"{k}_clear.npy", data.clear_map(a))
        cubes.append({"name": f"c{k}", "arrays": {"s2": folder / f"{k}.npy"}, "clear": {"s2": folder / f"{k}_clear.npy"},
                      "days": {"s2": np.arange(T) * 5.0}})
    return cubes


def test_more_cubes_than_the_open_limit_read_the_right_cube(tmp_path):
    """12 cubes, more than recipe.OPEN_CUBES stay mapped, shuffled so that consecutive batches keep
    evicting and reopening cubes: every sample of every batch equals data.gather_patches on the cube
    its index names, with that cube's days (reading a cube other than the one named would differ:
    every cube holds other random values)."""
    cubes = fake_cubes(tmp_path, 12)
    assert len(cubes) > recipe.OPEN_CUBES
    dataset = recipe.PatchBatches(cubes, SAMPLING, "s2", 16, seed=3)
    arrays = [np.load(c["arrays"]["s2"]) for c in cubes]
    seen = set()
    for i in range(len(dataset)):
        x, days = dataset[i]["s2"]
        idx = dataset.order[i * 16:(i + 1) * 16]
        for j, n in enumerate(idx):
            k, f = int(dataset.cube[n]), dataset.frames[n].astype(np.int64)
            expected = data.gather_patches(arrays[k], f[None], dataset.y0[n:n + 1], dataset.x0[n:n + 1], SAMPLING.patch)
            np.testing.assert_array_equal(x[j].numpy(), expected[0])
            np.testing.assert_array_equal(days[j].numpy(), cubes[k]["days"]["s2"][f].astype(np.float32))
            seen.add(k)
        assert len(dataset.mapped) <= recipe.OPEN_CUBES
    assert seen == set(range(12))


def peak_bytes_of_an_epoch(cubes):
    tracemalloc.start()
    for _ in recipe.patch_batches(cubes, SAMPLING, "s2", 16, seed=0)(0):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_of_an_epoch_does_not_grow_with_the_cubes(tmp_path):
    """An epoch over 40 cubes on disk (77 MB) allocates about what one over 4 does: a batch and the
    index, not the cubes (a reader that loaded each cube whole would allocate 40 x 1.9 MB)."""
    few, many = (tmp_path / "few", tmp_path / "many")
    few.mkdir()
    many.mkdir()
    peak_few = peak_bytes_of_an_epoch(fake_cubes(few, 4))
    peak_many = peak_bytes_of_an_epoch(fake_cubes(many, 40))
    cube_bytes = 30 * 10 * 40 * 40 * 4
    assert peak_many < 1.5 * peak_few + cube_bytes / 2, (peak_few, peak_many)


def test_cache_is_reused_and_refreshed_when_the_file_changes(one_cube, tmp_path, monkeypatch):
    """A second run reads the prepared cube without opening the netCDF again; a newer file is prepared
    anew (its size/mtime are part of the cache key), so stale arrays are never trained on."""
    cache = tmp_path / "cache"
    modalities.cache_cube(one_cube, "s2", None, None, None, cache)
    calls = []
    real = modalities.load_training_cubes
    monkeypatch.setattr(modalities, "load_training_cubes", lambda *a: calls.append(a) or real(*a))
    modalities.cache_cube(one_cube, "s2", None, None, None, cache)
    assert calls == []
    os.utime(one_cube, ns=(1, 1))
    modalities.cache_cube(one_cube, "s2", None, None, None, cache)
    assert len(calls) == 1


def torchrun(*args, n=2, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                           *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_ddp_gradient_equals_one_process_within_tolerance(tmp_path):
    """2 processes (gloo) on one global batch of 16: the DDP-averaged gradient is within 8 % (relative
    L2 norm) of one process's gradient on the whole batch (measured 3 %: BatchNorm normalises each
    rank's half, and each rank's masked loss is normalised by its own valid weights). Without the
    gradient averaging (each rank on its half alone) the difference is 20 %."""
    done = [torchrun(ROOT / "tests" / "ddp_step.py", tmp_path / f"grad{n}.pt", n=n) for n in (1, 2)]
    for d in done:
        assert d.returncode == 0, d.stderr[-2000:]
    one, two = (torch.load(tmp_path / f"grad{n}.pt", weights_only=True) for n in (1, 2))
    diff = math.sqrt(sum(float(((one[k] - two[k]) ** 2).sum()) for k in one))
    norm = math.sqrt(sum(float((one[k] ** 2).sum()) for k in one))
    assert diff / norm < 0.08, diff / norm


def test_torchrun_trains_resumes_and_writes_once(tmp_path):
    """`torchrun --nproc_per_node 2 train_s2.py --quick` trains 2 steps, rank 0 alone writes the
    checkpoint, log and test metrics (no temp files left), and --resume goes on to step 3."""
    out = tmp_path / "run"
    common = ["train_s2.py", "--quick", "--batch-size", "8", "--out", out]
    done = torchrun(*common, "--max-steps", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert train.load_checkpoint(out / "checkpoint.pt")["step"] == 2
    assert done.stdout.count("test |") == 1                                  # one rank prints
    assert not list(out.glob("*.tmp*"))
    again = torchrun(*common, "--max-steps", "3", "--resume")
    assert again.returncode == 0, again.stderr[-2000:]
    assert train.load_checkpoint(out / "checkpoint.pt")["step"] == 3


def test_fit_under_ddp_matches_one_process(tmp_path):
    """`torchrun --nproc_per_node 2 train_s2.py --quick --max-steps 3` through train.fit: the ranks end
    with identical parameters (fit checks it every epoch and would stop), and the parameter change
    of the 3 steps is within 0.6 of one process's on the same global batches (relative L2; measured
    0.45: each rank normalises BatchNorm and the masked loss over its own half, and Adam's first
    steps turn small gradient differences into sign differences). Planted "no gradient averaging"
    (fit training the unwrapped model): the rank check stops the run; without that check the change
    differs by 0.82. lr 1e-3 from the first step, so 3 steps move the weights; a run at lr 1e-12
    gives the common start."""
    tol = 0.6
    flags = ["train_s2.py", "--quick", "--batch-size", "8", "--warmup-steps", "0", "--lr", "1e-3", "--cache",
             tmp_path / "cache"]
    done = {"ddp": torchrun(*flags, "--max-steps", "3", "--out", tmp_path / "ddp")}
    for name, extra in (("one", ["--max-steps", "3"]), ("start", ["--max-steps", "1", "--lr", "1e-12"])):
        done[name] = subprocess.run([sys.executable, *map(str, flags), *extra, "--out", str(tmp_path / name)],
                                    cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                                    text=True, timeout=300)
    for d in done.values():
        assert d.returncode == 0, d.stderr[-2000:]
    ddp, one, start = (train.load_checkpoint(tmp_path / n / "checkpoint.pt")["model"] for n in ("ddp", "one", "start"))
    keys = [k for k in one if one[k].is_floating_point() and "running" not in k]
    moved = math.sqrt(sum(float(((one[k] - start[k]) ** 2).sum()) for k in keys))
    diff = math.sqrt(sum(float(((ddp[k] - one[k]) ** 2).sum()) for k in keys))
    assert moved > 1e-3 and diff / moved < tol, (diff, moved)


def test_no_clear_centre_is_one_clear_error(tmp_path):
    """A split whose every central observation is cloudy gives no batch: training stops with one
    message naming the cause (not a StopIteration traceback from the first batch)."""
    (cube,) = fake_cubes(tmp_path, 1)
    np.save(cube["clear"]["s2"], np.zeros((30, 40, 40), bool))                 # every pixel-date cloudy
    batches = recipe.patch_batches([cube], SAMPLING, "s2", 16, seed=0)
    assert list(batches(0)) == []
    model = tiny_ae("s2", data.S2_BANDS, 9)
    with pytest.raises(SystemExit, match="no training samples: every cube .* too cloudy"):
        recipe.init_output_bias(model, batches)
