"""readers.py: real Sentinel-2 / Sentinel-1 files in, cubes of the data.py convention out.

Everything that tolerates odd real files lives here, so data.py can stay the paper's definitions:
band layouts (one variable per band, or a `band` dimension; short `B2` and long `B02` names; STAC
asset names), units (S2 DN or reflectance, the L2A BOA offset of processing baseline 04.00; S1 dB,
dB x 100 or linear), nodata (`_FillValue`, DN 0, Sen2Cor SCL classes or a CloudSEN12 mask),
10 m + 20 m files of one area, S1 same-day slices and the three-frame rolling mean (Sec. II), and
nearest-neighbour regridding of S1 onto the S2 grid. modalities.py names these readers in the S1
and S2 entries; `python readers.py inspect FILE` prints what they make of a file.

    python -c "import readers; print(readers.open_s2('sample_data/synth_0_s2.nc'))"
    python readers.py inspect ../shared/realdata/s2_l2a_romania/*.nc
    python readers.py inspect sample_data
"""
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

import fluxnet
from data import (NO_MASK, S1_BANDS, S1_DB_RANGE, S2_BANDS, ArgumentParser, CubeError, InputError, check_grid,
                  check_same_crs, crs_id, day_offsets, db_to_linear, grid_mapping, linear_to_db, nearest_index, run_cli,
                  time_values, validate_cube)

# ---------------------------------------------------------------------------------------------
# Constants of the real products
# ---------------------------------------------------------------------------------------------

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
S1_UNITS = ("db", "db100", "linear")


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
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in raw[band_dim].values]
    twice = sorted({v for v in labels if labels.count(v) > 1})
    if twice:
        raise CubeError(f"{name}: band label {twice[0]!r} appears more than once in '{band_dim}' ({', '.join(labels)})")
    variables = {}
    for var_name, var in raw.data_vars.items():
        if band_dim not in var.dims:
            variables[var_name] = var
            continue
        for i, label in enumerate(labels):
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


def _band_values(var, var_name, name):
    """The (time, y, x) values of a band as a numpy array; CubeError unless they are numbers (text that
    looks like numbers and booleans would otherwise be cast to floats without a word)."""
    values = np.asarray(_as_tyx(var, var_name, name).values)
    if values.dtype.kind not in "iuf":
        raise CubeError(f"{name}: band {var_name} has dtype {values.dtype}, expected numbers (integer or float)")
    return values


def _grid_coords(ds, var_names, name):
    """Coordinates y, x (checked: a north-up even grid) and the grid-mapping scalar of `ds` (loaded, so
    the file can be closed)."""
    check_grid(ds, name)
    coords = {"y": ds["y"].variable.copy(), "x": ds["x"].variable.copy()}
    gm = grid_mapping(ds, var_names)
    if gm is not None:
        coords[gm] = xr.Variable((), ds[gm].values, dict(ds[gm].attrs))
    return coords, gm


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
    ref_t = time_values(ref, ref_src)
    ref_gm = grid_mapping(ref, list(ref.data_vars))
    chosen = {}
    for i in order:
        d, src = dsets[i], sources[i]
        if not np.array_equal(time_values(d, src), ref_t):
            raise CubeError(f"{src}: dates differ from those of {ref_src}; "
                            "files to combine must share one time axis")
        check_same_crs(d, ref, src, ref_src)
        iy, in_y = nearest_index(d["y"].values, ref["y"].values)
        ix, in_x = nearest_index(d["x"].values, ref["x"].values)
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


def _is_reflectance(var, values, var_name, name):
    """Rule for "already scaled": CF packing with a scale_factor, a units attr of "1"/"reflectance",
    or float values whose maximum is below REFLECTANCE_MAX. Otherwise the values are L2A DN.

    CubeError where the file contradicts itself or cannot hold DN: a scale_factor or units attr that
    says reflectance on values reaching REFLECTANCE_MAX (DN or percent would pass as reflectance x 10000
    or x 100), or unscaled 8-bit integers (L2A DN run to 10000 and beyond)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        vmax = float(np.nanmax(values)) if values.size else np.nan
    scale = var.encoding.get("scale_factor")
    units = str(var.attrs.get("units", "")).strip().lower()
    if scale is not None and float(scale) != 1.0:
        why = "CF scale_factor in file"
    elif units in REFLECTANCE_UNITS:
        why = f"units attribute {units!r}"
    elif values.dtype.kind == "f" and not vmax >= REFLECTANCE_MAX:            # all-NaN included
        return True, f"float values below {REFLECTANCE_MAX}"
    elif np.dtype(var.encoding.get("dtype", values.dtype)).itemsize == 1:
        raise CubeError(f"{name}: band {var_name} holds 8-bit integers ({var.encoding.get('dtype', values.dtype)}) "
                        "without a scale_factor: neither reflectance nor L2A digital numbers (0-10000 and more)")
    else:
        return False, "digital numbers"
    if vmax >= REFLECTANCE_MAX:
        raise CubeError(f"{name}: band {var_name} is reflectance by its {why}, but its values reach {vmax:g} "
                        f"(reflectance stays below {REFLECTANCE_MAX:g}): DN or percent? fix the units or scale_factor")
    return True, why


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
    times = time_values(ds, name)
    mask, mask_how = _cloud_mask(ds, mask_var, mask_snow, name)
    variables = {}
    for b in bands:
        var = ds[names[b]]
        values = _band_values(var, names[b], name)  # (T, H, W)
        scaled, why = _is_reflectance(var, values, names[b], name)
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
    coords, gm = _grid_coords(ds, [names[b] for b in bands], name)
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

def normalise_s1(db, band):
    """dB -> 0-1 with the fixed bounds S1_DB_RANGE[band]: (dB - lo) / (hi - lo), clipped; NaN kept."""
    lo, hi = S1_DB_RANGE[band]
    return np.clip((np.asarray(db, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)


def _s1_units(var, values, units, ds_attrs, var_name, name):
    """'db100' | 'db' | 'linear' and why. Rule: `units` if given; else a units attribute containing
    'dB' (with '100': dB x 100) or naming linear power; else the median of the valid values
    (<= -100: dB x 100, < 0: dB, >= 0: linear). A units attribute that the median contradicts is a
    CubeError: the file says one thing and holds another, and neither can be trusted."""
    if units != "auto":
        u = str(units).lower()
        if u not in S1_UNITS:
            raise CubeError(f"units must be 'auto' or one of {S1_UNITS}, got {units!r}")
        return u, "given"
    finite = values[np.isfinite(values)]
    med = float(np.median(finite)) if finite.size else np.nan
    by_values = "db100" if med <= -100 else "db" if med < 0 else "linear"
    for attrs in (var.attrs, ds_attrs):
        text = str(attrs.get("units", "")).lower().replace(" ", "")
        kind = "db100" if "db" in text and "100" in text else "db" if "db" in text else \
            "linear" if text in ("linear", "1", "power", "intensity", "m2/m2", "m2m-2", "natural") else None
        if kind is None:
            continue
        if finite.size and kind != by_values:          # e.g. "dB" on linear power: every value would be ~0 dB
            raise CubeError(f"{name}: {var_name} has units {attrs['units']!r}, but its values (median {med:.4g}) "
                            f"are {by_values} by their range; fix the units attribute")
        return kind, f"units attribute {attrs['units']!r}"
    if finite.size == 0:
        return "linear", "no valid values"
    return by_values, f"value range (median {med:.4g})"


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
    if times.size == 0:                   # nothing to merge (validate_cube refuses a cube without dates)
        return values, times
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
    times = time_values(ds, name, allow_duplicates=True)
    variables, merged_times, how = {}, times, {}
    for b in bands:
        var = ds[names[b]]
        values = _band_values(var, names[b], name).astype(np.float64)  # (T, H, W)
        kind, why = _s1_units(var, values, units, ds.attrs, names[b], name)
        how[b] = f"{kind} ({why})"
        linear, merged_times = merge_same_day(_to_linear(values, kind), times)
        variables[b] = normalise_s1(linear_to_db(rolling_mean3(linear)), b).astype(np.float32)
    coords, gm = _grid_coords(ds, [names[b] for b in bands], name)
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
    iy, in_y = nearest_index(ds["y"].values, target["y"].values)
    ix, in_x = nearest_index(ds["x"].values, target["x"].values)
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
    t_coords, t_gm = _grid_coords(tds, list(tds.data_vars), "the target (S2) grid")
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
# inspect: what the readers make of a file
# ---------------------------------------------------------------------------------------------

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
    """Summary of a FLUXNET FULLSET CSV as gpp.py reads it (fluxnet.read_fluxnet): days, GPP, QC."""
    flux = fluxnet.read_fluxnet(path)
    lines = [f"days        : {_dates_text(flux['time'].values)} (from {flux.attrs['step_minutes']}-minute records)"]
    for col in (fluxnet.GPP, fluxnet.QC):
        lines.append(f"{col:<12}: {_range_text(flux[col].values)}  ({flux[col].attrs['units']}; -9999 = NaN)")
    return lines


def _inspect_nc(path):
    """Summary of one cube file: raw layout and the prepared S2/S1 values."""
    with open_raw(path) as raw:
        ds = _split_band_dim(raw, str(path))
        lines = ["dims        : " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()),
                 "variables   : " + ", ".join(f"{v} ({ds[v].dtype})" for v in ds.data_vars)]
        if "x" in ds.coords and ds.sizes.get("x", 0) > 1:
            lines.append(f"grid        : {_resolution(ds):g} m pixels, CRS {str(crs_id(ds))[:40]}")
        if "time" in ds.coords:
            lines.append(f"dates       : {_dates_text(time_values(ds, str(path), allow_duplicates=True))}")
        tower = {k: ds.attrs[k] for k in ("tower_row", "tower_col") if k in ds.attrs}
        if tower:
            lines.append(f"tower pixel : row {tower['tower_row']}, col {tower['tower_col']}")
        if "landcover" in ds.data_vars:
            lc = ds["landcover"]                                         # CF flags: values and their meanings
            share = ", ".join(f"{n} {100 * np.mean(lc.values == v):.0f} %"
                              for v, n in zip(lc.attrs["flag_values"], lc.attrs["flag_meanings"].split()))
            lines.append(f"land cover  : {share}")
        s2_present = [b for b in S2_BANDS if b in _s2_names(ds)]
        s1_present = [b for b in S1_BANDS if b in _s1_names(ds)]
        if s2_present:
            scl = _s2_names(ds).get("SCL")
            if scl is not None:
                mask, how = _cloud_mask(ds, None, False, str(path))
                lines.append(f"cloud mask  : {how}; {100 * mask.mean():.1f} % of pixels masked")
            prepared = prepare_s2(ds, s2_present, source=str(path))
            validate_cube(prepared, s2_present, min_dates=1, min_size=1, name=str(path))    # what open_s2 refuses
            lines.append(f"S2 bands    : {' '.join(s2_present)} "
                         f"(missing: {' '.join(b for b in S2_BANDS if b not in s2_present) or 'none'})")
            lines.append(f"scaling     : {prepared[s2_present[0]].attrs['boa_offset']}, "
                         f"dn_scale {prepared[s2_present[0]].attrs['dn_scale']:g}")
            for b in s2_present:
                lines.append(f"  {b:<10}: raw {_range_text(np.asarray(ds[_s2_names(ds)[b]].values, float))}")
                lines.append(f"  {'':<10}  reflectance {_range_text(prepared[b].values)}")
        if s1_present:
            prepared = prepare_s1(ds, s1_present, source=str(path))
            validate_cube(prepared, s1_present, min_dates=1, min_size=1, name=str(path))    # what open_s1 refuses
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
        print(f"readers.py inspect: error: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    """Command line: `inspect PATH...`: what the readers make of each file."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_inspect = sub.add_parser("inspect", help="summarise cube files (dims, bands, dates, revisit, "
                               "cloud/NaN fraction, value ranges); a folder: every .nc/.csv in it")
    p_inspect.add_argument("paths", nargs="+", metavar="PATH",
                           help="netCDF cube (S2, S1, synthetic), FLUXNET CSV, or folder")
    args = parser.parse_args(argv)
    if sum(inspect(p) for p in args.paths):
        raise SystemExit(2)


if __name__ == "__main__":
    run_cli(main)
