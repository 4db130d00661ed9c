"""Malformed inputs at scale (issue 22, item 5): a seeded generator of 255 malformed S2 and S1 cubes and
FLUXNET CSVs (dtypes, CF packing, dates, grids, empty dims, band labels, grid mappings, units, CSV habits,
and combinations), each run through the command lines that read it.

Every case declares its outcome. Accept: the file loads and the test checks WHAT was read against the
values the case wrote (int16 packing decoded, DN scaled, band labels mapped, the grid kept north-up),
in the loader the CLIs use, in `readers.py inspect`, in the cache `train_s*.py` wrote, in the embedding
`embed.py` wrote (equal to the embedding of the clean twin) and in the table `gpp.py` wrote (equal to
the clean twin's). Refuse: every command line stops with exactly one line on stderr, exit status 2, and
the line names the problem. Never a traceback, a hang or a silently wrong file.

The cubes are tiny (16-20 px, 12-14 dates), so most cases cost one failed load; accepted cubes train
once, together, in one `train_s2.py` / `train_s1.py` run; one checkpoint per modality serves every
embedding. All command lines go through `run()` and the TOOLS table below.

Run: OMP_NUM_THREADS=1 python -m pytest -q tests/test_malformed.py   (about a minute on 2 cores)
"""
import contextlib
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import data
import embed
import fluxnet
import gpp
import modalities
import readers
import synthetic
import train_s1
import train_s2
from conftest import ROOT
from data import S1_BANDS, S2_BANDS

# The command lines as `python SCRIPT.py ARGS` runs them: (main, leading arguments). `inspect` moves
# to readers.py soon: change its row only.
TOOLS = {"inspect": (readers.main, ["inspect"]), "train_s2": (train_s2.main, []), "train_s1": (train_s1.main, []),
         "embed": (embed.main, []), "gpp": (gpp.main, [])}
SEED = 22
TRAIN = ["--quick", "--max-steps", "2", "--batch-size", "8", "--s-stride", "1"]


def run(tool, argv):
    """One command line in-process, as its __main__ runs it (data.run_cli) -> (exit status, stdout, stderr)."""
    main, lead = TOOLS[tool]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            data.run_cli(main, [*lead, *map(str, argv)])
        except SystemExit as stop:
            code = stop.code
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------------------
# 1. The generator: seeded clean cubes and flux tables, then malformations (one, or two combined)
# ---------------------------------------------------------------------------------------------

@dataclass
class Case:
    """One malformed file and its declared outcome.

    Accepted (`refuse` empty): the readers must give the values of `twin`, the clean file of the same
    content (S2: exact reflectance; S1: the twin's normalised backscatter; flux: its daily GPP and QC).
    Refused: every command line stops with one line naming the problem, which contains one of the
    `refuse` fragments; with `usable` False the file itself is fine (inspect shows it) and only the
    commands that need more of it (training, embedding, GPP windows) refuse it."""
    name: str
    kind: str                     # "s2", "s1" or "flux"
    category: str
    write: object = field(repr=False)       # path -> None
    refuse: tuple = ()
    twin: object = field(default=None, repr=False)
    usable: bool = True

    @property
    def accepted(self):
        return not self.refuse


def _netcdf(ds, encoding=None):
    """A writer: ds -> netCDF4 at the path it is given."""
    return lambda path: ds.to_netcdf(path, engine="netcdf4", encoding=encoding or {})


def _map_bands(ds, fn):
    """fn applied to the (time, y, x) variables only; attrs kept unless fn changes them."""
    with xr.set_options(keep_attrs=True):
        return ds.assign({n: fn(v) for n, v in ds.data_vars.items() if set(v.dims) == {"time", "y", "x"}})


# -- S2: a clean cloudy cube; layouts (how a correct file may store it); malformations --

SHORT = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
LOWER = tuple(b.lower() for b in S2_BANDS)
STAC = ("blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22")
PACKED = {"dtype": "int16", "scale_factor": 1e-4, "_FillValue": np.int16(-32768)}


def clean_s2(rng, year=None):
    """A cloudy synthetic S2 cube (synthetic.py), reflectance on the 1e-4 grid of L2A DN (so DN,
    int16 packing and floats hold the same numbers), 12-14 dates, 16-20 px, y decreasing (north-up)."""
    year = year or int(rng.choice([2019, 2020, 2021]))
    size, n_dates = int(rng.integers(16, 21)), int(rng.integers(12, 15))
    _, s2, _ = synthetic.make_synthetic_cube(int(rng.integers(1000)), size=size, start=f"{year}-04-01",
                                             end=f"{year}-07-31")
    s2 = s2.isel(time=slice(0, n_dates)).drop_vars("landcover")
    return _map_bands(s2, lambda v: (np.round(v * 1e4) / 1e4).astype(np.float32))


def _dn(s2):
    """L2A digital numbers: reflectance x 10000, + 1000 from 2022-01-25 (BOA offset of baseline 04.00), 0 = nodata."""
    offset = xr.where(s2.time >= np.datetime64("2022-01-25"), 1000, 0)
    return _map_bands(s2, lambda v: (v * 1e4 + offset).fillna(0).round().astype(np.uint16).transpose(*v.dims)
                      .drop_attrs())


def _band_dim(s2, labels, order):
    """One variable (band, time, y, x) with a string `band` coordinate: bands in `order`, labelled `labels`."""
    present = [i for i in order if S2_BANDS[i] in s2]
    stacked = np.stack([s2[S2_BANDS[i]].transpose("time", "y", "x").values for i in present]) \
        if present else np.zeros((0, *(s2.sizes[d] for d in ("time", "y", "x"))), np.float32)
    other = {k: v for k, v in s2.coords.items() if k not in ("time", "y", "x")}
    return xr.Dataset({"reflectance": (("band", "time", "y", "x"), stacked, {"grid_mapping": "spatial_ref"})},
                      coords={"band": np.array([labels[i] for i in present], dtype=object),
                              "time": s2.time, "y": s2.y, "x": s2.x, **other}, attrs=s2.attrs)


def s2_layouts(rng):
    """Correct ways to store a cube: name -> (ds -> (ds to write, encoding)). Each must read back equal."""
    order = rng.permutation(len(S2_BANDS))
    f32 = {"dtype": "float32", "_FillValue": np.float32(np.nan)}
    return {
        "float32 reflectance": lambda s: (s, {b: f32 for b in S2_BANDS if b in s}),
        "float64 reflectance": lambda s: (_map_bands(s, lambda v: v.astype(np.float64)), {}),
        "int16 CF-packed (scale_factor, _FillValue)": lambda s: (s, {b: PACKED for b in S2_BANDS if b in s}),
        "int16 CF-packed with add_offset": lambda s: (s, {b: {**PACKED, "add_offset": 0.3} for b in S2_BANDS if b in s}),
        "uint16 DN, _FillValue 0": lambda s: (_dn(s), {b: {"_FillValue": np.uint16(0)} for b in S2_BANDS if b in s}),
        "int32 DN, DN 0 = nodata": lambda s: (_map_bands(_dn(s), lambda v: v.astype(np.int32)), {}),
        "float32 DN": lambda s: (_map_bands(_dn(s), lambda v: v.astype(np.float32)), {}),
        "int16 DN with scale_factor 1": lambda s: (_map_bands(_dn(s), lambda v: v.astype(np.float32)),
                                                   {b: {"dtype": "int16", "scale_factor": 1.0, "_FillValue": np.int16(0)}
                                                    for b in S2_BANDS if b in s}),
        "band dim, labels in order": lambda s: (_band_dim(s, S2_BANDS, range(10)), {}),
        "band dim, shuffled labels": lambda s: (_band_dim(s, S2_BANDS, order), {}),
        "band dim, short labels (B2)": lambda s: (_band_dim(s, SHORT, order), {}),
        "band dim, lower-case labels": lambda s: (_band_dim(s, LOWER, order), {}),
        "band dim, STAC asset labels": lambda s: (_band_dim(s, STAC, order), {}),
        "band dim, int16 CF-packed": lambda s: (_band_dim(s, S2_BANDS, order), {"reflectance": PACKED}),
        "short variable names (B2, B8A)": lambda s: (s.rename({b: c for b, c in zip(S2_BANDS, SHORT) if b in s}), {}),
        "variables stored (y, x, time)": lambda s: (s.transpose("y", "x", "time"), {}),
        "time in float hours since 2000": lambda s: (s, {"time": {"units": "hours since 2000-01-01", "dtype": "float64"}}),
        "grid_mapping names a missing variable": lambda s: (_map_bands(s.drop_vars("spatial_ref"), lambda v: v.assign_attrs(
            grid_mapping="crs_of_nowhere")), {}),
        "no grid mapping at all": lambda s: (_map_bands(s.drop_vars("spatial_ref"), lambda v: v.drop_attrs()), {}),
        "crs_wkt is garbage": lambda s: (s.assign_coords(spatial_ref=s.spatial_ref.assign_attrs(
            crs_wkt="PROJCS[nonsense", spatial_ref="]]garbage[[")), {}),
    }


def s2_malformations(rng, s2):
    """Malformations of a clean cube: name -> (ds -> malformed ds, refuse fragments, usable). Seeded
    choices: which band, which date, which column."""
    T, H, W = (s2.sizes[d] for d in ("time", "y", "x"))
    band = S2_BANDS[int(rng.integers(len(S2_BANDS)))]
    k = int(rng.integers(1, T - 1))
    col = int(rng.integers(2, W - 2))

    def with_time(fn):
        return lambda s: s.assign_coords(time=fn(s.time.values))

    grid = ("north-up",)
    return {
        "text band values": (lambda s: s.assign({band: s[band].astype(str)}), ("dtype",), True),
        "bool band values": (lambda s: s.assign({band: s[band] > 0.1}), ("dtype",), True),
        "uint8 band values, no scale_factor": (
            lambda s: s.assign({band: (s[band] * 1000).fillna(0).astype(np.uint8).drop_attrs()}), ("8-bit",), True),
        'units "reflectance" on DN': (lambda s: _map_bands(_dn(s), lambda v: v.assign_attrs(units="reflectance")),
                                      ("units",), True),
        'units "1" on percent': (lambda s: _map_bands(s, lambda v: (v * 100).assign_attrs(units="1")), ("units",), True),
        "NaT among the dates": (with_time(lambda t: np.where(np.arange(T) == k, np.datetime64("NaT"), t)), ("NaT",), True),
        "a date twice": (with_time(lambda t: np.where(np.arange(T) == k, t[k - 1], t)), ("duplicate",), True),
        "descending dates": (lambda s: s.isel(time=slice(None, None, -1)), ("not increasing",), True),
        "two dates swapped": (lambda s: s.isel(time=np.r_[0:k, k + 1, k, k + 2:T]), ("not increasing",), True),
        "dates as integers without units": (with_time(lambda t: np.arange(T)), ("datetime64",), True),
        "ascending y (south-up)": (lambda s: s.isel(y=slice(None, None, -1)), grid, True),
        "descending x": (lambda s: s.isel(x=slice(None, None, -1)), grid, True),
        "irregular x (a column missing)": (lambda s: s.drop_isel(x=col), ("irregular",), True),
        "y rows shuffled": (lambda s: s.isel(y=np.r_[1, 0, 2:H]), grid, True),
        "an x coordinate twice": (lambda s: s.assign_coords(x=np.where(np.arange(W) == col, s.x.values[col - 1], s.x.values)),
                                  grid, True),
        "zero dates": (lambda s: s.isel(time=slice(0, 0)), ("only 0 dates",), True),
        "zero rows": (lambda s: s.isel(y=slice(0, 0)), (f"0 x {W} pixels",), True),
        "zero columns": (lambda s: s.isel(x=slice(0, 0)), (f"{H} x 0 pixels",), True),
        "lat/lon dims": (lambda s: s.rename(y="lat", x="lon"), ("expected (time, y, x)",), True),
        "a band all NaN": (lambda s: s.assign({band: s[band] * np.nan}), (f"band {band} is all-NaN",), True),
        "a band missing": (lambda s: s.drop_vars(band), (f"missing band(s) {band}",), False),
        "8 dates (too few to train)": (lambda s: s.isel(time=slice(0, 8)), ("only 8 dates", "8 dates; an embedding needs 11"),
                                       False),
        "14 x 14 px (smaller than a patch)": (lambda s: s.isel(y=slice(0, 14), x=slice(0, 14)), ("14 x 14",), False),
    }


def s2_band_dim_malformations(rng, s2):
    """Malformations of the band-dim layout itself: name -> (ds, refuse fragments, usable)."""
    dup = list(S2_BANDS)
    dup[int(rng.integers(1, 10))] = S2_BANDS[0]
    return {
        "band dim of length zero": (_band_dim(s2, S2_BANDS, []), ("missing band(s) B02",), False),
        "band dim without labels": (_band_dim(s2, S2_BANDS, range(10)).drop_vars("band"),
                                    ("no coordinate naming the bands",), True),
        "band dim, a label twice": (_band_dim(s2, dup, range(10)), ("'B02' appears more than once",), True),
        "band dim, numeric labels": (_band_dim(s2, [str(k + 1) for k in range(10)], range(10)),
                                     ("missing band(s) B02",), False),
    }


def s2_cases(rng):
    """Every S2 case: each layout once (on one of the seeded cubes), every malformation on each of the
    four cubes (float32 layout), and random combinations of a layout with one or two malformations."""
    cubes = [clean_s2(rng) for _ in range(4)]
    late = clean_s2(rng, year=2023)                   # DN carry the BOA offset from 2022-01-25
    layouts = s2_layouts(rng)
    cases = []

    def add(category, ds_enc, refuse=(), twin=None, usable=True):
        cases.append(Case(f"s2-{len(cases):03d}", "s2", category, _netcdf(*ds_enc), refuse, twin, usable))

    for name, layout in layouts.items():
        clean = cubes[int(rng.integers(len(cubes)))]
        add(name, layout(clean), twin=clean)
    add("uint16 DN after 2022-01-25 (BOA offset -1000)", layouts["uint16 DN, _FillValue 0"](late), twin=late)
    add("descending y (north-up order, as the real files)", layouts["float32 reflectance"](cubes[0]), twin=cubes[0])
    for clean in cubes:
        for name, (malform, refuse, usable) in s2_malformations(rng, clean).items():
            add(name, (malform(clean), {}), refuse, usable=usable)
        for name, (ds, refuse, usable) in s2_band_dim_malformations(rng, clean).items():
            add(name, (ds, {}), refuse, usable=usable)
    file_level = [n for n, (_, _, usable) in s2_malformations(rng, cubes[0]).items()
                  if usable and not n.startswith(("text", "bool", "uint8", "units", "zero", "lat", "dates as"))]
    for _ in range(24):
        clean = cubes[int(rng.integers(len(cubes)))]
        layout = str(rng.choice([n for n in layouts if "DN" not in n and "time in" not in n]))
        picked = [str(m) for m in rng.choice(file_level, size=int(rng.integers(1, 3)), replace=False)]
        malformations = s2_malformations(rng, clean)
        ds, refuse = clean, ()
        for m in picked:
            malform, frag, _ = malformations[m]
            ds, refuse = malform(ds), refuse + frag
        add(f"combination: {layout} + {' + '.join(picked)}", layouts[layout](ds), refuse)
    return cases


# -- S1: clean linear gamma0 with a no-data corner; units, layouts, dates --

def clean_s1(rng):
    """A synthetic S1 cube (linear gamma0, units "linear"), 12-14 dates, 16-18 px, a NaN corner on two dates."""
    size, n_dates = int(rng.integers(16, 19)), int(rng.integers(12, 15))
    s1, _, _ = synthetic.make_synthetic_cube(int(rng.integers(1000)), size=size, start="2020-04-01",
                                             end="2020-07-31")
    s1 = s1.isel(time=slice(0, n_dates))
    nodata = (np.arange(n_dates)[:, None, None] % 5 == 2) & (np.arange(size)[:, None] < 4) & (np.arange(size) < 5)
    return _map_bands(s1, lambda v: v.where(~nodata))


def _s1_db(s1, scale=1.0, units="dB"):
    """The cube in dB (x `scale`), with its units attribute (None: no units attribute anywhere)."""
    out = _map_bands(s1, lambda v: (10 * np.log10(v) * scale).astype(np.float32).assign_attrs(units=units or ""))
    out.attrs.pop("units", None)
    return out if units else _map_bands(out, lambda v: v.drop_attrs())


def s1_cases(rng):
    """Every S1 case: each correct layout once, every malformation on each of three cubes."""
    cubes = [clean_s1(rng) for _ in range(3)]
    cases = []

    def add(category, write, refuse=(), twin=None, usable=True):
        cases.append(Case(f"s1-{len(cases):03d}", "s1", category, write, refuse, twin, usable))

    int16_db100 = {b: {"dtype": "int16", "_FillValue": np.int16(-32768)} for b in S1_BANDS}
    layouts = {
        "linear float32, units linear": lambda s: _netcdf(s),
        "dB float32, units dB": lambda s: _netcdf(_s1_db(s)),
        "dB x 100 int16, _FillValue -32768 (as the real file)": lambda s: _netcdf(
            _map_bands(_s1_db(s, 100, "dB*100 (divide by 100 for dB)"), lambda v: v.round()), int16_db100),
        "int16 CF-packed dB (scale_factor 0.01)": lambda s: _netcdf(_s1_db(s), {
            b: {"dtype": "int16", "scale_factor": 0.01, "_FillValue": np.int16(-32768)} for b in S1_BANDS}),
        "dB without units attribute": lambda s: _netcdf(_s1_db(s, units=None)),
        "linear float64 without units attribute": lambda s: _netcdf(
            _map_bands(s, lambda v: v.astype(np.float64).drop_attrs()).drop_attrs()),
        "upper-case VV/VH names": lambda s: _netcdf(s.rename(vv="VV", vh="VH")),
        "Gamma0_VV style names": lambda s: _netcdf(s.rename(vv="Gamma0_VV", vh="Gamma0_VH")),
        "polarization dim, labels VH VV": lambda s: _netcdf(
            s[["vh", "vv"]].rename(vh="VH", vv="VV").to_array("polarization").to_dataset(name="gamma0")),
        "a same-day second slice (merged)": lambda s: _netcdf(_second_slice(s)),
    }
    for i, (name, layout) in enumerate(layouts.items()):
        add(name, layout(cubes[i % 3]), twin=cubes[i % 3])
    for s1 in cubes:
        T, W = s1.sizes["time"], s1.sizes["x"]
        k, col = int(rng.integers(1, T - 1)), int(rng.integers(2, W - 2))
        t = s1.time.values
        malformed = {
            'units "dB" on linear values': (_map_bands(s1, lambda v: v.assign_attrs(units="dB")), ("units 'dB'",)),
            'units "linear" on dB values': (_map_bands(_s1_db(s1), lambda v: v.assign_attrs(units="linear")),
                                            ("units 'linear'",)),
            'units "dB*100" on dB values': (_map_bands(_s1_db(s1), lambda v: v.assign_attrs(units="dB*100")),
                                            ("units 'dB*100'",)),
            "text values": (s1.assign(vh=s1.vh.astype(str)), ("dtype",)),
            "descending dates": (s1.isel(time=slice(None, None, -1)), ("not increasing",)),
            "NaT among the dates": (s1.assign_coords(time=np.where(np.arange(T) == k, np.datetime64("NaT"), t)), ("NaT",)),
            "ascending y (south-up)": (s1.isel(y=slice(None, None, -1)), ("north-up",)),
            "irregular x (a column missing)": (s1.drop_isel(x=col), ("irregular",)),

            "polarization label twice": (s1[["vv", "vh"]].to_array("polarization").assign_coords(
                polarization=["VV", "VV"]).to_dataset(name="gamma0"), ("'VV' appears more than once",)),
            "zero dates": (s1.isel(time=slice(0, 0)), ("only 0 dates",)),
            "vv all NaN": (s1.assign(vv=s1.vv * np.nan), ("band vv is all-NaN",)),
        }
        for name, (ds, refuse) in malformed.items():
            add(name, _netcdf(ds), refuse)
        add("vh missing", _netcdf(s1.drop_vars("vh")), ("missing band(s) vh",), usable=False)
        add("8 dates (too few to train)", _netcdf(s1.isel(time=slice(0, 8))),
            ("only 8 dates", "8 dates; an embedding needs 11"), usable=False)
    return cases


def _second_slice(s1):
    """Adjacent GRD slices of one pass: a copy of date 3, 25 s later, half of it NaN (outside that slice)."""
    k = 3
    copy = s1.isel(time=[k]).assign_coords(time=s1.time.values[[k]] + np.timedelta64(25, "s"))
    copy = _map_bands(copy, lambda v: v.where(v.x < float(v.x.median())))
    return xr.concat([s1.isel(time=slice(0, k + 1)), copy, s1.isel(time=slice(k + 1, None))], dim="time")


# -- FLUXNET daily CSVs: two years of synthetic tower GPP, written the ways spreadsheets write them --

def clean_flux(rng):
    """Daily GPP and QC of 2019-2020 at a synthetic tower (synthetic.py), 5 decimals as written."""
    _, _, flux = synthetic.make_synthetic_cube(int(rng.integers(1000)), size=4, start="2019-01-01", end="2020-12-31")
    return flux[[fluxnet.GPP, fluxnet.QC]].astype(np.float64).round(5)


def _csv(flux, sep=",", decimal=".", header=True, bom=False, newline="\n", extra=False, pad="", quote=False,
         fmt="{:.5f}", timestamp="%Y%m%d", rows=None, qc_scale=1.0, columns=None, trailing=""):
    """A writer of `flux` as a FLUXNET daily CSV, with the given spreadsheet habits."""
    def write(path):
        names = list(columns or ["TIMESTAMP", fluxnet.GPP, fluxnet.QC])
        if extra:
            names = ["TA_F", *names[::-1], "SW_IN_F"]
        days = flux.time.values.astype("datetime64[D]")
        lines = [sep.join(f"{pad}{n}{pad}" for n in names)] if header else []
        for i in rows if rows is not None else range(len(days)):
            day = days[i].item().strftime(timestamp)
            values = {"TIMESTAMP": day, "TA_F": "12.5", "SW_IN_F": "180.25"}
            for c, scale in ((fluxnet.GPP, 1.0), (fluxnet.QC, qc_scale)):
                v = float(flux[c].values[i])
                values[c] = "-9999" if not np.isfinite(v) else fmt.format(v * scale).replace(".", decimal)
            cells = [values.get(n, "1") for n in names]
            lines.append(sep.join(f'"{c}"' if quote else c for c in cells))
        text = newline.join(lines) + newline + trailing
        Path(path).write_bytes((("\ufeff" if bom else "") + text).encode())
    return write


def flux_cases(rng):
    """Every flux case: each correct spelling once, every malformation on each of three towers."""
    towers = [clean_flux(rng) for _ in range(3)]
    cases = []

    def add(category, write, refuse=(), twin=None, usable=True):
        cases.append(Case(f"flux-{len(cases):03d}", "flux", category, write, refuse, twin, usable))

    gappy = towers[1].copy(deep=True)
    gappy[fluxnet.GPP][rng.choice(gappy.sizes["time"], 40, replace=False)] = np.nan
    n = towers[2].sizes["time"]
    hole = np.r_[0:100, 130:n]                    # 30 days without a row
    accepted = {
        "plain daily CSV": (towers[0], {}),
        "CRLF line endings": (towers[1], {"newline": "\r\n"}),
        "blank lines at the end": (towers[2], {"trailing": "\n\n"}),
        "UTF-8 byte-order mark": (towers[0], {"bom": True}),
        "extra columns, reordered": (towers[1], {"extra": True}),
        "header names padded with spaces": (towers[2], {"pad": " "}),
        "every field quoted": (towers[0], {"quote": True}),
        "exponent notation": (towers[1], {"fmt": "{:.6e}"}),
        "-9999 on 40 days": (gappy, {}),
        "30 days without a row": (towers[2].where(~towers[2].time.isin(towers[2].time[100:130])), {"rows": hole}),
    }
    for name, (flux, how) in accepted.items():
        add(name, _csv(flux, **how), twin=flux)
    for flux in towers:
        n = flux.sizes["time"]
        k = int(rng.integers(1, n - 1))
        refused = {
            "decimal commas, ';'-separated": ({"sep": ";", "decimal": ","}, ("separated by ';'",)),
            "decimal commas, ','-separated": ({"decimal": ","}, ("decimal commas",)),
            "decimal commas, quoted": ({"decimal": ",", "quote": True}, ("non-numeric",)),
            "no header row": ({"header": False}, ("not the header row",)),
            "header only": ({"rows": []}, ("no data rows",)),
            "a row twice": ({"rows": np.r_[0:k + 1, k:n]}, ("not strictly increasing",)),
            "two rows swapped": ({"rows": np.r_[0:k, k + 1, k, k + 2:n]}, ("not strictly increasing",)),
            "dates written 2019-01-01": ({"timestamp": "%Y-%m-%d"}, ("8-digit",)),
            "GPP column missing": ({"columns": ["TIMESTAMP", "GPP_DT_VUT_REF", fluxnet.QC]}, ("'GPP_NT_VUT_REF' not found",)),
            "QC in percent": ({"qc_scale": 100.0}, ("percent",)),
            "a row cut short": ({"trailing": "20210101,1.5\n"}, ("has 2 fields",)),
            "NA for missing": ({"fmt": "NA"}, ("non-numeric",)),
        }
        for name, (how, refuse) in refused.items():
            add(name, _csv(flux, **how), refuse)
        add("empty file", lambda path: Path(path).write_text(""), ("is empty",))
        add("every GPP value -9999", _csv(flux.assign({fluxnet.GPP: flux[fluxnet.GPP] * np.nan})),
            ("no train window: every GPP value",), usable=False)
    return cases


def generate():
    """The seeded list of every case: S2, S1, flux (deterministic; names unique)."""
    rng = np.random.default_rng(SEED)
    return s2_cases(rng) + s1_cases(rng) + flux_cases(rng)


CASES = generate()


# ---------------------------------------------------------------------------------------------
# 2. Files, checkpoints and the grouped runs (once per module)
# ---------------------------------------------------------------------------------------------

def _twin_key(case):
    """Cases made from one clean cube share its twin file and the twin's reference outputs."""
    return id(case.twin)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Every case's file, and every twin's (the clean file of an accepted case's content)."""
    d = tmp_path_factory.mktemp("malformed")
    paths = {}
    for case in CASES:
        paths[case.name] = d / (f"{case.name}.csv" if case.kind == "flux" else f"{case.name}_{case.kind}.nc")
        case.write(paths[case.name])
    twins = {}
    for case in CASES:
        if case.accepted and _twin_key(case) not in twins:
            k = len(twins)
            twins[_twin_key(case)] = d / "twins" / (f"twin{k}.csv" if case.kind == "flux" else f"twin{k}_{case.kind}.nc")
            twins[_twin_key(case)].parent.mkdir(exist_ok=True)
            write = _csv(case.twin) if case.kind == "flux" else _netcdf(case.twin)
            write(twins[_twin_key(case)])
    return {"dir": d, "paths": paths, "twins": twins}


@pytest.fixture(scope="module")
def checkpoints(made):
    """One S2 and one S1 checkpoint, trained through the command lines (one step) on three twins."""
    out = {}
    for kind, tool in (("s2", "train_s2"), ("s1", "train_s1")):
        twins = sorted({str(made["twins"][_twin_key(c)]) for c in CASES if c.kind == kind and c.accepted})[:3]
        run_dir = made["dir"] / f"ckpt_{kind}"
        code, _, err = run(tool, ["--cubes", *twins, "--quick", "--max-steps", "1", "--batch-size", "8",
                                  "--s-stride", "1", "--out", run_dir, "--cache", run_dir / "cache"])
        assert code == 0, err
        out[kind] = run_dir / "checkpoint.pt"
    return out


@pytest.fixture(scope="module")
def grouped_training(made):
    """`train_s2.py` / `train_s1.py` once over every accepted cube of the modality (a few steps), with a
    cache: what each command read is then in CACHE/NAME-KEY/0_MODALITY.npy. -> {kind: (status, stderr, cache)}."""
    out = {}
    for kind, tool in (("s2", "train_s2"), ("s1", "train_s1")):
        files = [made["paths"][c.name] for c in CASES if c.kind == kind and c.accepted]
        run_dir = made["dir"] / f"grouped_{kind}"
        code, _, err = run(tool, ["--cubes", *files, *TRAIN, "--out", run_dir, "--cache", run_dir / "cache"])
        out[kind] = (code, err, run_dir / "cache")
    return out


@pytest.fixture(scope="module")
def grouped_gpp(made):
    """`gpp.py` once over every accepted flux file and the twins, one site each (climatology: no model)."""
    files = [made["paths"][c.name] for c in CASES if c.kind == "flux" and c.accepted]
    files += sorted({made["twins"][_twin_key(c)] for c in CASES if c.kind == "flux" and c.accepted})
    return _gpp_table(files, made["dir"] / "grouped_gpp")


@pytest.fixture(scope="module")
def reference_embeddings(made, checkpoints):
    """embed.py on each twin, computed once (when a case first asks)."""
    done = {}

    def of(case):
        key = _twin_key(case)
        if key not in done:
            done[key] = _embedding(case.kind, made["twins"][key], checkpoints[case.kind], made["dir"] / f"ref{len(done)}.nc")
        return done[key]
    return of


def _embedding(kind, path, checkpoint, out):
    """embed.py on one cube -> (status, stderr, embedding Dataset or None)."""
    code, _, err = run("embed", [f"--{kind}", path, "--checkpoint", checkpoint, "--out", out, "--quality-every", "0"])
    return code, err, (xr.load_dataset(out) if code == 0 else None)


def _gpp_table(paths, out):
    """gpp.py with the climatology baseline, one site per flux file (named by its stem), 2019 trains and
    2020 validates -> (status, stderr, {site: {split: (n, rmse, bias)}})."""
    code, _, err = run("gpp", ["--flux", *paths, "--features", "climatology", "--train-years", "2019",
                               "--val-years", "2020", "--window", "30", "--out", out])
    table = {}
    if code == 0:
        with open(Path(out) / "gpp_metrics.csv", newline="") as f:
            for r in csv.DictReader(f):
                table.setdefault(r["site"], {})[r["split"]] = (r["n"], r["rmse"], r["bias"])
    return code, err, table


# ---------------------------------------------------------------------------------------------
# 3. Every case through the command lines
# ---------------------------------------------------------------------------------------------

def _one_line_exit_2(tool, result, case):
    code, _, err = result
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, \
        f"{tool} on {case.category}: status {code}, stderr:\n{err}"
    assert any(f in err for f in case.refuse), f"{tool} on {case.category}: {err.strip()!r} names none of {case.refuse}"


def _loader(case, path):
    """The loader the commands use: modalities.load_training_cubes (train, cubes) or fluxnet.read_fluxnet."""
    if case.kind == "flux":
        return fluxnet.read_fluxnet(path)
    return modalities.load_training_cubes([path], case.kind)[0]


def _s2_truth(clean):
    """(T, C, H, W) reflectance of a clean cube: what the readers must return."""
    return np.stack([clean[b].transpose("time", "y", "x").values for b in S2_BANDS], axis=1)


def _check_values(case, loaded, made):
    """What the loader read equals the twin: exact S2 reflectance, S1 as read from the twin, flux GPP/QC."""
    if case.kind == "flux":
        for c in (fluxnet.GPP, fluxnet.QC):
            np.testing.assert_allclose(loaded[c].values, case.twin[c].values, atol=1e-9, err_msg=c)
        np.testing.assert_array_equal(loaded.time.values, case.twin.time.values)
        return
    if case.kind == "s2":
        truth, days = _s2_truth(case.twin), data.day_offsets(case.twin.time)
        atol = 1e-6
    else:                                   # S1 in dB x 100 int16 holds 0.01 dB: 4e-4 of the 0-1 range
        ref = modalities.load_training_cubes([made["twins"][_twin_key(case)]], "s1")[0]
        truth, days, atol = ref["arrays"]["s1"], ref["days"]["s1"], 1e-3
    arr = loaded["arrays"][case.kind]
    assert arr.shape == truth.shape, (arr.shape, truth.shape)
    np.testing.assert_array_equal(np.isnan(arr), np.isnan(truth))
    np.testing.assert_allclose(arr, truth, atol=atol, equal_nan=True)
    np.testing.assert_allclose(loaded["days"][case.kind], days, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.name}-{c.category}" for c in CASES])
def test_case(case, made, checkpoints, grouped_training, grouped_gpp, reference_embeddings, tmp_path):
    """One case through inspect, the loader, and (accepted, or refused only by use) the command that uses it."""
    path = made["paths"][case.name]
    inspected = run("inspect", [path])
    if case.refuse and case.usable:
        _one_line_exit_2("inspect", inspected, case)
        with pytest.raises(data.InputError) as err:
            _loader(case, path)
        assert any(f in str(err.value) for f in case.refuse), str(err.value)
        if case.kind != "flux":
            _one_line_exit_2(f"train_{case.kind}", run(f"train_{case.kind}", [
                "--cubes", path, *TRAIN, "--out", tmp_path / "run", "--cache", tmp_path / "cache"]), case)
        return
    code, out, err = inspected
    assert code == 0 and not err, err
    if case.kind == "flux":
        t = case.twin.time.values if case.accepted else None
        if t is not None:
            assert f"days        : {t.size}, {str(t[0])[:10]} .. {str(t[-1])[:10]}" in out, out
        if case.accepted:
            _check_values(case, _loader(case, path), made)
            code, err, table = grouped_gpp
            assert code == 0, err
            assert table[case.name] == table[made["twins"][_twin_key(case)].stem], table
        else:
            code, err, _ = _gpp_table([path], tmp_path / "gpp")
            _one_line_exit_2("gpp", (code, "", err), case)
        return
    if not case.accepted:                    # the file is fine, too small to train on or embed
        _one_line_exit_2(f"train_{case.kind}", run(f"train_{case.kind}", [
            "--cubes", path, *TRAIN, "--out", tmp_path / "run", "--cache", tmp_path / "cache"]), case)
        _one_line_exit_2("embed", run("embed", [f"--{case.kind}", path, "--checkpoint", checkpoints[case.kind],
                                                "--out", tmp_path / "e.nc", "--quality-every", "0"]), case)
        return
    T = case.twin.sizes["time"] if case.kind == "s2" else None
    if T is not None:
        assert f"dates       : {T}," in out and "(missing: none)" in out, out
    _check_values(case, _loader(case, path), made)
    opened = (readers.open_s2 if case.kind == "s2" else readers.open_s1)(path)
    for c in ("y", "x"):                                     # north-up, in the file's order
        np.testing.assert_array_equal(opened[c].values, case.twin[c].values)
    code, err, cache = grouped_training[case.kind]
    assert code == 0, err
    (cached,) = cache.glob(f"{case.name}-*/0_{case.kind}.npy")
    _check_values(case, {"arrays": {case.kind: np.load(cached)},
                         "days": {case.kind: np.load(cached.with_name(f"0_{case.kind}_days.npy"))}}, made)
    got = _embedding(case.kind, path, checkpoints[case.kind], tmp_path / "e.nc")
    ref = reference_embeddings(case)
    assert got[0] == 0 and ref[0] == 0, got[1] + ref[1]
    for c in ("time", "y", "x"):
        np.testing.assert_array_equal(got[2][c].values, ref[2][c].values)
    np.testing.assert_allclose(got[2].embedding.values, ref[2].embedding.values, atol=EMBED_ATOL, equal_nan=True)


# Embeddings of a file and its clean twin: equal up to the reading's rounding (int16 packing holds
# reflectance to 1e-4 and dB to 0.01: the features move by less than this; a swapped band or a
# missed scaling moves them by far more).
EMBED_ATOL = 1e-2


def test_case_count_and_readme():
    """At least 200 cases, of every kind and of both outcomes; the README states the counts."""
    n = {(k, acc): sum(c.kind == k and c.accepted == acc for c in CASES) for k in ("s2", "s1", "flux") for acc in (True, False)}
    assert len(CASES) >= 200 and all(n.values()), n
    assert len({c.name for c in CASES}) == len(CASES)
    accepted = sum(c.accepted for c in CASES)
    readme = (ROOT / "README.md").read_text()
    assert f"runs {len(CASES)} malformed inputs" in readme, (len(CASES), n)
    assert f"{accepted} load" in readme and f"{len(CASES) - accepted} stop with one line" in readme, (accepted, n)
    kinds = {k: sum(c.kind == k for c in CASES) for k in ("s2", "s1", "flux")}
    assert f"{kinds['s2']} S2 and {kinds['s1']} S1 cubes, {kinds['flux']} FLUXNET CSVs" in readme, kinds
