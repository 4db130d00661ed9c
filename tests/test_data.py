"""Tests for data.py: real S2/S1 loading, S1 preprocessing, matching, synthetic cubes, sampling, splits.

Run from the repository root: `python -m pytest -q tests/test_data.py` (about 10 s on 2 CPU cores).
Real-file tests use ../shared/realdata through the `realdata` fixture and skip where it is absent.
"""
import csv
import functools
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import data
import modalities
import synthetic
import readers
from data import CubeError

ROMANIA = "s2_l2a_romania/sentinel2_cube_subset_romania_{}.nc"
MYANMAR = "s1_grd_myanmar/s1_vv_vh_myanmar_2014_2018.nc"
ROMANIA_BANDS = ("B02", "B03", "B04", "B08", "B8A", "B11")  # what the 10 m + 20 m files hold


@functools.lru_cache(maxsize=None)
def _romania(root):
    return readers.open_s2([root / ROMANIA.format("10m"), root / ROMANIA.format("20m")], bands=ROMANIA_BANDS)


@functools.lru_cache(maxsize=None)
def _myanmar(root):
    return readers.open_s1(root / MYANMAR)


@functools.lru_cache(maxsize=None)
def _synthetic(seed, size=32, start="2020-01-01", end="2020-12-31"):
    return synthetic.make_synthetic_cube(seed, size=size, start=start, end=end)


def tiny_cube(T=12, H=16, W=16, bands=("B02",), start="2020-01-01", value=0.1):
    """A cloud-free cube in the convention: every band constant `value`, 5-day revisit."""
    t = np.datetime64(start, "ns") + np.arange(T) * 5 * data.DAY
    v = np.full((T, H, W), value, dtype=np.float32)
    return xr.Dataset({b: (("time", "y", "x"), v.copy()) for b in bands},
                      coords={"time": t, "y": 1000.0 - 10 * np.arange(H), "x": 10.0 * np.arange(W)})


# --------------------------------------------------------------------------------------------
# Dates and validation: every documented bad input raises CubeError naming the problem
# --------------------------------------------------------------------------------------------

def test_day_offsets_known_values():
    # 2020-01-01 is 50 * 365 + 12 leap days = 18262 days after 1970-01-01; noon adds half a day.
    d = data.day_offsets(np.array(["1970-01-02", "2020-01-01T12:00"], dtype="datetime64[ns]"))
    np.testing.assert_array_equal(d, [1.0, 18262.5])
    assert data.day_offsets(xr.DataArray(np.array(["1970-01-11"], dtype="datetime64[s]")))[0] == 10.0
    with pytest.raises(CubeError, match="NaT"):
        data.day_offsets(np.array(["NaT"], dtype="datetime64[ns]"))


def _bad_wrong_dims():
    return tiny_cube().rename({"y": "lat", "x": "lon"})


def _bad_no_time_coord():
    return tiny_cube().drop_vars("time")


def _bad_all_nan():
    ds = tiny_cube()
    ds["B02"][:] = np.nan
    return ds


def _bad_duplicate_times():
    ds = tiny_cube()
    t = ds["time"].values.copy()
    t[3] = t[2]
    return ds.assign_coords(time=t)


def _bad_decreasing_times():
    return tiny_cube().isel(time=[0, 2, 1] + list(range(3, 12)))


BAD_CUBES = [
    (_bad_wrong_dims, "expected \\(time, y, x\\)"),
    (_bad_no_time_coord, "missing time coordinate"),
    (lambda: tiny_cube(bands=("B03",)), "missing band\\(s\\) B02"),
    (_bad_all_nan, "all-NaN"),
    (lambda: tiny_cube(T=5), "only 5 dates, a sample needs at least 11"),
    (lambda: tiny_cube(H=10), "smaller than a 15 x 15 patch"),
    (_bad_decreasing_times, "not increasing"),
    (_bad_duplicate_times, "duplicate times"),
]


@pytest.mark.parametrize("make, message", BAD_CUBES)
def test_validate_cube_rejects_bad_input(make, message):
    with pytest.raises(CubeError, match=message):
        data.validate_cube(make(), ["B02"], name="bad.nc")


def test_validate_cube_accepts_good_cube():
    """Guards against validate_cube silently refusing (or silently accepting) cubes at the limits.

    A Sec. III-B sample needs 11 dates and 15 x 15 px: a cube of exactly 11 dates x 15 x 15 px with one
    finite value left is valid (returns None, no error); one date less (10 < 11), one row or column
    less (14 < 15) or that last finite value removed (all-NaN band) each raise CubeError.
    """
    assert data.validate_cube(tiny_cube(), ["B02"]) is None
    edge = tiny_cube(T=11, H=15, W=15)
    edge["B02"][:] = np.nan
    edge["B02"][10, 14, 14] = 0.1                  # one valid observation is enough
    assert data.validate_cube(edge, ["B02"], min_dates=11, min_size=15) is None
    cloudy = edge.copy(deep=True)
    cloudy["B02"][10, 14, 14] = np.nan
    for bad, message in ((edge.isel(time=slice(0, 10)), "only 10 dates"),
                         (edge.isel(y=slice(1, 15)), "14 x 15 pixels"),
                         (edge.isel(x=slice(1, 15)), "15 x 14 pixels"),
                         (cloudy, "all-NaN")):
        with pytest.raises(CubeError, match=message):
            data.validate_cube(bad, ["B02"], min_dates=11, min_size=15)


@pytest.mark.parametrize("make, message", [BAD_CUBES[i] for i in (0, 1, 2, 6, 7)])
def test_prepare_s2_rejects_bad_input(make, message):
    with pytest.raises(CubeError, match=message):
        readers.prepare_s2(make(), bands=("B02",), source="bad.nc")


def test_open_missing_file():
    with pytest.raises(CubeError, match="file not found"):
        readers.open_s2("no/such/file_s2.nc")


# --------------------------------------------------------------------------------------------
# Real Sentinel-2 L2A (Romania, 10 m + 20 m files)
# --------------------------------------------------------------------------------------------

def test_romania_shapes_dates_values(realdata):
    s2 = _romania(realdata)
    assert list(s2.data_vars) == list(ROMANIA_BANDS)
    assert s2["B02"].shape == (140, 100, 100) and s2["B02"].dtype == np.float32
    t = s2["time"].values
    assert str(t[0])[:10] == "2015-08-01" and str(t[-1])[:10] == "2021-01-01" and t.size == 140
    assert s2.attrs["bands"] == " ".join(ROMANIA_BANDS)
    assert s2["B02"].attrs["grid_mapping"] == "spatial_ref" and "spatial_ref" in s2.coords
    for b in ROMANIA_BANDS:
        v = s2[b].values
        assert 0 < np.nanmin(v) and np.nanmax(v) < 1.7  # reflectance 0-1.x, not DN
    assert 0.2 < np.nanmedian(s2["B08"].values) < 0.4  # forest NIR
    assert np.nanmedian(s2["B04"].values) < 0.06       # forest red


def test_romania_nan_exactly_where_scl_masks(realdata):
    s2 = _romania(realdata)
    raw = xr.open_dataset(realdata / ROMANIA.format("10m"))
    scl, dn = raw["SCL"].values, raw["B2"].values
    # a chosen pixel: first date where SCL says cloud (9) and first where it says vegetation (4)
    t_cloud = int(np.argmax(scl[:, 50, 50] == 9))
    t_veg = int(np.argmax(scl[:, 50, 50] == 4))
    assert scl[t_cloud, 50, 50] == 9 and np.isnan(s2["B02"].values[t_cloud, 50, 50])
    assert s2["B02"].values[t_veg, 50, 50] == pytest.approx(dn[t_veg, 50, 50] / 10000, abs=1e-7)
    # and everywhere: NaN exactly on SCL 0, 1, 3, 8, 9, 10 (snow 11 kept by default)
    masked = np.isin(scl, [0, 1, 3, 8, 9, 10]) | np.isnan(dn)
    np.testing.assert_array_equal(np.isnan(s2["B02"].values), masked)
    snow = readers.open_s2(realdata / ROMANIA.format("10m"), bands=("B2",), mask_snow=True)
    np.testing.assert_array_equal(np.isnan(snow["B02"].values), masked | (scl == 11))


def test_romania_20m_bands_replicated_by_coordinates(realdata, tmp_path):
    s2 = _romania(realdata)
    raw20 = xr.open_dataset(realdata / ROMANIA.format("20m"))
    up = np.repeat(np.repeat(raw20["B8A"].values / 10000, 2, axis=1), 2, axis=2)  # 2 x 2 blocks
    valid = np.isfinite(s2["B8A"].values)
    np.testing.assert_allclose(s2["B8A"].values[valid], up[valid], rtol=1e-6)
    # B03 exists in both files: the 10 m one wins
    raw10 = xr.open_dataset(realdata / ROMANIA.format("10m"))
    np.testing.assert_allclose(s2["B03"].values[valid], raw10["B3"].values[valid] / 10000, rtol=1e-6)
    # a 20 m file stored with y flipped gives the same cube: matching is by coordinates
    raw20.isel(y=slice(None, None, -1)).to_netcdf(tmp_path / "flipped_20m.nc")
    flipped = readers.open_s2([realdata / ROMANIA.format("10m"), tmp_path / "flipped_20m.nc"],
                           bands=("B8A", "B11"))
    np.testing.assert_array_equal(flipped["B11"].values, s2["B11"].values)


def test_romania_missing_band_error_names_band_and_file(realdata):
    with pytest.raises(CubeError) as err:
        readers.open_s2([realdata / ROMANIA.format("10m"), realdata / ROMANIA.format("20m")])
    msg = str(err.value)
    for part in ("B05", "B06", "B07", "B12", "romania_10m.nc"):
        assert part in msg
    assert "bands=" in msg or "--bands" in msg                 # says how to ask for fewer bands
    assert "B8A," not in msg.split("(has")[0]  # B8A is present, not reported missing


def test_prepare_s2_on_row_block_equals_whole_cube(realdata):
    raw = readers.open_s2_raw([realdata / ROMANIA.format("10m"), realdata / ROMANIA.format("20m")])
    try:
        block = readers.prepare_s2(raw.isel(y=slice(13, 31), time=slice(7, 40)), bands=("B2", "B8A"))
    finally:
        raw.close()
    whole = _romania(realdata).isel(y=slice(13, 31), time=slice(7, 40))
    for b in ("B02", "B8A"):
        np.testing.assert_array_equal(block[b].values, whole[b].values)


# --------------------------------------------------------------------------------------------
# S2 layouts, scaling and masks on hand-made raw cubes
# --------------------------------------------------------------------------------------------

def _dn_band_array(s2, offset_from="2022-01-25"):
    """Synthetic reflectance as a stackstac-like DataArray: uint16 DN, band dim, short names, 0 fill."""
    refl = data.cube_array(s2, data.S2_BANDS)  # (T, C, H, W)
    late = s2["time"].values >= np.datetime64(offset_from)
    dn = np.round(refl * 10000) + np.where(late, 1000, 0)[:, None, None, None]
    dn = np.where(np.isnan(refl), 0, dn).astype(np.uint16)
    short = [b.replace("B0", "B") for b in data.S2_BANDS]
    return xr.DataArray(dn, dims=("time", "band", "y", "x"),
                        coords={"time": s2["time"], "band": short, "y": s2["y"], "x": s2["x"]})


@pytest.mark.filterwarnings("ignore:.*NOT masked")      # no SCL: the synthetic clouds are NaN already
def test_prepare_s2_band_dim_dn_and_boa_offset():
    _, s2, _ = _synthetic(3, start="2021-12-01", end="2022-03-01")  # straddles 2022-01-25
    out = readers.prepare_s2(_dn_band_array(s2))
    assert list(out.data_vars) == list(data.S2_BANDS)
    for b in data.S2_BANDS:
        np.testing.assert_array_equal(np.isnan(out[b].values), np.isnan(s2[b].values))
        np.testing.assert_allclose(out[b].values, s2[b].values, atol=5e-5)  # half a DN
    # a forced offset applies to every date; baseline metadata overrides the date rule
    forced = readers.prepare_s2(_dn_band_array(s2), bands=("B04",), boa_offset=0)
    late = s2["time"].values >= np.datetime64("2022-01-25")
    np.testing.assert_allclose(forced["B04"].values[late], s2["B04"].values[late] + 0.1, atol=6e-5)
    pb = np.where(late, "04.00", "03.01")
    by_baseline = readers.prepare_s2(_dn_band_array(s2, offset_from="2099-01-01")
                                  .assign_coords({"s2:processing_baseline": ("time", pb)}), bands=("B04",))
    np.testing.assert_allclose(by_baseline["B04"].values[late], s2["B04"].values[late] - 0.1, atol=6e-5)
    attr = _dn_band_array(s2).assign_attrs(BOA_ADD_OFFSET=-1000)
    np.testing.assert_allclose(readers.prepare_s2(attr, bands=("B4",))["B04"].values[~late],
                               s2["B04"].values[~late] - 0.1, atol=6e-5)


@pytest.mark.filterwarnings("ignore:.*NOT masked")      # no SCL: the synthetic clouds are NaN already
def test_prepare_s2_already_reflectance_not_rescaled():
    ds = tiny_cube(bands=("B02", "B8A"), value=0.25)
    out = readers.prepare_s2(ds, bands=("b02", "b8a"))
    np.testing.assert_array_equal(out["B02"].values, 0.25)
    assert out["B8A"].attrs["dn_scale"] == 1.0


def test_prepare_s2_cloudsen12_mask_and_bad_names():
    ds = tiny_cube(bands=("B02",))
    mask = np.zeros(ds["B02"].shape, dtype=np.uint8)
    mask[0, 0, :4] = [0, 1, 2, 3]  # clear, thick, thin, shadow
    ds["cloud"] = (("time", "y", "x"), mask)
    out = readers.prepare_s2(ds, bands=("B02",), mask_var="cloud")
    np.testing.assert_array_equal(np.isnan(out["B02"].values[0, 0, :4]), [False, True, True, True])
    assert np.isnan(out["B02"].values).sum() == 3
    with pytest.raises(CubeError, match="mask variable 'clouds' not found"):
        readers.prepare_s2(ds, bands=("B02",), mask_var="clouds")
    with pytest.raises(CubeError, match="not a Sentinel-2 band"):
        readers.prepare_s2(ds, bands=("NDVI",))


# --------------------------------------------------------------------------------------------
# Sentinel-1: units, same-day merge, rolling mean, normalisation, regridding
# --------------------------------------------------------------------------------------------

def test_db_linear_round_trip():
    np.testing.assert_allclose(data.db_to_linear([-10.0, 0.0, 10.0, -30.0]), [0.1, 1.0, 10.0, 0.001])
    db = np.linspace(-40, 10, 101)
    np.testing.assert_allclose(data.linear_to_db(data.db_to_linear(db)), db, atol=1e-12)
    assert np.isnan(data.linear_to_db([0.0, -1.0])).all()
    # fixed bounds: VV -25 dB -> 0, 0 dB -> 1, -12.5 dB -> 0.5, beyond clipped
    np.testing.assert_allclose(readers.normalise_s1([-25, 0, -12.5, -40, 5], "vv"), [0, 1, 0.5, 0, 1])


def test_rolling_mean_hand_computed():
    # linear series 1, 2, NaN, 4, 8: ends use two frames, NaN skipped, a missing frame stays missing
    series = np.array([1.0, 2.0, np.nan, 4.0, 8.0])
    expected = [1.5, 1.5, np.nan, 6.0, 6.0]  # (1+2)/2, (1+2)/2, -, (4+8)/2, (4+8)/2
    np.testing.assert_allclose(readers.rolling_mean3(series[:, None, None])[:, 0, 0], expected)
    # the same series through prepare_s1 (1 pixel, linear input): normalised dB of those means
    t = np.datetime64("2020-01-01", "ns") + np.arange(5) * 6 * data.DAY
    raw = xr.Dataset({"VV": (("time", "y", "x"), 0.01 * series[:, None, None], {"units": "linear"})},
                     coords={"time": t, "y": [0.0], "x": [0.0]})
    out = readers.prepare_s1(raw, bands=("vv",))["vv"].values[:, 0, 0]
    np.testing.assert_allclose(out, (10 * np.log10(0.01 * np.array(expected)) + 25) / 25, rtol=1e-6)


def test_same_day_acquisitions_merged_in_linear():
    t = np.array(["2020-01-01T05:00", "2020-01-01T05:01", "2020-01-07T05:00"], dtype="datetime64[ns]")
    v = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, 6.0]])[:, :, None]  # (T, H=2, W=1)
    merged, mt = readers.merge_same_day(v, t)
    np.testing.assert_array_equal(mt, t[[0, 2]])
    np.testing.assert_allclose(merged[:, :, 0], [[2.0, 4.0], [5.0, 6.0]])


def _s1_db_cube(times, vv_db, vh_db):
    """Raw S1 cube in dB (units attribute "dB"): band arrays (T, X) on one row y = 0, x = 0, 10, ..."""
    t = np.array(times, dtype="datetime64[ns]")
    vv, vh = (np.asarray(v, dtype=np.float64)[:, None, :] for v in (vv_db, vh_db))   # (T, 1, X)
    return xr.Dataset({"VV": (("time", "y", "x"), vv, {"units": "dB"}),
                       "VH": (("time", "y", "x"), vh, {"units": "dB"})},
                      coords={"time": t, "y": [0.0], "x": 10.0 * np.arange(vv.shape[2])})


def test_prepare_s1_db_bounds_of_both_bands_by_hand():
    """Guards against wrong or swapped fixed dB bounds (S1_DB_RANGE vv [-25, 0], vh [-30, -5]).

    Nine pixels hold the same dB value in VV and VH, constant over three dates 6 days apart, so the
    3-frame rolling mean (in linear power) and the dB round trip leave them as they are. By hand:
      dB      :  -35  -30  -25  -20  -17.5  -12.5  -10   -5    0    5
      VV (v+25)/25, clipped: 0    0    0   0.2   0.3    0.5   0.6  0.8   1    1
      VH (v+30)/25, clipped: 0    0   0.2  0.4   0.5    0.7   0.8   1    1    1
    Any other vh bounds (e.g. vv's, or [-30, -10]) change the VH row, and no clipping lets -35 / 5 out.
    """
    db = np.array([-35.0, -30, -25, -20, -17.5, -12.5, -10, -5, 0, 5])
    const = np.broadcast_to(db, (3, db.size))
    out = readers.prepare_s1(_s1_db_cube(["2020-01-01", "2020-01-07", "2020-01-13"], const, const))
    vv = [0, 0, 0, 0.2, 0.3, 0.5, 0.6, 0.8, 1, 1]
    vh = [0, 0, 0.2, 0.4, 0.5, 0.7, 0.8, 1, 1, 1]
    for t in range(3):
        np.testing.assert_allclose(out["vv"].values[t, 0], vv, rtol=0, atol=1e-6)
        np.testing.assert_allclose(out["vh"].values[t, 0], vh, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out["vv"].attrs["db_range"], [-25, 0])
    np.testing.assert_array_equal(out["vh"].attrs["db_range"], [-30, -5])
    assert out["vv"].attrs["input_units"].startswith("db ") and out["vv"].dtype == np.float32


def test_prepare_s1_same_day_merge_averages_linear_power():
    """Guards against merging same-day acquisitions in dB instead of linear power.

    Each of three days (6 days apart) has two acquisitions a minute apart: -10 dB and -20 dB.
    Linear: 0.1 and 0.01, mean 0.055 -> 10 * log10(0.055) = -12.596 dB (a dB mean would give -15).
    Normalised: VV (-12.596 + 25) / 25 = 0.49614 (not 0.4), VH (-12.596 + 30) / 25 = 0.69614 (not 0.6).
    Every day merges to the same value, so the rolling mean of 0.055, 0.055, 0.055 changes nothing.
    Pixel 1 has NaN and -10 dB: nanmean -> -10 dB -> VV 0.6, VH 0.8. Merged frames keep the first
    timestamp of their day; 6 acquisitions -> 3 dates, 3 merged.
    """
    times = [f"2020-01-{d:02d}T05:{m:02d}" for d in (1, 7, 13) for m in (0, 1)]
    pair = np.array([[-10.0, np.nan], [-20.0, -10.0]])            # (2 acquisitions, 2 pixels)
    raw = np.tile(pair, (3, 1))                                    # (6, 2)
    merged_db = 10 * np.log10((0.1 + 0.01) / 2)
    assert merged_db == pytest.approx(-12.5964, abs=1e-4)
    out = readers.prepare_s1(_s1_db_cube(times, raw, raw))
    assert out.attrs["merged_acquisitions"] == 3
    np.testing.assert_array_equal(out["time"].values, np.array(times[::2], dtype="datetime64[ns]"))
    np.testing.assert_allclose(out["vv"].values[:, 0, 0], (merged_db + 25) / 25, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["vh"].values[:, 0, 0], (merged_db + 30) / 25, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["vv"].values[:, 0, 0], 0.49614, atol=1e-5)
    np.testing.assert_allclose(out["vv"].values[:, 0, 1], 0.6, atol=1e-6)
    np.testing.assert_allclose(out["vh"].values[:, 0, 1], 0.8, atol=1e-6)
    # merge_same_day itself is a plain nanmean of what it gets: linear in, linear mean out
    merged, _ = readers.merge_same_day(data.db_to_linear(raw[:2]), np.array(times[:2], dtype="datetime64[ns]"))
    np.testing.assert_allclose(data.linear_to_db(merged), [[merged_db, -10.0]])


def test_myanmar_s1_loading(realdata):
    s1 = _myanmar(realdata)
    # 98 acquisitions: a re-processed duplicate (2014-10-12) and 12 days with two adjacent GRD
    # slices of one pass (complementary coverage) merge into 85 dates
    assert s1["vv"].shape == (85, 120, 120) and s1.attrs["merged_acquisitions"] == 13
    t = s1["time"].values
    assert str(t[0])[:10] == "2014-10-12" and str(t[-1])[:10] == "2018-12-26"
    assert np.unique(t.astype("datetime64[D]")).size == 85
    for b in data.S1_BANDS:
        v = s1[b].values
        assert np.nanmin(v) >= 0 and np.nanmax(v) <= 1
        assert np.isnan(v).mean() < 0.01  # merged slices cover 96 % of those days; raw had 13 % NaN
        assert "db100" in s1[b].attrs["input_units"]
    # forest VV near -7 dB: (-7 + 25) / 25 = 0.72
    assert 0.65 < np.nanmedian(s1["vv"].values) < 0.78


def test_s1_units_detection_and_layout(realdata):
    raw = xr.open_dataset(realdata / MYANMAR).isel(time=slice(0, 12), y=slice(0, 20), x=slice(0, 20))
    ref = readers.prepare_s1(raw)
    as_db = (raw[["VV", "VH"]] / 100).drop_attrs()
    as_linear = 10 ** (as_db / 10)
    for variant in (as_db, as_linear):
        out = readers.prepare_s1(variant)  # detected from the value range, no units attribute
        for b in data.S1_BANDS:
            np.testing.assert_allclose(out[b].values, ref[b].values, atol=1e-6)
    forced = readers.prepare_s1(as_db, units="db")
    np.testing.assert_allclose(forced["vh"].values, ref["vh"].values, atol=1e-6)
    stacked = raw[["VV", "VH"]].to_array("polarization")  # one variable with a polarization dim
    np.testing.assert_array_equal(readers.prepare_s1(stacked)["vh"].values, ref["vh"].values)
    with pytest.raises(CubeError, match="units must be"):
        readers.prepare_s1(raw, units="decibel")


def test_s1_regrid_onto_target(realdata):
    s1 = _myanmar(realdata)
    raw = xr.open_dataset(realdata / MYANMAR)
    # a 10 m target grid whose first pixel sits on S1 pixel (5, 5); 30 m / 10 m -> 3 x 3 replication
    x = raw["x"].values[5] - 10 + 10 * np.arange(30)
    y = raw["y"].values[5] + 10 - 10 * np.arange(30)
    target = xr.Dataset(coords={"x": x, "y": y})
    out = readers.open_s1(realdata / MYANMAR, target=target)
    assert out["vv"].shape == (85, 30, 30)
    np.testing.assert_array_equal(out["vv"].values[:, 0:3, 0:3],
                                  np.broadcast_to(s1["vv"].values[:, 5:6, 5:6], (85, 3, 3)))
    np.testing.assert_array_equal(out["vh"].values[:, 27:30, 3:6],
                                  np.broadcast_to(s1["vh"].values[:, 14:15, 6:7], (85, 3, 3)))
    far = xr.Dataset(coords={"x": x + 1e6, "y": y})
    with pytest.raises(CubeError, match="do not overlap in space"):
        readers.prepare_s1(raw, target=far)


# --------------------------------------------------------------------------------------------
# Temporal matching (Sec. III-C)
# --------------------------------------------------------------------------------------------

def _s1_frames(dates, grid):
    """S1 cube on `grid`'s y/x whose frame i is the constant i (to see which frame was used)."""
    t = np.array(dates, dtype="datetime64[ns]")
    v = np.broadcast_to(np.arange(t.size, dtype=np.float32)[:, None, None],
                        (t.size, grid.sizes["y"], grid.sizes["x"]))
    return xr.Dataset({"vv": (("time", "y", "x"), v.copy()), "vh": (("time", "y", "x"), v.copy())},
                      coords={"time": t, "y": grid["y"], "x": grid["x"]})


def test_match_closest_date_hand_made():
    s2 = tiny_cube(T=5, H=2, W=2).assign_coords(time=np.array(
        ["2020-01-01", "2020-01-06", "2020-01-11", "2020-01-30", "2020-02-03"], dtype="datetime64[ns]"))
    s1 = _s1_frames(["2019-12-30", "2020-01-05", "2020-01-12", "2020-01-17", "2020-02-05T12:00"], s2)
    m = data.match_dates(s1, s2, max_gap_days=6)
    # Jan 1 -> Dec 30 (2 d); Jan 6 -> Jan 5 (1 d); Jan 11 -> Jan 12 (1 d); Jan 30: nearest Jan 17 is
    # 13 d away -> NaN frame, source_time falls back to the S2 date; Feb 3 -> Feb 5 12:00 (2.5 d)
    np.testing.assert_array_equal(m["vv"].values[:, 0, 0], [0, 1, 2, np.nan, 4])
    expected = ["2019-12-30", "2020-01-05", "2020-01-12", "2020-01-30", "2020-02-05T12:00"]
    np.testing.assert_array_equal(m["source_time"].values, np.array(expected, dtype="datetime64[ns]"))
    np.testing.assert_array_equal(m["matched"].values, [True, True, True, False, True])
    np.testing.assert_array_equal(m["time"].values, s2["time"].values)
    # a tie (Jan 3 is 3 d from Dec 31 and from Jan 6) goes to the earlier S1 date
    tie = data.match_dates(_s1_frames(["2019-12-31", "2020-01-06"], s2),
                              s2.isel(time=[0]).assign_coords(time=[np.datetime64("2020-01-03", "ns")]))
    assert tie["vv"].values[0, 0, 0] == 0


def test_match_gap_boundary_is_inclusive():
    """An S1 acquisition exactly --max-gap-days from an S2 date is matched; one second further is not."""
    s2 = tiny_cube(T=2, H=2, W=2).assign_coords(time=np.array(["2020-01-10", "2020-03-01"], dtype="datetime64[ns]"))
    at = data.match_dates(_s1_frames(["2020-01-04", "2020-03-01"], s2), s2, max_gap_days=6)
    np.testing.assert_array_equal(at["matched"].values, [True, True])
    past = data.match_dates(_s1_frames(["2020-01-03T23:59:59", "2020-03-01"], s2), s2, max_gap_days=6)
    np.testing.assert_array_equal(past["matched"].values, [False, True])
    assert np.isnan(past["vv"].values[0, 0, 0])


def test_match_rejects_no_overlap():
    s2 = tiny_cube(T=3, H=2, W=2)
    with pytest.raises(CubeError, match="do not overlap in time"):
        data.match_dates(_s1_frames(["2021-06-01", "2021-06-07"], s2), s2)
    far = tiny_cube(T=3, H=2, W=2).assign_coords(x=[1e6, 1e6 + 10])
    with pytest.raises(CubeError, match="do not overlap in space"):
        data.match_dates(_s1_frames(["2020-01-01"], far), s2)
    shifted = tiny_cube(T=3, H=2, W=2).assign_coords(x=[5.0, 15.0])
    with pytest.raises(CubeError, match="not on the S2 grid"):
        data.match_dates(_s1_frames(["2020-01-01"], shifted), s2)


def test_cube_array_order_and_missing_band():
    ds = tiny_cube(bands=("B02", "B03"))
    ds["B03"][:] = 0.5
    arr = data.cube_array(ds, ["B03", "B02"])
    assert arr.shape == (12, 2, 16, 16) and arr.dtype == np.float32
    assert (arr[:, 0] == 0.5).all() and np.allclose(arr[:, 1], 0.1)
    with pytest.raises(CubeError, match="missing band\\(s\\) B12"):
        data.cube_array(ds, ["B02", "B12"])


# --------------------------------------------------------------------------------------------
# Patch sampling (Sec. III-B)
# --------------------------------------------------------------------------------------------

def _encoded(T, C, H, W):
    """Cube whose value encodes its own (t, c, y, x) index, exactly representable in float32."""
    return np.arange(T * C * H * W, dtype=np.float32).reshape(T, C, H, W)


def test_sample_patches_shapes_frames_and_days():
    T, H, W = 60, 40, 40
    s2 = _encoded(T, 10, H, W)
    s1 = s2[:, :2] + 0.5
    days = {"s2": np.arange(T) * 5.0, "s1": np.arange(T) * 5.0 + 1.25}
    out = data.sample_patches({"s2": s2, "s1": s1}, days, modalities.S2.sampling,
                              np.random.default_rng(0), key="s2")
    (x2, d2), (x1, d1) = out["s2"], out["s1"]
    # cloud-free, so no sample is dropped: t0 in {0, 17, 34} (34 + 20 <= 60 < 51 + 20),
    # y0 and x0 in {0, 9, 18} (18 + 15 <= 40 < 27 + 15): 3 * 3 * 3 = 27 samples
    assert x2.shape == (27, 11, 10, 15, 15) and x1.shape == (27, 11, 2, 15, 15)
    assert x2.dtype == np.float32 and d2.dtype == np.float64 and d2.shape == (27, 11)
    assert (np.diff(d2, axis=1) > 0).all()                       # frames strictly in time order
    np.testing.assert_array_equal(d1 - d2, 1.25)                  # same frames in both modalities
    np.testing.assert_array_equal(x1 - 0.5, x2[:, :, :2])
    frames = (x2[:, :, 0, 0, 0] // (10 * H * W)).astype(int)      # decode t from the values
    assert ((frames.max(1) - frames.min(1)) < 20).all()           # 11 frames of one 20-frame sequence
    np.testing.assert_array_equal(frames, d2 / 5.0)
    t0 = frames.min(1) // 17 * 17
    assert sorted(set(t0)) == [0, 17, 34]


def test_sample_count_s1_strides_and_short_cube():
    rng = np.random.default_rng(1)
    # S1: t0 in {0, 40} (40 + 40 <= 85), corners {0, 15, 30, 45} (45 + 15 <= 64): 2 * 4 * 4 = 32
    a = np.zeros((85, 2, 64, 64), np.float32)
    x, d = data.sample_patches({"s1": a}, {"s1": np.arange(85.0)}, modalities.S1.sampling, rng, "s1")["s1"]
    assert x.shape == (32, 11, 2, 15, 15)
    # fewer dates than seq_len but >= 11: one sequence of all frames (T = 25)
    x, d = data.sample_patches({"s1": a[:25]}, {"s1": np.arange(25.0)}, modalities.S1.sampling, rng, "s1")["s1"]
    assert x.shape == (16, 11, 2, 15, 15) and d.max() <= 24
    with pytest.raises(CubeError, match="only 10 dates, a sample needs at least 11"):
        data.sample_patches({"s1": a[:10]}, {"s1": np.arange(10.0)}, modalities.S1.sampling, rng, "s1")
    with pytest.raises(CubeError, match="smaller than a 15 x 15 patch"):
        data.sample_patches({"s1": a[:, :, :14]}, {"s1": np.arange(85.0)}, modalities.S1.sampling, rng, "s1")


def test_centre_valid_policy():
    T, H, W = 60, 40, 40
    s2 = np.full((T, 3, H, W), 0.2, np.float32)
    s2[:, 1, 7, 7] = np.nan        # one band missing at the centre of every (0, 0) patch: dropped
    s2[:, :, 3, 20] = np.nan       # off-centre NaN: samples kept, NaN passed on (not zero)
    s1 = np.full((T, 2, H, W), 0.3, np.float32)
    s1[:, :, 16, 16] = np.nan      # NaN at a centre in the other modality: not a reason to drop
    days = {"s2": np.arange(T, dtype=float), "s1": np.arange(T, dtype=float)}
    out = data.sample_patches({"s2": s2, "s1": s1}, days, modalities.S2.sampling, np.random.default_rng(0), "s2")
    x2, x1 = out["s2"][0], out["s1"][0]
    assert x2.shape[0] == 27 - 3   # the three (t0, 0, 0) samples are gone
    assert not np.isnan(x2[:, 5, :, 7, 7]).any()
    assert np.isnan(x2).any() and np.isnan(x1[:, :, :, 7, 7]).any()
    assert (x2[np.isfinite(x2)] == np.float32(0.2)).all()


def _yx_coded(T, H, W):
    """(T, 2, H, W): band 0 all 0.5 (where the clouds go), band 1 = 100 y + x (names a patch's corner)."""
    a = np.full((T, 2, H, W), 0.5, np.float32)
    a[:, 1] = 100 * np.arange(H)[:, None] + np.arange(W)[None, :]
    return a


def test_cloud_on_centre_frame_and_pixel_drops_only_that_sample():
    """Guards against an off-by-one in the centre frame (F // 2 = 5 of 11) or centre pixel (15 // 2 = 7).

    T = 11 dates (fewer than seq_len 20): one sequence, and drawing 11 of 11 frames gives every sample
    frames 0..10, so sample frame 5 is cube frame 5. H = W = 16 with s_stride 1: corners (y0, x0) in
    {0, 1}^2, 4 samples, centres at cube pixels (7, 7), (7, 8), (8, 7), (8, 8).
    A) cloud at cube frame 5, pixel (8, 8), band 0: only the corner-(1, 1) sample is dropped (its
       centre); the corner-(0, 0) sample keeps it as NaN at patch pixel (8, 8). A centre pixel of 8
       would drop corner (0, 0) instead; a centre frame of 4 or 6 would drop nothing.
    B) the same pixel cloudy on every frame but 5: all 4 samples kept, the NaN passed on (not zeroed)
       at patch pixel (7, 7) of corner (1, 1) on its 10 non-central frames. A centre frame of 4 or 6
       would drop corner (1, 1).
    """
    cfg = data.SamplingConfig(seq_len=20, t_stride=17, s_stride=1)
    days = {"s2": np.arange(11) * 5.0}

    def corners(a):
        x, d = data.sample_patches({"s2": a}, days, cfg, np.random.default_rng(0), "s2")["s2"]
        np.testing.assert_array_equal(d, np.broadcast_to(days["s2"], d.shape))   # frames 0..10
        return x, (x[:, 0, 1, 0, 0]).astype(int).tolist()                         # 100 y0 + x0

    a = _yx_coded(11, 16, 16)
    a[5, 0, 8, 8] = np.nan                                                    # A
    x, kept = corners(a)
    assert kept == [0, 1, 100]                                               # (1, 1) dropped
    assert np.isnan(x[0, 5, 0, 8, 8]) and np.isnan(x[0]).sum() == 1          # corner (0, 0) keeps the NaN
    assert np.isnan(x[1, 5, 0, 8, 7]) and np.isnan(x[2, 5, 0, 7, 8])

    b = _yx_coded(11, 16, 16)
    b[[0, 1, 2, 3, 4, 6, 7, 8, 9, 10], 0, 8, 8] = np.nan                     # B
    x, kept = corners(b)
    assert kept == [0, 1, 100, 101]
    assert np.isnan(x[3, :, 0, 7, 7]).tolist() == [True] * 5 + [False] + [True] * 5
    assert np.isnan(x[3]).sum() == 10 and x[3, 5, 0, 7, 7] == np.float32(0.5)


def test_centre_policy_uses_each_samples_own_centre_frame():
    """Guards against testing the cube's frame F // 2 (or frames[:, 4] / frames[:, 6]) instead of each
    sample's own centre frame frames[i, 5] (11 frames drawn at random from a 20-frame sequence).

    Cube frame 10 is cloudy everywhere in band 0. With T = 20 (one sequence) and H = W = 24, s_stride 1:
    10 x 10 = 100 samples, frames from patch_index with the same seed. Expected: exactly the samples
    whose 6th drawn frame (index 5) is cube frame 10 are dropped; samples holding frame 10 elsewhere are
    kept with that frame all NaN in band 0.
    """
    T, H, W = 20, 24, 24
    cfg = data.SamplingConfig(seq_len=20, t_stride=17, s_stride=1)
    a = _yx_coded(T, H, W)
    a[10, 0] = np.nan
    a[:, 1] += 1000 * np.arange(T)[:, None, None]                   # band 1 = 1000 t + 100 y + x
    frames, y0, x0 = data.patch_index(T, H, W, cfg, np.random.default_rng(5))
    drop = frames[:, 5] == 10
    assert 0 < drop.sum() < 100 and ((frames == 10).any(1) & ~drop).sum() > 0   # both cases occur
    x, d = data.sample_patches({"s2": a}, {"s2": np.arange(T, dtype=float)}, cfg,
                               np.random.default_rng(5), "s2")["s2"]
    assert x.shape[0] == 100 - drop.sum()
    code = x[:, :, 1, 0, 0].astype(int)                                         # (N, 11)
    np.testing.assert_array_equal(code // 1000, frames[~drop])                  # which frames were kept
    np.testing.assert_array_equal(code[:, 0] % 1000, (100 * y0 + x0)[~drop])
    assert (d[:, 5] != 10).all()
    elsewhere = (d == 10)                                                        # frame 10, not central
    assert elsewhere.any() and np.isnan(x[:, :, 0][elsewhere]).all()
    assert not np.isnan(x[:, :, 0][~elsewhere]).any()


def test_gather_matches_slow_loop():
    rng = np.random.default_rng(3)
    arr = _encoded(30, 3, 20, 22)
    arr[rng.random(arr.shape) < 0.2] = np.nan
    frames, y0, x0 = data.patch_index(30, 20, 22, data.SamplingConfig(20, 5, 3), rng)
    fast = data.gather_patches(arr, frames, y0, x0, 15)
    slow = np.empty_like(fast)
    for i in range(len(y0)):
        for j, t in enumerate(frames[i]):
            for c in range(arr.shape[1]):
                slow[i, j, c] = arr[t, c, y0[i]:y0[i] + 15, x0[i]:x0[i] + 15]
    np.testing.assert_array_equal(fast, slow)
    for i in range(len(y0)):  # frames: 11 distinct, sorted, within one sequence
        assert len(set(frames[i])) == 11 and (np.diff(frames[i]) > 0).all()
        assert frames[i].max() - frames[i].min() < 20


def test_sampling_deterministic_per_rng():
    arrays, days = {"s2": _encoded(40, 2, 30, 30)}, {"s2": np.arange(40.0)}
    a = data.sample_patches(arrays, days, modalities.S2.sampling, np.random.default_rng(7), "s2")["s2"]
    b = data.sample_patches(arrays, days, modalities.S2.sampling, np.random.default_rng(7), "s2")["s2"]
    c = data.sample_patches(arrays, days, modalities.S2.sampling, np.random.default_rng(8), "s2")["s2"]
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])


# --------------------------------------------------------------------------------------------
# Splits, cube discovery, training cubes
# --------------------------------------------------------------------------------------------

def test_split_cubes_by_cube():
    names = [f"cube_{i:03d}" for i in range(500)]
    s = data.split_cubes(names, seed=0)
    assert [len(s[k]) for k in ("train", "val", "test")] == [375, 85, 40]
    assert set(s["train"]).isdisjoint(s["val"]) and set(s["train"]).isdisjoint(s["test"])
    assert set(s["val"]).isdisjoint(s["test"])
    assert sorted(s["train"] + s["val"] + s["test"]) == names
    assert data.split_cubes(names[::-1], seed=0) == s          # independent of input order
    assert data.split_cubes(names, seed=1) != s
    small = data.split_cubes(["a", "b", "c"])
    assert all(len(v) == 1 for v in small.values())
    with pytest.raises(CubeError, match="duplicate"):
        data.split_cubes(["a", "a", "b"])


def test_find_cubes_pairs_and_errors(tmp_path):
    for name in ("b_s1.nc", "b_s2.nc", "a_s1.nc", "a_s2.nc"):
        (tmp_path / name).touch()
    assert [p.name for p in modalities.find_cubes(tmp_path, "s2")] == ["a_s2.nc", "b_s2.nc"]
    pairs = modalities.find_cubes([tmp_path], ("s1", "s2"))
    assert [(p["s1"].name, p["s2"].name) for p in pairs] == [("a_s1.nc", "a_s2.nc"), ("b_s1.nc", "b_s2.nc")]
    (tmp_path / "c_s2.nc").touch()
    with pytest.raises(CubeError, match="incomplete set, c_s1.nc is missing"):
        modalities.find_cubes(tmp_path, ("s1", "s2"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CubeError, match="no \\*_s1.nc files found"):
        modalities.find_cubes(empty, "s1")


def test_load_training_cubes_fusion(tmp_path):
    s1, s2, _ = _synthetic(5)
    synthetic.write_cube(s1, tmp_path / "x_s1.nc")
    synthetic.write_cube(s2, tmp_path / "x_s2.nc")
    (cube,) = modalities.load_training_cubes([tmp_path], ("s1", "s2"))
    assert cube["name"] == "x"
    T = s2.sizes["time"]
    assert cube["arrays"]["s2"].shape == (T, 10, 32, 32) and cube["arrays"]["s1"].shape == (T, 2, 32, 32)
    gaps = cube["days"]["s1"] - cube["days"]["s2"]
    assert np.abs(gaps).max() <= 6 and not np.array_equal(cube["days"]["s1"], cube["days"]["s2"])
    out = data.sample_patches(cube["arrays"], cube["days"], modalities.S2.sampling,
                              np.random.default_rng(0), "s2")
    assert out["s1"][0].shape[1:] == (11, 2, 15, 15)
    (s1_only,) = modalities.load_training_cubes([tmp_path / "x_s1.nc"], "s1")
    assert s1_only["arrays"]["s1"].shape == (s1.sizes["time"], 2, 32, 32)


# --------------------------------------------------------------------------------------------
# Synthetic cubes, writing, sample data
# --------------------------------------------------------------------------------------------

def test_synthetic_deterministic_per_seed():
    a = synthetic.make_synthetic_cube(11, size=24, start="2020-01-01", end="2020-06-30")
    b = synthetic.make_synthetic_cube(11, size=24, start="2020-01-01", end="2020-06-30")
    c = synthetic.make_synthetic_cube(12, size=24, start="2020-01-01", end="2020-06-30")
    for da, db in zip(a, b):
        xr.testing.assert_identical(da, db)
    assert not np.array_equal(a[1]["B04"].values, c[1]["B04"].values, equal_nan=True)
    assert a[1]["x"].values[0] != c[1]["x"].values[0]  # origin depends on the seed


def test_synthetic_properties():
    s1, s2, gpp = _synthetic(0, size=64)
    nan = np.isnan(s2["B02"].values)
    per_date = nan.mean(axis=(1, 2))
    assert 0.25 < nan.mean() < 0.45 and (per_date == 0).any() and (per_date == 1).any()
    for b in data.S2_BANDS:  # clouds hit all bands alike; values are reflectance
        np.testing.assert_array_equal(np.isnan(s2[b].values), nan)
        assert 0 < np.nanmin(s2[b].values) and np.nanmax(s2[b].values) <= 1
    s2_gap = np.diff(data.day_offsets(s2["time"]))
    s1_gap = np.diff(data.day_offsets(s1["time"]))
    assert (s2_gap % 5 == 0).all() and (s2_gap > 5).any()     # 5-day revisit with dropped dates
    assert (s1_gap % 6 == 0).all()
    assert not np.isin(s1["time"].values, s2["time"].values).any()
    assert s1["vv"].attrs["units"] == "linear" and (s1["vv"].values > 0).all()
    assert set(np.unique(s2["landcover"].values)) >= {0, 1, 2}
    r, c = s2.attrs["tower_row"], s2.attrs["tower_col"]
    assert (r, c) == (32, 32) and s2["landcover"].values[r, c] in (0, 1)
    for ds in (s1, s2, gpp):
        assert ds.attrs["tower_x"] == s2["x"].values[c] and ds.attrs["tower_y"] == s2["y"].values[r]
    assert gpp.sizes["time"] == 366 and np.nanmean(gpp["GPP_NT_VUT_REF"].values >= 0) > 0.9
    assert np.mean(gpp["NEE_VUT_REF_QC"].values > 0.7) > 0.8
    # GPP follows the tower pixel's greenness: correlate with NDVI on its clear dates
    nir, red = s2["B08"].values[:, r, c], s2["B04"].values[:, r, c]
    ok = np.isfinite(nir)
    ndvi = (nir - red)[ok] / (nir + red)[ok]
    daily = gpp["GPP_NT_VUT_REF"].sel(time=s2["time"].values[ok].astype("datetime64[D]")).values
    good = np.isfinite(daily)
    assert np.corrcoef(ndvi[good], daily[good])[0, 1] > 0.6
    _, s2b, _ = synthetic.make_synthetic_cube(0, size=20, start="2020-01-01", end="2020-02-01", tower=(3, 5))
    assert (s2b.attrs["tower_row"], s2b.attrs["tower_col"]) == (3, 5)
    assert s2b["landcover"].values[3, 5] in (0, 1)


def test_independent_pixels_world(tmp_path):
    """synthetic.independent_pixels keeps dates, grid and clouds but draws every value on its own:
    neighbouring pixels of the smooth world correlate (> 0.5), those of the independent world do not
    (|r| < 0.05); S2 lies in INDEPENDENT_S2, S1 in INDEPENDENT_S1_DB (linear units as written); the
    written files read back through the readers as cubes of that world."""
    s1, s2, _ = _synthetic(0, size=64)
    i1, i2 = synthetic.independent_pixels(s1, s2, seed=0)
    assert "landcover" not in i2 and (i2["time"].values == s2["time"].values).all()

    def neighbour_r(values):                                     # (T, H, W): pixel vs its right neighbour
        a, b = values[:, :, :-1].ravel(), values[:, :, 1:].ravel()
        ok = np.isfinite(a) & np.isfinite(b)
        return np.corrcoef(a[ok], b[ok])[0, 1]
    assert neighbour_r(s2["B04"].values) > 0.5 and abs(neighbour_r(i2["B04"].values)) < 0.05
    assert neighbour_r(s1["vv"].values) > 0.1 and abs(neighbour_r(i1["vv"].values)) < 0.05
    for b in data.S2_BANDS:
        np.testing.assert_array_equal(np.isnan(i2[b].values), np.isnan(s2[b].values))
        lo, hi = synthetic.INDEPENDENT_S2
        assert lo <= np.nanmin(i2[b].values) and np.nanmax(i2[b].values) <= hi
    for b in data.S1_BANDS:
        db = data.linear_to_db(i1[b].values)
        lo, hi = synthetic.INDEPENDENT_S1_DB[b]
        assert lo - 1e-3 <= np.nanmin(db) and np.nanmax(db) <= hi + 1e-3 and np.nanmax(db) - np.nanmin(db) > 0.9 * (hi - lo)
    paths = synthetic.make_cubes(tmp_path, [0], size=24, world="independent")
    assert [p.name for p in paths] == ["synth_0_s1.nc", "synth_0_s2.nc"]
    cube = readers.open_s2(paths[1])
    assert abs(neighbour_r(cube["B04"].values)) < 0.1


def test_write_cube_round_trip(tmp_path):
    s1, s2, _ = _synthetic(4)
    synthetic.write_cube(s2, tmp_path / "t_s2.nc")
    synthetic.write_cube(s1, tmp_path / "t_s1.nc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t_s1.nc", "t_s2.nc"]  # no .tmp left
    raw = xr.open_dataset(tmp_path / "t_s2.nc")
    assert raw["B02"].encoding["dtype"] == np.int16 and raw["B02"].encoding["zlib"]
    back = readers.open_s2(tmp_path / "t_s2.nc")
    for b in data.S2_BANDS:
        np.testing.assert_array_equal(np.isnan(back[b].values), np.isnan(s2[b].values))
        np.testing.assert_allclose(back[b].values, s2[b].values, atol=0.5e-4 + 1e-7)  # half a step
    assert back.attrs["tower_row"] == s2.attrs["tower_row"]
    np.testing.assert_array_equal(raw["landcover"].values, s2["landcover"].values)
    raw1 = xr.open_dataset(tmp_path / "t_s1.nc")
    step = float(raw1["vv"].encoding["scale_factor"])
    # half a packing step, plus float32 rounding of the decoded value (offset ~1 -> ~1e-7)
    np.testing.assert_allclose(raw1["vv"].values, s1["vv"].values, atol=0.5 * step + 1e-6)
    np.testing.assert_array_equal(raw1["time"].values, s1["time"].values)
    assert readers.open_s1(tmp_path / "t_s1.nc")["vv"].shape == s1["vv"].shape


def test_fluxnet_csv_format(tmp_path):
    _, _, gpp = _synthetic(6, size=16, start="2020-01-01", end="2020-03-31")
    gpp["GPP_NT_VUT_REF"][3] = np.nan
    synthetic.write_fluxnet_csv(gpp, tmp_path / "g.csv")
    with open(tmp_path / "g.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["TIMESTAMP", "GPP_NT_VUT_REF", "NEE_VUT_REF_QC"]
    assert rows[0]["TIMESTAMP"] == "20200101" and rows[-1]["TIMESTAMP"] == "20200331"
    assert rows[3]["GPP_NT_VUT_REF"] == "-9999"
    np.testing.assert_allclose(float(rows[5]["NEE_VUT_REF_QC"]), gpp["NEE_VUT_REF_QC"].values[5], atol=1e-5)


def test_sample_data_matches_generator(tmp_path):
    """The shipped sample_data/ is what `python synthetic.py` writes today."""
    shipped = Path(data.__file__).resolve().parent / "sample_data"
    s1, s2, _ = synthetic.make_synthetic_cube(0, size=64, start="2018-01-01", end="2018-12-31")
    back = readers.open_s2(shipped / "synth_0_s2.nc")
    np.testing.assert_allclose(back["B8A"].values, s2["B8A"].values, atol=0.5e-4 + 1e-7)
    names = {str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.suffix in (".nc", ".csv")}
    assert names == {f"synth_{i}_{m}.nc" for i in range(5) for m in ("s1", "s2")} | {
        "tower/tower_s1.nc", "tower/tower_s2.nc", "tower/tower_gpp.csv"}
    total = sum(p.stat().st_size for p in shipped.rglob("*") if p.is_file())
    assert total < 20e6


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def test_cli_help_and_inspect(realdata, capsys):
    with pytest.raises(SystemExit) as exit_:
        readers.main(["--help"])
    assert exit_.value.code == 0
    readers.main(["inspect", str(realdata / ROMANIA.format("20m")), str(realdata / MYANMAR)])
    out = capsys.readouterr().out
    assert "time=140, y=50, x=50" in out and "20 m pixels" in out and "EPSG:3035" in out
    assert "missing: B02 B05 B06 B07 B08 B12" in out
    assert "13 same-day acquisitions merged -> dates 85" in out and "db100" in out


def test_cli_make_sample_data(tmp_path, capsys):
    synthetic.main(["--out", str(tmp_path)])
    assert "[6/6] tower" in capsys.readouterr().out
    assert (tmp_path / "tower" / "tower_gpp.csv").exists() and len(list(tmp_path.glob("*_s2.nc"))) == 5
    tower = readers.open_s2(tmp_path / "tower" / "tower_s2.nc")
    assert tower["B02"].shape[1:] == (24, 24) and str(tower["time"].values[-1])[:4] == "2020"


def test_find_cubes_takes_one_area_at_two_resolutions_as_one_cube(tmp_path):
    """X_10m.nc and X_20m.nc are one S2 cube (combined by open_s2), named X; other files stay single."""
    for name in ("a_10m.nc", "a_20m.nc", "b_s2.nc"):
        (tmp_path / name).touch()
    entries = modalities.find_cubes([tmp_path / "b_s2.nc", tmp_path / "a_20m.nc", tmp_path / "a_10m.nc"], "s2")
    assert entries == [(tmp_path / "a_10m.nc", tmp_path / "a_20m.nc"), tmp_path / "b_s2.nc"]
    assert [modalities.cube_name(e) for e in entries] == ["a", "b"]
    assert modalities.find_cubes([entries[0]], "s2") == [entries[0]]              # an entry passes through


def test_interpolate_time_linear_between_valid_and_nan_outside():
    """By hand: linear between valid observations (a gap bridged), NaN before the first and after the
    last valid one (never the edge held); at the observation days the valid values come back exactly
    and float32 stays float32 (embed.py --fill linear)."""
    days = np.array([10.0, 14.0, 20.0])
    values = np.array([[0.0, 1.0], [4.0, np.nan], [16.0, 3.0]])
    out = data.interpolate_time(days, values, np.arange(8.0, 23.0))           # days 8..22
    np.testing.assert_allclose(out[2:13, 0], [0, 1, 2, 3, 4, 6, 8, 10, 12, 14, 16])
    np.testing.assert_allclose(out[2:13, 1], 1 + np.arange(11) * 0.2)         # gap at day 14 bridged
    assert np.isnan(out[:2]).all() and np.isnan(out[13:]).all()               # before first / after last
    days = np.array([0.0, 10, 20, 40, 50])
    values = np.array([np.nan, 1.0, np.nan, 5.0, np.nan], dtype=np.float32)[:, None, None]     # (T, 1, 1)
    filled = data.interpolate_time(days, values, days)
    assert filled.dtype == np.float32 and filled.shape == (5, 1, 1)
    np.testing.assert_allclose(filled[:, 0, 0], [np.nan, 1.0, 1 + 4 * 10 / 30, 5.0, np.nan], rtol=1e-6)

