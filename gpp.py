"""gpp.py: daily GPP at eddy-covariance towers from 90-day embedding windows (Sec. IV-C, Fig. 7).

The paper's quantitative test of the embeddings: a small transformer (deepfeat.GPPTransformer:
linear input -> 4 transformer encoder blocks -> regression head) reads 90 days of daily,
linearly interpolated embeddings at a FLUXNET tower and predicts that day's GPP_NT_VUT_REF
(gC m-2 d-1). Windows have stride 10; 2017-2019 train, 2020 validates; MAE loss; the paper
reports NRMSE 0.0917 / 0.0958 and RMSE 3.09 / 4.40 gC m-2 d-1 (train / val) over nine sites.

The targets come from fluxnet.py (FLUXNET FULLSET files -> daily GPP, the 70 % QC filter and the
60 % site rule). Sections, in reading order:
  1. tower features   k x k footprint mean at the tower, daily linear interpolation
  2. windows          90-day windows, stride 10, target = last day, year-based split without leakage
  3. model, training  GPPTransformer trained with train.fit (MAE), standardised on training windows
  4. metrics          RMSE, NRMSE (range and mean), R2, bias; climatology baseline
  5. experiment       the paper's nine sites, feature sets -> comparison table (CSV) and Fig. 7 (PNG)
  6. command line

Feature sets (--features, comma-separated; '+' joins groups): fused, s1, s2 = the embedding cube's
fused_* / s1_* / s2_* features; bands = the ten S2 reflectances and ndvi = (B08 - B04) / (B08 + B04)
at the tower from the S2 cube itself; climatology = the training years' mean seasonal cycle of GPP
(no model). All sets are scored on the same windows, so the table compares like with like.

Run (CPU):
  bash demo.sh                                  # the README quick start; its last line is:
  python gpp.py --quick                         # sample_data/tower/ + runs/quick/tower_embeddings.nc,
                                                # ~1.5 min on 2 cores, prints the table, writes runs/quick/gpp/
  python gpp.py --embeddings E.nc --flux FLX_CH-Cha_FLUXNET2015_FULLSET_DD_2017-2020.csv \
      --s2 S2.nc --features fused,s1+s2,bands,ndvi,climatology --out runs/gpp
Several sites: give --embeddings/--flux/--s2 (and optionally --site/--pixel) once per site, in the
same order; one model is trained on all sites' windows and evaluated per site and overall.
Outputs: OUT/gpp_metrics.csv (the table), OUT/gpp_fig7.png, OUT/<feature set>/checkpoint.pt + log.csv.
"""
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import recipe
from data import (S2_BANDS, ArgumentParser, CubeError, InputError, add_mask_arg, day_offsets, interpolate_time,
                  positive_int, run_cli, write_atomic, write_csv)
from deepfeat import GPPConfig, GPPTransformer
from fluxnet import GPP, FluxError, quality_filter, read_fluxnet, site_passes
from readers import open_s2
from train import TrainConfig, fit

# ----------------------------------------------------------------------------------------------
# 1. Features at the tower (Sec. IV-C: daily embeddings, gaps linearly interpolated)
# ----------------------------------------------------------------------------------------------

def tower_pixel(cube, pixel=None):
    """(row, col) of the tower in the cube: `pixel` if given, else the attrs tower_row/tower_col,
    else the pixel nearest to tower_x/tower_y (same CRS as the x/y coordinates)."""
    if pixel is not None:
        return int(pixel[0]), int(pixel[1])
    a = cube.attrs
    if "tower_row" in a and "tower_col" in a:
        return int(a["tower_row"]), int(a["tower_col"])
    if "tower_x" in a and "tower_y" in a:
        return (int(np.abs(cube.y.values - a["tower_y"]).argmin()),
                int(np.abs(cube.x.values - a["tower_x"]).argmin()))
    raise CubeError(f"{cube.encoding.get('source', 'cube')}: no tower_row/tower_col or tower_x/tower_y "
                    "attributes; give the tower pixel with --pixel ROW,COL")


def _feature_names(cube, features):
    """Names selected by a list (exact names) or a prefix string (e.g. 'fused_')."""
    available = ([str(f) for f in cube.feature.values] if "embedding" in cube
                 else [v for v in cube.data_vars if cube[v].dims == ("time", "y", "x")])
    names = [f for f in available if f.startswith(features)] if isinstance(features, str) else list(features)
    unknown = [n for n in names if n not in available]
    if not names or unknown:
        raise CubeError(f"{cube.encoding.get('source', 'cube')}: features {unknown or features!r} not found; "
                        f"it has {available}")
    return names


def tower_series(cube, features, row, col, k=1):
    """Acquisition days and the k x k footprint mean of `features` around the tower pixel.

    cube: an embedding cube (variable `embedding`, dims time, y, x, feature) or a band cube (one
    (time, y, x) variable per band). features: list of names or a name prefix. The mean is taken
    over the valid (non-NaN) pixels of the k x k window (k odd; k = 1 is the tower pixel), NaN where
    none is valid. Returns days (T,) = calendar day numbers (data.day_offsets, floored: an
    acquisition counts for its date) and values (T, F) float64.
    """
    if k < 1 or k % 2 == 0:
        raise InputError(f"--k: the footprint must be odd and >= 1, got {k}")
    names = _feature_names(cube, features)
    h = k // 2
    ny, nx = cube.sizes["y"], cube.sizes["x"]
    if not (h <= row < ny - h and h <= col < nx - h):
        raise CubeError(f"{k} x {k} window around pixel ({row}, {col}) leaves the {ny} x {nx} cube")
    window = dict(y=slice(row - h, row + h + 1), x=slice(col - h, col + h + 1))
    if "embedding" in cube:
        block = cube["embedding"].isel(window).sel(feature=names).transpose("time", "y", "x", "feature")
        values = block.values.astype(np.float64)                             # (T, k, k, F)
    else:
        values = np.stack([cube[n].isel(window).transpose("time", "y", "x").values for n in names],
                          axis=-1).astype(np.float64)                        # (T, k, k, F)
    ok = np.isfinite(values)
    count = ok.sum(axis=(1, 2))                                              # (T, F)
    mean = np.where(count > 0, np.where(ok, values, 0.0).sum(axis=(1, 2)) / np.maximum(count, 1), np.nan)
    return np.floor(day_offsets(cube.time.values)), mean


def ndvi_cube(s2):
    """NDVI = (B08 - B04) / (B08 + B04) per pixel, as a one-variable band cube."""
    return xr.Dataset({"NDVI": (s2["B08"] - s2["B04"]) / (s2["B08"] + s2["B04"])}, attrs=s2.attrs)


# ----------------------------------------------------------------------------------------------
# 2. Windows (Sec. IV-C: 90-day input sequences, stride 10, year-based split)
# ----------------------------------------------------------------------------------------------

def make_windows(years, x_ok, y_ok, split_years, window=90, stride=10):
    """Start indices of one split's windows on a consecutive daily grid.

    years (N,) calendar year of each day; x_ok (N,) all predictors available that day; y_ok (N,)
    target observed (None: no target needed, e.g. for plotting). Window s covers days
    [s, s + window) and its target is its LAST day s + window - 1 (the window holds no later day).
    Starts run 0, stride, 2 * stride, ... A window is kept when all its days lie in `split_years`
    (so a training window never contains a validation day and vice versa), x_ok holds on all of
    them and y_ok on the target. Returns starts (W,) int64.
    """
    in_split = np.isin(years, list(split_years)) & x_ok                      # (N,)
    starts = np.arange(0, len(years) - window + 1, stride)                   # (S,)
    csum = np.concatenate([[0], np.cumsum(in_split)])                        # (N+1,)
    keep = csum[starts + window] - csum[starts] == window
    if y_ok is not None:
        keep &= y_ok[starts + window - 1]
    return starts[keep]


def gather_windows(values, starts, window):
    """values (N, ...) -> (W, window, ...) for windows starting at starts (W,)."""
    return values[starts[:, None] + np.arange(window)[None, :]]


# ----------------------------------------------------------------------------------------------
# 3. Model and training (Sec. IV-C: GPPTransformer, MAE loss)
# ----------------------------------------------------------------------------------------------

def build_model(n_features, d_model=64, n_layers=4, n_heads=4, dropout=0.1, annual_phase=True):
    """deepfeat.GPPTransformer: linear input -> n_layers (paper: 4) encoder blocks -> head."""
    return GPPTransformer(GPPConfig(n_features=n_features, d_model=d_model, n_heads=n_heads,
                                    n_layers=n_layers, dropout=dropout, annual_phase=annual_phase))


@dataclass
class Standardiser:
    """Feature and target scaling fitted on the TRAINING windows only (never on validation)."""
    x_mean: np.ndarray     # (F,)
    x_std: np.ndarray      # (F,)
    y_mean: float          # gC m-2 d-1
    y_std: float

    @classmethod
    def fit(cls, x, y):    # x (W, L, F), y (W,)
        return cls(x.mean(axis=(0, 1)), np.maximum(x.std(axis=(0, 1)), 1e-6),
                   float(y.mean()), float(max(y.std(), 1e-6)))

    def scale_x(self, x):
        return ((x - self.x_mean) / self.x_std).astype(np.float32)


def gpp_loss(model, batch, stats):
    """MAE (Sec. IV-C) in gC m-2 d-1: mean |y_hat - y|, y_hat = y_std * model(x, days) + y_mean."""
    pred = model(batch["x"], batch["days"]) * stats.y_std + stats.y_mean   # (B,)
    mae = (pred - batch["y"]).abs().mean()
    return mae, {"mae": mae.detach()}


def _batches(x, days, y, batch_size, order):
    for i in range(0, len(order), batch_size):
        j = order[i:i + batch_size]
        yield {"x": torch.from_numpy(x[j]), "days": torch.from_numpy(days[j]),
               "y": torch.from_numpy(y[j])}


def train_gpp(train, val, model_kwargs, train_cfg, out_dir, meta):
    """Train a GPPTransformer on window arrays; returns (model, Standardiser, history).

    train / val: (x (W, L, F), days (W, L), y (W,)) in physical units. The model sees standardised
    features and predicts standardised GPP; the loss and the logged "mae" are in gC m-2 d-1.
    As in the paper (train and validation years only, no test year), fit's plateau scheduler
    watches the validation MAE; the model after the last epoch is returned.
    """
    stats = Standardiser.fit(train[0], train[2])
    xt, dt, yt = stats.scale_x(train[0]), train[1].astype(np.float32), train[2].astype(np.float32)
    xv, dv, yv = stats.scale_x(val[0]), val[1].astype(np.float32), val[2].astype(np.float32)
    torch.manual_seed(train_cfg.seed)
    model = build_model(xt.shape[-1], **model_kwargs)

    def train_batches(epoch):
        order = np.random.default_rng([train_cfg.seed, epoch]).permutation(len(yt))
        return _batches(xt, dt, yt, train_cfg.batch_size, order)

    def val_batches():
        return _batches(xv, dv, yv, train_cfg.batch_size, np.arange(len(yv)))

    # fit saves the GPPConfig itself; the scaling goes with it so the checkpoint can predict alone
    meta = {**meta, "kind": "gpp", "x_mean": stats.x_mean.tolist(), "x_std": stats.x_std.tolist(),
            "y_mean": stats.y_mean, "y_std": stats.y_std}
    history = fit(model, model.parameters(), lambda m, b: gpp_loss(m, b, stats),
                  train_batches, val_batches, train_cfg, out_dir, meta)
    return model, stats, history


@torch.no_grad()
def predict(model, stats, x, days, batch_size=256):
    """GPP (W,) in gC m-2 d-1 for windows x (W, L, F) (physical units), days (W, L)."""
    model.eval()
    device = next(model.parameters()).device
    x, days = stats.scale_x(x), days.astype(np.float32)
    out = [model(torch.from_numpy(x[i:i + batch_size]).to(device),
                 torch.from_numpy(days[i:i + batch_size]).to(device)).cpu().numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) * stats.y_std + stats.y_mean if out else np.zeros(0)


# ----------------------------------------------------------------------------------------------
# 4. Metrics and the climatology baseline
# ----------------------------------------------------------------------------------------------

def rmse(obs, pred):
    return float(np.sqrt(np.mean((np.asarray(pred) - obs) ** 2)))


def nrmse(obs, pred, norm="range"):
    """RMSE / (max - min of obs) ("range") or RMSE / mean(obs) ("mean").

    The paper does not say which; its pairs give RMSE / NRMSE = 3.09 / 0.0917 = 33.7 (train) and
    4.40 / 0.0958 = 45.9 gC m-2 d-1 (val). A mean daily GPP is ~3-5, so the mean reading is ruled
    out; a range reading fits better (though 34-46 is wide for daily GPP), hence "range" by default.
    """
    scale = float(np.max(obs) - np.min(obs) if norm == "range" else np.mean(obs))
    return rmse(obs, pred) / scale if scale else float("nan")          # constant GPP: undefined


def r2(obs, pred):
    """Coefficient of determination 1 - SS_res / SS_tot."""
    total = float(np.sum((obs - np.mean(obs)) ** 2))
    return 1.0 - float(np.sum((np.asarray(pred) - obs) ** 2)) / total if total else float("nan")


def bias(obs, pred):
    """Mean error, prediction minus observation (gC m-2 d-1)."""
    return float(np.mean(np.asarray(pred) - obs))


def climatology(doy, gpp, train_mask, smooth_days=31):
    """Mean seasonal cycle (366,) of quality-filtered GPP by day of year (doy 1..366) over the
    training days, smoothed with a circular `smooth_days` moving mean of the valid values."""
    ok = train_mask & np.isfinite(gpp)
    total = np.bincount(doy[ok] - 1, gpp[ok], minlength=366)
    count = np.bincount(doy[ok] - 1, minlength=366).astype(float)
    kernel, h = np.ones(smooth_days), smooth_days // 2
    total_s = np.convolve(np.pad(total, h, mode="wrap"), kernel, "valid")  # (366,) circular year
    count_s = np.convolve(np.pad(count, h, mode="wrap"), kernel, "valid")
    return np.where(count_s > 0, total_s / np.maximum(count_s, 1), np.nan)


# ----------------------------------------------------------------------------------------------
# 5. Experiment: the paper's sites, feature sets, comparison table, Fig. 7
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Site:
    """One of the paper's towers (Sec. IV-C: nine sites that pass fluxnet.site_passes, three per
    vegetation type); the vegetation group labels the table's rows and the Fig. 7 panels."""
    id: str
    vegetation: str        # paper's grouping: DBF deciduous broadleaf, ENF evergreen needleleaf, GRA grassland
    name: str
    lat: float             # tower latitude, degrees north
    lon: float             # tower longitude, degrees east


# Tower coordinates: approximate, from the FLUXNET / ICOS site list; check before publication.
SITES = (
    Site("CZ-Lnz", "DBF", "Lanzhot", 48.6816, 16.9463),
    Site("DE-HoH", "DBF", "Hohes Holz", 52.0866, 11.2224),
    Site("FR-Hes", "DBF", "Hesse", 48.6741, 7.0646),
    Site("BE-Bra", "ENF", "Brasschaat", 51.3076, 4.5198),
    Site("IT-Lav", "ENF", "Lavarone", 45.9562, 11.2813),
    Site("IT-Ren", "ENF", "Renon", 46.5869, 11.4337),
    Site("CH-Cha", "GRA", "Chamau", 47.2102, 8.4104),
    Site("CH-Fru", "GRA", "Früebüel", 47.1158, 8.5378),
    Site("IT-MBo", "GRA", "Monte Bondone", 46.0147, 11.0458),
)
SITE_BY_ID = {s.id: s for s in SITES}

EMBEDDING_PREFIXES = {"fused": "fused_", "s1": "s1_", "s2": "s2_"}   # groups of the embedding cube
S2_FEATURES = ("bands", "ndvi")                                      # from the S2 cube itself
BASELINE = "climatology"                                             # no model


@dataclass
class SiteData:
    """One tower on a consecutive daily grid (the flux file's days)."""
    site: str
    time: np.ndarray       # (N,) datetime64 dates
    days: np.ndarray       # (N,) day numbers (data.day_offsets)
    year: np.ndarray       # (N,) calendar year
    doy: np.ndarray        # (N,) day of year 1..366
    gpp: np.ndarray        # (N,) quality-filtered GPP, gC m-2 d-1, NaN = missing or filtered
    features: dict         # feature-set name -> (N, F) daily predictors, NaN outside the observations


def parse_feature_sets(text):
    """'fused,s1+s2,ndvi' -> ['fused', 's1+s2', 'ndvi']; '+' concatenates groups."""
    sets = [s.strip() for s in text.split(",") if s.strip()]
    known = (*EMBEDDING_PREFIXES, *S2_FEATURES)
    for s in sets:
        if s != BASELINE and any(part not in known for part in s.split("+")):
            raise InputError(f"--features: unknown feature set {s!r}; choose from {', '.join(known)}, {BASELINE} "
                             "(join groups with '+')")
    return sets


def load_site(site, flux_path, feature_sets, embeddings=None, s2_path=None, pixel=None, k=1, min_qc=0.7,
              mask_var=None):
    """Read the flux file and every requested predictor at the tower, on the flux days."""
    flux = quality_filter(read_fluxnet(flux_path), min_qc)
    dates = flux.time
    days = day_offsets(dates.values)                                         # (N,)
    parts = {p for s in feature_sets if s != BASELINE for p in s.split("+")}
    cubes = {}
    if parts & set(EMBEDDING_PREFIXES):
        if embeddings is None:
            raise InputError(f"feature sets {sorted(parts & set(EMBEDDING_PREFIXES))} need --embeddings")
        cubes["embedding"] = xr.open_dataset(embeddings)
    if parts & set(S2_FEATURES):
        if s2_path is None:
            raise InputError(f"feature sets {sorted(parts & set(S2_FEATURES))} need --s2")
        bands = S2_BANDS if "bands" in parts else ("B04", "B08")
        cubes["s2"] = open_s2(s2_path, bands=bands, mask_var=mask_var)
    daily = {}
    for part in parts:
        if part in EMBEDDING_PREFIXES:
            cube, names = cubes["embedding"], EMBEDDING_PREFIXES[part]
        elif part == "bands":
            cube, names = cubes["s2"], list(S2_BANDS)
        else:
            cube, names = ndvi_cube(cubes["s2"]), ["NDVI"]
        row, col = tower_pixel(cube, pixel)
        obs_days, values = tower_series(cube, names, row, col, k)
        daily[part] = interpolate_time(obs_days, values, days)
    features = {s: np.concatenate([daily[p] for p in s.split("+")], axis=1)
                for s in feature_sets if s != BASELINE}
    return SiteData(site, dates.values, days, dates.dt.year.values, dates.dt.dayofyear.values,
                    flux[GPP].values, features)


def features_ok(site, feature_sets):
    """(N,) True on the days where every feature set has all its predictors."""
    ok = np.ones(len(site.days), bool)
    for s in feature_sets:
        if s != BASELINE:
            ok &= np.isfinite(site.features[s]).all(axis=1)
    return ok


def site_windows(site, feature_sets, split_years, window, stride, need_target=True):
    """Window starts of one split, shared by every feature set (all are evaluated on the same days)."""
    y_ok = np.isfinite(site.gpp) if need_target else None
    return make_windows(site.year, features_ok(site, feature_sets), y_ok, split_years, window, stride)


def why_no_windows(sites, feature_sets, years, window):
    """The first real reason why the years `years` hold no window at any site (for the error message)."""
    in_years = [np.isin(s.year, years) for s in sites]
    if not any(m.any() for m in in_years):
        spans = "; ".join(f"{s.site} {str(s.time[0])[:10]} .. {str(s.time[-1])[:10]}" for s in sites)
        return f"the flux data have no day in {list(years)} ({spans})"
    if not any(np.isfinite(s.gpp[m]).any() for s, m in zip(sites, in_years)):
        return f"every GPP value in {list(years)} is missing or fails the QC filter (--min-qc)"
    longest = 0
    for s, m in zip(sites, in_years):
        m = m & features_ok(s, feature_sets)
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, m.astype(int), 0])))[::2]      # lengths of True runs
        longest = max(longest, int(runs.max()) if runs.size else 0)
    if longest == 0:
        return f"the features have no value in {list(years)}: do the embedding and S2 cubes cover those dates?"
    return (f"--window {window} days is longer than the longest stretch of days in {list(years)} with every "
            f"feature ({longest} days)")


def metric_row(feature_set, site, split, obs, pred):
    return {"features": feature_set, "site": site,
            "vegetation": SITE_BY_ID[site].vegetation if site in SITE_BY_ID else "-",
            "split": split, "n": len(obs), "rmse": rmse(obs, pred), "nrmse_range": nrmse(obs, pred),
            "nrmse_mean": nrmse(obs, pred, "mean"), "r2": r2(obs, pred), "bias": bias(obs, pred)}


def run_experiment(sites, feature_sets, window=90, stride=10, train_years=(2017, 2018, 2019),
                   val_years=(2020,), model_kwargs=None, train_cfg=None, out_dir="runs/gpp", val_sites=()):
    """Train/evaluate every feature set on the same windows of all sites (Sec. IV-C protocol).

    Split by year (the paper's): every site's train_years train, its val_years validate. Split by
    tower (`val_sites`, e.g. leave one tower out): the other sites' train_years + val_years train,
    the val_sites' same years validate, and the climatology is the training towers' pooled cycle.
    Returns (rows, curves): rows = metric dicts per feature set x split x site (plus "all" when
    there are several sites); curves[feature_set][site] = daily prediction (N,) on every day whose
    full window lies inside one split (stride 1; NaN elsewhere), for the figure.
    """
    model_kwargs, train_cfg = model_kwargs or {}, train_cfg or TrainConfig()
    names = [s.site for s in sites]
    unknown = [v for v in val_sites if v not in names]
    if unknown:
        raise InputError(f"--val-sites {unknown[0]!r} is not one of the sites {names}")
    if val_sites and len(val_sites) == len(sites):
        raise InputError("--val-sites names every site: no tower is left to train on")
    if not val_sites and set(train_years) & set(val_years):
        raise InputError(f"--train-years {train_years} and --val-years {val_years} overlap")
    if val_sites:
        years = tuple(sorted(set(train_years) | set(val_years)))
        members = {"train": [n not in val_sites for n in names], "val": [n in val_sites for n in names]}
        splits = {"train": years, "val": years}
    else:
        members = {"train": [True] * len(sites), "val": [True] * len(sites)}
        splits = {"train": train_years, "val": val_years}
    none = np.zeros(0, np.int64)
    starts = {sp: [site_windows(s, feature_sets, yrs, window, stride) if member else none
                   for s, member in zip(sites, members[sp])]
              for sp, yrs in splits.items()}                                 # split -> per site (W,)
    daily = [np.unique(np.concatenate([site_windows(s, feature_sets, yrs, window, 1, need_target=False)
                                       for yrs in splits.values()]))
             for s in sites]                                                 # per site (M,)
    for sp in splits:
        if sum(map(len, starts[sp])) == 0:
            in_split = [s for s, member in zip(sites, members[sp]) if member]
            raise FluxError(f"no {sp} window: {why_no_windows(in_split, feature_sets, splits[sp], window)}")
    rows, curves = [], {}
    for fs in feature_sets:
        if fs == BASELINE:
            if val_sites:        # one mean seasonal cycle of the training towers, for every tower
                train_sites = [s for s, member in zip(sites, members["train"]) if member]
                pooled = climatology(*(np.concatenate(a) for a in zip(*[
                    (s.doy, s.gpp, np.isin(s.year, years)) for s in train_sites])))
                clims = [pooled] * len(sites)
            else:
                clims = [climatology(s.doy, s.gpp, np.isin(s.year, train_years)) for s in sites]
            pred_at = lambda i, st: clims[i][sites[i].doy[st + window - 1] - 1]
        else:
            def arrays(sp):
                return tuple(np.concatenate(a) for a in zip(*[
                    (gather_windows(s.features[fs], st, window), gather_windows(s.days, st, window),
                     s.gpp[st + window - 1]) for s, st in zip(sites, starts[sp])]))
            meta = {"feature_set": fs, "window": window, "stride": stride, "sites": names,
                    "train_years": list(train_years), "val_years": list(val_years), "val_sites": list(val_sites)}
            train, val = arrays("train"), arrays("val")
            print(f"--- {fs}: {train[0].shape[-1]} features, {len(train[2])} training windows, "
                  f"{len(val[2])} validation windows")
            model, stats, _ = train_gpp(train, val, model_kwargs, train_cfg, Path(out_dir) / fs, meta)
            pred_at = lambda i, st: predict(model, stats, gather_windows(sites[i].features[fs], st, window),
                                            gather_windows(sites[i].days, st, window))
        curves[fs] = {}
        for i, (s, st) in enumerate(zip(sites, daily)):
            curves[fs][s.site] = np.full(len(s.days), np.nan)
            curves[fs][s.site][st + window - 1] = pred_at(i, st)
        for sp in splits:
            obs = [s.gpp[st + window - 1] for s, st in zip(sites, starts[sp])]
            pred = [pred_at(i, st) for i, st in enumerate(starts[sp])]
            for s, o, p in zip(sites, obs, pred):
                if len(o):
                    rows.append(metric_row(fs, s.site, sp, o, p))
            if len(sites) > 1:
                rows.append(metric_row(fs, "all", sp, np.concatenate(obs), np.concatenate(pred)))
    return rows, curves


COLUMNS = ("features", "site", "vegetation", "split", "n", "rmse", "nrmse_range", "nrmse_mean", "r2", "bias")


def format_table(rows):
    """Fixed-width text table of metric rows (RMSE and bias in gC m-2 d-1)."""
    lines = [f"{'features':<14}{'site':<10}{'veg':<5}{'split':<6}{'n':>5}{'rmse':>8}{'nrmse_rng':>10}"
             f"{'nrmse_mean':>11}{'r2':>8}{'bias':>8}"]
    for r in rows:
        lines.append(f"{r['features']:<14}{r['site']:<10}{r['vegetation']:<5}{r['split']:<6}{r['n']:>5}"
                     f"{r['rmse']:>8.3f}{r['nrmse_range']:>10.4f}{r['nrmse_mean']:>11.4f}"
                     f"{r['r2']:>8.3f}{r['bias']:>8.3f}")
    return "\n".join(lines)


def plot_fig7(sites, curves, val_days, path):
    """Fig. 7 style: per site, observed vs predicted daily GPP over time (validation days shaded)
    and a scatter of predicted vs observed on every validation day (stride 1) with the 1:1 line.
    val_days: per site (N,) bool, the days its validation split covers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sites), 2, figsize=(14, 3.2 * len(sites)), squeeze=False,
                             gridspec_kw={"width_ratios": [3.2, 1]})
    for (ax_t, ax_s), s, val in zip(axes, sites, val_days):
        dates = s.time
        ax_t.plot(dates, s.gpp, ".", ms=2.5, color="0.45", label="observed (filtered)")
        if val.any():
            ax_t.axvspan(dates[val][0], dates[val][-1], color="0.92", zorder=0, label="validation")
        for fs, per_site in curves.items():
            pred = per_site[s.site]                                          # (N,) NaN = no window
            line, = ax_t.plot(dates, pred, "-", lw=1, label=fs)
            v = val & np.isfinite(s.gpp) & np.isfinite(pred)
            ax_s.plot(s.gpp[v], pred[v], ".", ms=3, color=line.get_color(), label=fs)
        hi = np.nanmax(s.gpp) if np.isfinite(s.gpp).any() else 1.0
        ax_s.plot([0, hi], [0, hi], "k--", lw=0.8)
        veg = SITE_BY_ID[s.site].vegetation if s.site in SITE_BY_ID else ""
        ax_t.set(title=f"{s.site} {veg}".strip(), ylabel="GPP (gC m$^{-2}$ d$^{-1}$)")
        ax_s.set(title="validation", xlabel="observed", ylabel="predicted")
        ax_t.legend(fontsize=7, ncol=4, loc="upper left")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# 6. Command line
# ----------------------------------------------------------------------------------------------

def _years(text, flag):
    """'2017-2019' -> (2017, 2018, 2019); '2020' -> (2020,); '2017,2019' -> (2017, 2019)."""
    years = []
    try:
        for part in text.split(","):
            a, _, b = part.partition("-")
            years += range(int(a), int(b or a) + 1)
    except ValueError:
        raise InputError(f"{flag}: cannot read {text!r} as years (e.g. 2017-2019 or 2017,2019)") from None
    if not years:
        raise InputError(f"{flag}: {text!r} names no year (e.g. 2017-2019 or 2017,2019)")
    return tuple(years)


def _pixel(text):
    """--pixel 'ROW,COL' -> (row, col)."""
    try:
        row, col = map(int, text.split(","))
    except ValueError:
        raise InputError(f"--pixel: cannot read {text!r} as ROW,COL (e.g. 12,12)") from None
    return row, col


def _site_id(flux_path):
    m = re.search(r"FLX_([A-Z]{2}-[A-Za-z0-9]{3})", Path(flux_path).name)
    return m.group(1) if m else Path(flux_path).stem


def main(argv=None):
    PAPER, QUICK = recipe.PRESETS["paper"]["gpp"], recipe.PRESETS["quick"]["gpp"]
    p = ArgumentParser(description="Daily GPP at flux towers from embedding windows (Sec. IV-C).")
    p.add_argument("--quick", action="store_true", help="synthetic demo on sample_data/tower/ with "
                   f"runs/quick/tower_embeddings.nc: stride {QUICK['stride']}, width {QUICK['d_model']}, "
                   f"{QUICK['epochs']} epochs (~1.5 min on 2 CPU cores); a flag given explicitly wins; default off")
    p.add_argument("--embeddings", nargs="*", default=[], help="embedding cube(s) from embed.py, one per site "
                   "(default none; needed for fused/s1/s2)")
    p.add_argument("--flux", nargs="*", default=[], help="FLUXNET FULLSET CSV(s), daily/half-hourly/hourly, "
                   "one per site (default none)")
    p.add_argument("--s2", nargs="*", default=[], help="Sentinel-2 cube(s) for bands/ndvi, one per site "
                   "(default none)")
    p.add_argument("--site", nargs="*", default=[], help="site id(s) (default: from the flux file name)")
    p.add_argument("--pixel", nargs="*", default=[], help="tower pixel ROW,COL per site "
                   "(default: cube attrs tower_row/tower_col or tower_x/tower_y)")
    p.add_argument("--features", default="fused,bands,ndvi,climatology", help="comma-separated feature "
                   "sets from fused, s1, s2, bands, ndvi, climatology; '+' joins groups, e.g. s1+s2 "
                   "(default fused,bands,ndvi,climatology)")
    p.add_argument("--window", type=positive_int, default=90, help="input window length in days (default 90; "
                   "the paper tested 60-120)")
    p.add_argument("--stride", type=positive_int, default=None, help="stride between windows in days (default "
                   f"{PAPER['stride']}; {QUICK['stride']} with --quick)")
    p.add_argument("--train-years", default="2017-2019", help="training years, e.g. 2017-2019 (default 2017-2019)")
    p.add_argument("--val-years", default="2020", help="validation years (default 2020)")
    p.add_argument("--val-sites", nargs="+", default=[], metavar="SITE",
                   help="split by tower instead of by year: these sites validate, the others train, both over "
                        "--train-years and --val-years (leave one tower out: name one site; default: year split)")
    p.add_argument("--k", type=positive_int, default=1, help="footprint: mean over k x k pixels around the tower, odd "
                   "(default 1 = tower pixel; 10 m pixels)")
    p.add_argument("--min-qc", type=float, default=0.7, help="minimum daily fraction of good NEE_VUT_REF_QC "
                   "records (default 0.7)")
    p.add_argument("--min-site-fraction", type=float, default=0.6, help="site rule: fraction of GPP days "
                   "passing the QC filter must exceed this (default 0.6; reported, not enforced)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"training epochs (default {PAPER['epochs']}; {QUICK['epochs']} with --quick)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"windows per batch (default {PAPER['batch_size']})")
    p.add_argument("--lr", type=float, default=None, help=f"AdamW learning rate (default {PAPER['lr']:g})")
    p.add_argument("--d-model", type=positive_int, default=None, help=f"transformer width (default {PAPER['d_model']}; "
                   f"{QUICK['d_model']} with --quick; not given in the paper)")
    p.add_argument("--no-annual-phase", dest="annual_phase", action="store_false",
                   help="leave out the GPP transformer's annual-phase input, as in the paper's model (default: "
                        "with it, so the model knows the season as the climatology baseline does)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")
    p.add_argument("--out", default=None, help="output folder (default runs/gpp; runs/quick/gpp with --quick)")
    add_mask_arg(p)
    args = p.parse_args(argv)

    feature_sets = parse_feature_sets(args.features)
    needs_embeddings = any(part in EMBEDDING_PREFIXES for fs in feature_sets for part in fs.split("+"))
    if args.quick:                      # the demo's tower; its embedding cube only where a feature set reads it
        args.embeddings = args.embeddings or (["runs/quick/tower_embeddings.nc"] if needs_embeddings else [])
        args.flux = args.flux or ["sample_data/tower/tower_gpp.csv"]
        args.s2 = args.s2 or ["sample_data/tower/tower_s2.nc"]
        args.site = args.site or ["synthetic"]
    settings = recipe.resolve(args, "gpp")                   # each flag as given, else the preset's
    out = Path(args.out or ("runs/quick/gpp" if args.quick else "runs/gpp"))
    n = len(args.flux)
    if n == 0:
        p.error("give --flux (one file per site) or --quick")
    for name in ("embeddings", "s2", "site", "pixel"):
        if getattr(args, name) and len(getattr(args, name)) != n:
            p.error(f"--{name} needs one value per --flux file ({n})")
    if args.quick and needs_embeddings and not Path(args.embeddings[0]).exists():
        p.error(f"{args.embeddings[0]} not found: run the README quick start first (it trains the models "
                "and writes the tower embedding cube)")
    for name in ("flux", "embeddings", "s2"):
        for path in getattr(args, name):
            if not Path(path).is_file():
                p.error(f"--{name} {path}: file not found")
    train_years, val_years = _years(args.train_years, "--train-years"), _years(args.val_years, "--val-years")
    out.mkdir(parents=True, exist_ok=True)

    sites = []
    for i, flux_path in enumerate(args.flux):
        site = args.site[i] if args.site else _site_id(flux_path)
        pixel = _pixel(args.pixel[i]) if args.pixel else None
        check = site_passes(read_fluxnet(flux_path), args.min_site_fraction, args.min_qc)
        sites.append(load_site(site, flux_path, feature_sets,
                               embeddings=args.embeddings[i] if args.embeddings else None,
                               s2_path=args.s2[i] if args.s2 else None, pixel=pixel, k=args.k,
                               min_qc=args.min_qc, mask_var=args.mask_var))
        print(f"{site}: {check['n_pass']}/{check['n_observed']} GPP days pass the {args.min_qc:.0%} QC filter "
              f"({check['fraction']:.0%}; site rule > {args.min_site_fraction:.0%}: "
              f"{'pass' if check['passes'] else 'FAIL'})")

    t0 = time.time()
    train_cfg = TrainConfig(epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"],
                            seed=args.seed, device=args.device, monitor="mae")
    rows, curves = run_experiment(sites, feature_sets, args.window, settings["stride"], train_years, val_years,
                                  {"d_model": settings["d_model"], "annual_phase": args.annual_phase}, train_cfg, out,
                                  args.val_sites)
    print(format_table(rows))
    write_csv(out / "gpp_metrics.csv", rows, COLUMNS)
    all_years = list(train_years + val_years)        # split by tower: a validation site validates every year
    val_days = [np.isin(s.year, all_years) & (s.site in args.val_sites) if args.val_sites else
                np.isin(s.year, list(val_years)) for s in sites]
    plot_fig7(sites, curves, val_days, out / "gpp_fig7.png")
    print(f"wrote {out / 'gpp_metrics.csv'} and {out / 'gpp_fig7.png'} ({time.time() - t0:.0f} s); "
          "paper (9 sites): NRMSE 0.0917 / 0.0958, RMSE 3.09 / 4.40 gC m-2 d-1 (train / val)")


if __name__ == "__main__":
    run_cli(main)
