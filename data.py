"""Data layer: Sentinel-1/Sentinel-2 cubes in, training patches out.

Data side of Peters et al., "Context-Aware Multimodal Representation Learning for
Spatio-Temporally Explicit Environmental Modelling" (arXiv 2511.11706):
Sec. II (cubes, preprocessing, splits by cube), Sec. III-B (15 x 15 px x 11-frame patches drawn
from 40-frame (S1) or 20-frame (S2) sequences) and Sec. III-C (S1 matched to the closest S2 date).

Cube convention (every function here returns it, every model script consumes it):
    an xarray.Dataset with dims (time, y, x), one float32 variable per band, a datetime64 `time`
    coordinate (strictly increasing), x/y pixel-centre coordinates in metres and, where the input had
    one, a CF grid-mapping coordinate (`spatial_ref`) referenced by each band's `grid_mapping` attr.
    S2: bands B02 B03 B04 B05 B06 B07 B08 B8A B11 B12, surface reflectance (0-1.x), 10 m grid.
    S1: bands vv vh, gamma0/sigma0 in dB scaled to 0-1 with the fixed bounds S1_DB_RANGE.
    Nodata (fill values, clouds, shadows, outside the swath) is NaN, never zero. Samples keep the
    NaN; the validity mask is `np.isfinite(x)`, which the model and the loss receive.

Run (from the repository root, CPU only):
    python data.py --help
    python data.py inspect ../shared/realdata/s2_l2a_romania/*.nc ../shared/realdata/s1_grd_myanmar/*.nc
    python data.py inspect sample_data
    python data.py make-sample-data          # rewrites sample_data/ deterministically (~2 s)
"""
import argparse
import csv
import os
import re
import sys
import time as timer
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from numpy.lib.stride_tricks import sliding_window_view

# ---------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------

S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
S1_BANDS = ("vv", "vh")

# Sentinel-2 L2A digital numbers: reflectance = (DN + BOA_ADD_OFFSET) / 10000. ESA introduced the
# offset of -1000 DN with processing baseline 04.00, used for acquisitions from 2022-01-25 on.
S2_DN_SCALE = 10000.0
S2_BOA_OFFSET = -1000.0
S2_BOA_OFFSET_SINCE = np.datetime64("2022-01-25", "ns")
S2_BOA_OFFSET_BASELINE = 4.0
# Sen2Cor scene classification: 0 no data, 1 saturated/defective, 3 cloud shadow, 8/9 cloud
# medium/high probability, 10 thin cirrus are masked; 11 snow only on request.
SCL_MASKED = (0, 1, 3, 8, 9, 10)
SCL_SNOW = 11
NO_MASK = "none"          # mask_var / --mask-var value: use the bands as they are, without a cloud mask
# Units attributes that mean "already reflectance" (CF: "1" is dimensionless).
REFLECTANCE_UNITS = ("1", "reflectance", "surface reflectance", "dimensionless")
# Float band values whose maximum stays below this are taken as reflectance, not DN (real DN of a
# valid S2 pixel are >= 1, reflectance rarely exceeds 1.5).
REFLECTANCE_MAX = 3.0
# Asset names that STAC tools (stackstac, odc-stac) use for the S2 bands.
S2_ALIASES = {
    "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05", "rededge2": "B06",
    "rededge3": "B07", "nir": "B08", "nir08": "B8A", "swir16": "B11", "swir22": "B12", "scl": "SCL",
}
BAND_DIMS = ("band", "bands", "polarization", "polarisation", "pol")

# Sec. II: S1 is "normalised to the same 0-1 range" as S2. Fixed dB bounds, not per-cube min/max,
# so every cube uses the same scale: 0 = lo dB, 1 = hi dB, clipped. They cover vegetated land
# (VV about -15..-5 dB, VH about -22..-10 dB) with room for water (low) and built-up areas (high).
S1_DB_RANGE = {"vv": (-25.0, 0.0), "vh": (-30.0, -5.0)}
S1_UNITS = ("db", "db100", "linear")

DAY = np.timedelta64(1, "D")
EPOCH = np.datetime64("1970-01-01", "ns")


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

class InputError(ValueError):
    """Bad input to any stage (a cube, a flux table, a flag); the message names the problem and the
    file or flag. Every command line turns it into one line on stderr and exit status 2 (run_cli)."""


class CubeError(InputError):
    """Bad cube input; the message names the problem and the variable/file."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error: `train_s2.py: error: argument --s-stride: ...` and exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


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


def add_mask_arg(parser):
    """The --mask-var flag of every command that reads S2 (training, embedding, GPP)."""
    parser.add_argument("--mask-var", default=None, metavar="NAME",
                        help="S2 cloud mask (default: the file's SCL, classes 0 1 3 8 9 10 masked); NAME: a "
                             f"CloudSEN12-style mask variable, != 0 masked; {NO_MASK}: no mask (cube masked already)")


def run_cli(main, argv=None):
    """Run a command line's main(argv): bad input ends in one line on stderr and exit status 2.

    InputError (CubeError, gpp.FluxError), a SystemExit carrying a message (checkpoint errors) and
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


# ---------------------------------------------------------------------------------------------
# Dates
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


def _time_values(ds, name, allow_duplicates=False):
    """The checked time coordinate of `ds` as a datetime64 array."""
    if "time" not in ds.coords:
        raise CubeError(f"{name}: missing time coordinate (the 'time' dimension has no dates)")
    t = np.asarray(ds["time"].values)
    _check_times(t, name, allow_duplicates)
    return t


def validate_cube(ds, bands, min_dates=11, min_size=15, name="cube"):
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
    t = _time_values(ds, name)
    if len(t) < min_dates:
        raise CubeError(f"{name}: only {len(t)} dates, a sample needs at least {min_dates}")
    H, W = ds.sizes["y"], ds.sizes["x"]
    if H < min_size or W < min_size:
        raise CubeError(f"{name}: {H} x {W} pixels is smaller than a {min_size} x {min_size} patch")
    for b in bands:
        if not np.isfinite(ds[b].values).any():
            raise CubeError(f"{name}: band {b} is all-NaN (no valid observation)")


# ---------------------------------------------------------------------------------------------
# Shared loading helpers
# ---------------------------------------------------------------------------------------------

def open_raw(path):
    """Open one netCDF file (or a .zarr folder when zarr is installed) lazily as a raw Dataset."""
    p = Path(path)
    if not p.exists():
        raise CubeError(f"{p}: file not found")
    if p.is_dir():
        if p.suffix != ".zarr":
            raise CubeError(f"{p}: is a folder, expected a netCDF file or a .zarr store")
        try:
            import zarr  # noqa: F401  (optional dependency, only needed for .zarr stores)
        except ImportError:
            raise CubeError(f"{p}: reading a .zarr store needs the zarr package") from None
        return xr.open_dataset(p, engine="zarr")
    try:
        return xr.open_dataset(p, engine="netcdf4")
    except (OSError, ValueError) as err:
        raise CubeError(f"{p}: cannot read as netCDF ({err})") from None


def _source_of(raw, source):
    """A name for messages and attrs: the given source, else the file xarray opened, else a placeholder."""
    return str(source or raw.encoding.get("source") or "in-memory cube")


def _split_band_dim(raw, name):
    """Any layout -> a Dataset with one variable per band.

    Accepts one variable per band, or a variable/DataArray with a `band` (or `polarization`)
    dimension whose coordinate holds the band names, as stackstac, cubo and openEO write them.
    """
    if isinstance(raw, xr.DataArray):
        raw = raw.to_dataset(name=raw.name if raw.name is not None else "data")
    if not isinstance(raw, xr.Dataset):
        raise CubeError(f"{name}: expected an xarray Dataset or DataArray, got {type(raw).__name__}")
    band_dim = next((d for d in raw.dims if str(d).lower() in BAND_DIMS), None)
    if band_dim is None:
        return raw
    if band_dim not in raw.coords:
        raise CubeError(f"{name}: dimension '{band_dim}' has no coordinate naming the bands")
    variables = {}
    for var_name, var in raw.data_vars.items():
        if band_dim not in var.dims:
            variables[var_name] = var
            continue
        for i, label in enumerate(raw[band_dim].values):
            label = label.decode() if isinstance(label, bytes) else str(label)
            variables[label] = var.isel({band_dim: i}, drop=True)
    out = xr.Dataset(variables, attrs=raw.attrs)
    out.encoding = dict(raw.encoding)
    return out


def _as_tyx(var, var_name, name):
    """The variable transposed to (time, y, x); CubeError for any other set of dims."""
    if set(var.dims) != {"time", "y", "x"}:
        raise CubeError(f"{name}: variable {var_name} has dims {tuple(var.dims)}, "
                        "expected (time, y, x)")
    return var.transpose("time", "y", "x")


def _grid_mapping(ds, var_names):
    """Name of the CF grid-mapping variable of `ds` (from the bands' grid_mapping attr), or None."""
    for v in var_names:
        gm = ds[v].attrs.get("grid_mapping")
        if gm and gm in ds.variables and ds[gm].ndim == 0:
            return gm
    for gm in ("spatial_ref", "crs"):
        if gm in ds.variables and ds[gm].ndim == 0:
            return gm
    return None


def _grid_coords(ds, var_names):
    """Coordinates y, x and the grid-mapping scalar of `ds` (loaded, so the file can be closed)."""
    coords = {"y": ds["y"].variable.copy(), "x": ds["x"].variable.copy()}
    gm = _grid_mapping(ds, var_names)
    if gm is not None:
        coords[gm] = xr.Variable((), ds[gm].values, dict(ds[gm].attrs))
    return coords, gm


def _nearest_index(src, dst):
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


def _crs_text(ds, gm):
    """The WKT/CRS string of a grid-mapping variable, for a same-CRS check (None if unknown)."""
    if gm is None:
        return None
    attrs = ds[gm].attrs
    return attrs.get("crs_wkt") or attrs.get("spatial_ref")


def _crs_id(ds):
    """'EPSG:3035' from the grid mapping's WKT (its last EPSG code: the CRS's own) or a global `crs`
    attribute; else the CRS text; None when the cube names no CRS."""
    text = _crs_text(ds, _grid_mapping(ds, list(ds.data_vars))) or ds.attrs.get("crs")
    if text is None:
        return None
    codes = re.findall(r'EPSG[",:]+(\d+)', str(text))
    return f"EPSG:{codes[-1]}" if codes else str(text)


def check_same_crs(ds, ref, name, ref_name):
    """CubeError when both grids name a CRS and they differ: x/y in metres of two projections can
    overlap numerically and would be matched pixel by pixel without a word (no reprojection here)."""
    crs, ref_crs = _crs_id(ds), _crs_id(ref)
    if crs is not None and ref_crs is not None and crs != ref_crs:
        raise CubeError(f"{name} is in {crs[:60]}, {ref_name} in {ref_crs[:60]}: reproject it onto the "
                        "grid of the other first (e.g. gdalwarp or rioxarray's reproject_match)")


# ---------------------------------------------------------------------------------------------
# S2 loading (Sec. II: L2A reflectance, cloud/shadow masking; ten 10-20 m bands)
# ---------------------------------------------------------------------------------------------

def _s2_canonical(name):
    """'B2', 'b02', 'B8a', 'red', 'scl' -> 'B02', 'B02', 'B8A', 'B04', 'SCL'; None if not an S2 band."""
    low = str(name).strip().lower()
    if low in S2_ALIASES:
        return S2_ALIASES[low]
    m = re.fullmatch(r"b0?(\d{1,2})(a?)", low)
    if m is None:
        return None
    number, a = int(m.group(1)), m.group(2)
    return f"B{number}A" if a else f"B{number:02d}"


def _s2_names(ds):
    """Map canonical S2 names to the dataset's variable names (the first spelling wins)."""
    names = {}
    for v in ds.data_vars:
        c = _s2_canonical(v)
        if c is not None and c not in names:
            names[c] = v
    return names


def _requested_s2(bands):
    """Canonical long names for the requested bands; CubeError for a name that is no S2 band."""
    out = []
    for b in bands:
        c = _s2_canonical(b)
        if c is None or c == "SCL":
            raise CubeError(f"--bands: {b!r} is not a Sentinel-2 band name (use e.g. B02 or B2)")
        out.append(c)
    return tuple(out)


def _resolution(ds):
    """Pixel size in coordinate units (median |dx|); inf for a 1-pixel-wide cube."""
    x = np.asarray(ds["x"].values, dtype=np.float64) if "x" in ds.coords else np.zeros(1)
    return float(np.median(np.abs(np.diff(x)))) if x.size > 1 else np.inf


def _combine_resolutions(opened, sources):
    """Several S2 files of one area (e.g. a 10 m and a 20 m file) -> one raw Dataset on the finest grid.

    Each band (and SCL / mask variable) comes from the finest file that has it; coarser variables are
    brought onto the fine grid by nearest neighbour on the x/y coordinates, which for an aligned 20 m
    grid is exactly 2 x 2 replication. The result stays lazy; it keeps the original variable attrs so
    that prepare_s2 scales each band from its own file's metadata.
    """
    dsets = [_split_band_dim(d, s) for d, s in zip(opened, sources)]
    order = np.argsort([_resolution(d) for d in dsets], kind="stable")
    ref = dsets[order[0]]
    ref_src = sources[order[0]]
    ref_t = _time_values(ref, ref_src)
    ref_gm = _grid_mapping(ref, list(ref.data_vars))
    chosen = {}
    for i in order:
        d, src = dsets[i], sources[i]
        if not np.array_equal(_time_values(d, src), ref_t):
            raise CubeError(f"{src}: dates differ from those of {ref_src}; "
                            "files to combine must share one time axis")
        check_same_crs(d, ref, src, ref_src)
        iy, in_y = _nearest_index(d["y"].values, ref["y"].values)
        ix, in_x = _nearest_index(d["x"].values, ref["x"].values)
        if not (in_y.any() and in_x.any()):
            raise CubeError(f"{src}: does not overlap in space with {ref_src}")
        for v in d.data_vars:
            if set(d[v].dims) != {"time", "y", "x"}:
                continue
            key = _s2_canonical(v) or v
            if key in chosen:
                continue
            var = d[v]
            if d is not ref:
                var = var.isel(y=iy, x=ix).assign_coords(y=ref["y"].values, x=ref["x"].values)
                if not (in_y.all() and in_x.all()):
                    inside = (xr.DataArray(in_y, dims="y") & xr.DataArray(in_x, dims="x"))
                    var = var.where(inside)
            chosen[key] = var
    out = xr.Dataset(chosen, coords={"time": ref["time"], "y": ref["y"], "x": ref["x"]})
    if ref_gm is not None:
        out = out.assign_coords({ref_gm: ref[ref_gm]})
    for d in reversed([dsets[i] for i in order]):
        out.attrs.update(d.attrs)
    out.encoding["source"] = " + ".join(sources)
    out.set_close(lambda: [d.close() for d in opened])
    return out


def open_s2_raw(path):
    """Open one S2 file, or combine several files of one area (list: e.g. 10 m + 20 m), lazily.

    Returns the raw Dataset (DN or reflectance as stored) on the finest grid; feed it, or row blocks
    of it (`raw.isel(y=slice(a, b))`), to prepare_s2. Close it when done.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        raise CubeError("open_s2: no file given")
    dsets = [open_raw(p) for p in paths]
    if len(dsets) == 1:
        return dsets[0]
    return _combine_resolutions(dsets, [str(p) for p in paths])


def _is_reflectance(var, values):
    """Rule for "already scaled": CF packing with a scale_factor, a units attr of "1"/"reflectance",
    or float values whose maximum is below REFLECTANCE_MAX. Otherwise the values are L2A DN."""
    scale = var.encoding.get("scale_factor")
    if scale is not None and float(scale) != 1.0:
        return True, "CF scale_factor in file"
    units = str(var.attrs.get("units", "")).strip().lower()
    if units in REFLECTANCE_UNITS:
        return True, f"units attribute {units!r}"
    if values.dtype.kind == "f":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            vmax = np.nanmax(values) if values.size else np.nan
        if not np.isfinite(vmax) or vmax < REFLECTANCE_MAX:
            return True, f"float values below {REFLECTANCE_MAX}"
    return False, "digital numbers"


def _flag_per_date(ds, var, key, times):
    """A per-date array from a coordinate (time,) or a scalar attr whose name contains `key`."""
    for c in ds.coords:
        if key in str(c).lower() and ds[c].dims in ((), ("time",)):
            return np.broadcast_to(np.asarray(ds[c].values), times.shape)
    for attrs in (var.attrs, ds.attrs):
        for k, v in attrs.items():
            if key in str(k).lower():
                return np.broadcast_to(np.asarray(v), times.shape)
    return None


def _boa_offsets(ds, var, times, boa_offset):
    """BOA offset in DN per date (T,) and a description of where it came from.

    Order: a number passed as `boa_offset` (all dates); a BOA_ADD_OFFSET* attribute on the band or
    the dataset; a processing_baseline coordinate per date or attribute (>= 04.00 -> -1000);
    otherwise the acquisition date (>= 2022-01-25 -> -1000). Dates flagged by a
    `*boa_offset_applied` coordinate/attr (harmonised collections) get 0.
    """
    if boa_offset != "auto":
        try:
            value = float(boa_offset)
        except (TypeError, ValueError):
            raise CubeError(f"boa_offset must be 'auto' or a number of DN, got {boa_offset!r}") from None
        return np.full(times.shape, value), f"{value:g} DN (forced)"
    explicit = _flag_per_date(ds, var, "boa_add_offset", times)
    baseline = _flag_per_date(ds, var, "processing_baseline", times)
    if explicit is not None:
        offsets, how = explicit.astype(np.float64), "from BOA_ADD_OFFSET attribute"
    elif baseline is not None:
        pb = np.array([float(str(b)) for b in baseline])
        offsets = np.where(pb >= S2_BOA_OFFSET_BASELINE, S2_BOA_OFFSET, 0.0)
        how = "from processing baseline"
    else:
        offsets = np.where(times >= S2_BOA_OFFSET_SINCE, S2_BOA_OFFSET, 0.0)
        how = "by date (from 2022-01-25)"
    applied = _flag_per_date(ds, var, "boa_offset_applied", times)
    if applied is not None:
        offsets = np.where(applied.astype(bool), 0.0, offsets)
        how += ", 0 where already applied"
    n = int(np.count_nonzero(offsets))
    return offsets, f"{how}: nonzero on {n} of {times.size} dates"


def _cloud_mask(ds, mask_var, mask_snow, name):
    """(T, H, W) bool mask of invalid pixels from `mask_var` (CloudSEN12) or SCL, and how it was made.

    mask_var None: SCL; else the mask the file records as applied (its `cloud_mask` attribute, as
    prepared and synthetic cubes have); else a loud warning (clouds would enter training and
    embeddings as land). NO_MASK: no mask, on purpose (e.g. a cube cloud-masked to NaN elsewhere).
    """
    if mask_var == NO_MASK:
        return None, "none (--mask-var none)"
    if mask_var is not None:
        if mask_var not in ds.variables:
            raise CubeError(f"{name}: mask variable {mask_var!r} not found; "
                            f"variables are {', '.join(map(str, ds.data_vars))}")
        m = np.asarray(_as_tyx(ds[mask_var], mask_var, name).values, dtype=np.float64)
        return m != 0, f"{mask_var} (CloudSEN12: 1 thick, 2 thin cloud, 3 shadow masked)"
    scl_name = _s2_names(ds).get("SCL")
    recorded = str(ds.attrs.get("cloud_mask", "none"))
    if scl_name is None and not recorded.startswith("none"):
        return None, f"applied before: {recorded}"
    if scl_name is None:
        warnings.warn(f"{name}: no SCL or cloud-mask variable, clouds and shadows are NOT masked; pass "
                      "--mask-var NAME for a CloudSEN12 mask, or --mask-var none if the cube is already "
                      "masked (NaN)", UserWarning, stacklevel=3)
        return None, "none (no SCL or mask variable)"
    scl = np.asarray(_as_tyx(ds[scl_name], scl_name, name).values, dtype=np.float64)
    classes = SCL_MASKED + ((SCL_SNOW,) if mask_snow else ())
    return np.isnan(scl) | np.isin(scl, classes), f"SCL classes {list(classes)} masked"


def prepare_s2(raw, bands=S2_BANDS, boa_offset="auto", mask_var=None, mask_snow=False, source=""):
    """Raw S2 L2A cube -> convention cube: float32 reflectance per band, NaN where invalid (Sec. II).

    Works on any subset of a raw cube (rows, columns, dates) and gives there the same values as on
    the whole cube: every step is per pixel and date.
    - Layout: one variable per band or one variable with a `band` dim; short (B2) or long (B02)
      names, case-insensitive. Output variables use the long names, in the order of `bands`.
    - Scaling: DN -> (DN + BOA offset) / 10000 (see _boa_offsets; `boa_offset` may force a number of
      DN). Input that is already reflectance (see _is_reflectance) is kept as is, no offset added.
    - Nodata: `_FillValue` (decoded by xarray) and DN 0 -> NaN; pixels flagged by SCL classes
      0, 1, 3, 8, 9, 10 (+11 snow if `mask_snow`) or, with `mask_var`, by a CloudSEN12 mask != 0 -> NaN
      in every band. Reflectance is not clipped (small negative values can occur with the offset).
    - Attrs: source, bands, cloud mask used; per band dn_scale and boa_offset used.
    """
    name = _source_of(raw, source)
    ds = _split_band_dim(raw, name)
    bands = _requested_s2(bands)
    names = _s2_names(ds)
    missing = [b for b in bands if b not in names]
    if missing:
        raise CubeError(f"{name}: missing band(s) {', '.join(missing)} (has "
                        f"{', '.join(sorted(c for c in names if c != 'SCL')) or 'no S2 band'}); "
                        "train on the bands the file has with --bands")
    for b in bands:
        _as_tyx(ds[names[b]], names[b], name)
    times = _time_values(ds, name)
    mask, mask_how = _cloud_mask(ds, mask_var, mask_snow, name)
    variables = {}
    for b in bands:
        var = _as_tyx(ds[names[b]], names[b], name)
        values = np.asarray(var.values)  # (T, H, W)
        scaled, why = _is_reflectance(var, values)
        refl = values.astype(np.float32)
        if scaled:
            scale, offset_how = 1.0, f"none ({why})"
        else:
            offsets, offset_how = _boa_offsets(ds, var, times, boa_offset)
            refl[refl == 0] = np.nan  # DN 0 is the L2A no-data value even without a _FillValue
            refl = (refl + offsets[:, None, None].astype(np.float32)) / np.float32(S2_DN_SCALE)
            scale = S2_DN_SCALE
        if mask is not None:
            refl[mask] = np.nan
        attrs = {"units": "1", "long_name": f"Sentinel-2 L2A surface reflectance {b}",
                 "dn_scale": scale, "boa_offset": offset_how}
        variables[b] = xr.Variable(("time", "y", "x"), refl, attrs)
    coords, gm = _grid_coords(ds, [names[b] for b in bands])
    if gm is not None:
        for v in variables.values():
            v.attrs["grid_mapping"] = gm
    coords["time"] = xr.Variable("time", times)
    attrs = {k: v for k, v in ds.attrs.items() if k not in ("units", "source")}
    attrs.update(source=name, bands=" ".join(bands), cloud_mask=mask_how,
                 scaling="reflectance = (DN + boa_offset) / dn_scale")
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def open_s2(path, bands=S2_BANDS, boa_offset="auto", mask_var=None, mask_snow=False):
    """Open S2 L2A file(s) and prepare them (see prepare_s2); returns an in-memory convention cube.

    `path`: a netCDF file, a .zarr store (needs zarr), or a list of files of one area at different
    resolutions (e.g. the 10 m and the 20 m file), combined on the finest grid by coordinates.
    """
    raw = open_s2_raw(path)
    name = _source_of(raw, "")
    try:
        out = prepare_s2(raw, bands, boa_offset, mask_var, mask_snow, source=name)
    finally:
        raw.close()
    validate_cube(out, list(out.data_vars), min_dates=1, min_size=1, name=name)
    return out


# ---------------------------------------------------------------------------------------------
# S1 loading (Sec. II: RTC gamma0 VV/VH, three-frame rolling mean in linear scale, 0-1)
# ---------------------------------------------------------------------------------------------

def db_to_linear(db):
    """dB -> linear power: 10 ** (dB / 10)."""
    return 10.0 ** (np.asarray(db, dtype=np.float64) / 10.0)


def linear_to_db(linear):
    """Linear power -> dB: 10 * log10(x); NaN for x <= 0 (no backscatter measured)."""
    x = np.asarray(linear, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, 10.0 * np.log10(np.where(x > 0, x, 1.0)), np.nan)


def normalise_s1(db, band):
    """dB -> 0-1 with the fixed bounds S1_DB_RANGE[band]: (dB - lo) / (hi - lo), clipped; NaN kept."""
    lo, hi = S1_DB_RANGE[band]
    return np.clip((np.asarray(db, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


def _s1_units(var, values, units, ds_attrs):
    """'db100' | 'db' | 'linear' and why. Rule: `units` if given; else a units attribute containing
    'dB' (with '100': dB x 100) or naming linear power; else the median of the valid values
    (<= -100: dB x 100, < 0: dB, >= 0: linear)."""
    if units != "auto":
        u = str(units).lower()
        if u not in S1_UNITS:
            raise CubeError(f"units must be 'auto' or one of {S1_UNITS}, got {units!r}")
        return u, "given"
    for attrs in (var.attrs, ds_attrs):
        text = str(attrs.get("units", "")).lower().replace(" ", "")
        if "db" in text:
            return ("db100" if "100" in text else "db"), f"units attribute {attrs['units']!r}"
        if text in ("linear", "1", "power", "intensity", "m2/m2", "m2m-2", "natural"):
            return "linear", f"units attribute {attrs['units']!r}"
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "linear", "no valid values"
    med = float(np.median(finite))
    kind = "db100" if med <= -100 else "db" if med < 0 else "linear"
    return kind, f"value range (median {med:.4g})"


def _to_linear(values, kind):
    """Backscatter in `kind` units -> linear power; values <= 0 in linear input -> NaN."""
    if kind == "db100":
        return db_to_linear(values / 100.0)
    if kind == "db":
        return db_to_linear(values)
    lin = np.asarray(values, dtype=np.float64)
    return np.where(lin > 0, lin, np.nan)


def merge_same_day(values, times):
    """Merge acquisitions of one UTC calendar day by nanmean (in the units given: use linear).

    Adjacent GRD slices of one pass (and re-processed duplicates) carry the same day; the merged
    frame takes the first timestamp of its day. values (T, ...) -> (T', ...); returns (merged, times').
    """
    day = times.astype("datetime64[D]")
    starts = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    valid = np.isfinite(values)
    total = np.add.reduceat(np.where(valid, values, 0.0), starts, axis=0)
    count = np.add.reduceat(valid, starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        merged = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return merged, times[starts]


def rolling_mean3(values):
    """Sec. II three-frame centred rolling mean over time (axis 0), min_periods 1, in linear scale.

    Frame t becomes the mean of the valid values among frames t-1, t, t+1 (two frames at the
    ends). A missing value stays missing: where frame t itself is NaN (outside the swath, no data)
    the output is NaN, so the rolling mean smooths speckle but never invents an observation.
    """
    valid = np.isfinite(values)
    v = np.where(valid, values, 0.0)
    total, count = v.copy(), valid.astype(np.int64)
    total[1:] += v[:-1]
    count[1:] += valid[:-1]
    total[:-1] += v[1:]
    count[:-1] += valid[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, total / np.maximum(count, 1), np.nan)


def _s1_names(ds):
    """Map 'vv'/'vh' to the dataset's variable names (VV, vv, Gamma0_VV, ... case-insensitive)."""
    names = {}
    for v in ds.data_vars:
        low = str(v).lower()
        for b in S1_BANDS:
            if (low == b or low.endswith("_" + b)) and b not in names:
                names[b] = v
    return names


def prepare_s1(raw, bands=S1_BANDS, units="auto", target=None, source=""):
    """Raw S1 backscatter cube -> convention cube: vv, vh in 0-1 (normalised dB), NaN for no data.

    Steps (Sec. II), all per pixel so any y/x subset gives the same values as the whole cube:
    1. units: dB, dB x 100 or linear, detected per band (see _s1_units) or forced with `units`;
    2. to linear power; acquisitions of one calendar day merged by nanmean (merge_same_day);
    3. three-frame centred rolling mean in linear scale (rolling_mean3; NaN stays NaN);
    4. dB, then 0-1 with the fixed bounds S1_DB_RANGE, clipped;
    5. with `target` (a Dataset with 1-D x/y, e.g. the S2 cube): nearest neighbour onto its grid by
       coordinates; target pixels outside the S1 footprint are NaN. Both must be in one CRS (no
       reprojection here): when both name their CRS and they differ, CubeError.
    Times must be non-decreasing (same-day duplicates are expected and merged).
    """
    name = _source_of(raw, source)
    ds = _split_band_dim(raw, name)
    bands = tuple(str(b).lower() for b in bands)
    unknown = [b for b in bands if b not in S1_BANDS]
    if unknown:
        raise CubeError(f"{', '.join(unknown)}: not Sentinel-1 bands (use vv, vh)")
    names = _s1_names(ds)
    missing = [b for b in bands if b not in names]
    if missing:
        raise CubeError(f"{name}: missing band(s) {', '.join(missing)}; variables are "
                        f"{', '.join(map(str, ds.data_vars))} (VV/VH variables are found by name: vv, VV, Gamma0_VV, ...)")
    for b in bands:
        _as_tyx(ds[names[b]], names[b], name)
    times = _time_values(ds, name, allow_duplicates=True)
    variables, merged_times, how = {}, times, {}
    for b in bands:
        var = _as_tyx(ds[names[b]], names[b], name)
        values = np.asarray(var.values, dtype=np.float64)  # (T, H, W)
        kind, why = _s1_units(var, values, units, ds.attrs)
        how[b] = f"{kind} ({why})"
        linear, merged_times = merge_same_day(_to_linear(values, kind), times)
        variables[b] = normalise_s1(linear_to_db(rolling_mean3(linear)), b).astype(np.float32)
    coords, gm = _grid_coords(ds, [names[b] for b in bands])
    if target is not None:
        variables, coords, gm = _regrid_nearest(variables, ds, target, name, coords, gm)
    out_vars = {}
    for b, arr in variables.items():
        lo, hi = S1_DB_RANGE[b]
        attrs = {"units": "1", "long_name": f"Sentinel-1 {b.upper()} backscatter, normalised dB",
                 "normalisation": f"(10*log10(linear) - ({lo:g})) / ({hi:g} - ({lo:g})), clipped to [0, 1]",
                 "db_range": np.array([lo, hi]), "input_units": how[b]}
        if gm is not None:
            attrs["grid_mapping"] = gm
        out_vars[b] = xr.Variable(("time", "y", "x"), arr, attrs)
    coords["time"] = xr.Variable("time", merged_times)
    attrs = {k: v for k, v in ds.attrs.items() if k not in ("units", "source", "note")}
    attrs.update(source=name, bands=" ".join(bands), units="1",
                 preprocessing="same-day merge (nanmean, linear); 3-frame centred rolling mean "
                               "(linear, NaN kept); dB normalised with S1_DB_RANGE",
                 merged_acquisitions=int(times.size - merged_times.size))
    return xr.Dataset(out_vars, coords=coords, attrs=attrs)


def _regrid_nearest(variables, ds, target, name, coords, gm):
    """Nearest-neighbour regrid of (T, h, w) arrays onto target's y/x; CubeError without overlap."""
    if not isinstance(target, (xr.Dataset, xr.DataArray)) or "x" not in target.coords \
            or "y" not in target.coords or target["x"].ndim != 1 or target["y"].ndim != 1:
        raise CubeError(f"{name}: target must be a Dataset with 1-D x and y coordinates")
    tds = target if isinstance(target, xr.Dataset) else target.to_dataset(name="_target")
    check_same_crs(ds, tds, name, "the target (S2) grid")
    iy, in_y = _nearest_index(ds["y"].values, target["y"].values)
    ix, in_x = _nearest_index(ds["x"].values, target["x"].values)
    if not (in_y.any() and in_x.any()):
        sx, sy, tx, ty = ds["x"].values, ds["y"].values, target["x"].values, target["y"].values
        raise CubeError(f"{name}: S1 and the target grid do not overlap in space "
                        f"(S1 x {sx.min():.0f}..{sx.max():.0f}, y {sy.min():.0f}..{sy.max():.0f}; "
                        f"target x {tx.min():.0f}..{tx.max():.0f}, y {ty.min():.0f}..{ty.max():.0f})")
    out = {}
    for b, arr in variables.items():
        g = arr[:, iy][:, :, ix]  # (T, H_target, W_target)
        g[:, ~in_y, :] = np.nan
        g[:, :, ~in_x] = np.nan
        out[b] = g
    t_coords, t_gm = _grid_coords(tds, list(tds.data_vars))
    if t_gm is None and gm is not None:
        t_coords[gm], t_gm = coords[gm], gm
    return out, t_coords, t_gm


def open_s1(path, bands=S1_BANDS, units="auto", target=None):
    """Open an S1 netCDF (or .zarr) file and prepare it (see prepare_s1); in-memory convention cube."""
    raw = open_raw(path)
    try:
        out = prepare_s1(raw, bands, units, target, source=str(path))
    finally:
        raw.close()
    validate_cube(out, list(out.data_vars), min_dates=1, min_size=1, name=str(path))
    return out


# ---------------------------------------------------------------------------------------------
# Temporal matching (Sec. III-C: S1 matched to the closest S2 acquisition)
# ---------------------------------------------------------------------------------------------

def match_s1_to_s2(s1, s2, max_gap_days=6.0):
    """For each S2 date the closest S1 acquisition within `max_gap_days` (Sec. III-C).

    `s1` must already be on the S2 grid (open_s1(path, target=s2)). Returns a cube with S2's time,
    y, x, S1's variables (an all-NaN frame where no S1 lies within the gap; one S1 frame may serve
    several S2 dates), coordinate `s1_time` (time,) = the S1 acquisition used, or the S2 date itself
    where there is none (never NaT), and `s1_matched` (time,) bool. Ties go to the earlier S1 date.
    """
    for label, ds in (("S1", s1), ("S2", s2)):
        if not isinstance(ds, xr.Dataset) or "x" not in ds.coords or "y" not in ds.coords:
            raise CubeError(f"match_s1_to_s2: {label} must be a Dataset with x/y coordinates")
    check_same_crs(s1, s2, "match_s1_to_s2: the S1 cube", "the S2 cube")
    s1_t = _time_values(s1, "S1 cube")
    s2_t = _time_values(s2, "S2 cube")
    same_grid = all(s1.sizes[d] == s2.sizes[d] and
                    np.allclose(s1[d].values, s2[d].values, rtol=0, atol=1e-3) for d in ("y", "x"))
    if not same_grid:
        spans = {d: [(float(c[d].min()), float(c[d].max())) for c in (s1, s2)] for d in ("y", "x")}
        if any(min(a[1], b[1]) < max(a[0], b[0]) for a, b in spans.values()):
            raise CubeError("match_s1_to_s2: S1 and S2 cubes do not overlap in space")
        raise CubeError("match_s1_to_s2: S1 is not on the S2 grid (y/x differ); "
                        "regrid first with open_s1(path, target=s2)")
    d1, d2 = day_offsets(s1_t), day_offsets(s2_t)
    idx, _ = _nearest_index(d1, d2)  # ties go to the lower value: the earlier S1 date
    matched = np.abs(d1[idx] - d2) <= max_gap_days
    if not matched.any():
        raise CubeError(f"match_s1_to_s2: S1 ({s1_t[0]} .. {s1_t[-1]}) and S2 ({s2_t[0]} .. {s2_t[-1]}) "
                        f"do not overlap in time (no S1 within {max_gap_days} days of any S2 date)")
    variables = {}
    for v in s1.data_vars:
        if tuple(s1[v].dims) != ("time", "y", "x"):
            continue
        arr = s1[v].values[idx]  # (T_s2, H, W)
        arr[~matched] = np.nan
        variables[v] = xr.Variable(("time", "y", "x"), arr, dict(s1[v].attrs))
    coords = {"time": s2["time"].variable, "y": s2["y"].variable, "x": s2["x"].variable,
              "s1_time": ("time", np.where(matched, s1_t[idx], s2_t)),
              "s1_matched": ("time", matched)}
    for c in s1.coords:
        if s1[c].ndim == 0:
            coords[c] = s1[c].variable
    attrs = dict(s1.attrs, max_gap_days=float(max_gap_days),
                 matching="closest S1 date to each S2 date (Sec. III-C)")
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def cube_array(ds, bands):
    """Cube -> (T, C, H, W) float32 numpy array, bands in the given order, NaN kept."""
    missing = [b for b in bands if b not in ds.data_vars]
    if missing:
        raise CubeError(f"cube_array: missing band(s) {', '.join(missing)}; "
                        f"variables are {', '.join(map(str, ds.data_vars))}")
    return np.stack([ds[b].transpose("time", "y", "x").values.astype(np.float32, copy=False)
                     for b in bands], axis=1)  # (T, C, H, W)


# ---------------------------------------------------------------------------------------------
# Synthetic cubes (seeded fake data in the real format, for sample_data/ and the tests)
# ---------------------------------------------------------------------------------------------

LANDCOVER = ("forest", "grassland", "cropland", "urban", "water")
# Reflectance at rest (leaf-off / bare soil) and at peak green, bands in S2_BANDS order.
_DORMANT = np.array([
    [0.030, 0.050, 0.040, 0.080, 0.140, 0.170, 0.190, 0.200, 0.160, 0.090],   # forest
    [0.050, 0.070, 0.080, 0.110, 0.150, 0.170, 0.190, 0.200, 0.250, 0.170],   # grassland
    [0.070, 0.100, 0.130, 0.160, 0.180, 0.200, 0.220, 0.230, 0.300, 0.240],   # cropland
    [0.090, 0.100, 0.110, 0.130, 0.140, 0.150, 0.160, 0.170, 0.200, 0.180],   # urban
    [0.040, 0.050, 0.030, 0.020, 0.015, 0.012, 0.010, 0.010, 0.005, 0.003],   # water
])
_GREEN = np.array([
    [0.020, 0.040, 0.020, 0.070, 0.200, 0.260, 0.300, 0.310, 0.150, 0.070],
    [0.030, 0.070, 0.030, 0.100, 0.250, 0.320, 0.360, 0.370, 0.200, 0.100],
    [0.030, 0.060, 0.030, 0.100, 0.280, 0.360, 0.420, 0.430, 0.210, 0.100],
    _DORMANT[3], _DORMANT[4],
])
# Phenology per class: start/end of season (day of year), rise/fall rates (days), amplitude.
_PHENO = np.array([
    [115, 285, 8, 10, 1.0],    # forest (deciduous-like)
    [95, 295, 10, 12, 0.8],    # grassland
    [90, 200, 8, 4, 1.0],      # cropland: sharp harvest in July
    [0, 0, 1, 1, 0.0],         # urban
    [0, 0, 1, 1, 0.0],         # water
])
# S1 backscatter (dB): VV, VH base; gain with vegetation (phenology); gain with soil moisture.
_S1_DB = np.array([
    [-8.0, -13.5, 0.5, 1.0, 1.0, 0.5],
    [-11.0, -18.0, 1.0, 3.0, 3.0, 2.0],
    [-12.0, -19.5, 2.0, 5.0, 3.5, 2.0],
    [-4.0, -11.0, 0.0, 0.0, 0.5, 0.5],
    [-20.0, -26.0, 0.0, 0.0, 0.0, 0.0],
])
_GPP_MAX = {0: 14.0, 1: 11.0}  # gC m-2 d-1 at full canopy and light, tower classes
_SPECKLE_LOOKS = 4.4          # equivalent number of looks of IW GRD / RTC
_S1B_END = np.datetime64("2021-12-23", "ns")  # after this only S1A: 12-day revisit

_UTM32N_WKT = (
    'PROJCS["WGS 84 / UTM zone 32N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
    '298.257223563,AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,'
    'AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],'
    'AUTHORITY["EPSG","4326"]],PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],'
    'PARAMETER["central_meridian",9],PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",'
    '500000],PARAMETER["false_northing",0],UNIT["metre",1,AUTHORITY["EPSG","9001"]],AXIS["Easting",'
    'EAST],AXIS["Northing",NORTH],AUTHORITY["EPSG","32632"]]')


def _smooth_noise(rng, shape, scale):
    """Spatially coherent noise (..., H, W): white noise Gaussian-filtered (sigma `scale` px) via FFT,
    standardised to mean 0, std 1 per field (periodic borders)."""
    H, W = shape[-2:]
    white = rng.standard_normal(shape)
    k2 = np.fft.fftfreq(H)[:, None] ** 2 + np.fft.rfftfreq(W)[None, :] ** 2
    field = np.fft.irfft2(np.fft.rfft2(white) * np.exp(-2 * (np.pi * scale) ** 2 * k2), s=(H, W))
    field -= field.mean(axis=(-2, -1), keepdims=True)
    return field / (field.std(axis=(-2, -1), keepdims=True) + 1e-12)


def _phenology(t, cls, shift, year_shift):
    """Greenness 0-1 at dates `t` (T,) for pixels of class `cls` (H, W): a double logistic in day of
    year, start/end shifted per pixel (`shift`, days) and per year (`year_shift`, dict year -> days)."""
    year_start = t.astype("datetime64[Y]")
    doy = day_offsets(t) - day_offsets(year_start.astype("datetime64[ns]"))
    ys = np.array([year_shift[int(y) + 1970] for y in year_start.astype(np.int64)])
    p = _PHENO[cls]  # (H, W, 5)
    start = p[..., 0] + shift
    end = p[..., 1] + 0.5 * shift
    d = (doy - ys)[:, None, None]  # (T, 1, 1)
    with np.errstate(over="ignore"):
        rise = 1 / (1 + np.exp(-(d - start) / p[..., 2]))
        fall = 1 / (1 + np.exp(-(d - end) / p[..., 3]))
    return np.clip(p[..., 4] * (rise - fall), 0.0, 1.0)  # (T, H, W)


def _daily_moisture(rng, n_days, doy, wetness):
    """Topsoil moisture 0-1 per day: random rain events, scaled by the year's `wetness` (n_days,),
    into an exponentially drying bucket, drying faster in summer."""
    rain = (rng.random(n_days) < 0.3) * rng.exponential(0.12, n_days) * wetness
    decay = np.exp(-1 / (6 + 6 * np.cos(2 * np.pi * (doy - 200) / 365.25)))
    m = np.empty(n_days)
    level = 0.5
    for i in range(n_days):  # a recursion over days, not a per-pixel loop
        level = min(1.0, level * decay[i] + rain[i])
        m[i] = level
    return m


def _cloud_nan(rng, n_dates, size):
    """(T, H, W) bool: clouds as coherent blobs plus their shifted shadows. Per date: 30 % fully
    clear, 12 % fully cloudy, else a cover fraction of 10-60 %."""
    u = rng.random(n_dates)
    cover = np.where(u < 0.3, 0.0, np.where(u < 0.42, 1.0, rng.uniform(0.1, 0.6, n_dates)))
    field = _smooth_noise(rng, (n_dates, size, size), max(2.0, size / 12))
    flat = np.sort(field.reshape(n_dates, -1), axis=1)
    k = np.clip(((1 - cover) * flat.shape[1]).astype(int), 0, flat.shape[1] - 1)
    thr = np.take_along_axis(flat, k[:, None], axis=1)[:, 0]
    thr = np.where(cover >= 1, -np.inf, np.where(cover <= 0, np.inf, thr))
    cloud = field >= thr[:, None, None]
    dy, dx = rng.integers(2, 5, size=2)
    shadow = np.zeros_like(cloud)
    shadow[:, dy:, dx:] = cloud[:, :-dy, :-dx]
    return cloud | shadow


def make_synthetic_cube(seed, size=64, start="2020-01-01", end="2020-12-31", tower=None):
    """Seeded synthetic S1, S2 and tower GPP in the project convention; returns (s1, s2, gpp).

    - land cover: coherent patches of forest/grassland/cropland/urban/water (`landcover`, int8 on s2);
    - s2: reflectance (float32, B02..B12) = class spectrum between rest and peak green following a
      per-pixel double-logistic phenology; SWIR darker when wet; 5-day revisit with ~15 % dropped
      acquisitions; clouds and shadows as coherent NaN blobs (~35 % of values);
    - s1: raw linear gamma0 vv/vh (attrs units="linear") on its own dates (6-day revisit, 12-day after
      2021-12-23), responding to phenology (VH) and soil moisture (VV), gamma-distributed speckle;
    - years differ: green-up shifted by N(0, 10) days and rain scaled by U(0.4, 1.6) per year, so
      phenology, SWIR, VV and GPP all carry the year's anomaly;
    - gpp: daily GPP_NT_VUT_REF (gC m-2 d-1) at the tower pixel from the same phenology, light and
      moisture, plus noise; NEE_VUT_REF_QC (0-1, mostly > 0.7); ~1 % missing days (NaN).
    The tower is pixel (size//2, size//2) unless `tower=(row, col)`, forced to forest or grassland.
    All three carry attrs tower_row, tower_col, tower_x, tower_y. Same seed -> identical output.
    """
    rng = np.random.default_rng(seed)
    t_start, t_end = np.datetime64(start, "ns"), np.datetime64(end, "ns")
    if t_end <= t_start:
        raise CubeError(f"make_synthetic_cube: end {end} is not after start {start}")
    row, col = (size // 2, size // 2) if tower is None else (int(tower[0]), int(tower[1]))
    if not (0 <= row < size and 0 <= col < size):
        raise CubeError(f"make_synthetic_cube: tower {(row, col)} outside the {size} x {size} grid")

    # Grid: 10 m pixel centres, y decreasing, a seed-dependent UTM 32N origin.
    x0 = 300_000 + 20 * int(rng.integers(0, 20_000))
    y0 = 5_000_000 + 20 * int(rng.integers(0, 40_000))
    x = x0 + 5.0 + 10.0 * np.arange(size)
    y = y0 - 5.0 - 10.0 * np.arange(size)

    # Land cover: argmax of smooth class fields with class priors; the tower pixel is vegetated.
    fields = _smooth_noise(rng, (5, size, size), max(3.0, size / 8))
    lc = np.argmax(fields + np.array([0.4, 0.3, 0.3, -0.5, -0.9])[:, None, None], axis=0)
    tower_cls = 0 if fields[0, row, col] >= fields[1, row, col] else 1
    lc[max(row - 2, 0):row + 3, max(col - 2, 0):col + 3] = tower_cls
    lc = lc.astype(np.int8)
    shift = 8.0 * _smooth_noise(rng, (size, size), 4.0)           # days, per pixel
    bright = 1 + 0.08 * _smooth_noise(rng, (size, size), 1.5)     # texture, per pixel
    first_year, last_year = (int(t.astype("datetime64[Y]").astype(np.int64)) + 1970 for t in (t_start, t_end))
    years = range(first_year, last_year + 1)
    # Interannual variability (what a mean seasonal cycle cannot know): green-up earlier or later
    # by ~10 days, and wet or dry years (rain x 0.4-1.6; 2018 was such a drought in Central Europe).
    year_shift = {yr: float(rng.normal(0, 10)) for yr in years}
    year_wetness = {yr: float(rng.uniform(0.4, 1.6)) for yr in years}
    daily = np.arange(t_start, t_end + DAY, DAY)
    daily_days = day_offsets(daily)
    daily_doy = daily_days - day_offsets(daily.astype("datetime64[Y]").astype("datetime64[ns]"))
    daily_year = daily.astype("datetime64[Y]").astype(np.int64) + 1970
    moisture = _daily_moisture(rng, daily.size, daily_doy, np.array([year_wetness[y] for y in daily_year]))

    def moisture_at(t):
        return moisture[np.clip(np.floor(day_offsets(t) - daily_days[0]).astype(int), 0, daily.size - 1)]

    # S2: 5-day revisit, ~15 % dropped, acquisitions at 10:30 UTC.
    slots = np.arange(t_start + int(rng.integers(0, 5)) * DAY, t_end + DAY, 5 * DAY)
    s2_t = slots[rng.random(slots.size) > 0.15] + np.timedelta64(630, "m")
    green = _phenology(s2_t, lc, shift, year_shift)  # (T, H, W)
    spec = _DORMANT[lc] + green[..., None] * (_GREEN[lc] - _DORMANT[lc])  # (T, H, W, C)
    spec = spec * bright[None, :, :, None]
    wet = np.where(lc == 4, 0.0, 0.15)[None] * moisture_at(s2_t)[:, None, None]  # (T, H, W)
    spec[..., 8:] *= (1 - wet)[..., None]  # B11, B12 darker when wet
    spec *= rng.normal(1, 0.02, (s2_t.size, 1, 1, 1))  # residual atmosphere per date
    spec += rng.normal(0, 0.002, spec.shape)
    refl = np.clip(spec, 1e-4, 1.0).astype(np.float32).transpose(3, 0, 1, 2)  # (C, T, H, W)
    refl[:, _cloud_nan(rng, s2_t.size, size)] = np.nan

    # S1: own dates (6 / 12-day revisit, 05:40 UTC), ~5 % missing, linear gamma0 with speckle.
    s1_list, d = [], t_start + int(rng.integers(0, 6)) * DAY
    while d <= t_end:
        s1_list.append(d)
        d = d + (6 if d < _S1B_END else 12) * DAY
    s1_t = np.array(s1_list, dtype="datetime64[ns]")
    s1_t = s1_t[rng.random(s1_t.size) > 0.05] + np.timedelta64(340, "m")
    g1 = _phenology(s1_t, lc, shift, year_shift)  # (T1, H, W)
    m1 = moisture_at(s1_t)[:, None, None] * (1 + 0.2 * _smooth_noise(rng, (size, size), 3.0))
    p = _S1_DB[lc]  # (H, W, 6)
    texture = 0.8 * _smooth_noise(rng, (2, size, size), 1.0)
    calib = rng.normal(0, 0.3, (s1_t.size, 1, 1))
    wind = np.where(lc == 4, 1.0, 0.0) * rng.normal(0, 2.0, (s1_t.size, 1, 1))
    s1_vars = {}
    for i, b in enumerate(S1_BANDS):
        db = p[..., i] + p[..., 2 + i] * g1 + p[..., 4 + i] * m1 + texture[i] + calib + wind
        speckle = rng.gamma(_SPECKLE_LOOKS, 1 / _SPECKLE_LOOKS, db.shape)
        s1_vars[b] = (db_to_linear(db) * speckle).astype(np.float32)

    # GPP at the tower: same phenology as the tower pixel, light, moisture stress, noise.
    tr_cls = np.array([[lc[row, col]]])
    pheno = _phenology(daily, tr_cls, np.array([[shift[row, col]]]), year_shift)[:, 0, 0]
    light = 0.25 + 0.75 * 0.5 * (1 + np.cos(2 * np.pi * (daily_doy - 172) / 365.25))
    light = light * (0.7 + 0.3 * rng.random(daily.size))  # cloudy days
    stress = np.clip(0.4 + 1.2 * moisture, 0.0, 1.0)
    gpp = _GPP_MAX[int(lc[row, col])] * (0.1 + 0.9 * pheno) * light * stress
    gpp = gpp + rng.normal(0, 1, daily.size) * (0.1 + 0.1 * gpp)  # larger errors on larger fluxes
    qc = np.where(rng.random(daily.size) < 0.1, rng.uniform(0.2, 0.7, daily.size),
                  0.7 + 0.3 * rng.beta(4, 1.2, daily.size))
    gpp[rng.random(daily.size) < 0.01] = np.nan

    tower_attrs = {"tower_row": row, "tower_col": col, "tower_x": float(x[col]),
                   "tower_y": float(y[row]), "seed": int(seed),
                   "title": "deepfeat synthetic cube (data.make_synthetic_cube)"}
    gm = xr.Variable((), np.int32(0), {"crs_wkt": _UTM32N_WKT, "spatial_ref": _UTM32N_WKT,
                                       "epsg_code": "EPSG:32632",
                                       "grid_mapping_name": "transverse_mercator"})
    grid = {"y": ("y", y, {"units": "m", "standard_name": "projection_y_coordinate"}),
            "x": ("x", x, {"units": "m", "standard_name": "projection_x_coordinate"}),
            "spatial_ref": gm}
    s2_vars = {b: (("time", "y", "x"), refl[i], {"units": "1", "grid_mapping": "spatial_ref",
                                                 "long_name": f"surface reflectance {b}"})
               for i, b in enumerate(S2_BANDS)}
    s2_vars["landcover"] = (("y", "x"), lc, {
        "flag_values": np.arange(len(LANDCOVER), dtype=np.int8), "flag_meanings": " ".join(LANDCOVER),
        "grid_mapping": "spatial_ref"})
    s2 = xr.Dataset(s2_vars, coords={"time": s2_t, **grid},
                    attrs=dict(tower_attrs, sensor="Sentinel-2 L2A (synthetic)",
                               cloud_mask="synthetic clouds and shadows set to NaN"))
    s1 = xr.Dataset({b: (("time", "y", "x"), s1_vars[b], {"units": "linear",
                                                          "grid_mapping": "spatial_ref",
                                                          "long_name": f"gamma0 {b.upper()}"})
                     for b in S1_BANDS},
                    coords={"time": s1_t, **grid},
                    attrs=dict(tower_attrs, sensor="Sentinel-1 RTC (synthetic)", units="linear"))
    gpp_ds = xr.Dataset(
        {"GPP_NT_VUT_REF": ("time", gpp.astype(np.float32), {"units": "gC m-2 d-1"}),
         "NEE_VUT_REF_QC": ("time", qc.astype(np.float32), {"units": "1"})},
        coords={"time": daily}, attrs=dict(tower_attrs, landcover=LANDCOVER[int(lc[row, col])]))
    return s1, s2, gpp_ds


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def _packing(name, values):
    """int16 scale/offset for one float variable. S2 bands: 1e-4 (the L2A DN quantum, so nothing is
    lost against real data); anything else: its finite range spread over 65 532 steps."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.float32(1.0), np.float32(0.0)
    lo, hi = float(finite.min()), float(finite.max())
    if name in S2_BANDS and lo >= -3.2 and hi <= 3.2:
        return np.float32(1e-4), np.float32(0.0)
    scale = (hi - lo) / 65532 if hi > lo else 1.0
    return np.float32(scale), np.float32((hi + lo) / 2)


def _netcdf_attrs(attrs):
    """Attributes netCDF can store: bools -> int, sequences of strings -> one string, None dropped."""
    out = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, (bool, np.bool_)):
            v = int(v)
        elif isinstance(v, (list, tuple)) and v and isinstance(v[0], str):
            v = " ".join(v)
        out[k] = v
    return out


def write_cube(ds, path):
    """Write a cube as compressed netCDF4 (zlib), atomically (path + ".tmp", then os.replace).

    Float variables with a time dim are packed as int16 with scale_factor/add_offset and _FillValue
    -32768 (NaN); xarray decodes them back to floats within scale_factor / 2. Other variables are
    written as they are, compressed.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    out = ds.copy(deep=False)
    encoding = {}
    for name in out.variables:
        var = out[name].variable
        var.encoding = {}
        var.attrs = _netcdf_attrs(var.attrs)
        if name == "time":
            t = np.asarray(var.values)
            whole_seconds = t.dtype.kind == "M" and not (t.astype("datetime64[ns]").astype(np.int64)
                                                         % 1_000_000_000).any()
            if whole_seconds:
                encoding[name] = {"units": "seconds since 1970-01-01 00:00:00", "dtype": "int64"}
            continue
        if var.ndim == 0:
            continue
        enc = {"zlib": True, "complevel": 5, "shuffle": True}
        if var.dtype.kind == "f" and "time" in var.dims:
            scale, offset = _packing(name, np.asarray(var.values))
            enc.update(dtype="int16", scale_factor=scale, add_offset=offset, _FillValue=np.int16(-32768))
        elif var.dtype.kind == "f":
            enc["_FillValue"] = np.nan
        encoding[name] = enc
    out.attrs = _netcdf_attrs(out.attrs)
    try:
        out.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_fluxnet_csv(gpp, path):
    """Daily GPP Dataset -> FLUXNET2015 FULLSET DD CSV (TIMESTAMP YYYYMMDD, -9999 missing), atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    days = np.asarray(gpp["time"].values).astype("datetime64[D]").astype(str)
    cols = ("GPP_NT_VUT_REF", "NEE_VUT_REF_QC")
    values = [np.asarray(gpp[c].values, dtype=np.float64) for c in cols]
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("TIMESTAMP",) + cols)
        for i, day in enumerate(days):
            w.writerow([day.replace("-", "")] +
                       [f"{v[i]:.5f}" if np.isfinite(v[i]) else "-9999" for v in values])
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Patch sampling (Sec. III-B: 15 x 15 px x 11 frames out of 40 (S1) or 20 (S2, fusion) frames)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamplingConfig:
    """Sec. III-B sampling: sequences of `seq_len` frames every `t_stride` frames, patch corners every
    `s_stride` pixels, `n_frames` of each sequence drawn at random (kept in time order)."""
    seq_len: int
    t_stride: int
    s_stride: int
    n_frames: int = 11
    patch: int = 15


S1_SAMPLING = SamplingConfig(seq_len=40, t_stride=40, s_stride=15)
S2_SAMPLING = SamplingConfig(seq_len=20, t_stride=17, s_stride=9)
FUSION_SAMPLING = SamplingConfig(seq_len=20, t_stride=17, s_stride=9)


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


def sample_patches(arrays, days, cfg, rng, key):
    """Sec. III-B samples of one cube: {name: (x (N, F, C, P, P) float32, d (N, F) float64 days)}.

    arrays[name] (T, C, H, W) float32 with NaN and days[name] (T,) (day_offsets) share T, H, W across
    modalities (fusion: S1 already matched to the S2 dates, its days from s1_time). All modalities
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
    c = cfg.patch // 2
    centre = ref[frames[:, cfg.n_frames // 2], :, y0 + c, x0 + c]  # (N, C)
    keep = ~np.isnan(centre).any(axis=1)
    frames, y0, x0 = frames[keep], y0[keep], x0[keep]
    return {n: (gather_patches(a, frames, y0, x0, cfg.patch),
                np.asarray(days[n], dtype=np.float64)[frames])
            for n, a in arrays.items()}


# ---------------------------------------------------------------------------------------------
# Splits and training cubes (Sec. II: train/val/test by cube, 75/17/8 %)
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
    """A loaded cube (see load_training_cubes) -> disjoint tiles of size x size px, `gap` px apart.

    Tiles start at 0, size + gap, ... along y and x while they fit; each is a cube of its own, named
    'NAME[y0:y1,x0:x1]', with views (no copies) of the cube's arrays.
    """
    H, W = next(iter(cube["arrays"].values())).shape[2:]
    return [{"name": f"{cube['name']}[{y0}:{y0 + size},{x0}:{x0 + size}]",
             "arrays": {m: a[:, :, y0:y0 + size, x0:x0 + size] for m, a in cube["arrays"].items()},
             "days": cube["days"]}
            for y0 in range(0, H - size + 1, size + gap) for x0 in range(0, W - size + 1, size + gap)]


_MODALITIES = {"s1": S1_SAMPLING, "s2": S2_SAMPLING, "fusion": FUSION_SAMPLING}
_RESOLUTION = re.compile(r"(.+)_(10|20|60)m$")        # X_10m.nc, X_20m.nc: one S2 area, two files


def find_cubes(paths, modality):
    """Expand files/folders into cube entries, sorted by name.

    s1 -> [X_s1.nc ...]; s2 -> [X_s2.nc ...], where files named X_10m.nc and X_20m.nc (and X_60m.nc)
    become one entry (X_10m.nc, X_20m.nc): one area at two resolutions, combined by open_s2;
    fusion -> [(X_s1.nc, X_s2.nc) ...] paired by their common prefix X. A tuple among `paths` is an
    entry already (a fusion pair, or the S2 files of one area) and is kept as it is.
    """
    if modality not in _MODALITIES:
        raise CubeError(f"modality must be one of {sorted(_MODALITIES)}, got {modality!r}")
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    suffixes = ("_s1", "_s2") if modality == "fusion" else (f"_{modality}",)
    files, entries = [], []
    for p in paths:
        if isinstance(p, tuple):
            entries.append(tuple(map(Path, p)))
            continue
        p = Path(p)
        if p.is_dir() and p.suffix != ".zarr":
            found = sorted(f for s in suffixes for f in p.glob(f"*{s}.nc"))
            if not found:
                raise CubeError(f"{p}: no {' or '.join('*' + s + '.nc' for s in suffixes)} files found")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise CubeError(f"{p}: file or folder not found")
    if not files and not entries:
        raise CubeError("no cube files given (--cubes)")
    if modality == "s1":
        entries += sorted(set(files))
    elif modality == "s2":
        areas = {}
        for f in sorted(set(files)):
            m = _RESOLUTION.fullmatch(f.stem)
            areas.setdefault((f.parent, m.group(1)) if m else f, []).append(f)
        entries += [tuple(group) if len(group) > 1 else group[0] for group in areas.values()]
    else:
        pairs = {}
        for f in files:
            stem = f.stem
            if stem[-3:] not in ("_s1", "_s2"):
                raise CubeError(f"{f}: fusion needs files named X_s1.nc and X_s2.nc")
            pairs.setdefault((f.parent, stem[:-3]), {})[stem[-2:]] = f
        for (folder, prefix), pair in pairs.items():
            for s in ("s1", "s2"):
                if s not in pair:
                    raise CubeError(f"{folder / prefix}: incomplete pair, {prefix}_{s}.nc is missing")
        entries += [(p["s1"], p["s2"]) for p in pairs.values()]
    return sorted(entries, key=cube_name)


def cube_name(entry):
    """'folder/synth_0_s2.nc' -> 'synth_0'; a fusion pair or the S2 files of one area -> their prefix."""
    stem = Path(entry[0] if isinstance(entry, tuple) else entry).stem
    m = _RESOLUTION.fullmatch(stem)
    return m.group(1) if m else stem[:-3] if stem[-3:] in ("_s1", "_s2") else stem


def load_training_cubes(paths, modality, bands=None, mask_var=None):
    """Cubes ready for sample_patches: [{"name", "arrays": {m: (T, C, H, W)}, "days": {m: (T,)}}].

    `paths`: files/folders or entries (expanded by find_cubes). s1: open_s1; s2: open_s2 with `bands`
    (default all ten S2_BANDS; real files often lack some) and `mask_var` (see prepare_s2); fusion:
    open_s2, open_s1(target=s2), match_s1_to_s2, days of s1 from s1_time. Each cube is validated
    for the modality's sampling (>= 11 dates, >= 15 px).
    """
    bands = tuple(bands or S2_BANDS)
    entries = find_cubes(paths, modality)
    cfg = _MODALITIES[modality]
    cubes = []
    for entry in entries:
        if modality == "s1":
            s1 = open_s1(entry)
            validate_cube(s1, S1_BANDS, cfg.n_frames, cfg.patch, name=str(entry))
            arrays, days = {"s1": cube_array(s1, S1_BANDS)}, {"s1": day_offsets(s1["time"])}
        elif modality == "s2":
            s2 = open_s2(entry, bands=bands, mask_var=mask_var)
            validate_cube(s2, bands, cfg.n_frames, cfg.patch, name=cube_name(entry))
            arrays, days = {"s2": cube_array(s2, bands)}, {"s2": day_offsets(s2["time"])}
        else:
            s1_path, s2_path = entry
            s2 = open_s2(s2_path, bands=bands, mask_var=mask_var)
            validate_cube(s2, bands, cfg.n_frames, cfg.patch, name=str(s2_path))
            matched = match_s1_to_s2(open_s1(s1_path, target=s2), s2)
            arrays = {"s1": cube_array(matched, S1_BANDS), "s2": cube_array(s2, bands)}
            days = {"s1": day_offsets(matched["s1_time"]), "s2": day_offsets(s2["time"])}
        cubes.append({"name": cube_name(entry), "arrays": arrays, "days": days})
    return cubes


# ---------------------------------------------------------------------------------------------
# CLI: inspect cubes, regenerate sample_data/
# ---------------------------------------------------------------------------------------------

SAMPLE_YEARS = (2018, 2019, 2020, 2021, 2022)
TOWER_SEED, TOWER_SIZE, TOWER_START, TOWER_END = 100, 24, "2017-01-01", "2020-12-31"


def _range_text(a):
    """'min .. p50 .. max (NaN x %)' of an array."""
    finite = a[np.isfinite(a)]
    nan = 100 * (1 - finite.size / max(a.size, 1))
    if finite.size == 0:
        return f"all NaN ({a.size} values)"
    lo, mid, hi = np.percentile(finite, [0, 50, 100])
    return f"{lo:.4g} .. {mid:.4g} .. {hi:.4g}  (NaN {nan:.1f} %)"


def _dates_text(t):
    """Date count, range and median revisit in days."""
    if t.size == 0:
        return "no dates"
    gaps = np.diff(day_offsets(t))
    revisit = f", median revisit {np.median(gaps):.1f} d" if gaps.size else ""
    return f"{t.size}, {str(t[0])[:10]} .. {str(t[-1])[:10]}{revisit}"


def _inspect_csv(path):
    """Summary of a FLUXNET-style daily CSV (rows, dates, GPP and QC ranges, -9999 share)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    lines = [f"rows        : {len(rows)}"]
    if rows and "TIMESTAMP" in rows[0]:
        lines.append(f"dates       : {rows[0]['TIMESTAMP']} .. {rows[-1]['TIMESTAMP']}")
    for col in ("GPP_NT_VUT_REF", "NEE_VUT_REF_QC"):
        if rows and col in rows[0]:
            v = np.array([float(r[col]) for r in rows])
            lines.append(f"{col:<12}: {_range_text(np.where(v == -9999, np.nan, v))}  (-9999 = NaN)")
    return lines


def _inspect_nc(path):
    """Summary of one cube file: raw layout and the prepared S2/S1 values."""
    with open_raw(path) as raw:
        ds = _split_band_dim(raw, str(path))
        lines = [f"dims        : " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()),
                 f"variables   : " + ", ".join(f"{v} ({ds[v].dtype})" for v in ds.data_vars)]
        if "x" in ds.coords and ds.sizes.get("x", 0) > 1:
            lines.append(f"grid        : {_resolution(ds):g} m pixels, CRS {str(_crs_id(ds))[:40]}")
        if "time" in ds.coords:
            t = np.asarray(ds["time"].values)
            lines.append(f"dates       : {_dates_text(t)}")
        tower = {k: ds.attrs[k] for k in ("tower_row", "tower_col") if k in ds.attrs}
        if tower:
            lines.append(f"tower pixel : row {tower['tower_row']}, col {tower['tower_col']}")
        if "landcover" in ds.data_vars:
            lc = ds["landcover"].values
            share = ", ".join(f"{n} {100 * np.mean(lc == i):.0f} %" for i, n in enumerate(LANDCOVER))
            lines.append(f"land cover  : {share}")
        s2_present = [b for b in S2_BANDS if b in _s2_names(ds)]
        s1_present = [b for b in S1_BANDS if b in _s1_names(ds)]
        if s2_present:
            scl = _s2_names(ds).get("SCL")
            if scl is not None:
                mask, how = _cloud_mask(ds, None, False, str(path))
                lines.append(f"cloud mask  : {how}; {100 * mask.mean():.1f} % of pixels masked")
            prepared = prepare_s2(ds, s2_present, source=str(path))
            lines.append(f"S2 bands    : {' '.join(s2_present)} "
                         f"(missing: {' '.join(b for b in S2_BANDS if b not in s2_present) or 'none'})")
            lines.append(f"scaling     : {prepared[s2_present[0]].attrs['boa_offset']}, "
                         f"dn_scale {prepared[s2_present[0]].attrs['dn_scale']:g}")
            for b in s2_present:
                lines.append(f"  {b:<10}: raw {_range_text(np.asarray(ds[_s2_names(ds)[b]].values, float))}")
                lines.append(f"  {'':<10}  reflectance {_range_text(prepared[b].values)}")
        if s1_present:
            prepared = prepare_s1(ds, s1_present, source=str(path))
            lines.append(f"S1 bands    : {' '.join(s1_present)}; {prepared.attrs['merged_acquisitions']} "
                         f"same-day acquisitions merged -> dates {_dates_text(prepared['time'].values)}")
            for b in s1_present:
                lines.append(f"  {b:<10}: raw {_range_text(np.asarray(ds[_s1_names(ds)[b]].values, float))}"
                             f"; units {prepared[b].attrs['input_units']}")
                lines.append(f"  {'':<10}  normalised {_range_text(prepared[b].values)}")
    return lines


def inspect(path):
    """Print a summary of a cube file (S2, S1, synthetic) or FLUXNET CSV; a folder: every file in it.
    Returns the number of files that could not be read (each named on stderr)."""
    p = Path(path)
    if p.is_dir() and p.suffix != ".zarr":
        return sum(inspect(f) for f in sorted(q for q in p.iterdir() if q.suffix in (".nc", ".csv", ".zarr")))
    print(f"== {p}")
    try:
        print("\n".join(_inspect_csv(p) if p.suffix == ".csv" else _inspect_nc(p)))
    except (InputError, OSError, KeyError, ValueError) as err:
        print(f"data.py inspect: error: {err}", file=sys.stderr)
        return 1
    return 0


def make_sample_data(out):
    """Regenerate sample_data/: synth_{0..4}_{s1,s2}.nc (64 x 64 px, one year each, seeds 0-4,
    years 2018-2022) and, in sample_data/tower/ (so a scan of sample_data/ for training cubes leaves
    it out), tower_{s1,s2}.nc (24 x 24 px, 2017-2020, seed 100) with tower_gpp.csv (FLUXNET2015
    FULLSET DD format). Deterministic."""
    out = Path(out)
    (out / "tower").mkdir(parents=True, exist_ok=True)
    jobs = [(f"synth_{i}", i, 64, f"{yr}-01-01", f"{yr}-12-31") for i, yr in enumerate(SAMPLE_YEARS)]
    jobs.append(("tower/tower", TOWER_SEED, TOWER_SIZE, TOWER_START, TOWER_END))
    for k, (name, seed, size, start, end) in enumerate(jobs, 1):
        tic = timer.time()
        s1, s2, gpp = make_synthetic_cube(seed, size=size, start=start, end=end)
        write_cube(s1, out / f"{name}_s1.nc")
        write_cube(s2, out / f"{name}_s2.nc")
        nan = 100 * float(np.isnan(s2["B02"].values).mean())
        print(f"[{k}/{len(jobs)}] {name}: seed {seed}, {size} x {size} px, {start} .. {end}, "
              f"S2 {s2.sizes['time']} dates ({nan:.0f} % cloud/shadow), S1 {s1.sizes['time']} dates "
              f"({timer.time() - tic:.1f} s)", flush=True)
        if name == "tower/tower":
            write_fluxnet_csv(gpp, out / "tower" / "tower_gpp.csv")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out}: {total / 1e6:.1f} MB")


def main(argv=None):
    """Command line: `inspect PATH...` and `make-sample-data [--out DIR]`."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_inspect = sub.add_parser("inspect", help="summarise cube files (dims, bands, dates, revisit, "
                               "cloud/NaN fraction, value ranges); a folder: every .nc/.csv in it")
    p_inspect.add_argument("paths", nargs="+", metavar="PATH",
                           help="netCDF cube (S2, S1, synthetic), FLUXNET daily CSV, or folder")
    p_make = sub.add_parser("make-sample-data", help="regenerate sample_data/ deterministically")
    p_make.add_argument("--out", default=str(Path(__file__).resolve().parent / "sample_data"),
                        help="output folder (default: sample_data/ next to data.py)")
    args = parser.parse_args(argv)
    if args.command == "inspect":
        if sum(inspect(p) for p in args.paths):
            raise SystemExit(2)
    else:
        make_sample_data(args.out)


if __name__ == "__main__":
    run_cli(main)
