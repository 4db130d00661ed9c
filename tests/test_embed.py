"""Tests of embed.py: fast path == reference path == the model applied to patches cut by hand, row
blocks, border padding, gap semantics, S1 dates, embedding_quality (== the centre MAE of the model's
own reconstruction; rises off the training data), file layout (chunked, compressed, lossless), resume,
shards + merge == one run, errors, PCA.

The embedding tests use `sensitive`: tiny untrained models whose BatchNorm statistics are calibrated
on the test cube, so that their output depends strongly on the input (with default BatchNorm
statistics the 0-0.3 reflectances hardly register: the features barely vary between the pixels of
one date, and a window one date off moved them by ~4e-5, under an absolute 1e-4 tolerance). Tolerances are
relative to the spread of each feature: |difference| <= 1e-4 x its std, and each test shows that a
patch off by one pixel or one date moves the features by far more than that.

Run: python -m pytest -q tests/test_embed.py   (tiny models on small synthetic cubes; ~2 min on 2 cores
     without the two tests of the quick start's trained model (PCA, quality off the training data),
     which add ~3-4 min training conftest.py's shared models)
"""
import filecmp
import shutil

import matplotlib.axes
import numpy as np
import pytest
import torch
import xarray as xr

import data
import synthetic
import readers
import embed
import train
from conftest import stop_after, tiny_ae
from deepfeat import FusionConfig, FusionModel

HALF, N_FRAMES = 7, 11          # the patch: 15 x 15 px x 11 dates centred on the pixel-date
REL_TOL = 1e-4                  # max |difference| allowed, as a fraction of each feature's std


def save(model, kind, path):
    train.save_checkpoint(path, {"format": train.CHECKPOINT_FORMAT, "kind": kind,
                                 "model_config": train.model_config_dict(model), "model": model.state_dict()})
    return path


def sensitive(ae, array):
    """Calibrate `ae`'s encoder BatchNorm statistics on frames of `array` (T, C, H, W) (the 15 x 15
    corners of every date) and return it in eval mode: normalised activations make the latent depend
    strongly on the input. Deterministic: no random numbers."""
    T, C, H, W = array.shape
    P = 2 * HALF + 1
    frames = np.stack([array[t, :, i:i + P, j:j + P] for t in range(T) for i in (0, H - P) for j in (0, W - P)])
    norms = [m for m in ae.enc_blocks.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None                                   # plain average of the batch statistics
    ae.train()
    with torch.no_grad():
        ae.encode_frames(torch.from_numpy(np.ascontiguousarray(frames)))
    for m in norms:
        m.momentum = 0.1
    return ae.eval()


def sensitive_decoders(model, arrays, days):
    """Calibrate the decoders' BatchNorm statistics (as `sensitive` does the encoders') on the model's
    reconstructions of windows at the four corner pixels 7 px in of every third date of `arrays`
    {m: (T, C, H, W)}: an uncalibrated decoder gives nearly the same value at every pixel and frame (a
    reconstruction one pixel off moved the quality by ~1e-6 of its 0.5), so a quality taken at the
    wrong coordinate would pass. Returns the model in eval mode."""
    T, _, H, W = arrays["s2"].shape
    x, d = cut_patches(arrays, days, [(t, i, j) for t in range(5, T - 5, 3) for i in (HALF, H - 1 - HALF)
                                      for j in (HALF, W - 1 - HALF)])
    aes = model.autoencoders.values() if isinstance(model, FusionModel) else [model]
    norms = [m for ae in aes for m in ae.dec_blocks.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        model({m: (x[m], d[m]) for m in x}) if isinstance(model, FusionModel) else model(x["s2"], d["s2"])
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def prepare_by_hand(s2_path, s1_path=None):
    """The whole prepared cube, without embed.py: {m: (T, C, H, W)} arrays and {m: (T,)} days.

    S1 days are worked out here from the S1 file's own times (closest acquisition within 6 days of
    each S2 date, else the S2 date), not taken from data.match_dates's source_time."""
    s2 = readers.open_s2(s2_path)
    arrays, days = {"s2": data.cube_array(s2, data.S2_BANDS)}, {"s2": data.day_offsets(s2.time)}
    if s1_path is not None:
        s1 = data.match_dates(readers.open_s1(s1_path, target=s2), s2)
        arrays["s1"] = data.cube_array(s1, data.S1_BANDS)
        with xr.open_dataset(s1_path) as raw:
            d1 = data.day_offsets(raw.time)
        assert len(np.unique(np.floor(d1))) == len(d1)                  # no same-day merging here
        gap = np.abs(d1[None, :] - days["s2"][:, None])                  # (T2, T1)
        nearest = d1[gap.argmin(1)]
        days["s1"] = np.where(gap.min(1) <= 6.0, nearest, days["s2"])
    return arrays, days


def cut_patches(arrays, days, points, pad_mode=None):
    """Patches cut by plain numpy slicing: frames t-5..t+5, rows i-7..i+7, cols j-7..j+7 of the
    whole cube (of the whole cube padded by 7 px with np.pad(pad_mode) when given).
    -> {m: float32 tensor (N, 11, C, 15, 15)}, {m: float32 tensor (N, 11)}."""
    x, d = {}, {}
    for m, a in arrays.items():
        src = a if pad_mode is None else np.pad(a, ((0, 0), (0, 0), (HALF, HALF), (HALF, HALF)), mode=pad_mode)
        o = 0 if pad_mode is None else HALF                             # pixel (i, j) is at (i + o, j + o)
        patches = [src[t - 5:t + 6, :, i + o - HALF:i + o + HALF + 1, j + o - HALF:j + o + HALF + 1]
                   for t, i, j in points]
        assert all(p.shape == (N_FRAMES, a.shape[1], 15, 15) for p in patches), "patch outside the cube"
        x[m] = torch.from_numpy(np.stack(patches))
        d[m] = torch.tensor(np.stack([days[m][t - 5:t + 6] for t, _, _ in points]), dtype=torch.float32)
    return x, d


def model_features(model, x, d):
    """The model itself on hand-cut patches: latent for an autoencoder; for fusion
    [fuse(latents, central dates), latent s1, latent s2] (the documented feature order)."""
    with torch.no_grad():
        if not isinstance(model, FusionModel):
            (m,) = x
            return model.encode(x[m], d[m]).numpy()
        latents = {m: model.autoencoders[m].encode(x[m], d[m]) for m in model.cfg.modalities}
        fused = model.fuse(latents, {m: d[m][:, N_FRAMES // 2] for m in model.cfg.modalities})
        return torch.cat([fused] + [latents[m] for m in model.cfg.modalities], dim=1).numpy()


def model_quality(model, x, d, recon_at=(5, 7, 7), target_at=(5, 7, 7)):
    """embedding_quality worked out here from the model's FULL reconstruction of hand-cut patches
    (FusionModel.forward / ModalityAutoencoder.forward): per modality the mean over the bands valid
    in the input of |reconstruction at (frame 5, pixel (7, 7)) - input there|, then the mean over the
    modalities with a valid band. recon_at / target_at = (frame, row, col) move either coordinate, to
    show that a wrong frame or pixel gives clearly different numbers. -> (N,)"""
    with torch.no_grad():
        if isinstance(model, FusionModel):
            recon = model({m: (x[m], d[m]) for m in x})[0]
        else:
            recon = {m: model(x[m], d[m])[0] for m in x}
    per_modality = []
    for m in x:
        r = recon[m][:, recon_at[0], :, recon_at[1], recon_at[2]].numpy()          # (N, C)
        target = x[m][:, target_at[0], :, target_at[1], target_at[2]].numpy()      # (N, C)
        per_modality.append([np.abs(r[n] - target[n])[np.isfinite(target[n])].mean()
                             if np.isfinite(target[n]).any() else np.nan for n in range(len(r))])
    return np.nanmean(np.array(per_modality), axis=0)


def valid_points(arrays, pixels):
    """(t, i, j) for each pixel at its first and last date with a valid central S2 observation
    (all bands finite) and 5 dates on each side."""
    a = arrays["s2"]
    T = a.shape[0]
    points = []
    for i, j in pixels:
        ts = [t for t in range(5, T - 5) if np.isfinite(a[t, :, i, j]).all()]
        if ts:
            points += [(t, i, j) for t in sorted({ts[0], ts[-1]})]
    return points


def feature_std(emb):
    """Per-feature std of an embedding (T, H, W, F) over its valid pixel-dates."""
    return np.nanstd(emb.reshape(-1, emb.shape[-1]), axis=0)


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    """A 20 x 23 px synthetic S1/S2 pair over four months, with clouds, written like sample_data/."""
    folder = tmp_path_factory.mktemp("cube")
    s1, s2, _ = synthetic.make_synthetic_cube(seed=7, size=23, start="2020-04-01", end="2020-07-31")
    s1, s2 = s1.isel(y=slice(0, 20)), s2.isel(y=slice(0, 20))          # not square: catches x/y mix-ups
    synthetic.write_cube(s1, folder / "c_s1.nc")
    synthetic.write_cube(s2, folder / "c_s2.nc")
    return {"s1": folder / "c_s1.nc", "s2": folder / "c_s2.nc"}


@pytest.fixture(scope="module")
def prepared(cube):
    """`cube` prepared as a whole, by data.py alone: ({m: (T, C, 20, 23)}, {m: (T,)})."""
    return prepare_by_hand(cube["s2"], cube["s1"])


@pytest.fixture(scope="module")
def fusion_ckpt(prepared, tmp_path_factory):
    """Tiny fusion model, encoders and decoders made input-sensitive on `cube` (`sensitive`, `sensitive_decoders`)."""
    torch.manual_seed(0)
    arrays, days = prepared
    model = FusionModel({"s1": sensitive(tiny_ae("s1", data.S1_BANDS, 2), arrays["s1"]),
                         "s2": sensitive(tiny_ae("s2", data.S2_BANDS, 9), arrays["s2"])},
                        FusionConfig(d_model=16, n_heads=2, n_layers=1))
    return save(sensitive_decoders(model, arrays, days), "fusion", tmp_path_factory.mktemp("ckpt") / "fusion.pt")


@pytest.fixture(scope="module")
def embedded_run(cube, fusion_ckpt, tmp_path_factory):
    """`cube` embedded by the fast path in 5 row blocks of 4 rows (block_pixels=100) -> (the netCDF,
    {part file name: the (T, 4, 23, F + 1) array embed_cube saved: features, then quality})."""
    out = tmp_path_factory.mktemp("emb") / "emb.nc"
    real_save, parts = embed._save_part, {}
    embed._save_part = lambda path, array: parts.update({path.name: array.copy()}) or real_save(path, array)
    try:
        embed.embed_cube(cube, fusion_ckpt, out, block_pixels=100)
    finally:
        embed._save_part = real_save
    return out, parts


@pytest.fixture(scope="module")
def embedded(embedded_run):
    return embedded_run[0]


def assert_close(got, want, std, what):
    """max |got - want| <= REL_TOL x std, per feature."""
    assert np.isfinite(got).all() and np.isfinite(want).all(), f"{what}: NaN where a value is due"
    worst = (np.abs(got - want).reshape(-1, got.shape[-1]) / std).max()
    assert worst <= REL_TOL, f"{what}: max |difference| = {worst:.2e} x feature std (tolerance {REL_TOL:g})"


def assert_distinct(a, b, std, what):
    """Each row of a and b differs by more than 100 x the tolerance in some feature: the check can
    tell a patch off by one pixel or date (or padded differently) from the right one."""
    sep = (np.abs(a - b) / std).max(axis=1)
    assert sep.min() > 100 * REL_TOL, f"{what}: smallest separation {sep.min():.2e} x feature std"


def test_fast_path_equals_reference(cube, fusion_ckpt, embedded, tmp_path):
    """Fast path (shared frame tokens) == reference path (one patch per pixel-date) within 1e-4 x the
    feature std, on a model whose features spread widely between the pixels of one date, and their
    embedding_quality within 1e-4 (decode_centre vs FusionModel.decode of the whole patch). Guards
    against an off-by-one in the fast path's frame or pixel gather (with an untrained model a
    one-frame shift moved the features by ~4e-5, under an absolute 1e-4 tolerance)."""
    ref = embed.embed_cube(cube, fusion_ckpt, tmp_path / "ref.nc", path="reference", block_pixels=100)
    fast = xr.open_dataset(embedded).embedding.values
    slow = xr.open_dataset(ref).embedding.values
    assert np.array_equal(np.isnan(fast), np.isnan(slow))
    ok = np.isfinite(fast).all(-1)
    std = feature_std(fast)
    assert_close(fast[ok], slow[ok], std, "fast vs reference")
    # quality: decode_centre (central frame only) vs the model's own decode of whole patches
    q_fast, q_slow = (xr.open_dataset(f).embedding_quality.values for f in (embedded, ref))
    assert np.array_equal(np.isnan(q_fast), ~ok) and np.array_equal(np.isnan(q_slow), ~ok)
    assert np.abs(q_fast[ok] - q_slow[ok]).max() <= 1e-4
    # the features depend on the pixel, not only on the date: within one date they spread by a good
    # part of their overall std (an input-blind model has per-date spread ~0)
    per_date = np.stack([fast[t][ok[t]].std(0) for t in range(len(fast)) if ok[t].sum() >= 10])
    assert np.all(np.median(per_date, axis=0) > 0.2 * std), np.median(per_date, axis=0) / std


def test_embedding_equals_model_on_hand_cut_patches(prepared, fusion_ckpt, embedded):
    """The embedding at (t, i, j) is the model applied to frames t-5..t+5, rows i-7..i+7, cols
    j-7..j+7 of the prepared cube, cut here by plain slicing (S1 days: the matched S1 acquisitions),
    for interior pixels at their first and last valid date. Guards against windows off by one date
    or pixel in both paths alike, x/y swaps, wrong days, and a wrong fused/latent feature order."""
    arrays, days = prepared
    T = arrays["s2"].shape[0]
    emb = xr.open_dataset(embedded).embedding.values                              # (T, H, W, F)
    std = feature_std(emb)
    points = valid_points(arrays, [(7, 7), (8, 14), (9, 11), (10, 8), (11, 13)])  # rows 7..12, cols 7..15 interior
    assert len(points) >= 8
    model = train.load_model(fusion_ckpt)[0]
    want = model_features(model, *cut_patches(arrays, days, points))
    got = emb[tuple(np.array(points).T)]
    assert_close(got, want, std, "embedding vs hand-cut patches")
    # a window one date or one pixel off gives clearly different features (so the check above sees it)
    for dt, di, dj in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        off = [(t + dt if t < T // 2 else t - dt, i + di, j + dj) for t, i, j in points]
        assert_distinct(model_features(model, *cut_patches(arrays, days, off)), want, std,
                        f"shift {(dt, di, dj)}")


def test_border_pixels_use_reflect_padding(prepared, fusion_ckpt, embedded):
    """Pixels within 7 px of the cube edge (corners, edges, near edges) embed the patch cut from the
    whole cube padded with np.pad(mode="reflect"), the documented edge policy. Guards against
    "edge" or "symmetric" padding (shown here to give clearly different features) and against
    padding that differs between row blocks."""
    arrays, days = prepared
    _, _, H, W = arrays["s2"].shape
    emb = xr.open_dataset(embedded).embedding.values
    std = feature_std(emb)
    pixels = [(0, 0), (0, W - 1), (H - 1, 0), (H - 1, W - 1), (0, 11), (H - 1, 9), (10, 0), (9, W - 1),
              (3, 4), (H - 3, W - 5), (6, 16), (2, W - 3), (H - 7, 1)]
    points = valid_points(arrays, pixels)
    assert len(points) >= 16
    model = train.load_model(fusion_ckpt)[0]
    want = model_features(model, *cut_patches(arrays, days, points, pad_mode="reflect"))
    assert_close(emb[tuple(np.array(points).T)], want, std, "border pixels vs reflect-padded patches")
    for mode in ("edge", "symmetric"):
        assert_distinct(model_features(model, *cut_patches(arrays, days, points, pad_mode=mode)), want, std, mode)


def test_row_blocks_equal_one_block(cube, fusion_ckpt, embedded, tmp_path):
    """Embedding in 5 row blocks (block_pixels=100: 4 rows each, 7-row halos read from the
    neighbouring blocks) == embedding the whole cube as one block. Guards against halos that are
    padded (reflected) at block boundaries instead of read, or blocks misplaced in the output."""
    one = embed.embed_cube(cube, fusion_ckpt, tmp_path / "one.nc", block_pixels=20 * 23)
    blocks = xr.open_dataset(embedded).embedding.values
    whole = xr.open_dataset(one).embedding.values
    assert np.array_equal(np.isnan(blocks), np.isnan(whole))
    ok = np.isfinite(whole).all(-1)
    assert_close(blocks[ok], whole[ok], feature_std(whole), "4-row blocks vs one block")


def test_one_missing_band_gives_nan(tmp_path):
    """A central S2 observation with ONE band missing (the others valid) has no embedding: the
    centre must be valid in all bands, not any. The same value missing in a neighbour's patch is
    filled like any gap: those neighbours embed as the model does on hand-cut patches. Also covers
    an S2 autoencoder checkpoint (features = the 9 latents; quality from its own decoder)."""
    s1, s2, _ = synthetic.make_synthetic_cube(seed=5, size=16, start="2020-04-01", end="2020-07-31")
    s2 = s2.copy(deep=True)
    raw = np.stack([s2[b].values for b in data.S2_BANDS], axis=1)                 # (T, C, H, W)
    T = raw.shape[0]
    i, j = 8, 7
    t = next(t for t in range(5, T - 5) if np.isfinite(raw[t, :, i, j]).all()
             and np.isfinite(raw[t, :, i, j + 1]).all() and np.isfinite(raw[t, :, i + 1, j]).all())
    s2["B05"].values[t, i, j] = np.nan
    synthetic.write_cube(s2, tmp_path / "s2.nc")
    arrays, days = prepare_by_hand(tmp_path / "s2.nc")
    assert np.isnan(arrays["s2"][t, :, i, j]).sum() == 1                           # exactly one band missing
    torch.manual_seed(1)
    ae = sensitive_decoders(sensitive(tiny_ae("s2", data.S2_BANDS, 9), arrays["s2"]), arrays, days)
    ckpt = save(ae, "autoencoder", tmp_path / "s2.pt")
    out = embed.embed_cube({"s2": tmp_path / "s2.nc"}, ckpt, tmp_path / "e.nc")
    emb = xr.open_dataset(out).embedding.values                                   # (T, 16, 16, 9)
    assert emb.shape[-1] == 9
    assert np.isnan(emb[t, i, j]).all()
    centre_ok = np.isfinite(arrays["s2"]).all(axis=1)
    centre_ok[:5] = centre_ok[-5:] = False
    np.testing.assert_array_equal(np.isfinite(emb).all(-1), centre_ok)
    np.testing.assert_array_equal(np.isnan(emb).all(-1), ~centre_ok)
    points = [(t, i, j + 1), (t, i + 1, j), (t, i - 1, j - 1)] + valid_points(arrays, [(0, 0), (15, 15), (7, 8)])
    points = [p for p in points if centre_ok[p]]
    assert len(points) >= 5
    model = train.load_model(ckpt)[0]
    patches = cut_patches(arrays, days, points, pad_mode="reflect")
    assert_close(emb[tuple(np.array(points).T)], model_features(model, *patches), feature_std(emb),
                 "S2 autoencoder vs hand-cut patches")
    quality = xr.open_dataset(out).embedding_quality.values                       # (T, 16, 16)
    np.testing.assert_array_equal(np.isfinite(quality), centre_ok)
    assert_close(quality[tuple(np.array(points).T)][:, None], model_quality(model, *patches)[:, None],
                 np.nanstd(quality), "S2 autoencoder quality vs its own decoder on hand-cut patches")


def s1_on_dates(s1, times, source_times):
    """Raw S1 cube with one acquisition at each of `times`, carrying the values of the raw S1
    acquisition closest to each of `source_times` (so two cubes can share values, not dates)."""
    d1 = data.day_offsets(s1.time)
    idx = np.abs(d1[None, :] - data.day_offsets(source_times)[:, None]).argmin(1)
    return xr.Dataset({b: (("time", "y", "x"), s1[b].values[idx], s1[b].attrs) for b in data.S1_BANDS},
                      coords={"time": times, "y": s1.y, "x": s1.x, "spatial_ref": s1.spatial_ref},
                      attrs=s1.attrs)


def test_s1_days_are_s1_acquisition_times(fusion_ckpt, tmp_path):
    """S1 acquired 2 days after or before each S2 date (within the 6-day matching gap): the S1 days
    the model sees are the S1 acquisition times, not the S2 dates. CubeReader.block returns them;
    with identical S1 values, the lagged cube's fused features (S1 date relative to S2 in the
    fusion's temporal encoding) and S1 latents (irregular S1 offsets in the window) differ from
    those of an S1 cube acquired on the S2 dates, and match the model on hand-cut patches with the
    lagged days."""
    s1, s2, _ = synthetic.make_synthetic_cube(seed=3, size=16, start="2020-04-01", end="2020-07-31")
    s2_t = s2.time.values
    lags = np.where(np.arange(len(s2_t)) % 3 == 1, -2, 2) * np.timedelta64(1, "D")   # mixed in every window
    s1_lag_t = s2_t + lags
    synthetic.write_cube(s2, tmp_path / "s2.nc")
    synthetic.write_cube(s1_on_dates(s1, s2_t, s2_t), tmp_path / "s1_same.nc")
    synthetic.write_cube(s1_on_dates(s1, s1_lag_t, s2_t), tmp_path / "s1_lag.nc")
    bands = {"s1": data.S1_BANDS, "s2": data.S2_BANDS}
    blocks = {k: embed.CubeReader({"s1": tmp_path / f"s1_{k}.nc", "s2": tmp_path / "s2.nc"}, bands).block(0, 16)
              for k in ("same", "lag")}
    (a_same, d_same, _), (a_lag, d_lag, _) = blocks["same"], blocks["lag"]
    np.testing.assert_array_equal(d_same["s1"], data.day_offsets(s2_t))
    np.testing.assert_array_equal(d_lag["s1"], data.day_offsets(s1_lag_t))      # the S1 dates, +-2 days
    np.testing.assert_array_equal(d_lag["s2"], data.day_offsets(s2_t))
    for m in ("s1", "s2"):
        np.testing.assert_array_equal(a_lag[m], a_same[m])                       # same values, other dates
    emb = {k: xr.open_dataset(embed.embed_cube({"s2": tmp_path / "s2.nc", "s1": tmp_path / f"s1_{k}.nc"}, fusion_ckpt,
                                               tmp_path / f"e_{k}.nc")).embedding.values
           for k in ("same", "lag")}
    assert np.array_equal(np.isnan(emb["same"]), np.isnan(emb["lag"]))
    ok = np.isfinite(emb["lag"]).all(-1)
    std = feature_std(emb["lag"])
    same, lag = emb["same"][ok], emb["lag"][ok]
    assert_distinct(lag[:, :7], same[:, :7], std[:7], "fused features, lagged vs same-date S1")
    s1_sep = (np.abs(lag[:, 7:9] - same[:, 7:9]) / std[7:9]).max(1)             # weaker: median, not all
    assert np.median(s1_sep) > 100 * REL_TOL, f"S1 latents, lagged vs same-date S1: {np.median(s1_sep):.2e}"
    assert_close(lag[:, 9:], same[:, 9:], std[9:], "S2 latents do not depend on S1")
    arrays, days = prepare_by_hand(tmp_path / "s2.nc", tmp_path / "s1_lag.nc")
    np.testing.assert_array_equal(days["s1"], data.day_offsets(s1_lag_t))
    points = valid_points(arrays, [(0, 0), (7, 8), (15, 15), (3, 12)])
    model = train.load_model(fusion_ckpt)[0]
    want = model_features(model, *cut_patches(arrays, days, points, pad_mode="reflect"))
    assert_close(emb["lag"][tuple(np.array(points).T)], want, std, "lagged S1 vs hand-cut patches")


def test_output_layout(cube, embedded):
    s2 = xr.open_dataset(cube["s2"])
    ds = xr.open_dataset(embedded)
    assert ds.embedding.dims == ("time", "y", "x", "feature")
    assert list(ds.feature.values) == [f"fused_{i}" for i in range(7)] + ["s1_0", "s1_1"] + [f"s2_{i}" for i in range(9)]
    np.testing.assert_array_equal(ds.time.values, s2.time.values)
    np.testing.assert_allclose(ds.y.values, s2.y.values)
    np.testing.assert_allclose(ds.x.values, s2.x.values)
    gm = ds.embedding.attrs.get("grid_mapping") or ds.embedding.encoding.get("grid_mapping")
    assert gm in ds.variables and ds[gm].attrs
    assert len(ds.attrs["checkpoint_sha256"]) == 64 and "B8A" in ds.attrs["bands"]
    assert ds.embedding_quality.dims == ("time", "y", "x") and "Sec. IV-A" in ds.embedding_quality.attrs["comment"]
    assert (ds.embedding_quality.attrs.get("grid_mapping") or ds.embedding_quality.encoding.get("grid_mapping")) == gm


def test_nan_exactly_where_central_s2_missing(cube, embedded):
    s2 = readers.open_s2(cube["s2"])
    centre_ok = np.isfinite(data.cube_array(s2, data.S2_BANDS)).all(axis=1)       # (T, H, W)
    centre_ok[:5] = centre_ok[-5:] = False                                         # no 5 neighbours
    emb = xr.open_dataset(embedded).embedding.values                               # (T, H, W, F)
    assert (~centre_ok).any() and centre_ok.any()
    np.testing.assert_array_equal(np.isfinite(emb).all(-1), centre_ok)
    np.testing.assert_array_equal(np.isnan(emb).all(-1), ~centre_ok)
    # edge policy: reflect padding gives the border pixels values like any other pixel
    assert np.isfinite(emb[:, 0, 0]).any() and np.isfinite(emb[:, -1, -1]).any()


def test_quality_is_centre_mae_of_the_reconstruction(prepared, fusion_ckpt, embedded):
    """embedding_quality at (t, i, j) == model_quality: the centre MAE (Sec. IV-A) of the fusion
    model's full reconstruction (FusionModel.forward) of the hand-cut patch, S1 and S2 averaged, for
    interior and border pixels. Guards against a
    quality taken at the wrong frame or pixel of the reconstruction or of the input, or from the
    input alone (each shown here to move it by far more than the tolerance, 1e-4 x its std)."""
    arrays, days = prepared
    quality = xr.open_dataset(embedded).embedding_quality.values                  # (T, H, W)
    _, _, H, W = arrays["s2"].shape
    points = valid_points(arrays, [(7, 7), (9, 11), (11, 13), (0, 0), (H - 1, W - 1), (3, W - 2)])
    assert len(points) >= 10
    model = train.load_model(fusion_ckpt)[0]
    x, d = cut_patches(arrays, days, points, pad_mode="reflect")
    want = model_quality(model, x, d)
    std = np.nanstd(quality)
    got = quality[tuple(np.array(points).T)]
    assert_close(got[:, None], want[:, None], std, "quality vs hand-computed centre MAE")
    for recon_at, target_at in (((6, 7, 7), (5, 7, 7)), ((5, 7, 8), (5, 7, 7)), ((5, 8, 7), (5, 7, 7)),
                                ((5, 7, 7), (4, 7, 7)), ((5, 7, 7), (5, 7, 8)), ((4, 7, 7), (4, 7, 7))):
        wrong = model_quality(model, x, d, recon_at, target_at)
        assert_distinct(wrong[:, None], want[:, None], std, f"reconstruction at {recon_at}, input at {target_at}")


def test_quality_every_3_is_a_grid_of_the_cube(cube, fusion_ckpt, embedded, tmp_path):
    """--quality-every 3: embedding_quality at the pixels whose row and column IN THE CUBE are multiples
    of 3, equal there to the full layer (within 1e-4), NaN elsewhere; the embedding is unchanged. The
    4-row blocks start at rows 0, 4, 8, 12, 16, so a grid counted from each block's first row would
    show up (rows 4, 7, 8, 11, ... instead of 3, 6, 9, ...)."""
    out = embed.embed_cube(cube, fusion_ckpt, tmp_path / "q3.nc", block_pixels=100, quality_every=3)
    full, every = (xr.open_dataset(f) for f in (embedded, out))
    np.testing.assert_array_equal(every.embedding.values, full.embedding.values)
    q, want = every.embedding_quality.values, full.embedding_quality.values      # (T, H, W)
    grid = np.zeros(q.shape[1:], dtype=bool)
    grid[::3, ::3] = True
    assert np.isnan(q[:, ~grid]).all()
    np.testing.assert_array_equal(np.isnan(q[:, grid]), np.isnan(want[:, grid]))
    assert np.nanmax(np.abs(q[:, grid] - want[:, grid])) <= 1e-4
    assert "multiples of 3" in every.embedding_quality.attrs["comment"]


def test_sample_centre_mae_hand_computed():
    """Per sample: the mean |recon - target| over the valid bands of each modality, then the mean over
    the modalities with a valid band (a missing S1 acquisition leaves S2 alone)."""
    recon = {"s1": torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.2, 0.9]]),
             "s2": torch.tensor([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0]])}
    target = {"s1": np.array([[0.4, 0.8], [np.nan, np.nan], [np.nan, 0.5]]),
              "s2": np.array([[0.1, 0.1, 0.1], [0.2, np.nan, 0.0], [0.3, 0.3, 0.6]])}
    want = [((0.1 + 0.3) / 2 + (0 + 0.1 + 0.2) / 3) / 2,      # both modalities, all bands
            (0.1 + 0.3) / 2,                                   # S1 missing: S2 alone, over its 2 valid bands
            (0.4 + (0.3 + 0.3 + 0.6) / 3) / 2]                 # S1 over its one valid band
    np.testing.assert_allclose(embed.sample_centre_mae(recon, target), want, rtol=1e-6)


def test_file_is_chunked_compressed_and_lossless(embedded_run):
    """The netCDF holds exactly (bit for bit, NaN included) what embed_block returned for each row
    block, stored in chunks of CHUNK_DATES dates x CHUNK_PIXELS x CHUNK_PIXELS px with zlib + shuffle.
    Guards against lossy storage (float16, least_significant_digit, packing) and blocks misplaced
    when the writer regroups the 4-row parts into chunks of whole rows."""
    import netCDF4

    out, parts = embedded_run
    saved = np.concatenate([parts[name] for name in sorted(parts)], axis=1)       # (T, H, W, F + 1)
    T, H, W, F = saved.shape[0], saved.shape[1], saved.shape[2], saved.shape[3] - 1
    assert len(parts) == 5 and (H, W) == (20, 23)
    with netCDF4.Dataset(out) as nc:
        nc.set_auto_mask(False)
        for name, want in (("embedding", saved[..., :F]), ("embedding_quality", saved[..., F])):
            var = nc[name]
            assert var.dtype == np.float32 and var.filters()["zlib"] and var.filters()["shuffle"]
            assert var.chunking()[:3] == [min(T, embed.CHUNK_DATES), min(H, embed.CHUNK_PIXELS), min(W, embed.CHUNK_PIXELS)]
            np.testing.assert_array_equal(var[:].view(np.uint32), want.view(np.uint32), err_msg=name)


def netcdf_contents(path):
    """Every variable (values as stored, attributes, dtype, chunks, filters) and the global attributes."""
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(False)
        contents = {"global attributes": {k: nc.getncattr(k) for k in nc.ncattrs()}}
        for name, var in nc.variables.items():
            contents[name] = (var[:], {k: var.getncattr(k) for k in var.ncattrs()}, var.dtype, var.chunking(),
                              var.filters())
    return contents


def assert_same_netcdf(a, b):
    """Every variable of the files a and b bit for bit (NaN at the same places), same attributes and storage."""
    ca, cb = netcdf_contents(a), netcdf_contents(b)
    assert ca.keys() == cb.keys()
    assert ca.pop("global attributes") == cb.pop("global attributes")
    for name, (values, attrs, dtype, chunks, filters) in ca.items():
        other = cb[name]
        same_nan = values.dtype.kind == "f"
        assert np.array_equal(values, other[0], equal_nan=same_nan), name
        assert dtype == other[2] and chunks == other[3] and filters == other[4], name
        assert attrs.keys() == other[1].keys() and all(
            np.array_equal(v, other[1][k], equal_nan=isinstance(v, (float, np.floating))) for k, v in attrs.items()), name


def test_three_shards_and_merge_equal_one_run(cube, fusion_ckpt, embedded, tmp_path, monkeypatch):
    """`--shard K/N` for N = 3, run out of order (the last through the CLI), then `embed.py merge`: the
    same file as the unsharded run (every variable bit for bit, every attribute, chunks and filters;
    the files are byte-identical).
    The 5 row blocks split into contiguous, disjoint ranges covering the cube (1 + 2 + 2 blocks),
    and a merge before shard 2 ran names its rows. Guards against overlapping or dropped blocks and
    against a merge that puts blocks in the wrong place (x, y or shard order)."""
    out = tmp_path / "emb.nc"
    real_save, saved = embed._save_part, {}
    monkeypatch.setattr(embed, "_save_part", lambda path, array: saved.setdefault(path.parent.name, []).append(
        path.name) or real_save(path, array))
    for k in (3, 1):
        assert embed.embed_cube(cube, fusion_ckpt, out, block_pixels=100, shard=(k, 3)).is_dir()
    assert not out.exists()
    with pytest.raises(SystemExit, match=r"^shard 2/3 missing: rows 4-11 not embedded"):
        embed.merge(out)
    embed.main(["--s2", str(cube["s2"]), "--s1", str(cube["s1"]), "--checkpoint", str(fusion_ckpt), "--out", str(out),
                "--block-pixels", "100", "--shard", "2/3"])
    assert saved == {"emb.nc.shard-1-of-3.parts": ["rows_000000_000004.npy"],
                     "emb.nc.shard-2-of-3.parts": ["rows_000004_000008.npy", "rows_000008_000012.npy"],
                     "emb.nc.shard-3-of-3.parts": ["rows_000012_000016.npy", "rows_000016_000020.npy"]}
    embed.main(["merge", str(out)])
    assert not list(tmp_path.glob("*.parts"))
    assert_same_netcdf(out, embedded)
    assert filecmp.cmp(out, embedded, shallow=False)                              # even the bytes


def test_merge_names_unfinished_and_foreign_shards(cube, fusion_ckpt, tmp_path, monkeypatch):
    """merge refuses, in one line and writing nothing: a shard interrupted after one of its two
    blocks (naming the missing rows), and a shard from another checkpoint or other settings (naming
    what differs); resuming a shard with another checkpoint is refused the same way."""
    out = tmp_path / "e.nc"
    for k in (1, 3):
        embed.embed_cube(cube, fusion_ckpt, out, block_pixels=100, shard=(k, 3))
    real_save = embed._save_part
    monkeypatch.setattr(embed, "_save_part", lambda path, array: (_ for _ in ()).throw(KeyboardInterrupt)
                        if path.name == "rows_000008_000012.npy" else real_save(path, array))
    with pytest.raises(KeyboardInterrupt):
        embed.embed_cube(cube, fusion_ckpt, out, block_pixels=100, shard=(2, 3))
    monkeypatch.setattr(embed, "_save_part", real_save)
    with pytest.raises(SystemExit, match=r"^shard 2/3 unfinished \(1 of 2 blocks\): rows 8-11 not embedded"):
        embed.merge(out)
    model = train.load_model(fusion_ckpt)[0]
    with torch.no_grad():
        model.to_fused.bias += 1.0
    other = save(model, "fusion", tmp_path / "other.pt")
    with pytest.raises(SystemExit, match=r"holds blocks of a different run \(checkpoint_sha256, header differ\)"):
        embed.embed_cube(cube, other, out, block_pixels=100, shard=(2, 3))
    shard2 = tmp_path / "e.nc.shard-2-of-3.parts"
    shutil.rmtree(shard2)
    embed.embed_cube(cube, other, out, block_pixels=100, shard=(2, 3))
    with pytest.raises(SystemExit, match=r"come from different runs \(checkpoint_sha256, header differ\)"):
        embed.merge(out)
    shutil.rmtree(shard2)
    embed.embed_cube(cube, fusion_ckpt, out, block_pixels=100, shard=(2, 3), max_gap_days=3.0)
    with pytest.raises(SystemExit, match=r"come from different runs \(max_gap_days differ\)"):
        embed.merge(out)
    assert not out.exists()
    with pytest.raises(SystemExit, match="no shard folders"):
        embed.merge(tmp_path / "nothing.nc")


def test_bad_shard_text_one_line(capsys):
    """--shard takes K/N with 1 <= K <= N; anything else is refused up front in one line."""
    for text in ("0/3", "4/3", "3", "a/b", "1/2/3", "1/0"):
        with pytest.raises(SystemExit):
            embed.main(["--checkpoint", "x.pt", "--out", "o.nc", "--shard", text])
        err = capsys.readouterr().err
        assert f"argument --shard: expected K/N with 1 <= K <= N, got {text!r}" in err and err.count("\n") <= 2, err


def test_resume_after_interruption(cube, fusion_ckpt, embedded, tmp_path, monkeypatch):
    out = tmp_path / "emb.nc"
    real_save = embed._save_part
    monkeypatch.setattr(embed, "_save_part", stop_after(2, real_save))
    with pytest.raises(KeyboardInterrupt):
        embed.embed_cube(cube, fusion_ckpt, out, block_pixels=100)
    assert not out.exists() and len(list((tmp_path / "emb.nc.parts").glob("*.npy"))) == 2
    monkeypatch.setattr(embed, "_save_part", real_save)
    computed = []
    real_block = embed.embed_block
    monkeypatch.setattr(embed, "embed_block", lambda *a, **k: computed.append(1) or real_block(*a, **k))
    embed.embed_cube(cube, fusion_ckpt, out, block_pixels=100)
    n_blocks = -(-20 // (100 // 23))
    assert len(computed) == n_blocks - 2                                         # finished blocks not redone
    np.testing.assert_array_equal(xr.open_dataset(out).embedding.values, xr.open_dataset(embedded).embedding.values)
    assert not (tmp_path / "emb.nc.parts").exists()


def test_bad_checkpoints_give_clear_errors(cube, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="cannot be read"):
        embed.embed_cube(cube, bad, tmp_path / "o.nc")
    s2_only = save(tiny_ae("s2", ("B02", "B03", "B04", "B05"), 9).eval(), "autoencoder", tmp_path / "s2.pt")
    with pytest.raises(SystemExit, match="expected the s1"):
        train.load_model(s2_only, "autoencoder", "s1")
    with pytest.raises(SystemExit, match="trained on bands"):
        train.load_model(s2_only, bands=data.S2_BANDS)


@pytest.fixture(scope="module")
def unseen(trained_fusion, tmp_path_factory):
    """An unseen 32 x 32 px synthetic cube (seed 11, April-August) embedded with the quick start's
    fusion model -> (folder with p_s1.nc, p_s2.nc; the embedding netCDF; the S2 cube with `landcover`)."""
    folder = tmp_path_factory.mktemp("unseen")
    s1, s2, _ = synthetic.make_synthetic_cube(seed=11, size=32, start="2020-04-01", end="2020-08-31")
    synthetic.write_cube(s1, folder / "p_s1.nc")
    synthetic.write_cube(s2, folder / "p_s2.nc")
    out = embed.embed_cube({"s2": folder / "p_s2.nc", "s1": folder / "p_s1.nc"}, trained_fusion, folder / "e.nc", block_pixels=512)
    return folder, out, s2


def test_pca_separates_land_cover(unseen, tmp_path):
    """On the date with the most valid pixels, nearest-centroid classification of the first 3 PCs
    of the fused embedding (tiny models trained on sample_data/, conftest.py) recovers the known
    land-cover map of an unseen synthetic cube far better than chance: the embedding carries land
    cover, not noise."""
    folder, out, s2 = unseen
    embed.pca_figure(out, folder / "p_s2.nc", tmp_path / "pca.png", n_dates=2)
    assert (tmp_path / "pca.png").stat().st_size > 0
    emb = embed.select_features(xr.open_dataset(out).embedding).values            # (T, H, W, 7)
    assert emb.shape[-1] == 7
    t = np.argmax(np.isfinite(emb).all(-1).sum((1, 2)))                           # date of Fig. 6
    ok = np.isfinite(emb[t]).all(-1)
    X, y = emb[t][ok], s2.landcover.values[ok]
    mean, comps, ratio = embed.pca_fit(X)
    assert np.all(np.diff(ratio) <= 0) and ratio.sum() <= 1.0 + 1e-6
    pcs = (X - mean) @ comps.T
    half = np.random.default_rng(0).random(len(y)) < 0.5
    names = np.unique(y[half])
    centroids = np.stack([pcs[half & (y == c)].mean(0) for c in names])            # (K, 3)
    pred = names[np.argmin(((pcs[~half, None] - centroids) ** 2).sum(-1), axis=1)]
    # balanced accuracy: mean recall over classes; chance (random embedding) is 1 / K
    recall = [(pred[y[~half] == c] == c).mean() for c in names]
    assert np.mean(recall) > 1 / len(names) + 0.3, (recall, len(names))


def test_quality_rises_off_the_training_data(unseen, trained_fusion, quick_models, tmp_path):
    """embedding_quality of the quick start's model on an unseen cube is of the size of its test
    centre MAE (test_metrics.csv: the same measure over the held-out test patches), and rises
    several-fold on input unlike the training data: a snow field (every S2 band at reflectance 0.9
    wherever it was valid) over 12 x 12 px on every date, S1 unchanged. Guards against a quality
    that does not measure the reconstruction (from the input alone it would not match the test MAE)."""
    folder, out, s2 = unseen
    with open(quick_models / "fusion" / "test_metrics.csv") as f:
        test_mae = dict(line.strip().split(",") for line in f)["centre_mae"]
    snowy = s2.copy(deep=True)
    rows, cols = slice(10, 22), slice(10, 22)
    for b in data.S2_BANDS:
        v = snowy[b].values
        v[:, rows, cols] = np.where(np.isfinite(v[:, rows, cols]), 0.9, np.nan)
    synthetic.write_cube(snowy, tmp_path / "snow_s2.nc")
    snow_out = embed.embed_cube({"s2": tmp_path / "snow_s2.nc", "s1": folder / "p_s1.nc"}, trained_fusion, tmp_path / "e.nc",
                                block_pixels=512)
    normal = xr.open_dataset(out).embedding_quality.values[:, rows, cols]
    snow = xr.open_dataset(snow_out).embedding_quality.values[:, rows, cols]
    assert np.array_equal(np.isnan(normal), np.isnan(snow)) and np.isfinite(normal).sum() > 500
    print(f"test centre MAE {float(test_mae):.4f} | quality median: normal {np.nanmedian(normal):.4f}, "
          f"snow {np.nanmedian(snow):.4f}, whole unseen cube {np.nanmedian(xr.open_dataset(out).embedding_quality.values):.4f}")
    assert 0.3 < np.nanmedian(normal) / float(test_mae) < 3
    assert np.nanmedian(snow) > 5 * np.nanmedian(normal)


def test_reader_combines_real_10m_and_20m_files(realdata):
    """Real S2 (Romania, 10 m + 20 m files, short band names) read block by block with a halo."""
    folder = realdata / "s2_l2a_romania"
    files = [folder / "sentinel2_cube_subset_romania_10m.nc", folder / "sentinel2_cube_subset_romania_20m.nc"]
    bands = ("B02", "B03", "B04", "B08", "B8A", "B11")
    reader = embed.CubeReader({"s2": files}, {"s2": bands})
    arrays, days, _ = reader.block(0, 4)
    assert arrays["s2"].shape == (140, 6, 4 + 14, 100 + 14)          # (T, C, rows + halo, W + halo)
    assert np.all(np.diff(days["s2"]) > 0)
    whole = data.cube_array(readers.open_s2(files, bands=bands), bands)    # (T, C, 100, 100)
    np.testing.assert_array_equal(arrays["s2"][:, :, 7:11, 7:107], whole[:, :, 0:4])
    valid = np.isfinite(arrays["s2"]).mean()
    assert 0.3 < valid < 0.9                                           # real clouds masked by SCL


def test_times_stored_exactly_real_s1(realdata, tmp_path):
    """Output times are the source acquisition times to the nanosecond. As float days since 1970 the
    real Myanmar S1 times (23:32:01 ...) came back up to ~256 ns off, and `.sel(time=t)` failed."""
    raw = xr.open_dataset(realdata / "s1_grd_myanmar" / "s1_vv_vh_myanmar_2014_2018.nc")
    raw.isel(y=slice(50, 66), x=slice(50, 66), time=slice(0, 24)).to_netcdf(tmp_path / "m_s1.nc")
    ckpt = save(tiny_ae("s1", data.S1_BANDS, 2).eval(), "autoencoder", tmp_path / "s1.pt")
    out = embed.embed_cube({"s1": tmp_path / "m_s1.nc"}, ckpt, tmp_path / "e.nc")
    source = readers.open_s1(tmp_path / "m_s1.nc").time.values                  # same-day slices merged
    ns = source.astype("datetime64[ns]").astype(np.int64)
    as_float_days = np.round(data.day_offsets(source) * 86_400e9).astype(np.int64)
    assert (as_float_days != ns).any()                                        # the pitfall is real here
    emb = xr.open_dataset(out)
    np.testing.assert_array_equal(emb.time.values, source)
    assert all(emb.embedding.sel(time=t).shape == (16, 16, 2) for t in source)


def test_pca_one_basis_and_one_stretch_for_all_panels(cube, tmp_path, monkeypatch):
    """Colours compare across dates and cubes. A pixel whose embedding is the same on two dates gets
    the same colour in both panels although the dates' spreads differ 3-fold (a stretch per panel
    colours it differently); --fit takes the basis of another cube."""
    s2 = xr.open_dataset(cube["s2"])
    T, H, W, F = 3, s2.sizes["y"], s2.sizes["x"], 7
    rng = np.random.default_rng(0)
    values = rng.normal(size=(T, H, W, F)).astype(np.float32)
    values[1] *= 3.0
    values[:, 4, 5] = rng.normal(size=F)                                    # one pixel, same on every date
    coords = {"time": s2.time.values[5:5 + T], "y": s2.y.values, "x": s2.x.values,
              "feature": [f"fused_{i}" for i in range(F)]}
    xr.Dataset({"embedding": (("time", "y", "x", "feature"), values)}, coords).to_netcdf(tmp_path / "a.nc")
    xr.Dataset({"embedding": (("time", "y", "x", "feature"), values[::-1] * 2)}, coords).to_netcdf(tmp_path / "b.nc")
    shown = []
    real_imshow = matplotlib.axes.Axes.imshow
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda ax, img, **kw: shown.append(np.array(img)) or
                        real_imshow(ax, img, **kw))
    basis = embed.pca_figure(tmp_path / "a.nc", cube["s2"], tmp_path / "a.png", n_dates=2)
    colours = shown[1::2]                                                  # (true colour, PCA) per row
    assert len(colours) == 2 and not np.allclose(colours[0], colours[1])
    np.testing.assert_array_equal(colours[0][4, 5], colours[1][4, 5])
    fitted = embed.pca_figure(tmp_path / "a.nc", cube["s2"], tmp_path / "ab.png", fit=tmp_path / "b.nc")
    reference = embed.pca_basis(embed.open_embedding(tmp_path / "b.nc"))
    for k in ("mean", "components", "lo", "hi"):
        np.testing.assert_array_equal(fitted[k], reference[k])
    assert not np.allclose(basis["hi"], reference["hi"])                   # b is a scaled 2x: another stretch
