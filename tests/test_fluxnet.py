"""Tests for fluxnet.py (Sec. IV-C): the FLUXNET reader on the shared real daily and half-hourly
files against a brute-force column read, hand-made files whose daily QC fractions and GPP means are
worked out by hand, every malformed file raising FluxError, and the 70 % / 60 % quality rules.

Run: python -m pytest -q tests/test_fluxnet.py   (a few seconds; the real-file tests skip where
     ../shared/realdata is absent)
"""
import csv

import numpy as np
import pytest
import xarray as xr

import fluxnet
from fluxnet import GPP, QC

US_WI7 = "fluxnet/FLX_US-Wi7_FLUXNET2015_FULLSET_DD_2005-2005_1-4.csv"
CH_CHA = "fluxnet/exampledata_FLUXNET-FULLSET-HH-CSV-30MIN_FLX_CH-Cha_FLUXNET2015_FULLSET_HH_2005-2020_beta-3.csv"


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def column(path, name):
    """Brute-force reference: one column of a CSV by name, as strings."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return [r[rows[0].index(name)] for r in rows[1:]]


# ----------------------------------------------------------------------------------------------
# 1. Columns and units
# ----------------------------------------------------------------------------------------------

def test_gc_conversion_factor():
    # 12.011 g C / mol * 1e-6 mol / µmol * 86400 s / d
    assert fluxnet.UMOL_TO_GC_PER_DAY == pytest.approx(1.0377504, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# 2. Reading
# ----------------------------------------------------------------------------------------------

def test_read_real_daily_file(realdata):
    path = realdata / US_WI7
    flux = fluxnet.read_fluxnet(path, extra=("NEE_VUT_REF_RANDUNC",))
    assert flux.sizes["time"] == 365
    assert str(flux.time.values[0])[:10] == "2005-01-01" and str(flux.time.values[-1])[:10] == "2005-12-31"
    assert flux.attrs["step_minutes"] == 1440
    assert flux[GPP].attrs["units"] == "gC m-2 d-1"
    # daily files are already in gC m-2 d-1: values pass through unchanged (first row of the file)
    assert flux[GPP].values[0] == pytest.approx(-0.251702)
    np.testing.assert_allclose(flux[GPP].values, np.array(column(path, GPP), float))
    # GPP and QC are complete in this file; NEE_VUT_REF_RANDUNC has 180 rows of -9999
    n_missing = sum(v == "-9999" for v in column(path, "NEE_VUT_REF_RANDUNC"))
    assert n_missing == 180
    assert int(np.isnan(flux["NEE_VUT_REF_RANDUNC"].values).sum()) == n_missing
    assert not np.isnan(flux[GPP].values).any()
    qc = flux[QC].values
    assert qc.min() >= 0.0 and qc.max() <= 1.0
    # site rule on a real year (the fluxnet.py docstring's example): 167 days have QC >= 0.7, 162 of
    # them with GPP >= 0 -> 162 / 365
    check = fluxnet.site_passes(flux)
    assert (check["n_observed"], check["n_pass"]) == (365, 162)
    assert check["fraction"] == pytest.approx(162 / 365) and not check["passes"]


def test_read_real_halfhourly_file(realdata):
    path = realdata / CH_CHA
    flux = fluxnet.read_fluxnet(path)
    # 99 half-hours from 2005-01-01 00:00: 48 + 48 + 3 records on three calendar days
    assert flux.attrs["step_minutes"] == 30
    assert [str(t)[:10] for t in flux.time.values] == ["2005-01-01", "2005-01-02", "2005-01-03"]
    # by hand: the mean of the first 48 GPP records (µmol CO2 m-2 s-1) times 12.011e-6 * 86400
    first_day = np.array(column(path, GPP)[:48], float)
    assert first_day.mean() == pytest.approx(-0.09901575)
    assert flux[GPP].values[0] == pytest.approx(-0.09901575 * 12.011e-6 * 86400)
    assert flux[GPP].values[0] == pytest.approx(-0.10275363, abs=1e-7)
    # every record of this sample is flag 3 (poor gap-fill): no good records
    assert set(column(path, QC)) == {"3"}
    np.testing.assert_array_equal(flux[QC].values, [0.0, 0.0, 0.0])


def test_subdaily_qc_fraction_by_hand(tmp_path):
    """Hand-made hourly file: 2020-06-01 full, 2020-06-02 absent, 2020-06-03 six records only."""
    flags = [0] * 12 + [1] * 6 + [2] * 4 + [3, -9999]       # 18 of 24 hours measured or good
    values = [10.0] * 22 + [-9999, 4.0]                      # mean of the 23 valid = (220 + 4) / 23
    rows = [[f"20200601{h:02d}00", f"20200601{h:02d}59", v, q] for h, (v, q) in enumerate(zip(values, flags))]
    rows += [[f"20200603{h:02d}00", f"20200603{h:02d}59", 2.0, 0] for h in range(6)]
    path = write_csv(tmp_path / "hourly.csv", ["TIMESTAMP_START", "TIMESTAMP_END", GPP, QC], rows)
    flux = fluxnet.read_fluxnet(path)
    assert flux.attrs["step_minutes"] == 60
    assert flux.sizes["time"] == 3
    np.testing.assert_allclose(flux[QC].values, [18 / 24, np.nan, 6 / 24])
    np.testing.assert_allclose(flux[GPP].values,
                               np.array([224 / 23, np.nan, 2.0]) * 1.0377504, rtol=1e-6)
    # a partial day is not a good day: 6 good hours of 24 fail the 70 % rule
    assert np.isnan(fluxnet.quality_filter(flux)[GPP].values[2])


def test_daily_file_missing_values_and_days(tmp_path):
    rows = [["20200101", 1.5, 0.9], ["20200102", -9999, 0.8], ["20200104", 2.5, -9999]]
    flux = fluxnet.read_fluxnet(write_csv(tmp_path / "dd.csv", ["TIMESTAMP", QC, GPP],
                                          [[t, q, g] for t, g, q in rows]))
    assert flux.sizes["time"] == 4                          # 2020-01-03 inserted as a missing day
    np.testing.assert_array_equal(flux[GPP].values, [1.5, np.nan, np.nan, 2.5])
    np.testing.assert_array_equal(flux[QC].values, [0.9, 0.8, np.nan, np.nan])


@pytest.mark.parametrize("header, rows, message", [
    (["TIMESTAMP", GPP], [["20200101", 1.0]], QC),                           # column absent
    (["TIMESTAMP_START", QC], [["202001010000", 0]], GPP),
    (["TIME", GPP, QC], [["20200101", 1.0, 1.0]], "TIMESTAMP_START"),        # no timestamp column
    (["TIMESTAMP", GPP, QC], [["202001", 1.0, 1.0]], "8-digit"),             # monthly file
    (["TIMESTAMP", GPP, QC], [["20200102", 1, 1], ["20200101", 1, 1]], "increasing"),
    (["TIMESTAMP", GPP, QC], [["20200101", "n/a", 1.0]], "non-numeric"),
])
def test_bad_flux_files_raise_flux_error(tmp_path, header, rows, message):
    path = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(fluxnet.FluxError, match=message) as err:
        fluxnet.read_fluxnet(path)
    assert "bad.csv" in str(err.value)


# ----------------------------------------------------------------------------------------------
# 3. Quality filter
# ----------------------------------------------------------------------------------------------

def test_quality_filter_and_site_rule():
    flux = xr.Dataset({GPP: ("time", [1.0, 2.0, 3.0, -0.1, 4.0, np.nan, 5.0]),
                       QC: ("time", [0.8, 0.7, 0.69, 1.0, np.nan, 1.0, 0.95])})
    kept = fluxnet.quality_filter(flux)[GPP].values
    # 0.7 passes ("less than 70 %" is dropped), 0.69 and missing QC fail, negative GPP fails
    np.testing.assert_array_equal(kept, [1.0, 2.0, np.nan, np.nan, np.nan, np.nan, 5.0])
    check = fluxnet.site_passes(flux)
    assert (check["n_observed"], check["n_pass"]) == (6, 3)
    assert check["fraction"] == pytest.approx(0.5) and not check["passes"]
    assert fluxnet.site_passes(flux, min_fraction=0.49)["passes"]


def test_quality_filter_boundaries():
    """The lines Sec. IV-C draws, at the line: GPP exactly 0 at good QC is kept (only negative GPP is
    excluded), QC exactly 0.7 is kept, and a site whose passing fraction equals the 60 % rule fails
    ("more than 60 %")."""
    flux = xr.Dataset({GPP: ("time", [0.0, -1e-9, 2.0, 3.0, 4.0]), QC: ("time", [0.9, 0.9, 0.7, 0.7 - 1e-9, 0.1])})
    np.testing.assert_array_equal(fluxnet.quality_filter(flux)[GPP].values, [0.0, np.nan, 2.0, np.nan, np.nan])
    check = fluxnet.site_passes(flux, min_fraction=0.4)
    assert check["fraction"] == pytest.approx(0.4) and not check["passes"]
    assert fluxnet.site_passes(flux, min_fraction=0.4 - 1e-9)["passes"]
