"""data.py: the cube conventions and the paper's definition of a training sample.

Peters et al., "Context-Aware Multimodal Representation Learning for Spatio-Temporally Explicit
Environmental Modelling" (arXiv 2511.11706). Read this file first: what a cube is, how a sample is
cut from it (Sec. III-B), how cubes are split (Sec. II) and how S1 meets S2 (Sec. III-C).
Real files become cubes in readers.py; seeded synthetic cubes come from synthetic.py.

Cube convention (readers.py returns it, every model script consumes it):
    an xarray.Dataset with dims (time, y, x), one float32 variable per band, a datetime64 `time`
    coordinate (strictly increasing), x/y pixel-centre coordinates in metres, evenly spaced, y
    decreasing and x increasing (a north-up raster, check_grid) and, where the input had one, a CF
    grid-mapping coordinate (`spatial_ref`) referenced by each band's `grid_mapping` attr.
    S2: bands B02 B03 B04 B05 B06 B07 B08 B8A B11 B12, surface reflectance (0-1.x), 10 m grid.
    S1: bands vv vh, gamma0/sigma0 in dB scaled to 0-1 with the fixed bounds S1_DB_RANGE.
    Nodata (fill values, clouds, shadows, outside the swath) is NaN, never zero. Samples keep the
    NaN; the validity mask is `np.isfinite(x)`, which the model and the loss receive.

Sections: 1. conventions  2. patch sampling (Sec. III-B)  3. splits (Sec. II)  4. dates and cube
checks  5. a modality matched to the reference dates (Sec. III-C)  6. errors, atomic writes and
command-line helpers. Not a script: `python readers.py inspect FILE` shows what the readers make of a
file, `python synthetic.py` rewrites sample_data/. data.py imports no other module of the project.
"""
import argparse
import csv
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from numpy.lib.stride_tricks import sliding_window_view

# ---------------------------------------------------------------------------------------------
# 1. Conventions
# ---------------------------------------------------------------------------------------------

# A sample (Sec. III-B): 15 x 15 pixels x 11 frames, centred on pixel (7, 7) of frame 5. Every size
# elsewhere (the sampling and model configs, the embedding halo, the cube checks) derives from these.
PATCH = 15
N_FRAMES = 11

S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")   # the 10-20 m bands (Sec. II)
S1_BANDS = ("vv", "vh")

# Sec. II: S1 is "normalised to the same 0-1 range" as S2. Fixed dB bounds, not per-cube min/max,
# so every cube uses the same scale: 0 = lo dB, 1 = hi dB, clipped. They cover vegetated land
# (VV about -15..-5 dB, VH about -22..-10 dB) with room for water (low) and built-up areas (high).
S1_DB_RANGE = {"vv": (-25.0, 0.0), "vh": (-30.0, -5.0)}

NO_MASK = "none"          # mask_var / --mask-var value: use the bands as they are, without a cloud mask

DAY = np.timedelta64(1, "D")
EPOCH = np.datetime64("1970-01-01", "ns")


def db_to_linear(db):
    """dB -> linear power: 10 ** (dB / 10)."""
    return 10.0 ** (np.asarray(db, dtype=np.float64) / 10.0)


def linear_to_db(linear):
    """Linear power -> dB: 10 * log10(x); NaN for x <= 0 (no backscatter measured)."""
    x = np.asarray(linear, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, 10.0 * np.log10(np.where(x > 0, x, 1.0)), np.nan)


# ---------------------------------------------------------------------------------------------
# 2. Patch sampling (Sec. III-B: 15 x 15 px x 11 frames out of 40 (S1) or 20 (S2, fusion) frames;
#    each modality's SamplingConfig is in its entry, modalities.py)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamplingConfig:
    """Sec. III-B sampling: sequences of `seq_len` frames every `t_stride` frames, patch corners every
    `s_stride` pixels, `n_frames` of each sequence drawn at random (kept in time order)."""
    seq_len: int
    t_stride: int
    s_stride: int
    n_frames: int = N_FRAMES
    patch: int = PATCH


def patch_index(T, H, W, cfg, rng):
    """All (sequence, patch corner) combinations of a T x H x W cube and their random frames.

    Sequences start at t0 = 0, t_stride, ... while t0 + seq_len <= T; a cube with fewer than seq_len
    but at least n_frames dates gives one sequence of all T frames. Corners y0, x0 = 0, s_stride, ...
    while y0 + patch <= H (W). Each combination draws n_frames of its frames without replacement,
    sorted in time. Returns frames (N, n_frames) int64, y0 (N,), x0 (N,).
    """
    if T >= cfg.seq_len:
        length, t0 = cfg.seq_len, np.arange(0, T - cfg.seq_len + 1, cfg.t_stride)
    elif T >= cfg.n_frames:
        length, t0 = T, np.zeros(1, dtype=np.int64)
    else:
        raise CubeError(f"only {T} dates, a sample needs at least {cfg.n_frames}")
    if H < cfg.patch or W < cfg.patch:
        raise CubeError(f"{H} x {W} pixels is smaller than a {cfg.patch} x {cfg.patch} patch")
    ys = np.arange(0, H - cfg.patch + 1, cfg.s_stride)
    xs = np.arange(0, W - cfg.patch + 1, cfg.s_stride)
    tt, yy, xx = (a.ravel() for a in np.meshgrid(t0, ys, xs, indexing="ij"))
    draw = np.sort(np.argsort(rng.random((tt.size, length)), axis=1)[:, :cfg.n_frames], axis=1)
    return tt[:, None] + draw, yy, xx  # (N, F), (N,), (N,)


def gather_patches(array, frames, y0, x0, patch):
    """Vectorised gather: array (T, C, H, W), frames (N, F), corners y0/x0 (N,) -> (N, F, C, P, P).

    One fancy-indexing call on a zero-copy sliding-window view, so numpy copies whole P x P windows
    (about 10x faster than indexing every pixel with broadcast t/c/y/x index arrays).
    """
    windows = sliding_window_view(array, (patch, patch), axis=(2, 3))  # (T, C, H-P+1, W-P+1, P, P)
    return windows[frames, :, y0[:, None], x0[:, None]]               # (N, F, C, P, P)


def clear_map(array):
    """(T, C, H, W) values -> (T, H, W) bool: the observation is valid in every band."""
    return np.isfinite(array).all(axis=1)


def centre_is_clear(clear, frames, y0, x0, cfg):
    """The cloud policy of a sample: its central observation (frame F // 2, pixel (P // 2, P // 2))
    is valid in every band. clear (T, H, W) from clear_map, frames (N, F), corners (N,) -> (N,) bool."""
    c = cfg.patch // 2
    return clear[frames[:, cfg.n_frames // 2], y0 + c, x0 + c]


def sample_patches(arrays, days, cfg, rng, key):
    """Sec. III-B samples of one cube: {name: (x (N, F, C, P, P) float32, d (N, F) float64 days)}.

    arrays[name] (T, C, H, W) float32 with NaN and days[name] (T,) (day_offsets) share T, H, W across
    modalities (fusion: S1 already matched to the S2 dates, its days from source_time). All modalities
    use the same frames and corners. Cloud policy: a sample is kept only if its central observation
    (frame F // 2, pixel (P // 2, P // 2)) in modality `key` is valid in every band; any other NaN is
    kept, so the loss masks it (mask = isfinite(x)) instead of seeing zeros that pretend to be data.
    """
    if key not in arrays:
        raise CubeError(f"sample_patches: key {key!r} not among modalities {sorted(arrays)}")
    arrays = {n: np.asarray(a, dtype=np.float32) for n, a in arrays.items()}
    ref = arrays[key]
    if ref.ndim != 4:
        raise CubeError(f"sample_patches: {key} has shape {ref.shape}, expected (T, C, H, W)")
    T, C, H, W = ref.shape
    for n, a in arrays.items():
        if a.ndim != 4 or a.shape[0] != T or a.shape[2:] != (H, W):
            raise CubeError(f"sample_patches: {n} has shape {a.shape}, expected (T={T}, C, {H}, {W})")
        if n not in days or np.shape(days[n]) != (T,):
            raise CubeError(f"sample_patches: days[{n!r}] missing or not of shape ({T},)")
    frames, y0, x0 = patch_index(T, H, W, cfg, rng)
    keep = centre_is_clear(clear_map(ref), frames, y0, x0, cfg)
    frames, y0, x0 = frames[keep], y0[keep], x0[keep]
    return {n: (gather_patches(a, frames, y0, x0, cfg.patch),
                np.asarray(days[n], dtype=np.float64)[frames])
            for n, a in arrays.items()}


# ---------------------------------------------------------------------------------------------
# 3. Splits (Sec. II: train/val/test by cube, 75/17/8 %; by tile for one or two cubes)
# ---------------------------------------------------------------------------------------------

def split_cubes(names, fractions=(0.75, 0.17, 0.08), seed=0):
    """Split cube names into {"train", "val", "test"} by cube (Sec. II), seeded, order-independent.

    val and test get round(fraction * n) cubes, at least one each when n >= 3; train the rest. With
    fewer than 3 cubes, train gets the first and val the second; test stays empty.
    """
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise CubeError("split_cubes: duplicate cube names")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise CubeError(f"split_cubes: fractions must be three non-negative numbers summing to 1, "
                        f"got {fractions}")
    order = [sorted(names)[i] for i in np.random.default_rng(seed).permutation(len(names))]
    n = len(order)
    if n >= 3:
        n_val = max(1, round(fractions[1] * n))
        n_test = max(1, round(fractions[2] * n))
        n_train = max(1, n - n_val - n_test)
        n_val = n - n_train - n_test
    else:
        n_train, n_val = min(n, 1), max(n - 1, 0)
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val],
            "test": order[n_train + n_val:]}


# One cube (or two) cannot be split by cube: it is cut into square tiles instead, TILE_GAP px apart
# so that no train patch touches a val/test patch (a 15 px patch reaches 7 px beyond its centre).
TILE_SIZE = 28
TILE_GAP = 8


def tile_cube(cube, size=TILE_SIZE, gap=TILE_GAP):
    """A loaded cube (see modalities.load_training_cubes) -> disjoint tiles of size x size px, `gap` px apart.

    Tiles start at 0, size + gap, ... along y and x while they fit; each is a cube of its own, named
    'NAME[y0:y1,x0:x1]', with views (no copies) of the cube's arrays.
    """
    H, W = next(iter(cube["arrays"].values())).shape[2:]
    return [{"name": f"{cube['name']}[{y0}:{y0 + size},{x0}:{x0 + size}]",
             "arrays": {m: a[:, :, y0:y0 + size, x0:x0 + size] for m, a in cube["arrays"].items()},
             "days": cube["days"]}
            for y0 in range(0, H - size + 1, size + gap) for x0 in range(0, W - size + 1, size + gap)]


# ---------------------------------------------------------------------------------------------
# 4. Dates and cube checks
# ---------------------------------------------------------------------------------------------

def day_offsets(time):
    """Dates -> float64 days since 1970-01-01 (fractional days kept). The only date-to-number step.

    Accepts a DataArray, a numpy datetime64 array (any unit) or ISO date strings. Differences of
    these offsets are the real acquisition gaps that the temporal encoding sees (Sec. III-B).
    """
    t = np.asarray(getattr(time, "values", time))
    if t.dtype.kind != "M":
        try:
            t = t.astype("datetime64[ns]")
        except (TypeError, ValueError) as err:
            raise CubeError(f"cannot read dates of dtype {t.dtype} as datetime64: {err}") from None
    if np.isnat(t).any():
        raise CubeError("dates contain NaT (not-a-time)")
    return ((t - EPOCH) / DAY).astype(np.float64)


def interpolate_time(days, values, at_days):
    """Linear interpolation in time between each series' valid observations: days (T,) increasing,
    values (T, ...) with NaN gaps, at_days (N,) -> (N, ...) in values' float dtype. Before a series'
    first or after its last valid observation the result is NaN: no extrapolation, never the edge
    value held. The one interpolation of the project: embed.py --fill linear (at the S2 dates) and
    the daily GPP predictors (Sec. IV-C: the paper interpolates to daily values)."""
    days, values = np.asarray(days, dtype=np.float64), np.asarray(values)
    flat = values.reshape(len(days), -1)                                             # (T, S)
    dtype = values.dtype if values.dtype.kind == "f" else np.float64
    out = np.full((len(at_days), flat.shape[1]), np.nan, dtype=dtype)                # (N, S)
    for n in np.flatnonzero(np.isfinite(flat).any(0)):
        ok = np.isfinite(flat[:, n])
        out[:, n] = np.interp(at_days, days[ok], flat[ok, n], left=np.nan, right=np.nan)
    return out.reshape((len(at_days),) + values.shape[1:])


def _check_times(t, name, allow_duplicates=False):
    """Raise CubeError unless `t` is datetime64, free of NaT, increasing (and unique unless allowed)."""
    if t.dtype.kind != "M":
        raise CubeError(f"{name}: time coordinate has dtype {t.dtype}, expected datetime64")
    if np.isnat(t).any():
        raise CubeError(f"{name}: time coordinate contains NaT")
    step = np.diff(t)
    back = np.flatnonzero(step < np.timedelta64(0, "ns"))
    if back.size:
        i = back[0]
        raise CubeError(f"{name}: times are not increasing ({t[i]} is followed by {t[i + 1]}); "
                        "sort the cube by time")
    same = np.flatnonzero(step == np.timedelta64(0, "ns"))
    if same.size and not allow_duplicates:
        raise CubeError(f"{name}: duplicate times ({t[same[0]]} appears more than once); "
                        "merge or drop the duplicates")


# Steps of an evenly spaced grid may differ by float rounding, never by this share of a pixel.
GRID_STEP_RTOL = 1e-3


def check_grid(ds, name):
    """Raise CubeError unless y decreases and x increases in even steps (a north-up raster).

    A patch takes neighbouring rows and columns as neighbouring pixels of one size, oriented as the
    models learnt them; a flipped, shuffled or gappy axis would give patches of the wrong pixels.
    Dims without a coordinate (pixel indices) and single pixels pass."""
    for dim, sign, way in (("y", -1, "decrease (north up)"), ("x", 1, "increase (west to east)")):
        if dim not in ds.coords or ds[dim].ndim != 1 or ds.sizes[dim] < 2:
            continue
        step = np.diff(np.asarray(ds[dim].values, dtype=np.float64))
        if not (np.sign(step) == sign).all():
            how = "runs the other way" if (np.sign(step) == -sign).all() else "is not monotonic"
            raise CubeError(f"{name}: {dim} must {way} from pixel to pixel, as in a north-up raster, but it {how}; "
                            f"flip or sort it first (e.g. ds.sortby('{dim}', ascending={sign > 0}))")
        if np.abs(step - np.median(step)).max() > GRID_STEP_RTOL * np.abs(np.median(step)):
            raise CubeError(f"{name}: {dim} is irregular (steps from {np.abs(step).min():g} to {np.abs(step).max():g}): "
                            "a patch needs one pixel size; regrid the cube onto an even grid")


def time_values(ds, name, allow_duplicates=False):
    """The checked time coordinate of `ds` as a datetime64 array."""
    if "time" not in ds.coords:
        raise CubeError(f"{name}: missing time coordinate (the 'time' dimension has no dates)")
    t = np.asarray(ds["time"].values)
    _check_times(t, name, allow_duplicates)
    return t


def validate_cube(ds, bands, min_dates=N_FRAMES, min_size=PATCH, name="cube"):
    """Check a prepared cube against the convention; raise CubeError naming the first problem.

    Requires: an xarray.Dataset; every band in `bands` present with dims exactly (time, y, x); a
    datetime64 `time` coordinate, strictly increasing, unique; >= `min_dates` dates and >= `min_size`
    pixels along y and x (a Sec. III-B sample needs 11 dates and 15 x 15 px); no band entirely NaN.
    """
    if not isinstance(ds, xr.Dataset):
        raise CubeError(f"{name}: expected an xarray.Dataset, got {type(ds).__name__}")
    missing = [b for b in bands if b not in ds.data_vars]
    if missing:
        raise CubeError(f"{name}: missing band(s) {', '.join(missing)}; "
                        f"variables are {', '.join(map(str, ds.data_vars)) or 'none'}")
    for b in bands:
        if tuple(ds[b].dims) != ("time", "y", "x"):
            raise CubeError(f"{name}: band {b} has dims {tuple(ds[b].dims)}, expected (time, y, x)")
    t = time_values(ds, name)
    if len(t) < min_dates:
        raise CubeError(f"{name}: only {len(t)} dates, a sample needs at least {min_dates}")
    H, W = ds.sizes["y"], ds.sizes["x"]
    if H < min_size or W < min_size:
        raise CubeError(f"{name}: {H} x {W} pixels is smaller than a {min_size} x {min_size} patch")
    for b in bands:
        if not np.isfinite(ds[b].values).any():
            raise CubeError(f"{name}: band {b} is all-NaN (no valid observation)")


# ---------------------------------------------------------------------------------------------
# 5. A modality matched to the reference dates (Sec. III-C: the closest acquisition, on one grid)
# ---------------------------------------------------------------------------------------------

def match_dates(cube, ref, max_gap_days=6.0, name="S1", ref_name="S2"):
    """For each date of `ref` the closest acquisition of `cube` within `max_gap_days` (Sec. III-C: the
    S1 acquisition closest to each S2 date).

    `cube` must already be on the grid of `ref` (its reader's target=ref). Returns a cube with ref's
    time, y, x, cube's variables (an all-NaN frame where no acquisition lies within the gap; one frame
    may serve several dates), coordinate `source_time` (time,) = the acquisition used, or the
    reference date itself where there is none (never NaT), and `matched` (time,) bool. Ties go to
    the earlier acquisition. `name` and `ref_name` label the two cubes in messages.
    """
    for label, ds in ((name, cube), (ref_name, ref)):
        if not isinstance(ds, xr.Dataset) or "x" not in ds.coords or "y" not in ds.coords:
            raise CubeError(f"match_dates: {label} must be a Dataset with x/y coordinates")
    check_same_crs(cube, ref, f"match_dates: the {name} cube", f"the {ref_name} cube")
    src_t = time_values(cube, f"{name} cube")
    ref_t = time_values(ref, f"{ref_name} cube")
    same_grid = all(cube.sizes[d] == ref.sizes[d] and
                    np.allclose(cube[d].values, ref[d].values, rtol=0, atol=1e-3) for d in ("y", "x"))
    if not same_grid:
        spans = {d: [(float(c[d].min()), float(c[d].max())) for c in (cube, ref)] for d in ("y", "x")}
        if any(min(a[1], b[1]) < max(a[0], b[0]) for a, b in spans.values()):
            raise CubeError(f"match_dates: {name} and {ref_name} cubes do not overlap in space")
        raise CubeError(f"match_dates: {name} is not on the {ref_name} grid (y/x differ); "
                        f"prepare it with the {ref_name} cube as target first")
    d_src, d_ref = day_offsets(src_t), day_offsets(ref_t)
    idx, _ = nearest_index(d_src, d_ref)  # ties go to the lower value: the earlier acquisition
    matched = np.abs(d_src[idx] - d_ref) <= max_gap_days
    if not matched.any():
        raise CubeError(f"match_dates: {name} ({src_t[0]} .. {src_t[-1]}) and {ref_name} ({ref_t[0]} .. {ref_t[-1]}) "
                        f"do not overlap in time (no {name} date within {max_gap_days} days of any {ref_name} date)")
    variables = {}
    for v in cube.data_vars:
        if tuple(cube[v].dims) != ("time", "y", "x"):
            continue
        arr = cube[v].values[idx]  # (T_ref, H, W)
        arr[~matched] = np.nan
        variables[v] = xr.Variable(("time", "y", "x"), arr, dict(cube[v].attrs))
    coords = {"time": ref["time"].variable, "y": ref["y"].variable, "x": ref["x"].variable,
              "source_time": ("time", np.where(matched, src_t[idx], ref_t)),
              "matched": ("time", matched)}
    for c in cube.coords:
        if cube[c].ndim == 0:
            coords[c] = cube[c].variable
    attrs = dict(cube.attrs, max_gap_days=float(max_gap_days),
                 matching=f"closest {name} date to each {ref_name} date (Sec. III-C)")
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def cube_array(ds, bands):
    """Cube -> (T, C, H, W) float32 numpy array, bands in the given order, NaN kept."""
    missing = [b for b in bands if b not in ds.data_vars]
    if missing:
        raise CubeError(f"cube_array: missing band(s) {', '.join(missing)}; "
                        f"variables are {', '.join(map(str, ds.data_vars))}")
    return np.stack([ds[b].transpose("time", "y", "x").values.astype(np.float32, copy=False)
                     for b in bands], axis=1)  # (T, C, H, W)


def nearest_index(src, dst):
    """For each coordinate in `dst`, the index of the nearest coordinate in `src`, any order.

    Returns (idx, inside): `inside` is False where `dst` lies more than half a source pixel
    (median spacing) from every source centre, i.e. outside the source footprint.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.size == 1:
        return np.zeros(dst.size, dtype=np.int64), np.isclose(dst, src[0])
    order = np.argsort(src, kind="stable")
    s = src[order]
    pos = np.clip(np.searchsorted(s, dst), 1, s.size - 1)
    pick = np.where(np.abs(dst - s[pos - 1]) <= np.abs(s[pos] - dst), pos - 1, pos)
    idx = order[pick]
    half = 0.5 * np.median(np.abs(np.diff(s))) * (1 + 1e-6)
    return idx, np.abs(src[idx] - dst) <= half


def grid_mapping(ds, var_names):
    """Name of the CF grid-mapping variable of `ds` (from the bands' grid_mapping attr), or None."""
    for v in var_names:
        gm = ds[v].attrs.get("grid_mapping")
        if gm and gm in ds.variables and ds[gm].ndim == 0:
            return gm
    for gm in ("spatial_ref", "crs"):
        if gm in ds.variables and ds[gm].ndim == 0:
            return gm
    return None


def crs_text(ds, gm):
    """The WKT/CRS string of a grid-mapping variable, for a same-CRS check (None if unknown)."""
    if gm is None:
        return None
    attrs = ds[gm].attrs
    return attrs.get("crs_wkt") or attrs.get("spatial_ref")


def crs_id(ds):
    """'EPSG:3035' from the grid mapping's WKT (its last EPSG code: the CRS's own) or a global `crs`
    attribute; else the CRS text; None when the cube names no CRS."""
    text = crs_text(ds, grid_mapping(ds, list(ds.data_vars))) or ds.attrs.get("crs")
    if text is None:
        return None
    codes = re.findall(r'EPSG[",:]+(\d+)', str(text))
    return f"EPSG:{codes[-1]}" if codes else str(text)


def check_same_crs(ds, ref, name, ref_name):
    """CubeError when both grids name a CRS and they differ: x/y in metres of two projections can
    overlap numerically and would be matched pixel by pixel without a word (no reprojection here)."""
    crs, ref_crs = crs_id(ds), crs_id(ref)
    if crs is not None and ref_crs is not None and crs != ref_crs:
        raise CubeError(f"{name} is in {crs[:60]}, {ref_name} in {ref_crs[:60]}: reproject it onto the "
                        "grid of the other first (e.g. gdalwarp or rioxarray's reproject_match)")


# ---------------------------------------------------------------------------------------------
# 6. Errors, atomic writes and command-line helpers (one line on stderr, exit 2)
# ---------------------------------------------------------------------------------------------

WRITER = f"{socket.gethostname()}-{os.getpid()}"      # in temp-file names: writers never collide


def write_atomic(path, write):
    """Write `path` all at once: write(tmp) fills a temporary file beside it, then os.replace renames
    it over `path`, so a reader sees the old file or the new one, never half of one. The temporary
    name carries this process (WRITER: DDP ranks and shards write side by side) and keeps the suffix
    (np.save, savefig and netCDF go by it); it is removed when write(tmp) fails or is interrupted."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{WRITER}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_csv(path, rows, columns=None):
    """A CSV table, atomically (write_atomic): dict rows under the header `columns`, or, without
    columns, lists of values (the first one the header)."""
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            if columns is None:
                csv.writer(f).writerows(rows)
            else:
                writer = csv.DictWriter(f, columns)
                writer.writeheader()
                writer.writerows(rows)
    write_atomic(path, write)


class InputError(ValueError):
    """Bad input to any stage (a cube, a flux table, a flag); the message names the problem and the
    file or flag. Every command line turns it into one line on stderr and exit status 2 (run_cli)."""


class CubeError(InputError):
    """Bad cube input; the message names the problem and the variable/file."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error: `train_s2.py: error: argument --s-stride: ...` and exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_args(self, args=None, namespace=None):
        """argparse's, keeping the command line as `argv` (the stages record it in their checkpoints)."""
        parsed = super().parse_args(args, namespace)
        parsed.argv = list(sys.argv[1:] if args is None else args)
        return parsed


def int_at_least(minimum):
    """argparse type for sizes, strides and counts: an integer >= minimum, refused up front."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    return parse


positive_int = int_at_least(1)


def name_value(kind):
    """argparse type of NAME=VALUE (--checkpoint s1=PATH, --input s2=FILE, --centre-weight s2=1.75)."""
    def parse(text):
        name, sep, value = text.partition("=")
        if not sep or not name or not value:
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. s2=...), got {text!r}")
        try:
            return name, kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a {kind.__name__}") from None
    return parse


def add_mask_arg(parser):
    """The --mask-var flag of every command that reads S2 (training, embedding, GPP)."""
    parser.add_argument("--mask-var", default=None, metavar="NAME",
                        help="S2 cloud mask (default: the file's SCL, classes 0 1 3 8 9 10 masked); NAME: a "
                             f"CloudSEN12-style mask variable, != 0 masked; {NO_MASK}: no mask (cube masked already)")


def run_cli(main, argv=None):
    """Run a command line's main(argv): bad input ends in one line on stderr and exit status 2.

    InputError (CubeError, fluxnet.FluxError), a SystemExit carrying a message (checkpoint errors) and
    OSError (missing file, no permission, disk full) print "error: ..." instead of a traceback;
    Ctrl-C prints one line (exit 130): what was written before stays (checkpoints, embedding parts).
    """
    prog = Path(sys.argv[0]).name
    try:
        return main(argv)
    except SystemExit as err:
        if not isinstance(err.code, str):
            raise
        message = err.code
    except (InputError, OSError) as err:
        message = str(err)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; what was written is kept (rerun the same command to resume, "
              "training with --resume)", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)
