"""fluxnet.py: the eddy-covariance flux files the GPP experiment learns from (Sec. IV-C), and nothing else.

What it reads: FLUXNET2015 and ICOS Warm Winter 2020 FULLSET CSV files (Pastorello et al. 2020), in
either of their time steps, told apart by the header:
  daily DD        `TIMESTAMP` YYYYMMDD; GPP_NT_VUT_REF in gC m-2 d-1; NEE_VUT_REF_QC = fraction (0-1)
                  of the day's half-hours that were measured or gap-filled with good quality
  half-hourly HH  `TIMESTAMP_START` YYYYMMDDHHMM (30 min; hourly HR files: 60 min); GPP_NT_VUT_REF in
                  µmol CO2 m-2 s-1; NEE_VUT_REF_QC = flag 0 measured, 1 good, 2 medium, 3 poor gap-fill
Either way the result is one daily series: GPP in gC m-2 d-1 and QC as the fraction of good records.
Columns are found by name, never by position (a FULLSET file has ~200). -9999 is FLUXNET's nodata
and becomes NaN. GPP_NT_VUT_REF is the night-time partitioned GPP (Reichstein et al. 2005) the paper
predicts; NEE_VUT_REF_QC is the quality the paper filters on.

Sections, in reading order:
  1. columns and units  the two columns the paper uses, nodata, the µmol -> gC conversion
  2. reading            read_fluxnet: any FULLSET file -> daily xr.Dataset (dim time)
  3. quality filter     the paper's two rules: the 70 % day rule and the 60 % site rule

Run, on a real daily file from ../shared/realdata/fluxnet/ (CPU, a second):
  DD=../shared/realdata/fluxnet/FLX_US-Wi7_FLUXNET2015_FULLSET_DD_2005-2005_1-4.csv
  python -c "import fluxnet, sys; print(fluxnet.read_fluxnet(sys.argv[1]))" $DD
  python -c "import fluxnet as f, sys; print(f.site_passes(f.read_fluxnet(sys.argv[1])))" $DD
The first prints 365 days of GPP_NT_VUT_REF and NEE_VUT_REF_QC; the second {'n_observed': 365,
'n_pass': 162, 'fraction': 0.44..., 'passes': False}: US-Wi7 in 2005 fails the site rule.
"""
import csv

import numpy as np
import xarray as xr

from data import InputError

# ----------------------------------------------------------------------------------------------
# 1. Columns and units (FLUXNET2015 / ICOS Warm Winter 2020 FULLSET, Pastorello et al. 2020)
# ----------------------------------------------------------------------------------------------

GPP = "GPP_NT_VUT_REF"        # night-time partitioned GPP (Reichstein et al. 2005), Sec. IV-C
QC = "NEE_VUT_REF_QC"         # daily: fraction of good half-hours; sub-daily: 0/1/2/3 flag
MISSING = -9999.0             # FLUXNET nodata
GOOD_QC_FLAGS = (0, 1)        # sub-daily flags: 0 measured, 1 good gap-fill (2 medium, 3 poor)
# µmol CO2 m-2 s-1 -> gC m-2 d-1: 12.011 g C per mol x 1e-6 mol per µmol x 86400 s per day.
UMOL_TO_GC_PER_DAY = 12.011e-6 * 86400          # = 1.0377504


class FluxError(InputError):
    """A flux file that cannot be read as FLUXNET FULLSET (missing column, bad timestamps)."""


# ----------------------------------------------------------------------------------------------
# 2. Reading
# ----------------------------------------------------------------------------------------------

def _header(path):
    """The first line's column names; FluxError where it is no FLUXNET header (data, or ';'-separated).

    Read as utf-8-sig: a spreadsheet's byte-order mark must not hide the first column's name."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = [h.strip() for h in next(csv.reader(f), [])]
    if not header:
        raise FluxError(f"{path}: the file is empty (a FLUXNET file starts with a header row)")
    if header[0].isdigit():
        raise FluxError(f"{path}: the first line is data ({','.join(header[:3])},...), not the header row "
                        f"naming the columns (TIMESTAMP, {GPP}, {QC}, ...)")
    if len(header) == 1 and ";" in header[0]:
        raise FluxError(f"{path}: columns are separated by ';' (a spreadsheet's export with decimal commas?); "
                        "FLUXNET files are comma-separated with decimal points")
    return header


def _read_columns(path, names):
    """The named columns of a CSV file as lists of strings, found by NAME (never by position).

    Every row must have as many fields as the header: one more (an unquoted decimal comma, say) would
    shift the values of every later column. Blank lines (a trailing newline) are skipped."""
    header = _header(path)
    missing = [n for n in names if n not in header]
    if missing:
        raise FluxError(f"{path}: column {missing[0]!r} not found "
                        f"(a FLUXNET FULLSET file has TIMESTAMP or TIMESTAMP_START, {GPP}, {QC})")
    idx = [header.index(n) for n in names]
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader)
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise FluxError(f"{path}: line {line} has {len(row)} fields, the header {len(header)}"
                                + (" (decimal commas?)" if len(row) > len(header) else ""))
            rows.append([row[i] for i in idx])
    if not rows:
        raise FluxError(f"{path}: no data rows")
    return {n: [r[j] for r in rows] for j, n in enumerate(names)}


def _numbers(path, name, strings):
    """Column strings -> float64 with -9999 -> NaN."""
    try:
        values = np.array(strings, dtype=np.float64)
    except ValueError as e:
        raise FluxError(f"{path}: non-numeric value in column {name!r} ({e})") from None
    values[values == MISSING] = np.nan
    return values


def _timestamps(path, name, strings, n_chars, unit):
    """YYYYMMDD (n_chars 8, unit 'D') or YYYYMMDDHHMM (12, 'm') strings -> strictly increasing datetime64."""
    if any(len(s) != n_chars or not s.isdigit() for s in strings):
        raise FluxError(f"{path}: column {name!r} must hold {n_chars}-digit timestamps "
                        f"({'YYYYMMDD' if n_chars == 8 else 'YYYYMMDDHHMM'}), e.g. {strings[0]!r}")
    iso = [f"{s[:4]}-{s[4:6]}-{s[6:8]}" + (f"T{s[8:10]}:{s[10:12]}" if n_chars == 12 else "")
           for s in strings]
    t = np.array(iso, dtype=f"datetime64[{unit}]")
    if np.any(np.diff(t) <= np.timedelta64(0, unit)):
        raise FluxError(f"{path}: column {name!r} is not strictly increasing (duplicate or unsorted rows)")
    return t


def read_fluxnet(path, extra=()):
    """Daily GPP and QC from a FLUXNET FULLSET CSV (daily, half-hourly or hourly), Sec. IV-C.

    The format is detected from the header: `TIMESTAMP` (YYYYMMDD) is a daily file whose
    GPP_NT_VUT_REF is already gC m-2 d-1 and NEE_VUT_REF_QC already the fraction (0-1) of good
    half-hours; `TIMESTAMP_START` (YYYYMMDDHHMM) is a sub-daily file whose step (30 or 60 min) is
    read from the timestamps. Sub-daily records are aggregated per calendar day of their start:
      GPP = mean of the day's valid records (µmol CO2 m-2 s-1) x 1.0377504 (= 12.011e-6 * 86400),
      QC  = (records with flag 0 or 1) / (records a full day has, 1440 / step): a missing or
            -9999 record is not a good record, so a partial day cannot pass the 70 % rule.
    -9999 -> NaN. The result covers every day from the first to the last, NaN where the file has
    no record. `extra`: further numeric columns (e.g. TA_F), read as daily values (daily file) or
    daily means of the valid records (sub-daily file), in the file's units.

    Returns xr.Dataset with dim time (daily, datetime64) and variables GPP_NT_VUT_REF
    (gC m-2 d-1), NEE_VUT_REF_QC (fraction 0-1) and the extra columns. Raises FluxError.
    """
    header = _header(path)
    columns = [GPP, QC, *extra]
    if "TIMESTAMP" in header:
        raw = _read_columns(path, ["TIMESTAMP", *columns])
        day = _timestamps(path, "TIMESTAMP", raw["TIMESTAMP"], 8, "D")           # (R,)
        step = 1440
    else:
        raw = _read_columns(path, ["TIMESTAMP_START", *columns])
        start = _timestamps(path, "TIMESTAMP_START", raw["TIMESTAMP_START"], 12, "m")  # (R,)
        step = int(np.median(np.diff(start).astype(np.int64))) if len(start) > 1 else 30
        offsets = (start - start[0]).astype(np.int64)
        if 1440 % step or np.any(offsets % step):
            raise FluxError(f"{path}: TIMESTAMP_START is not on a regular sub-daily step (found {step} min)")
        day = start.astype("datetime64[D]")
    values = {c: _numbers(path, c, raw[c]) for c in columns}                    # (R,) each
    if step == 1440 and not (np.nanmin(values[QC], initial=0) >= 0 and np.nanmax(values[QC], initial=1) <= 1):
        raise FluxError(f"{path}: {QC} of a daily file is the fraction (0-1) of good half-hours, but it runs from "
                        f"{np.nanmin(values[QC]):g} to {np.nanmax(values[QC]):g} (percent?)")
    idx = (day - day[0]).astype(np.int64)                                         # (R,) day index
    n_days = int(idx[-1]) + 1
    dates = day[0] + np.arange(n_days)                                            # (N,)

    def daily_mean(v):
        ok = np.isfinite(v)
        total = np.bincount(idx, np.where(ok, v, 0.0), minlength=n_days)
        count = np.bincount(idx, ok.astype(float), minlength=n_days)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    out = {c: daily_mean(v) for c, v in values.items()}
    if step < 1440:
        out[GPP] = out[GPP] * UMOL_TO_GC_PER_DAY
        good = np.isin(values[QC], GOOD_QC_FLAGS).astype(float)
        has_record = np.bincount(idx, minlength=n_days) > 0
        out[QC] = np.where(has_record, np.bincount(idx, good, minlength=n_days) / (1440 // step), np.nan)
    ds = xr.Dataset({c: ("time", v) for c, v in out.items()},
                    coords={"time": dates.astype("datetime64[ns]")},
                    attrs={"source": str(path), "step_minutes": step})
    ds[GPP].attrs.update(units="gC m-2 d-1", long_name="GPP, night-time partitioning (VUT, REF)")
    ds[QC].attrs.update(units="1", long_name="fraction of measured or good-quality gap-filled records")
    return ds


# ----------------------------------------------------------------------------------------------
# 3. Quality filter (Sec. IV-C)
# ----------------------------------------------------------------------------------------------

def quality_filter(flux, min_qc=0.7):
    """GPP set to NaN on days with QC < min_qc (or QC missing) or GPP < 0 (Sec. IV-C: "timesteps
    with less than 70 % high-quality measurements and negative GPP values were excluded")."""
    gpp, qc = flux[GPP], flux[QC]
    keep = (qc >= min_qc) & (gpp >= 0)                 # NaN compares False: dropped
    return flux.assign({GPP: gpp.where(keep)})


def site_passes(flux, min_fraction=0.6, min_qc=0.7):
    """The site-selection rule of Sec. IV-C: more than `min_fraction` of the days with a GPP value
    pass the quality filter. Returns {"n_observed", "n_pass", "fraction", "passes"}."""
    observed = int(np.isfinite(flux[GPP].values).sum())
    n_pass = int(np.isfinite(quality_filter(flux, min_qc)[GPP].values).sum())
    fraction = n_pass / observed if observed else 0.0
    return {"n_observed": observed, "n_pass": n_pass, "fraction": fraction, "passes": fraction > min_fraction}
