"""bench.py: speed and memory figures (not a test): training samples/s per stage, embedding
pixel-dates/s for the reference and fast paths, FLOPs per pixel-date and the share of this machine's
measured matmul peak the fast path reaches, what embedding_quality adds to the fast path, and the
output file's size per km^2 and year and read times per chunk layout, and the streamed training
data's peak RSS and samples/s with 5 and 200 cubes on disk. CPU always; GPU too when torch sees one.

    python bench.py                 # ~8 min on a 2-core CPU (the output file's cube: ~4 min)
    python bench.py --quick         # fewer repetitions, smaller blocks and cube, ~3 min

Full-size models (S2: 10 bands, d_model 256; S1: 2 bands, d_model 128; fusion 7-d), random weights:
speed does not depend on the weights.
"""
import argparse
import contextlib
import dataclasses
import io
import multiprocessing
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import embed
import losses
import modalities
import recipe
import synthetic
import train
from deepfeat import AutoencoderConfig, FusionConfig, FusionModel, ModalityAutoencoder


def models():
    """Fresh S1 and S2 autoencoders (trainable) and a fusion model over its own frozen copies."""
    torch.manual_seed(0)
    make = {m.name: lambda m=m: ModalityAutoencoder(AutoencoderConfig(m.name, m.bands, m.latent_dim, **m.model))
            for m in (modalities.S1, modalities.S2)}
    return make["s1"](), make["s2"](), FusionModel({m: f() for m, f in make.items()}, FusionConfig())


def matmul_peak(device, n=2048, reps=10):
    """Measured float32 matmul throughput (FLOP/s): the yardstick for the fast path."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def batch_for(bands_of, B, device):
    days = torch.cumsum(torch.full((B, 11), 5.0), dim=1).to(device) + 18000
    return {m: (torch.rand(B, 11, len(bands), 15, 15, device=device), days) for m, bands in bands_of.items()}


def bench_training(device, steps, B=32):
    """Samples/s of forward + backward + AdamW step for each stage at batch size B."""
    s1, s2, fusion = models()
    weights = losses.context_weights().to(device)
    stages = {
        "s1": (s1, s1.parameters(), lambda m, b: losses.s1_loss(m(*b["s1"])[0], b["s1"][0], torch.isfinite(b["s1"][0]), weights)),
        "s2": (s2, s2.parameters(), lambda m, b: losses.s2_loss(m(*b["s2"])[0], b["s2"][0], torch.isfinite(b["s2"][0]), weights)),
        "fusion": (fusion, fusion.trainable_parameters(), recipe.fusion_loss_fn({"s1": weights, "s2": weights})),
    }
    rows = []
    for name, (model, params, loss_fn) in stages.items():
        model.to(device).train()
        opt = torch.optim.AdamW(list(params), lr=1e-4)
        mods = {m: ae.cfg.bands for m, ae in (model.autoencoders.items() if name == "fusion" else [(name, model)])}
        batch = batch_for(mods, B, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for i in range(steps + 2):
            if i == 2:
                _sync(device)
                t = time.perf_counter()
            loss, _ = loss_fn(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        _sync(device)
        rate = steps * B / (time.perf_counter() - t)
        mem = (torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20)
        rows.append((name, rate, mem))
        print(f"train {name:6s} | {device.type} | batch {B} | {rate:7.1f} samples/s | peak memory {mem:.2f} GiB"
              f"{'' if device.type == 'cuda' else ' (process RSS)'}", flush=True)
    return rows


def synthetic_block(T, h, w, seed=0):
    """Padded input arrays of one block, 30 % of S2 pixel-dates cloudy, 10 % of S1 frames missing."""
    rng = np.random.default_rng(seed)
    hp, wp = h + 14, w + 14
    s2 = rng.random((T, 10, hp, wp), dtype=np.float32) * 0.4
    s2[rng.random((T, 1, hp, wp)).repeat(10, 1) < 0.3] = np.nan
    s1 = rng.random((T, 2, hp, wp), dtype=np.float32)
    s1[rng.random(T) < 0.1] = np.nan
    days = np.cumsum(rng.integers(5, 11, T)).astype(np.float64) + 18000
    return {"s1": s1, "s2": s2}, {"s1": days - 1, "s2": days}


@torch.no_grad()
def flops_per_window(fusion, device):
    """(per-frame conv FLOPs summed over modalities, per-window transformer+bottleneck+fusion FLOPs,
    per-window FLOPs of the quality's decode_centre summed over modalities).

    Counted in train mode: in eval mode torch runs attention as one fused kernel the counter skips.
    """
    fusion.autoencoders.train()
    batch = batch_for({m: ae.cfg.bands for m, ae in fusion.autoencoders.items()}, 1, device)
    frame, window, decode = 0, 0, 0
    for m, ae in fusion.autoencoders.items():
        with FlopCounterMode(display=False) as fc:
            ae.encode_frames(batch[m][0][0, :1])
        frame += fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            embed.decode_centre(ae, torch.zeros(1, ae.cfg.latent_dim, device=device), batch[m][1])
        decode += fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        latents = {m: ae.encode_tokens(torch.zeros(1, 11, ae.cfg.d_model, device=device), batch[m][1])
                   for m, ae in fusion.autoencoders.items()}
        fusion.fuse(latents, {m: batch[m][1][:, 5] for m in latents})
    window = fc.get_total_flops()
    fusion.eval()
    return frame, window, decode


def bench_embedding(device, T, h, w, amp=False):
    """Pixel-dates/s of the reference and fast paths (the embedding alone), and the share that
    embedding_quality (decode_centre per embedding) adds to the fast path, at every pixel and on
    embed.py --quality-every 3's grid."""
    _, _, fusion = models()
    fusion.to(device).eval()
    arrays, days = synthetic_block(T, h, w)
    seconds = {}
    # the fast runs twice each, best time: the quality's share is a difference of two timings
    for path, quality, reps in (("reference", 0, 1), ("fast", 0, 2), ("fast", 1, 2), ("fast", 3, 2)):
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            embed.embed_block(fusion, {m: a[:, :, :22, :22] for m, a in arrays.items()}, days, path, quality,
                              device=device)
            for _ in range(reps):
                _sync(device)
                t = time.perf_counter()
                out, _ = embed.embed_block(fusion, arrays, days, path, quality, device=device)
                _sync(device)
                seconds[path, quality] = min(seconds.get((path, quality), np.inf), time.perf_counter() - t)
    n = np.isfinite(out).all(-1).sum()
    results = {path: n / seconds[path, 0] for path in ("reference", "fast")}
    frame, window, decode = flops_per_window(fusion, device)
    peak = matmul_peak(device)
    # the fast path computes every frame once per pixel (T*h*w) and one window per embedding (n)
    fast_flops = (frame * T * h * w + window * n) / n
    ref_flops = 11 * frame + window
    tag = f"{device.type}{' bf16' if amp else ''}"
    print(f"embed {tag} | block {T} dates x {h} x {w} px | {n} embeddings | "
          f"reference {results['reference']:.0f} | fast {results['fast']:.0f} pixel-dates/s | "
          f"fast/reference {results['fast'] / results['reference']:.1f}x")
    print(f"embed {tag} | FLOPs per pixel-date: reference {ref_flops / 1e6:.1f} M, fast {fast_flops / 1e6:.1f} M "
          f"(frame convs {frame / 1e6:.1f} M, window transformers + fusion {window / 1e6:.1f} M) | "
          f"measured fp32 matmul peak {peak / 1e9:.0f} GFLOP/s | fast path at "
          f"{100 * fast_flops * results['fast'] / peak:.0f} % of it", flush=True)
    # The reference path runs 11 frame encodings per embedding; the fast path one per pixel-date of
    # the block, cloudy ones included (they are context for their neighbours' windows). So even
    # with free transformers, sharing cannot gain more than 11 x (embedded share of pixel-dates).
    share = n / (T * h * w)
    print(f"embed {tag} | FLOP ratio reference/fast {ref_flops / fast_flops:.1f}x | bound for any model "
          f"at this cloud cover: 11 x {share:.2f} embedded = {11 * share:.1f}x", flush=True)
    # The quality decodes every embedding: both decoder transformers over 11 tokens and the central
    # frame's decoder convs, which nothing shares between windows.
    print(f"embed {tag} | embedding_quality adds {100 * (seconds['fast', 1] / seconds['fast', 0] - 1):.0f} % "
          f"to the fast path's time ({decode / 1e6:.1f} M FLOPs per embedding, {100 * decode / fast_flops:.0f} % "
          f"of the fast path's); --quality-every 3: {100 * (seconds['fast', 3] / seconds['fast', 0] - 1):.0f} % "
          f"(target <= 25 %)", flush=True)
    return results


def quick_fusion_checkpoint(path):
    """A fusion checkpoint of the --quick size (recipe.PRESETS["quick"]), random weights."""
    torch.manual_seed(0)
    quick = recipe.PRESETS["quick"]["autoencoder"]["model"]
    aes = {m.name: ModalityAutoencoder(AutoencoderConfig(m.name, m.bands, m.latent_dim, **{**m.model, **quick}))
           for m in (modalities.S1, modalities.S2)}
    model = FusionModel(aes, FusionConfig(**recipe.PRESETS["quick"]["fusion"]["model"])).eval()
    train.save_checkpoint(path, {"format": train.CHECKPOINT_FORMAT, "kind": "fusion",
                                 "model_config": train.model_config_dict(model), "model": model.state_dict()})
    return path


def bench_output(size=128, reps=5, seed=0):
    """embed.py's output file: bytes per km^2 and year, and the time to read one date's map and one
    pixel's series, for embed.py's chunks and alternatives. The values are a real embedding: a
    one-year size x size px synthetic cube (35 % cloud, 5-day revisit with 15 % dropped) embedded by
    embed.py with a --quick-size random fusion model (18 features + quality). Not tiled from a
    smaller cube: zlib finds the repeats of a tiled cube and flatters chunks wider than the tile.
    Reads come from the page cache (just written): decompression, not the disk."""
    import netCDF4

    folder = Path(tempfile.mkdtemp(prefix="bench_output_"))
    try:
        s1, s2, _ = synthetic.make_synthetic_cube(seed=seed, size=size)
        synthetic.write_cube(s1, folder / "s1.nc")
        synthetic.write_cube(s2, folder / "s2.nc")
        inputs = {"s2": folder / "s2.nc", "s1": folder / "s1.nc"}
        t = time.perf_counter()
        out = embed.embed_cube(inputs, quick_fusion_checkpoint(folder / "q.pt"), folder / "e.nc")
        with netCDF4.Dataset(out) as nc:
            nc.set_auto_mask(False)
            values = np.concatenate([nc["embedding"][:], nc["embedding_quality"][:][..., None]], axis=-1)
        T, H, W, K = values.shape                                          # (T, H, W, F + 1)
        km2_years = H * W * 1e-4                  # 10 m pixels, 1e4 per km^2; the cube spans one year
        raw = values.nbytes
        print(f"output | embed.py on {H} x {W} px x {T} dates (one year), quick-size model: "
              f"{time.perf_counter() - t:.0f} s | {K - 1} features + quality, {100 * np.isnan(values[..., 0]).mean():.0f} % "
              f"of pixel-dates NaN | uncompressed {raw / 2**20:.0f} MiB = {raw / km2_years / 2**20:.1f} MiB per km^2 "
              f"and year | embed.py's file {out.stat().st_size / 2**20:.1f} MiB = "
              f"{out.stat().st_size / km2_years / 2**20:.1f} MiB per km^2 and year", flush=True)
        default = (embed.CHUNK_DATES, embed.CHUNK_PIXELS, embed.CHUNK_PIXELS)
        layouts = {"embed.py": (default, embed.COMPRESSION),
                   "embed.py, zlib level 4": (default, {**embed.COMPRESSION, "complevel": 4}),
                   "embed.py, no shuffle": (default, {**embed.COMPRESSION, "shuffle": False}),
                   "1 date x 64 rows x all (before)": ((1, 64, W), embed.COMPRESSION),
                   "1 date x all": ((1, H, W), embed.COMPRESSION),
                   "all dates x 16 x 16": ((T, 16, 16), embed.COMPRESSION)}
        rng = np.random.default_rng(seed)
        for name, (chunks, compression) in layouts.items():
            chunks = tuple(min(c, n) for c, n in zip(chunks, (T, H, W)))
            path = folder / "layout.nc"
            t = time.perf_counter()
            with netCDF4.Dataset(path, "w") as nc:
                for dim, n in (("time", T), ("y", H), ("x", W), ("feature", K - 1)):
                    nc.createDimension(dim, n)
                nc.createVariable("embedding", "f4", ("time", "y", "x", "feature"), fill_value=np.float32(np.nan),
                                  chunksizes=chunks + (K - 1,), **compression)[:] = values[..., :K - 1]
                nc.createVariable("embedding_quality", "f4", ("time", "y", "x"), fill_value=np.float32(np.nan),
                                  chunksizes=chunks, **compression)[:] = values[..., K - 1]
            write = time.perf_counter() - t
            seconds = {"date": [], "pixel": []}
            for _ in range(reps):
                for kind, index in (("date", (int(rng.integers(T)),)),
                                    ("pixel", (slice(None), int(rng.integers(H)), int(rng.integers(W))))):
                    with netCDF4.Dataset(path) as nc:                      # fresh: no chunk cache
                        t = time.perf_counter()
                        nc["embedding"][index]
                        seconds[kind].append(time.perf_counter() - t)
            bytes_ = path.stat().st_size
            print(f"output | chunks {str(chunks):14s} {name:32s} | {bytes_ / 2**20:6.1f} MiB ({raw / bytes_:.2f}x smaller) "
                  f"= {bytes_ / km2_years / 2**20:5.2f} MiB per km^2 and year | write {write:4.1f} s | read one date "
                  f"{1e3 * np.median(seconds['date']):6.1f} ms, one pixel's series {1e3 * np.median(seconds['pixel']):6.1f} ms",
                  flush=True)
    finally:
        shutil.rmtree(folder)


def stream_epoch(cubes, cache, batch_size=32):
    """In a fresh process: prepare (or reuse) the S2 cubes of a folder in `cache` (None: in memory)
    and read one training epoch of batches -> (patches, seconds, peak RSS in MiB)."""
    with contextlib.redirect_stdout(io.StringIO()):
        split, _ = modalities.load_splits([cubes], "s2", seed=0, cache=cache)
    batches = recipe.patch_batches(split["train"], dataclasses.replace(modalities.S2.sampling, s_stride=5), "s2",
                                  batch_size, seed=0)
    t = time.perf_counter()
    n = sum(len(b["s2"][0]) for b in batches(0))
    return n, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_fresh_process(fn, *args):
    """fn(*args) in a new interpreter, so its peak RSS is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def bench_stream(n_many=200, size=32):
    """Training data read patch by patch from prepared cubes on disk (modalities.load_splits with a cache,
    recipe.PatchBatches): peak RSS and samples/s of one epoch with 5 and with n_many synthetic cubes,
    and on sample_data in memory vs streamed. Each epoch runs in its own process, after a first run
    that prepares the cache."""
    folder = Path(tempfile.mkdtemp(prefix="deepfeat-bench-stream-"))
    try:
        for n in (5, n_many):
            cubes = folder / f"cubes{n}"
            cubes.mkdir()
            for k in range(n):
                _, s2, _ = synthetic.make_synthetic_cube(1000 + k, size=size, start="2020-01-01", end="2020-12-31")
                synthetic.write_cube(s2, cubes / f"c{k}_s2.nc")
            in_fresh_process(stream_epoch, cubes, folder / f"cache{n}")
            p, s, rss = in_fresh_process(stream_epoch, cubes, folder / f"cache{n}")
            print(f"stream | {n} cubes of {size} x {size} px on disk | {p} patches | {p / s:.0f} samples/s | "
                  f"peak RSS {rss:.0f} MiB", flush=True)
        sample = Path(__file__).resolve().parent / "sample_data"
        for label, cache in (("in memory", None), ("streamed", folder / "cache_sample")):
            in_fresh_process(stream_epoch, sample, cache)
            p, s, rss = in_fresh_process(stream_epoch, sample, cache)
            print(f"stream | sample_data {label} | {p} patches | {p / s:.0f} samples/s | peak RSS {rss:.0f} MiB",
                  flush=True)
    finally:
        shutil.rmtree(folder)


def main():
    parser = argparse.ArgumentParser(description="Speed and memory figures for training and embedding.")
    parser.add_argument("--quick", action="store_true", help="fewer steps, a smaller block and output cube (~3 min)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        print(f"--- {device} ({torch.get_num_threads()} CPU threads, torch {torch.__version__})")
        bench_training(device, steps=3 if args.quick else 8)
        T, hw = (24, 16) if args.quick else (40, 32)
        if device.type == "cuda":
            T, hw = 73, 128
        bench_embedding(device, T, hw, hw)
        bench_embedding(device, T, hw, hw, amp=True)
    bench_output(size=64 if args.quick else 128)
    bench_stream(n_many=50 if args.quick else 200)


if __name__ == "__main__":
    main()
