"""embed.py: analysis-ready embedding cubes, one vector per 10 m pixel and S2 date (Sec. IV-B).

    python embed.py --s2 sample_data/synth_0_s2.nc --s1 sample_data/synth_0_s1.nc \\
        --checkpoint runs/fusion/checkpoint.pt --out runs/synth_0_embeddings.nc     # quick model: ~1 min on CPU
    python embed.py --s2 S2.nc --checkpoint runs/s2/checkpoint.pt --out s2_latents.nc   # one modality
    python embed.py --s2 S2.nc --s1 S1.nc --checkpoint CKPT --out OUT.nc --shard 3/8    # machine 3 of 8, then
    python embed.py merge OUT.nc                           # the 8 shards -> OUT.nc, the file one run writes
    python embed.py pca runs/synth_0_embeddings.nc --s2 sample_data/synth_0_s2.nc --out pca.png  # Fig. 6

Output (CF netCDF, zlib + shuffle, lossless): `embedding` (time, y, x, feature), float32, with the
input's time/y/x coordinates and grid mapping, and `feature` named fused_0..fused_6, s1_0..s1_1,
s2_0..s2_8 for a fusion checkpoint (the latents for an autoencoder checkpoint). One variable with
a feature dimension is what xarray users select from (`ds.embedding.sel(feature="fused_0")`) and
what models take as input (`.values[..., :7]`). `embedding_quality` (time, y, x): how well the frozen
decoders reconstruct the central observation from the embedding, the centre MAE of Sec. IV-A per
pixel-date (sample_centre_mae); decoding costs about as much as embedding, `--quality-every 3` keeps
a 30 m grid of it for ~1/9 of that, `--quality-every 0` none. Chunks of CHUNK_DATES dates x
CHUNK_PIXELS x CHUNK_PIXELS px, so that one date's map and one pixel's series both read a small
share of the file: ~11 MiB per km^2 and year for a fusion checkpoint (bench.py).

Gap semantics (the paper's): the embedding of (pixel, date) is the latent of the 15 x 15 x 11
patch centred on that pixel and that S2 acquisition, so it is NaN where the central S2 observation
is missing (cloud, shadow, nodata) and for the first and last 5 dates (no 5 neighbours on each
side). At the cube's spatial edges the cube is mirrored (reflect padding, 7 px), so every pixel gets
a value. `--fill linear` adds `embedding_filled`: linear in time between valid dates (the paper
interpolates for GPP, Sec. IV-C); leading and trailing gaps stay NaN.

Two paths, same numbers (tests/test_embed.py checks max |fast - reference| <= 1e-4):
  reference  one (11, C, 15, 15) patch per pixel-date through `encode`, the quality through the
             model's own `decode` of the whole patch;
  fast       each frame's 15 x 15 encoding is computed once per pixel and shared by the 11 windows
             that contain it; only the temporal transformer runs per window. Exact because the
             model's gap fill is per value and the transformer attends within a sample (deepfeat.py).
             The quality decodes the central frame only (decode_centre).

Row blocks, shards, resume: the cube is processed in row blocks (with a 7-row halo) written to
OUT.parts/ atomically; an interrupted run resumes from the finished blocks. `--shard K/N` embeds the
K-th of N contiguous ranges of row blocks into OUT.shard-K-of-N.parts/ (resumable the same way) and
`embed.py merge OUT` assembles the N folders: an unsharded run is shard 1/1 assembled at once, so
both write the same bytes (tests/test_embed.py), given the same hardware and thread count per
block. Shards must come from the same run (checkpoint hash, inputs, settings, grid and dates:
merge names what differs); only the attribute code_version may list several versions, when the
shards ran different code. The final netCDF is written to a temp file and renamed.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import data
import modalities
import readers
import train
from deepfeat import FusionModel

# Output chunks (time, y, x): 8 dates x 64 x 64 px x all features is 2.4 MB of float32 for a fusion
# checkpoint. A date's map reads 8 dates, a pixel's series 64 x 64 px: bench.py measures both.
CHUNK_DATES = 8
CHUNK_PIXELS = 64
# Lossless. Shuffle makes the file 1.5x smaller; zlib level 4 saves 3 % more but reads 1.5x slower (bench.py).
COMPRESSION = dict(zlib=True, complevel=1, shuffle=True)


# ----------------------------------------------------------------------------------------------
# 1. Reference and fast paths over one padded block
# ----------------------------------------------------------------------------------------------

def embed_block(model, arrays, days, path="fast", quality_every=1, row0=0, chunk=512, frame_chunk=256, device="cpu"):
    """Embeddings of one block, and their quality (Sec. IV-A centre MAE, sample_centre_mae).

    arrays {m: (T, C, h + 2 * half, w + 2 * half)} float32 with NaN, already padded by half = patch // 2
    px; days {m: (T,)} -> (embedding (T, h, w, F), quality (T, h, w) or None), float32, NaN where no
    embedding is defined. quality_every S: the quality of the pixels whose row in the cube (row0 = the
    block's first) and column are multiples of S (S = 1: all; decoding costs about as much as
    embedding, so S = 3 cuts it to ~1/9), NaN elsewhere; 0: no quality. The two paths differ only in
    how a window's latents (and reconstruction) are computed. Batches are small on purpose: 256
    frames / 512 windows stay in the CPU caches and run 2-4x faster per item than batches of 4096 on
    a 2-core machine.
    """
    aes, ref, names = model_parts(model)
    n_frames, half = aes[ref].cfg.n_frames, aes[ref].cfg.patch // 2
    T, _, Hp, Wp = arrays[ref].shape
    h, w = Hp - 2 * half, Wp - 2 * half
    emb = np.full((T, h * w, len(names)), np.nan, dtype=np.float32)
    qual = np.full((T, h * w), np.nan, dtype=np.float32) if quality_every else None
    centre = {m: a[:, :, half:half + h, half:half + w].reshape(T, a.shape[1], h * w)    # (T, C, h*w)
              for m, a in arrays.items()}
    t_idx, p_idx = windows_to_embed(centre[ref], n_frames)
    # (T, C, h, w, 15, 15) strided views: patch of pixel (i, j) in frame t, no copy
    views = {m: np.lib.stride_tricks.sliding_window_view(a, (2 * half + 1,) * 2, axis=(2, 3))
             for m, a in arrays.items()}
    day_t = {m: torch.as_tensor(d, dtype=torch.float32, device=device) for m, d in days.items()}
    if path == "fast" and len(t_idx):
        tokens = {m: frame_tokens(ae, views[m], frame_chunk, device) for m, ae in aes.items()}   # {m: (T, h*w, D)}
    if path == "reference":
        chunk = max(1, frame_chunk // n_frames)       # same number of frames per conv call as the fast path
    offsets = np.arange(-(n_frames // 2), n_frames // 2 + 1)
    for start in range(0, len(t_idx), chunk):
        t, p = t_idx[start:start + chunk], p_idx[start:start + chunk]
        tw = t[:, None] + offsets                                                # (N, 11) frame indices
        window_days = {m: day_t[m][torch.as_tensor(tw, device=device)] for m in aes}      # {m: (N, 11)}
        latents = {}
        for m, ae in aes.items():
            if path == "fast":
                latents[m] = ae.encode_tokens(tokens[m][torch.as_tensor(tw, device=device),
                                                        torch.as_tensor(p, device=device)[:, None]], window_days[m])
            else:
                x = views[m][tw, :, (p // w)[:, None], (p % w)[:, None]]       # (N, 11, C, 15, 15)
                latents[m] = ae.encode(torch.from_numpy(x).to(device), window_days[m])
        features = features_from_latents(model, latents, {m: d[:, n_frames // 2] for m, d in window_days.items()})
        emb[t, p] = features.float().cpu().numpy()
        if not quality_every:
            continue
        on_grid = np.flatnonzero(((row0 + p // w) % quality_every == 0) & (p % w % quality_every == 0))   # (n,)
        if len(on_grid):
            q = torch.as_tensor(on_grid, device=device)
            recon = centre_reconstruction(model, features[q], {m: d[q] for m, d in window_days.items()}, path)
            tq, pq = t[on_grid], p[on_grid]
            qual[tq, pq] = sample_centre_mae(recon, {m: c[tq, :, pq] for m, c in centre.items()})   # {m: (n, C_m)}
    return emb.reshape(T, h, w, -1), (qual.reshape(T, h, w) if quality_every else None)


def frame_tokens(ae, view, chunk, device):
    """Per-frame encodings shared by all windows: view (T, C, h, w, 15, 15) -> tokens (T, h*w, D)."""
    T, C, h, w, P, _ = view.shape
    tokens = torch.empty(T, h * w, ae.cfg.d_model, device=device)
    for t in range(T):
        patches = view[t].transpose(1, 2, 0, 3, 4).reshape(h * w, C, P, P)      # (h*w, C, 15, 15)
        for s in range(0, h * w, chunk):
            tokens[t, s:s + chunk] = ae.encode_frames(torch.from_numpy(patches[s:s + chunk]).to(device)).float()
    return tokens


def windows_to_embed(centre, n_frames):
    """centre (T, C, h*w) of the reference modality -> (t, pixel) indices of the embeddings to compute.

    A date needs n_frames // 2 dates on each side, and a finite central observation (all bands).
    """
    T = centre.shape[0]
    half = n_frames // 2
    ok = np.isfinite(centre).all(axis=1)                            # (T, h*w)
    ok[:half] = False
    ok[T - half:] = False
    return np.nonzero(ok)


def model_parts(model):
    """-> (autoencoders {m: ae}, reference modality, feature names)."""
    if isinstance(model, FusionModel):
        aes = dict(model.autoencoders)
        names = [f"fused_{i}" for i in range(model.cfg.fused_dim)]
        ref = model.cfg.modalities[-1]
    else:
        aes = {model.cfg.modality: model}
        names, ref = [], model.cfg.modality
    for m, ae in aes.items():
        names += [f"{m}_{i}" for i in range(ae.cfg.latent_dim)]
    return aes, ref, names


def features_from_latents(model, latents, centre_days):
    """Latents {m: (N, L_m)} -> features (N, F): [fused, latents...] for fusion, else the latent."""
    if isinstance(model, FusionModel):
        fused = model.fuse(latents, centre_days)
        return torch.cat([fused] + [latents[m] for m in model.cfg.modalities], dim=1)
    (z,) = latents.values()
    return z


# ----------------------------------------------------------------------------------------------
# 2. Embedding quality: the centre MAE of the frozen decoders' reconstruction (Sec. IV-A)
# ----------------------------------------------------------------------------------------------

def centre_reconstruction(model, features, days, path="fast"):
    """The decoders' reconstruction of an embedding's central coordinate (frame T//2, pixel (P//2, P//2)).

    features (N, F) as features_from_latents returns them, days {m: (N, T)} of the windows -> {m: (N, C_m)}.
    A fusion checkpoint decodes the fused embedding (Sec. III-C: per-modality projection, frozen
    decoder; FusionModel.decode), an autoencoder checkpoint its latent through its own decoder.
    reference: the model's own decode of whole patches (N, T, C, P, P), cut at the centre;
    fast: decode_centre, the central frame only.
    """
    fusion = isinstance(model, FusionModel)
    code = features[:, :model.cfg.fused_dim] if fusion else features                # (N, 7) or (N, L)
    if path == "reference":
        if fusion:
            full = model.decode(code, days)                                         # {m: (N, T, C, P, P)}
        else:
            full = {model.cfg.modality: model.decode(code, days[model.cfg.modality])}
        return {m: r[:, r.shape[1] // 2, :, r.shape[3] // 2, r.shape[4] // 2] for m, r in full.items()}
    aes, _, _ = model_parts(model)
    latents = {m: model.project_out[m](code) for m in aes} if fusion else {model.cfg.modality: code}
    return {m: decode_centre(ae, latents[m], days[m]) for m, ae in aes.items()}


def decode_centre(ae, z, days):
    """ModalityAutoencoder.decode at the central coordinate only: z (N, L), days (N, T) -> (N, C).

    The decoder transformer attends over all T tokens, so it runs in full; the convolutions run on
    the central frame only (1 of T). That frame is decoded whole: CBAM's channel gate pools over
    it, so its central pixel depends on every pixel of the frame. tests/test_embed.py checks this
    equals decode(z, days)[:, T // 2, :, P // 2, P // 2].
    """
    T, P = days.shape[1], ae.cfg.patch
    frame = ae.decode_frames(ae.decode_tokens(z, days)[:, T // 2])                  # (N, C, P, P)
    return frame[:, :, P // 2, P // 2]


def sample_centre_mae(recon, target):
    """embedding_quality: the centre MAE (Sec. IV-A) of each sample rather than of a batch.

    recon {m: (N, C_m)} tensors, target {m: (N, C_m)} arrays with NaN -> (N,) float32: the mean over the
    modalities with a valid central value of mean_valid-bands |recon - target|, in reflectance (S2) and
    0-1 scaled dB (S1), averaged over modalities as losses.fusion_loss's centre_mae that the fusion
    stage is validated on.
    """
    per_modality = []
    for m, x in target.items():
        valid = np.isfinite(x)                                                      # (N, C_m)
        err = np.abs(recon[m].float().cpu().numpy() - np.where(valid, x, 0))
        n = valid.sum(1)
        per_modality.append(np.where(n > 0, np.where(valid, err, 0).sum(1) / np.maximum(n, 1), np.nan))   # (N,)
    per_modality = np.stack(per_modality)                                           # (M, N)
    n_valid = np.isfinite(per_modality).sum(0)
    return (np.nansum(per_modality, axis=0) / np.maximum(n_valid, 1)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# 3. Reading blocks of real cubes (prepared per block: the preparation is per pixel, so block = whole)
# ----------------------------------------------------------------------------------------------

class CubeReader:
    """Lazily opened input files of the modalities a model reads, assembled one row block at a time.

    paths {modality: file (S2: or its 10 m and 20 m files)}, bands {modality: bands}; the reference
    modality (modalities.fusion_order: S2 in fusion, else the only one) sets the grid and the dates.
    half_patch: the halo, patch // 2 of the model's config (data.PATCH // 2 = 7 by default)."""

    def __init__(self, paths, bands, max_gap_days=6.0, mask_var=None, half_patch=data.PATCH // 2):
        self.names = modalities.fusion_order(list(paths))
        self.ref = self.names[-1]
        self.bands, self.max_gap_days, self.mask_var, self.half = bands, max_gap_days, mask_var, half_patch
        for m in self.names:
            for p in [paths[m]] if isinstance(paths[m], (str, os.PathLike)) else paths[m]:
                if not Path(p).exists():
                    raise data.CubeError(f"{_flag(m)} {p}: no such file")
        self.raws = modalities.open_inputs({m: paths[m] for m in self.names})
        for m in self.names[:-1]:
            data.check_same_crs(self.raws[m], self.raws[self.ref], f"{_flag(m)} {paths[m]}",
                                f"{_flag(self.ref)} {paths[self.ref]}")
        self.grid = self.raws[self.ref]
        self.H, self.W = self.grid.sizes["y"], self.grid.sizes["x"]
        patch = 2 * half_patch + 1
        if min(self.H, self.W) < patch:
            raise data.CubeError(f"cube is {self.H} x {self.W} px, smaller than a {patch} x {patch} patch")
        self.time = self.block(0, 1)[2]          # the output's time axis (S1 duplicates merged)

    def block(self, r0, r1):
        """Rows [r0, r1) -> (arrays {m: (T, C, r1-r0+2*half, W+2*half)}, days {m: (T,)}, time coordinate):
        modalities.assemble of the reference's rows (with the halo) and the other inputs' rows near them."""
        half = self.half
        lo, hi = max(0, r0 - half), min(self.H, r1 + half)
        rows = self.raws[self.ref].isel(y=slice(lo, hi))
        raws = {m: rows if m == self.ref else _rows_near(raw, rows.y.values) for m, raw in self.raws.items()}
        arrays, days, ref_cube = modalities.assemble(raws, self.bands, self.mask_var, self.max_gap_days)
        pad = ((0, 0), (0, 0), (half - (r0 - lo), half - (hi - r1)), (half, half))
        return {m: np.pad(a, pad, mode="reflect") for m, a in arrays.items()}, days, ref_cube.time


def _flag(m):
    """The command-line flag of a modality's input: --s2 / --s1, or --input NAME= for any other."""
    return f"--{m}" if m in ("s1", "s2") else f"--input {m}="


def _rows_near(raw, y_values, margin_px=2):
    """The rows of `raw` (any resolution) covering y_values, plus a margin of its own pixels."""
    y = raw.y.values
    step = np.abs(np.diff(y)).max() if len(y) > 1 else 0.0
    keep = np.flatnonzero((y >= y_values.min() - margin_px * step) & (y <= y_values.max() + margin_px * step))
    if len(keep) == 0:
        raise data.CubeError("an input cube does not overlap the reference cube in y")
    return raw.isel(y=slice(keep[0], keep[-1] + 1))


# ----------------------------------------------------------------------------------------------
# 4. The whole cube: row blocks -> parts on disk (one folder per shard) -> one netCDF
# ----------------------------------------------------------------------------------------------

def embed_cube(inputs, checkpoint, out, path="fast", block_pixels=2048, fill="none", device="cpu",
               amp=False, max_gap_days=6.0, mask_var=None, quality_every=1, shard=(1, 1)):
    """Embed a cube block by block, resumably; write OUT (netCDF) atomically. Returns OUT.

    inputs {modality: file (S2: or its 10 m and 20 m files)}: the checkpoint's modalities are read, others
    ignored. shard (K, N) with N > 1: embed only the K-th of N contiguous ranges of row blocks (shard_blocks)
    into OUT.shard-K-of-N.parts/ and return that folder; `merge(OUT)` writes OUT once all N are done.
    CubeError for a cube with fewer dates than a patch has frames, or where no pixel-date at all can be
    embedded (then no file is written: an all-NaN cube is a mistake, not a result)."""
    model, ckpt = train.load_model(checkpoint)
    device = train.resolve_device(device)
    model.to(device)
    aes, ref, names = model_parts(model)
    bands = {m: ae.cfg.bands for m, ae in aes.items()}
    half, n_frames = aes[ref].cfg.patch // 2, aes[ref].cfg.n_frames
    missing = [m for m in aes if inputs.get(m) is None]
    if missing:
        raise SystemExit(f"this checkpoint needs {' and '.join(_flag(m) for m in missing)} (it reads {', '.join(aes)})")
    paths = {m: inputs[m] for m in aes}
    reader = CubeReader(paths, bands, max_gap_days, mask_var, half)
    source = f"{_flag(ref)} {paths[ref]}"
    if len(reader.time) < n_frames:
        raise data.CubeError(f"{source}: {len(reader.time)} dates; an embedding needs {n_frames} "
                             f"(its date and {n_frames // 2} on each side)")
    rows = max(1, block_pixels // reader.W)
    blocks = [(r, min(r + rows, reader.H)) for r in range(0, reader.H, rows)]
    sha = file_sha256(checkpoint)
    # everything the parts' numbers and the output file depend on: shards must agree on all of it
    run = {"checkpoint_sha256": sha, "inputs": {m: str(p) for m, p in paths.items()}, "path": path, "amp": amp,
           "blocks": blocks, "max_gap_days": max_gap_days, "mask_var": mask_var, "fill": fill, "source": source,
           "header": output_header(reader, names, quality_every, attrs={
               "checkpoint": str(checkpoint), "checkpoint_sha256": sha,
               "checkpoint_kind": ckpt["kind"], "bands": json.dumps({m: list(b) for m, b in bands.items()}),
               **{f"{m}_source": str(p) for m, p in paths.items()},
               "normalisation": "S2 reflectance (DN + offset) / 10000; S1 dB clipped to "
                                + json.dumps(data.S1_DB_RANGE) + " and scaled to 0-1",
               "gaps": f"NaN where the central S2 observation is missing and for the first/last {n_frames // 2} "
                       f"dates; spatial edges reflect-padded by {half} px",
               "path": path})}
    k, n = shard
    mine = shard_blocks(blocks, k, n)
    parts = parts_folder(Path(out), k, n)
    _start_parts(parts, {"run": run, "shard": [k, n], "code_version": code_version()})
    done = sum((parts / _part_name(b)).exists() for b in mine)
    print(f"embedding {reader.H} x {reader.W} px in {len(blocks)} blocks of {rows} rows"
          + (f", shard {k}/{n}: {len(mine)} blocks (rows {_rows_text(mine) or 'none'})" if n > 1 else "")
          + f" ({path} path, {device}{', bf16' if amp else ''}); {done} done already", flush=True)
    t0, n_done, n_embedded = time.time(), 0, 0
    for i, (r0, r1) in enumerate(mine):
        part = parts / _part_name((r0, r1))
        if part.exists():
            continue
        arrays, days, _ = reader.block(r0, r1)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            emb, qual = embed_block(model, arrays, days, path, quality_every, r0, device=device)   # (T, rows, W, F)
        _save_part(part, emb if qual is None else np.concatenate([emb, qual[..., None]], axis=-1))
        n_done += 1
        n_embedded += int(np.isfinite(emb[..., 0]).sum())
        eta = (len(mine) - i - 1) * (time.time() - t0) / n_done
        print(f"block {i + 1}/{len(mine)} rows {r0}-{r1 - 1} | {n_embedded / (time.time() - t0):.0f} "
              f"embedded pixel-dates/s | ETA {eta:.0f} s", flush=True)
    if n > 1:
        print(f"shard {k}/{n} done in {parts}; once all {n} shards are: python embed.py merge {out}")
        return parts
    return assemble(Path(out), [parts])


def parse_shard(text):
    """argparse type of --shard: "K/N" -> (K, N) with 1 <= K <= N."""
    try:
        k, n = (int(s) for s in text.split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, got {text!r}")
    return k, n


def shard_blocks(blocks, k, n):
    """The K-th of N contiguous, near-equal ranges of the row blocks (a contiguous stripe of the cube
    per machine reads each input chunk on one machine only). Shard 1/1 is every block."""
    return [tuple(b) for b in blocks[len(blocks) * (k - 1) // n:len(blocks) * k // n]]


def _rows_text(blocks):
    """Row blocks as the rows they cover: "0-3, 4-7" (runs of adjacent blocks joined: "0-7")."""
    runs = []
    for r0, r1 in blocks:
        if runs and runs[-1][1] == r0:
            runs[-1][1] = r1
        else:
            runs.append([r0, r1])
    return ", ".join(f"{r0}-{r1 - 1}" for r0, r1 in runs)


def parts_folder(out, k, n):
    """OUT.parts for an unsharded run (shard 1/1), OUT.shard-K-of-N.parts for shard K of N."""
    return out.with_name(out.name + (".parts" if n == 1 else f".shard-{k}-of-{n}.parts"))


def _part_name(block):
    """One finished row block: (T, rows, W, F) embedding, + 1 channel embedding_quality when computed."""
    return f"rows_{block[0]:06d}_{block[1]:06d}.npy"


def _save_part(path, array):
    """One finished row block, written atomically: a block on disk is always whole."""
    data.write_atomic(path, lambda tmp: np.save(tmp, array))


def _start_parts(parts, plan):
    """Create the parts folder with plan.json, or check that existing parts belong to the same run and shard."""
    plan_file = parts / "plan.json"
    if plan_file.exists():
        old = json.loads(plan_file.read_text())
        new = json.loads(json.dumps(plan))
        if (old.get("run"), old.get("shard")) != (new["run"], new["shard"]):
            raise SystemExit(f"{parts} holds blocks of a different run ({', '.join(_differences(old, new)) or 'shard'} "
                             "differ): remove it or choose another --out")
        return
    parts.mkdir(parents=True, exist_ok=True)
    data.write_atomic(plan_file, lambda tmp: tmp.write_text(json.dumps(plan)))


def _differences(a, b):
    """Names of the run settings that differ between two plans (header: the inputs' grid, dates or attributes)."""
    a, b = a.get("run", {}), b.get("run", {})
    return [key for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def merge(out):
    """`embed.py merge OUT`: the shard folders OUT.shard-K-of-N.parts/ beside OUT -> OUT (see assemble)."""
    out = Path(out)
    folders = sorted(out.parent.glob(out.name + ".shard-*-of-*.parts"))
    if not folders:
        raise SystemExit(f"no shard folders {out.name}.shard-K-of-N.parts next to {out}: "
                         f"run embed.py --shard K/N --out {out} first")
    return assemble(out, folders)


def assemble(out, folders):
    """Parts folders of one run (every shard of it) -> OUT, then remove the folders. Returns OUT.

    One-line errors (nothing written) for folders of different runs (checkpoint, inputs, settings)
    or shard counts, and for missing or unfinished shards, naming them and their rows."""
    plans = {f: json.loads((f / "plan.json").read_text()) for f in folders}
    first = folders[0]
    for f, plan in plans.items():
        if plan["shard"][1] != plans[first]["shard"][1] or plan["run"] != plans[first]["run"]:
            what = _differences(plans[first], plan) or [f"shard count {plans[first]['shard'][1]} vs {plan['shard'][1]}"]
            raise SystemExit(f"{f.name} and {first.name} come from different runs ({', '.join(what)} differ): "
                             "remove the stale one")
    run, n = plans[first]["run"], plans[first]["shard"][1]
    shards = {plan["shard"][0]: f for f, plan in plans.items()}
    where, problems = {}, []
    for k in range(1, n + 1):
        mine = shard_blocks(run["blocks"], k, n)
        found = {b: shards[k] / _part_name(b) for b in mine if k in shards and (shards[k] / _part_name(b)).exists()}
        where.update(found)
        missing = [b for b in mine if b not in found]
        if missing:
            state = "missing" if k not in shards else f"unfinished ({len(missing)} of {len(mine)} blocks)"
            problems.append(f"shard {k}/{n} {state}: rows {_rows_text(missing)}")
    if problems:
        raise SystemExit("; ".join(problems) + " not embedded: run those shards (the same command resumes them)")
    versions = sorted({plan["code_version"] for plan in plans.values()})
    n_embedded = write_netcdf(out, where, run, ", ".join(versions))
    for f in folders:
        shutil.rmtree(f)
    H, W, T = (len(run["header"][d]) for d in ("y", "x", "time"))
    print(f"wrote {out}: {n_embedded} of {T * H * W} pixel-dates embedded")
    return out


def output_header(reader, names, quality_every, attrs):
    """Everything of the output file but the arrays, as JSON: the same for every shard of a run."""
    grid = reader.grid
    counts, units = exact_time(reader.time.values)
    gm = _grid_mapping_name(grid)
    return {"time": counts.tolist(), "time_units": units, "features": names, "quality_every": quality_every,
            "y": grid.y.values.tolist(), "x": grid.x.values.tolist(),
            "y_attrs": _plain_attrs(grid.y.attrs), "x_attrs": _plain_attrs(grid.x.attrs),
            "grid_mapping": gm, "grid_mapping_attrs": _plain_attrs(grid[gm].attrs) if gm else {},
            "attrs": {**{k: v for k, v in _plain_attrs(grid.attrs).items() if k.startswith("tower_")}, **attrs,
                      "Conventions": "CF-1.8"}}


def _plain_attrs(attrs):
    return {k: v for k, v in attrs.items() if isinstance(v, (str, int, float))}


# CF time units of the output, coarsest first, with their size in nanoseconds
TIME_UNITS = {"days": 86_400 * 10**9, "seconds": 10**9, "milliseconds": 10**6, "microseconds": 10**3, "nanoseconds": 1}


def exact_time(times):
    """datetime64 (T,) -> (int64 counts, CF units) in the coarsest unit that holds every time exactly.

    Float days since 1970 miss real acquisition times by up to ~256 ns (S1 times carry seconds and
    fractions), and `.sel(time=source_time)` then fails; integer counts round-trip exactly.
    """
    ns = np.asarray(times, dtype="datetime64[ns]").astype(np.int64)
    for unit, size in TIME_UNITS.items():
        if np.all(ns % size == 0):
            return ns // size, f"{unit} since 1970-01-01"


QUALITY_TEXT = ("centre MAE (Sec. IV-A) of the frozen decoders' reconstruction of the central observation "
                "(this date, this pixel) from the embedding: mean over modalities with a valid central value of "
                "the mean over valid bands of |reconstruction - input| (S2 reflectance, S1 0-1 scaled dB)")


def write_netcdf(out, part_files, run, code_version):
    """Assemble the parts ({row block: file} of every block of the run) into one CF netCDF, chunk by chunk:
    each chunk is written once, whole, from memory-mapped parts (never the whole cube in memory).

    Returns the number of embedded pixel-dates; CubeError (and no file) when there is none."""
    import netCDF4

    header = run["header"]
    T, H, W, F = len(header["time"]), len(header["y"]), len(header["x"]), len(header["features"])
    ct, cy, cx = min(T, CHUNK_DATES), min(H, CHUNK_PIXELS), min(W, CHUNK_PIXELS)
    n_embedded = 0

    def write(tmp):
        nonlocal n_embedded
        with netCDF4.Dataset(tmp, "w") as nc:
            for dim, size in (("time", T), ("y", H), ("x", W), ("feature", F)):
                nc.createDimension(dim, size)
            tvar = nc.createVariable("time", "i8", ("time",))
            tvar[:] = np.array(header["time"], dtype=np.int64)
            tvar.units, tvar.calendar, tvar.standard_name = header["time_units"], "proleptic_gregorian", "time"
            for dim in ("y", "x"):
                var = nc.createVariable(dim, "f8", (dim,))
                var.setncatts(header[f"{dim}_attrs"])
                var[:] = np.array(header[dim], dtype=np.float64)
            fvar = nc.createVariable("feature", str, ("feature",))
            for i, name in enumerate(header["features"]):
                fvar[i] = name
            gm = header["grid_mapping"]
            if gm:
                nc.createVariable(gm, "i4").setncatts(header["grid_mapping_attrs"])
            variables = {"embedding": "DeepFeat embedding"}
            if run["fill"] == "linear":
                variables["embedding_filled"] = "DeepFeat embedding (gaps filled linearly in time)"
            for v, long_name in variables.items():
                var = nc.createVariable(v, "f4", ("time", "y", "x", "feature"), fill_value=np.float32(np.nan),
                                        chunksizes=(ct, cy, cx, F), **COMPRESSION)
                var.long_name = long_name
            S = header["quality_every"]
            if S:
                var = nc.createVariable("embedding_quality", "f4", ("time", "y", "x"), fill_value=np.float32(np.nan),
                                        chunksizes=(ct, cy, cx), **COMPRESSION)
                var.long_name, var.units = "embedding quality: centre reconstruction MAE", "1"
                var.comment = QUALITY_TEXT + ("" if S == 1 else f"; only at rows and columns that are multiples of {S}")
            if gm:
                for v in list(variables) + (["embedding_quality"] if S else []):
                    nc[v].grid_mapping = gm
            nc.setncatts({**header["attrs"], "code_version": code_version})
            blocks = [tuple(b) for b in run["blocks"]]
            counts = np.array(header["time"], dtype=np.int64)
            days = data.day_offsets((counts * TIME_UNITS[header["time_units"].split()[0]]).astype("datetime64[ns]"))
            step = max(1, -(-H // cy) // 10)                   # about ten progress lines
            for y0 in range(0, H, cy):
                y1 = min(H, y0 + cy)
                rows = [(b, np.load(part_files[b], mmap_mode="r")) for b in blocks if b[0] < y1 and b[1] > y0]
                for x0 in range(0, W, cx):
                    x1 = min(W, x0 + cx)
                    tile = np.concatenate([a[:, max(y0, r0) - r0:min(y1, r1) - r0, x0:x1] for (r0, r1), a in rows],
                                          axis=1)                                # (T, y1-y0, x1-x0, F [+ 1])
                    emb = tile[..., :F]
                    n_embedded += int(np.isfinite(emb[..., 0]).sum())
                    nc["embedding"][:, y0:y1, x0:x1] = emb
                    if S:
                        nc["embedding_quality"][:, y0:y1, x0:x1] = tile[..., F]
                    if run["fill"] == "linear":
                        nc["embedding_filled"][:, y0:y1, x0:x1] = data.interpolate_time(days, emb, days)
                if y1 == H or (y0 // cy + 1) % step == 0:
                    print(f"writing {out.name}: rows 0-{y1 - 1} of {H}", flush=True)
        if n_embedded == 0:                                 # no file: write_atomic removes the temporary one
            raise data.CubeError(f"{run['source']}: no pixel-date could be embedded (every central observation "
                                 "is missing: all-NaN bands, a cloud mask covering everything, or no date with 5 on "
                                 "each side)")
    data.write_atomic(out, write)
    return n_embedded


def _grid_mapping_name(ds):
    for var in ds.data_vars.values():
        name = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
        if name and name in ds.variables:
            return name
    return "spatial_ref" if "spatial_ref" in ds.variables else None


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_version():
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ----------------------------------------------------------------------------------------------
# 5. PCA-vs-RGB view (Sec. IV-B, Fig. 6)
# ----------------------------------------------------------------------------------------------

def pca_fit(X, k=3):
    """PCA by SVD of the centred data: X (N, F) -> (mean (F,), components (k, F), explained ratio (k,))."""
    mean = X.mean(0)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    var = s ** 2
    return mean, vt[:k], var[:k] / var.sum()


def select_features(emb):
    """The fused features when the cube has them, else all features."""
    fused = [str(f) for f in emb.feature.values if str(f).startswith("fused_")]
    return emb.sel(feature=fused) if fused else emb


def open_embedding(path):
    """The features of an embedding netCDF that the PCA reads (select_features), in memory."""
    return select_features(xr.open_dataset(path)["embedding"]).load()


def pca_basis(emb, max_rows=200_000, seed=0):
    """One PCA basis and colour stretch for a whole embedding cube (time, y, x, feature): fitted on
    its valid pixel-dates (all dates; a seeded subsample of max_rows), the stretch = 2nd-98th
    percentile of each PC. -> {"mean" (F,), "components" (3, F), "explained" (3,), "lo" (3,), "hi" (3,)}."""
    X = emb.values.reshape(-1, emb.sizes["feature"])
    X = X[np.isfinite(X).all(-1)]
    if len(X) == 0:
        raise data.CubeError("the embedding cube has no valid embedding to fit a PCA on")
    if len(X) > max_rows:
        X = X[np.random.default_rng(seed).choice(len(X), max_rows, replace=False)]
    mean, comps, ratio = pca_fit(X)
    pcs = (X - mean) @ comps.T                                                    # (N, 3)
    lo, hi = np.percentile(pcs, 2, axis=0), np.percentile(pcs, 98, axis=0)
    return {"mean": mean, "components": comps, "explained": ratio, "lo": lo, "hi": hi}


def pca_figure(embeddings, s2, out, dates="auto", n_dates=1, gain=3.5, fit=None):
    """First three principal components of the embedding as RGB beside the S2 true colour (Fig. 6).

    One basis and one stretch for every panel (pca_basis of the cube itself, or of the cube `fit`, so
    that figures of several cubes share their colours): a colour means the same embedding on every
    date and, with `fit`, in every cube. `dates` = "auto" picks the n_dates dates with the most valid
    embeddings; true colour is B04/B03/B02 reflectance x gain, clipped to 1. Returns the basis.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emb = open_embedding(embeddings)
    basis = pca_basis(open_embedding(fit) if fit else emb)
    if basis["mean"].shape != (emb.sizes["feature"],):
        raise data.CubeError(f"--fit {fit} has {basis['mean'].size} features, {embeddings} {emb.sizes['feature']}")
    if dates == "auto":
        counts = np.isfinite(emb.values).all(-1).sum((1, 2))
        picked = np.sort(np.argsort(-counts, kind="stable")[:n_dates])
    else:
        picked = [int(np.argmin(np.abs(emb.time.values - np.datetime64(d)))) for d in dates.split(",")]
    X = emb.values[picked]                                          # (n, H, W, F)
    valid = np.isfinite(X).all(-1)
    if not valid.any():
        raise data.CubeError(f"{embeddings} has no valid embedding on the chosen dates")
    rgb_cube = readers.open_s2(s2, bands=("B04", "B03", "B02"))
    fig, axes = plt.subplots(len(picked), 2, figsize=(7, 3.4 * len(picked)), squeeze=False)
    for row, (t, x, ok) in enumerate(zip(picked, X, valid)):
        pcs = (np.nan_to_num(x) - basis["mean"]) @ basis["components"].T                 # (H, W, 3)
        colour = np.where(ok[..., None], (pcs - basis["lo"]) / (basis["hi"] - basis["lo"] + 1e-12), 0)
        date = emb.time.values[t]
        true = data.cube_array(rgb_cube.sel(time=date, method="nearest").expand_dims("time"), ("B04", "B03", "B02"))[0]
        axes[row, 0].imshow(np.clip(np.nan_to_num(true.transpose(1, 2, 0)) * gain, 0, 1))
        axes[row, 0].set_title(f"S2 true colour {str(date)[:10]}")
        axes[row, 1].imshow(np.clip(colour, 0, 1))
        axes[row, 1].set_title("PC1-3 as RGB")
        for ax in axes[row]:
            ax.set_axis_off()
    fig.suptitle(f"PCA of {emb.sizes['feature']} features{' (basis of ' + Path(fit).name + ')' if fit else ''}: "
                 "explained variance " + ", ".join(f"{100 * r:.0f} %" for r in basis["explained"]))
    fig.tight_layout()
    data.write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    print(f"wrote {out} (explained variance {', '.join(f'{r:.3f}' for r in basis['explained'])})")
    return basis


# ----------------------------------------------------------------------------------------------
# 6. Command line
# ----------------------------------------------------------------------------------------------

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "pca":
        parser = data.ArgumentParser(prog="embed.py pca", description="PCA of an embedding cube vs S2 true colour (Fig. 6)")
        parser.add_argument("embeddings", help="embedding netCDF written by embed.py")
        parser.add_argument("--s2", nargs="+", required=True, help="the S2 cube the embeddings came from (true colour)")
        parser.add_argument("--date", default="auto", help="date(s) YYYY-MM-DD, comma-separated, or auto (default)")
        parser.add_argument("--n-dates", type=data.positive_int, default=1, help="with --date auto: how many dates (default 1)")
        parser.add_argument("--fit", default=None, metavar="EMB.nc", help="take the PCA basis and colour stretch from "
                            "this embedding cube, so figures of several cubes share colours (default: the cube itself)")
        parser.add_argument("--out", default="pca.png", help="output PNG (default pca.png)")
        args = parser.parse_args(argv[1:])
        pca_figure(args.embeddings, _one_or_list(args.s2), args.out, args.date, args.n_dates, fit=args.fit)
        return
    if argv and argv[0] == "merge":
        parser = data.ArgumentParser(prog="embed.py merge", description="Assemble the shards of `embed.py --shard K/N "
                                     "--out OUT` (folders OUT.shard-K-of-N.parts beside OUT) into OUT")
        parser.add_argument("out", help="the --out of the sharded runs; its shard folders must lie beside it")
        merge(parser.parse_args(argv[1:]).out)
        return
    parser = data.ArgumentParser(description="Embed S1/S2 cubes with a trained checkpoint (Sec. IV-B). "
                                             "`embed.py pca --help` for the PCA figure, `embed.py merge --help` "
                                             "to assemble shards.")
    parser.add_argument("--s2", nargs="+", help="S2 cube (netCDF), or its 10 m and 20 m files together; "
                                                "required unless the checkpoint is the S1 autoencoder")
    parser.add_argument("--s1", help="S1 cube (netCDF); required for fusion and S1 checkpoints")
    parser.add_argument("--input", nargs="+", type=data.name_value(str), default=[], metavar="NAME=FILE",
                        help="the cube of any registered modality (modalities.py), e.g. s2=S2.nc; --s2 and --s1 are "
                             "short for s2= and s1=")
    parser.add_argument("--checkpoint", required=True, help="fusion, S2 or S1 checkpoint.pt")
    parser.add_argument("--out", required=True, help="output netCDF")
    parser.add_argument("--path", choices=("fast", "reference"), default="fast",
                        help="fast (shared frame encodings, default) or reference (one patch per pixel-date)")
    parser.add_argument("--fill", choices=("none", "linear"), default="none",
                        help="also write embedding_filled, linear in time between valid dates (default none)")
    parser.add_argument("--quality-every", type=data.int_at_least(0), default=1, metavar="S",
                        help="embedding_quality (centre MAE of the decoders' reconstruction, Sec. IV-A) at the pixels "
                             "whose row and column are multiples of S, NaN elsewhere; 0: none. Decoding costs about as "
                             "much as embedding (bench.py): S = 3 adds ~1/9 of that. Default 1: every pixel-date")
    parser.add_argument("--shard", type=parse_shard, default=(1, 1), metavar="K/N",
                        help="embed only the K-th of N contiguous ranges of row blocks into OUT.shard-K-of-N.parts/ "
                             "(one machine of N, e.g. a Slurm array task); `embed.py merge OUT` then writes OUT. "
                             "Default 1/1: the whole cube, OUT written at once")
    parser.add_argument("--block-pixels", type=data.positive_int, default=2048, help="pixels per row block (default 2048)")
    parser.add_argument("--max-gap-days", type=float, default=6.0,
                        help="S1 frames further than this from the S2 date are missing (default 6 days)")
    data.add_mask_arg(parser)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast, for GPUs (on this project's 2-core CPUs it measured from 1.7x "
                             "faster to 10x slower than float32, by machine); on the sample model the median |difference| from float32 "
                             "is 0.02 for features spreading 2-18. Default float32")
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint {args.checkpoint}: not found")
    inputs = {"s2": _one_or_list(args.s2), "s1": args.s1, **dict(args.input)}
    embed_cube(inputs, args.checkpoint, args.out, path=args.path, block_pixels=args.block_pixels,
               fill=args.fill, device=args.device, amp=args.amp, max_gap_days=args.max_gap_days, mask_var=args.mask_var,
               quality_every=args.quality_every, shard=args.shard)


def _one_or_list(paths):
    """--s2 takes one file or the 10 m and 20 m files of one area."""
    return paths[0] if paths and len(paths) == 1 else paths


if __name__ == "__main__":
    data.run_cli(main)
