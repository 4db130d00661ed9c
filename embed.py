"""embed.py: analysis-ready embedding cubes, one vector per 10 m pixel and S2 date (Sec. IV-B).

    python embed.py --s2 sample_data/synth_0_s2.nc --s1 sample_data/synth_0_s1.nc \\
        --checkpoint runs/fusion/checkpoint.pt --out runs/synth_0_embeddings.nc
    python embed.py --s2 S2.nc --checkpoint runs/s2/checkpoint.pt --out s2_latents.nc   # one modality
    python embed.py pca runs/synth_0_embeddings.nc --s2 sample_data/synth_0_s2.nc --out pca.png  # Fig. 6

Output (CF netCDF): one variable `embedding` (time, y, x, feature), float32, with the input's
time/y/x coordinates and grid mapping, and `feature` named fused_0..fused_6, s1_0..s1_1,
s2_0..s2_8 for a fusion checkpoint (the latents for an autoencoder checkpoint). One variable with
a feature dimension is what xarray users select from (`ds.embedding.sel(feature="fused_0")`) and
what models take as input (`.values[..., :7]`).

Gap semantics (the paper's): the embedding of (pixel, date) is the latent of the 15 x 15 x 11
patch centred on that pixel and that S2 acquisition, so it is NaN where the central S2 observation
is missing (cloud, shadow, nodata) and for the first and last 5 dates (no 5 neighbours on each
side). At the cube's spatial edges the cube is mirrored (reflect padding, 7 px), so every pixel gets
a value. `--fill linear` adds `embedding_filled`: linear in time between valid dates (the paper
interpolates for GPP, Sec. IV-C); leading and trailing gaps stay NaN.

Two paths, same numbers (tests/test_embed.py checks max |fast - reference| <= 1e-4):
  reference  one (11, C, 15, 15) patch per pixel-date through `encode`, batched;
  fast       each frame's 15 x 15 encoding is computed once per pixel and shared by the 11 windows
             that contain it; only the temporal transformer runs per window. Exact because the
             model's gap fill is per value and the transformer attends within a sample (deepfeat.py).
The cube is processed in row blocks (with a 7-row halo) written to OUT.parts/ atomically; an
interrupted run resumes from the finished blocks and the final netCDF is written to a temp file
and renamed.
"""
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
import train
from deepfeat import FusionModel

HALF_PATCH = 7          # 15 x 15 patch: 7 px on each side of the central pixel


# ----------------------------------------------------------------------------------------------
# The model as a set of parts: per-modality autoencoders, and the fusion head when there is one
# ----------------------------------------------------------------------------------------------

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


def windows_to_embed(centre, n_frames):
    """centre (T, C, h, w) of the reference modality -> (t, pixel) indices of the embeddings to compute.

    A date needs n_frames // 2 dates on each side, and a finite central observation (all bands).
    """
    T, C, h, w = centre.shape
    half = n_frames // 2
    ok = np.isfinite(centre).all(axis=1).reshape(T, h * w)         # (T, h*w)
    ok[:half] = False
    ok[T - half:] = False
    return np.nonzero(ok)


# ----------------------------------------------------------------------------------------------
# Reference and fast paths over one padded block
# ----------------------------------------------------------------------------------------------

def embed_block(model, arrays, days, path="fast", chunk=512, frame_chunk=256, device="cpu"):
    """Embeddings of one block.

    Batches are small on purpose: 256 frames / 512 windows stay in the CPU caches and run 2-4x
    faster per item than batches of 4096 on a 2-core machine.

    arrays {m: (T, C, h + 14, w + 14)} float32 with NaN (already padded by 7 px), days {m: (T,)}
    -> (T, h, w, F) float32, NaN where no embedding is defined.
    """
    aes, ref, names = model_parts(model)
    n_frames = aes[ref].cfg.n_frames
    half = n_frames // 2
    T, _, Hp, Wp = arrays[ref].shape
    h, w = Hp - 2 * HALF_PATCH, Wp - 2 * HALF_PATCH
    out = np.full((T, h * w, len(names)), np.nan, dtype=np.float32)
    centre = arrays[ref][:, :, HALF_PATCH:HALF_PATCH + h, HALF_PATCH:HALF_PATCH + w]
    t_idx, p_idx = windows_to_embed(centre, n_frames)
    if len(t_idx) == 0:
        return out.reshape(T, h, w, -1)
    # (T, C, h, w, 15, 15) strided views: patch of pixel (i, j) in frame t, no copy
    views = {m: np.lib.stride_tricks.sliding_window_view(a, (2 * HALF_PATCH + 1,) * 2, axis=(2, 3))
             for m, a in arrays.items()}
    day_t = {m: torch.as_tensor(d, dtype=torch.float32, device=device) for m, d in days.items()}
    if path == "fast":
        tokens = {m: frame_tokens(ae, views[m], frame_chunk, device) for m, ae in aes.items()}   # {m: (T, h*w, D)}
    offsets = np.arange(-half, half + 1)
    if path == "reference":
        chunk = max(1, frame_chunk // n_frames)       # same number of frames per conv call as the fast path
    for start in range(0, len(t_idx), chunk):
        t, p = t_idx[start:start + chunk], p_idx[start:start + chunk]
        tw = torch.as_tensor(t[:, None] + offsets, device=device)                # (N, 11) frame indices
        latents = {}
        for m, ae in aes.items():
            if path == "fast":
                latents[m] = ae.encode_tokens(tokens[m][tw, torch.as_tensor(p, device=device)[:, None]],
                                              day_t[m][tw])
            else:
                i, j = p // w, p % w
                x = views[m][tw.cpu().numpy(), :, i[:, None], j[:, None]]         # (N, 11, C, 15, 15)
                latents[m] = ae.encode(torch.from_numpy(x).to(device), day_t[m][tw])
        centre_days = {m: day_t[m][torch.as_tensor(t, device=device)] for m in aes}
        out[t, p] = features_from_latents(model, latents, centre_days).float().cpu().numpy()
    return out.reshape(T, h, w, -1)


def frame_tokens(ae, view, chunk, device):
    """Per-frame encodings shared by all windows: view (T, C, h, w, 15, 15) -> tokens (T, h*w, D)."""
    T, C, h, w, P, _ = view.shape
    tokens = torch.empty(T, h * w, ae.cfg.d_model, device=device)
    for t in range(T):
        patches = view[t].transpose(1, 2, 0, 3, 4).reshape(h * w, C, P, P)      # (h*w, C, 15, 15)
        for s in range(0, h * w, chunk):
            tokens[t, s:s + chunk] = ae.encode_frames(torch.from_numpy(patches[s:s + chunk]).to(device)).float()
    return tokens


# ----------------------------------------------------------------------------------------------
# Reading blocks of real cubes (prepared per block: the preparation is per pixel, so block = whole)
# ----------------------------------------------------------------------------------------------

class CubeReader:
    """Lazily opened S2 (and S1) cubes, prepared and padded one row block at a time."""

    def __init__(self, s2=None, s1=None, modalities=("s2",), bands=None, max_gap_days=6.0, mask_var=None):
        self.modalities = modalities
        self.bands = bands
        self.max_gap_days = max_gap_days
        self.mask_var = mask_var
        self.raw_s2 = _open_raw(s2, "--s2", data.open_s2_raw) if "s2" in modalities else None
        self.raw_s1 = _open_raw(s1, "--s1", data.open_raw) if "s1" in modalities else None
        if self.raw_s1 is not None and self.raw_s2 is not None:
            data.check_same_crs(self.raw_s1, self.raw_s2, f"--s1 {s1}", f"--s2 {s2}")
        grid = self.raw_s2 if self.raw_s2 is not None else self.raw_s1
        self.grid = grid
        self.H, self.W = grid.sizes["y"], grid.sizes["x"]
        if min(self.H, self.W) < 2 * HALF_PATCH + 1:
            raise data.CubeError(f"cube is {self.H} x {self.W} px, smaller than a 15 x 15 patch")
        self.time = self.block(0, 1)[2]          # the output's time axis (S1 duplicates merged)

    def block(self, r0, r1):
        """Rows [r0, r1) -> (arrays {m: (T, C, r1-r0+14, W+14)}, days {m: (T,)}, time coordinate)."""
        lo, hi = max(0, r0 - HALF_PATCH), min(self.H, r1 + HALF_PATCH)
        arrays, days = {}, {}
        if self.raw_s2 is not None:
            s2 = data.prepare_s2(self.raw_s2.isel(y=slice(lo, hi)), bands=self.bands["s2"], mask_var=self.mask_var)
            arrays["s2"], days["s2"], time_coord = data.cube_array(s2, self.bands["s2"]), data.day_offsets(s2.time), s2.time
        if self.raw_s1 is not None:
            if self.raw_s2 is not None:
                s1 = data.prepare_s1(_rows_near(self.raw_s1, s2.y.values), target=s2)
                s1 = data.match_s1_to_s2(s1, s2, max_gap_days=self.max_gap_days)
                days["s1"] = data.day_offsets(s1.s1_time)
            else:
                s1 = data.prepare_s1(self.raw_s1.isel(y=slice(lo, hi)))
                days["s1"], time_coord = data.day_offsets(s1.time), s1.time
            arrays["s1"] = data.cube_array(s1, self.bands["s1"])
        pad = ((0, 0), (0, 0), (HALF_PATCH - (r0 - lo), HALF_PATCH - (hi - r1)), (HALF_PATCH, HALF_PATCH))
        return {m: np.pad(a, pad, mode="reflect") for m, a in arrays.items()}, days, time_coord


def _open_raw(path, flag, opener):
    """Open lazily; S2 may be several files of one area (10 m + 20 m), combined by data.open_s2_raw."""
    if path is None:
        raise SystemExit(f"this checkpoint needs {flag}")
    for p in [path] if isinstance(path, (str, os.PathLike)) else path:
        if not Path(p).exists():
            raise SystemExit(f"{flag} {p}: no such file")
    return opener(path)


def _rows_near(raw, y_values, margin_px=2):
    """The rows of `raw` (any resolution) covering y_values, plus a margin of its own pixels."""
    y = raw.y.values
    step = np.abs(np.diff(y)).max() if len(y) > 1 else 0.0
    keep = np.flatnonzero((y >= y_values.min() - margin_px * step) & (y <= y_values.max() + margin_px * step))
    if len(keep) == 0:
        raise data.CubeError("the S1 cube does not overlap the S2 cube in y")
    return raw.isel(y=slice(keep[0], keep[-1] + 1))


# ----------------------------------------------------------------------------------------------
# The whole cube: row blocks -> parts on disk -> one netCDF
# ----------------------------------------------------------------------------------------------

def embed_cube(s2, s1, checkpoint, out, path="fast", block_pixels=2048, fill="none", device="cpu",
               amp=False, max_gap_days=6.0, mask_var=None):
    """Embed a cube block by block, resumably; write OUT (netCDF) atomically. Returns OUT.

    CubeError for a cube with fewer dates than a patch has frames, or where no pixel-date at all can be
    embedded (then no file is written: an all-NaN cube is a mistake, not a result)."""
    model, ckpt = train.load_model(checkpoint)
    device = train.resolve_device(device)
    model.to(device)
    aes, ref, names = model_parts(model)
    bands = {m: ae.cfg.bands for m, ae in aes.items()}
    reader = CubeReader(s2, s1, tuple(aes), bands, max_gap_days, mask_var)
    n_frames = aes[ref].cfg.n_frames
    source = f"--{ref} {s2 if ref == 's2' else s1}"
    if len(reader.time) < n_frames:
        raise data.CubeError(f"{source}: {len(reader.time)} dates; an embedding needs {n_frames} "
                             f"(its date and {n_frames // 2} on each side)")
    rows = max(1, block_pixels // reader.W)
    blocks = [(r, min(r + rows, reader.H)) for r in range(0, reader.H, rows)]
    out = Path(out)
    parts = out.with_name(out.name + ".parts")
    plan = {"checkpoint_sha256": file_sha256(checkpoint), "s2": str(s2), "s1": str(s1), "path": path,
            "blocks": blocks, "max_gap_days": max_gap_days}
    _start_parts(parts, plan)
    done = sum((parts / _part_name(b)).exists() for b in blocks)
    print(f"embedding {reader.H} x {reader.W} px in {len(blocks)} blocks of {rows} rows "
          f"({path} path, {device}{', bf16' if amp else ''}); {done} done already", flush=True)
    t0, n_done, n_embedded = time.time(), 0, 0
    for k, (r0, r1) in enumerate(blocks):
        part = parts / _part_name((r0, r1))
        if part.exists():
            continue
        arrays, days, _ = reader.block(r0, r1)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            emb = embed_block(model, arrays, days, path, device=device)        # (T, rows, W, F)
        _save_atomic(part, emb)
        n_done += 1
        n_embedded += int(np.isfinite(emb[..., 0]).sum())
        eta = (len(blocks) - k - 1) * (time.time() - t0) / n_done
        print(f"block {k + 1}/{len(blocks)} rows {r0}-{r1 - 1} | {n_embedded / (time.time() - t0):.0f} "
              f"embedded pixel-dates/s | ETA {eta:.0f} s", flush=True)
    n_embedded = write_netcdf(out, parts, blocks, reader, names, fill, attrs={
        "checkpoint": str(checkpoint), "checkpoint_sha256": plan["checkpoint_sha256"],
        "checkpoint_kind": ckpt["kind"], "bands": json.dumps({m: list(b) for m, b in bands.items()}),
        "s2_source": str(s2), "s1_source": str(s1),
        "normalisation": "S2 reflectance (DN + offset) / 10000; S1 dB clipped to "
                         + json.dumps(data.S1_DB_RANGE) + " and scaled to 0-1",
        "gaps": "NaN where the central S2 observation is missing and for the first/last 5 dates; "
                "spatial edges reflect-padded by 7 px",
        "code_version": code_version(), "path": path}, source=source)
    shutil.rmtree(parts)
    print(f"wrote {out}: {n_embedded} of {len(reader.time) * reader.H * reader.W} pixel-dates embedded")
    return out


def _part_name(block):
    return f"rows_{block[0]:06d}_{block[1]:06d}.npy"


def _start_parts(parts, plan):
    """Create OUT.parts/ with plan.json, or check that existing parts belong to the same plan."""
    plan_file = parts / "plan.json"
    if plan_file.exists():
        if json.loads(plan_file.read_text()) != json.loads(json.dumps(plan)):
            raise SystemExit(f"{parts} holds blocks of a different run (inputs, checkpoint or blocks differ): "
                             "remove it or choose another --out")
        return
    parts.mkdir(parents=True, exist_ok=True)
    tmp = plan_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(plan))
    os.replace(tmp, plan_file)


def _save_atomic(path, array):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def exact_time(times):
    """datetime64 (T,) -> (int64 counts, CF units) in the coarsest unit that holds every time exactly.

    Float days since 1970 miss real acquisition times by up to ~256 ns (S1 times carry seconds and
    fractions), and `.sel(time=source_time)` then fails; integer counts round-trip exactly.
    """
    ns = np.asarray(times, dtype="datetime64[ns]").astype(np.int64)
    for unit, size in (("days", 86_400 * 10**9), ("seconds", 10**9), ("milliseconds", 10**6),
                       ("microseconds", 10**3), ("nanoseconds", 1)):
        if np.all(ns % size == 0):
            return ns // size, f"{unit} since 1970-01-01"


def write_netcdf(out, parts, blocks, reader, names, fill, attrs, source):
    """Assemble the parts into one CF netCDF, block by block (never the whole cube in memory).

    Returns the number of embedded pixel-dates; CubeError (and no file) when there is none."""
    import netCDF4

    grid, time_coord = reader.grid, reader.time
    tmp = out.with_name(out.name + ".tmp")
    T, H, W, F = len(time_coord), reader.H, reader.W, len(names)
    n_embedded = 0
    with netCDF4.Dataset(tmp, "w") as nc:
        for dim, size in (("time", T), ("y", H), ("x", W), ("feature", F)):
            nc.createDimension(dim, size)
        tvar = nc.createVariable("time", "i8", ("time",))
        counts, units = exact_time(time_coord.values)
        tvar[:] = counts
        tvar.units, tvar.calendar, tvar.standard_name = units, "proleptic_gregorian", "time"
        for dim in ("y", "x"):
            var = nc.createVariable(dim, "f8", (dim,))
            var.setncatts({k: v for k, v in grid[dim].attrs.items() if isinstance(v, (str, int, float))})
            var[:] = grid[dim].values
        fvar = nc.createVariable("feature", str, ("feature",))
        for i, name in enumerate(names):
            fvar[i] = name
        grid_mapping = _grid_mapping_name(grid)
        if grid_mapping:
            gm = nc.createVariable(grid_mapping, "i4")
            gm.setncatts({k: v for k, v in grid[grid_mapping].attrs.items() if isinstance(v, (str, int, float))})
        variables = ["embedding"] + (["embedding_filled"] if fill == "linear" else [])
        for v in variables:
            var = nc.createVariable(v, "f4", ("time", "y", "x", "feature"), zlib=True, complevel=1,
                                    fill_value=np.float32(np.nan), chunksizes=(1, min(H, 64), W, F))
            var.long_name = "DeepFeat embedding" + (" (gaps filled linearly in time)" if v != "embedding" else "")
            if grid_mapping:
                var.grid_mapping = grid_mapping
        nc.setncatts({**{k: v for k, v in grid.attrs.items() if k.startswith("tower_")}, **attrs,
                      "Conventions": "CF-1.8"})
        for r0, r1 in blocks:
            emb = np.load(parts / _part_name((r0, r1)))                # (T, rows, W, F)
            n_embedded += int(np.isfinite(emb[..., 0]).sum())
            nc["embedding"][:, r0:r1] = emb
            if fill == "linear":
                nc["embedding_filled"][:, r0:r1] = fill_linear(data.day_offsets(time_coord), emb)
    if n_embedded == 0:
        tmp.unlink()
        raise data.CubeError(f"{source}: no pixel-date could be embedded (every central observation is missing: all-NaN "
                             "bands, a cloud mask covering everything, or no date with 5 on each side)")
    os.replace(tmp, out)
    return n_embedded


def _grid_mapping_name(ds):
    for var in ds.data_vars.values():
        name = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
        if name and name in ds.variables:
            return name
    return "spatial_ref" if "spatial_ref" in ds.variables else None


def fill_linear(days, values):
    """Linear interpolation in time of NaN gaps: days (T,), values (T, ...) -> same shape.

    Only between valid dates: leading and trailing gaps stay NaN (no extrapolation).
    """
    flat = values.reshape(len(days), -1)                             # (T, N)
    out = flat.copy()
    for n in np.flatnonzero(np.isnan(flat).any(0) & np.isfinite(flat).sum(0).astype(bool)):
        ok = np.isfinite(flat[:, n])
        inside = (days >= days[ok][0]) & (days <= days[ok][-1])
        out[inside, n] = np.interp(days[inside], days[ok], flat[ok, n])
    return out.reshape(values.shape)


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
# PCA-vs-RGB view (Sec. IV-B, Fig. 6)
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
    rgb_cube = data.open_s2(s2, bands=("B04", "B03", "B02"))
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
    tmp = Path(str(out) + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    print(f"wrote {out} (explained variance {', '.join(f'{r:.3f}' for r in basis['explained'])})")
    return basis


# ----------------------------------------------------------------------------------------------
# Command line
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
    parser = data.ArgumentParser(description="Embed S1/S2 cubes with a trained checkpoint (Sec. IV-B). "
                                             "`embed.py pca --help` for the PCA figure.")
    parser.add_argument("--s2", nargs="+", help="S2 cube (netCDF), or its 10 m and 20 m files together; "
                                                "required unless the checkpoint is the S1 autoencoder")
    parser.add_argument("--s1", help="S1 cube (netCDF); required for fusion and S1 checkpoints")
    parser.add_argument("--checkpoint", required=True, help="fusion, S2 or S1 checkpoint.pt")
    parser.add_argument("--out", required=True, help="output netCDF")
    parser.add_argument("--path", choices=("fast", "reference"), default="fast",
                        help="fast (shared frame encodings, default) or reference (one patch per pixel-date)")
    parser.add_argument("--fill", choices=("none", "linear"), default="none",
                        help="also write embedding_filled, linear in time between valid dates (default none)")
    parser.add_argument("--block-pixels", type=data.positive_int, default=2048, help="pixels per row block (default 2048)")
    parser.add_argument("--max-gap-days", type=float, default=6.0,
                        help="S1 frames further than this from the S2 date are missing (default 6 days)")
    data.add_mask_arg(parser)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast: ~1.7x faster on CPU; on the sample model the median |difference| "
                             "from float32 is 0.02 for features spreading 2-18. Default float32")
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        parser.error(f"--checkpoint {args.checkpoint}: not found")
    embed_cube(_one_or_list(args.s2), args.s1, args.checkpoint, args.out, args.path, args.block_pixels, args.fill,
               args.device, args.amp, args.max_gap_days, args.mask_var)


def _one_or_list(paths):
    """--s2 takes one file or the 10 m and 20 m files of one area."""
    return paths[0] if paths and len(paths) == 1 else paths


if __name__ == "__main__":
    data.run_cli(main)
