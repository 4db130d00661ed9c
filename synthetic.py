"""synthetic.py: seeded synthetic S1/S2 cubes in the real format, and the writers of sample_data/.

Fake data in the cube format that the readers accept (torchgeo's practice): S2 surface reflectance
with clouds and shadows already NaN (`cloud_mask` attribute), S1 gamma0 in linear units with
speckle and gaps, a land-cover map of five classes (CF flag_values / flag_meanings) with their
phenology, and for flux-tower cubes a daily GPP series written as a FLUXNET2015 FULLSET DD file.
Every test and `sample_data/` use this one generator; the tests of DN scaling, the BOA offset and
the SCL mask write their own raw variants of it.

    python synthetic.py                      # rewrites sample_data/ deterministically (~2 s)
    python -c "import synthetic; s1, s2, gpp = synthetic.make_synthetic_cube(0, size=32); print(s2)"
"""
import csv
import time as timer
from pathlib import Path

import numpy as np
import xarray as xr

from data import (DAY, S1_BANDS, S2_BANDS, ArgumentParser, CubeError, day_offsets, db_to_linear, run_cli,
                  write_atomic)
from fluxnet import GPP, MISSING, QC

# ---------------------------------------------------------------------------------------------
# Synthetic cubes (seeded fake data in the real format)
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
      moisture, plus noise; NEE_VUT_REF_QC (0-1, mostly > 0.7); ~1 % missing days (NaN); and
      GPP_EXPECTED, the part the land surface sets (no daily clouds, no noise): the most any
      embedding of the surface could explain (reproduce.py's GPP claims state it).
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
    stress = np.clip(0.4 + 1.2 * moisture, 0.0, 1.0)
    # what the land surface sets (phenology, soil moisture) at the mean cloudiness (0.85): the day's
    # clouds and the measurement noise below are beyond any satellite embedding
    canopy = _GPP_MAX[int(lc[row, col])] * (0.1 + 0.9 * pheno)
    expected = canopy * light * 0.85 * stress
    light = light * (0.7 + 0.3 * rng.random(daily.size))  # cloudy days
    gpp = canopy * light * stress
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
        {GPP: ("time", gpp.astype(np.float32), {"units": "gC m-2 d-1"}),
         QC: ("time", qc.astype(np.float32), {"units": "1"}),
         "GPP_EXPECTED": ("time", expected.astype(np.float32), {
             "units": "gC m-2 d-1", "long_name": "GPP set by phenology and soil moisture at mean cloudiness, "
                                                 "without the day's clouds and the measurement noise"})},
        coords={"time": daily}, attrs=dict(tower_attrs, landcover=LANDCOVER[int(lc[row, col])]))
    return s1, s2, gpp_ds


# Independent pixels: S2 reflectance and S1 gamma0 ranges of the draws (bands, dB per band)
INDEPENDENT_S2 = (0.02, 0.4)
INDEPENDENT_S1_DB = {"vv": (-25.0, -5.0), "vh": (-30.0, -10.0)}


def independent_pixels(s1, s2, seed):
    """The same cubes with every valid value drawn independently: a world where nothing but the
    centre observation itself predicts the centre, so an autoencoder lowers its centre loss only by
    carrying its central pixel-date through the bottleneck (learning.py's sharpest test).

    S2: uniform reflectance in INDEPENDENT_S2 per pixel, date and band; S1: uniform dB in
    INDEPENDENT_S1_DB, written as linear gamma0 like the real files. Dates, grid, clouds (NaN) and
    attributes are kept; the land cover is meaningless here and dropped."""
    rng = np.random.default_rng([seed, 1])
    s2 = s2.drop_vars("landcover").copy()
    for b in S2_BANDS:
        v = s2[b].values
        s2[b].values = np.where(np.isfinite(v), rng.uniform(*INDEPENDENT_S2, v.shape), np.nan).astype(np.float32)
    s1 = s1.copy()
    for b in S1_BANDS:
        v = s1[b].values
        db = rng.uniform(*INDEPENDENT_S1_DB[b], v.shape)
        s1[b].values = np.where(np.isfinite(v), db_to_linear(db), np.nan).astype(np.float32)
    return s1, s2


# ---------------------------------------------------------------------------------------------
# Writing cubes and flux tables
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
    """Write a cube as compressed netCDF4 (zlib), atomically (data.write_atomic).

    Float variables with a time dim are packed as int16 with scale_factor/add_offset and _FillValue
    -32768 (NaN); xarray decodes them back to floats within scale_factor / 2. Other variables are
    written as they are, compressed.
    """
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
    write_atomic(path, lambda tmp: out.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding))


def write_fluxnet_csv(gpp, path):
    """Daily GPP Dataset -> FLUXNET2015 FULLSET DD CSV (TIMESTAMP YYYYMMDD, -9999 missing), atomically."""
    days = np.asarray(gpp["time"].values).astype("datetime64[D]").astype(str)
    cols = (GPP, QC)
    values = [np.asarray(gpp[c].values, dtype=np.float64) for c in cols]

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("TIMESTAMP",) + cols)
            for i, day in enumerate(days):
                w.writerow([day.replace("-", "")] +
                           [f"{v[i]:.5f}" if np.isfinite(v[i]) else f"{MISSING:g}" for v in values])
    write_atomic(path, write)


# ---------------------------------------------------------------------------------------------
# sample_data/
# ---------------------------------------------------------------------------------------------

SAMPLE_YEARS = (2018, 2019, 2020, 2021, 2022)
TOWER_SEED, TOWER_SIZE, TOWER_START, TOWER_END = 100, 24, "2017-01-01", "2020-12-31"


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


def make_cubes(out, seeds, size=64, year=2020, world="smooth"):
    """Write synth_SEED_{s1,s2}.nc for each seed into OUT (one year each): the sample data's world
    ("smooth") or its independent_pixels twin ("independent"). Deterministic; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        s1, s2, _ = make_synthetic_cube(seed, size=size, start=f"{year}-01-01", end=f"{year}-12-31")
        if world == "independent":
            s1, s2 = independent_pixels(s1, s2, seed)
        for name, ds in (("s1", s1), ("s2", s2)):
            path = out / f"synth_{seed}_{name}.nc"
            write_cube(ds, path)
            paths.append(path)
    return paths


def main(argv=None):
    """Command line: regenerate sample_data/ (or --out DIR), or write the cubes of --seeds."""
    parser = ArgumentParser(description="Regenerate the shipped sample_data/ deterministically (make_sample_data), "
                                        "or write the cubes of --seeds.")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "sample_data"),
                        help="output folder (default: sample_data/ next to synthetic.py)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="write synth_SEED_{s1,s2}.nc of these seeds instead of the sample data (default: none)")
    parser.add_argument("--world", choices=("smooth", "independent"), default="smooth",
                        help="with --seeds: smooth = the sample data's world (default); independent = every value "
                             "drawn on its own (independent_pixels)")
    parser.add_argument("--size", type=int, default=64, help="with --seeds: pixels per side (default 64)")
    args = parser.parse_args(argv)
    if args.seeds is None:
        make_sample_data(args.out)
        return
    for path in make_cubes(args.out, args.seeds, args.size, world=args.world):
        print(f"wrote {path}")


if __name__ == "__main__":
    run_cli(main)
