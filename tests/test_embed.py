"""Tests of embed.py: fast path == reference path, file layout, gap semantics, resume, errors, PCA.

Run: python -m pytest -q tests/test_embed.py   (tiny models on small synthetic cubes; ~3 min on 2 cores
     run alone, most of it training conftest.py's shared models for the PCA test)
"""
import numpy as np
import pytest
import torch
import xarray as xr

import data
import embed
import train
from conftest import tiny_ae
from deepfeat import FusionConfig, FusionModel


def save(model, kind, path):
    train.save_checkpoint(path, {"format": train.CHECKPOINT_FORMAT, "kind": kind,
                                 "model_config": train.model_config_dict(model), "model": model.state_dict()})
    return path


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    """A 20 x 23 px synthetic S1/S2 pair over four months, with clouds, written like sample_data/."""
    folder = tmp_path_factory.mktemp("cube")
    s1, s2, _ = data.make_synthetic_cube(seed=7, size=23, start="2020-04-01", end="2020-07-31")
    s1, s2 = s1.isel(y=slice(0, 20)), s2.isel(y=slice(0, 20))          # not square: catches x/y mix-ups
    data.write_cube(s1, folder / "c_s1.nc")
    data.write_cube(s2, folder / "c_s2.nc")
    return folder / "c_s1.nc", folder / "c_s2.nc"


@pytest.fixture(scope="module")
def fusion_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = FusionModel({"s1": tiny_ae("s1", data.S1_BANDS, 2), "s2": tiny_ae("s2", data.S2_BANDS, 9)},
                        FusionConfig(d_model=16, n_heads=2, n_layers=1))
    return save(model.eval(), "fusion", tmp_path_factory.mktemp("ckpt") / "fusion.pt")


@pytest.fixture(scope="module")
def embedded(cube, fusion_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("emb") / "emb.nc"
    embed.embed_cube(cube[1], cube[0], fusion_ckpt, out, block_pixels=100)
    return out


def test_fast_path_equals_reference(cube, fusion_ckpt, embedded, tmp_path):
    ref = embed.embed_cube(cube[1], cube[0], fusion_ckpt, tmp_path / "ref.nc", path="reference", block_pixels=100)
    fast = xr.open_dataset(embedded).embedding.values
    slow = xr.open_dataset(ref).embedding.values
    assert np.array_equal(np.isnan(fast), np.isnan(slow))
    assert np.isfinite(fast).any()
    assert np.nanmax(np.abs(fast - slow)) <= 1e-4


def test_output_layout(cube, embedded):
    s2 = xr.open_dataset(cube[1])
    ds = xr.open_dataset(embedded)
    assert ds.embedding.dims == ("time", "y", "x", "feature")
    assert list(ds.feature.values) == [f"fused_{i}" for i in range(7)] + ["s1_0", "s1_1"] + [f"s2_{i}" for i in range(9)]
    np.testing.assert_array_equal(ds.time.values, s2.time.values)
    np.testing.assert_allclose(ds.y.values, s2.y.values)
    np.testing.assert_allclose(ds.x.values, s2.x.values)
    gm = ds.embedding.attrs.get("grid_mapping") or ds.embedding.encoding.get("grid_mapping")
    assert gm in ds.variables and ds[gm].attrs
    assert len(ds.attrs["checkpoint_sha256"]) == 64 and "B8A" in ds.attrs["bands"]


def test_nan_exactly_where_central_s2_missing(cube, embedded):
    s2 = data.open_s2(cube[1])
    centre_ok = np.isfinite(data.cube_array(s2, data.S2_BANDS)).all(axis=1)       # (T, H, W)
    centre_ok[:5] = centre_ok[-5:] = False                                         # no 5 neighbours
    emb = xr.open_dataset(embedded).embedding.values                               # (T, H, W, F)
    assert (~centre_ok).any() and centre_ok.any()
    np.testing.assert_array_equal(np.isfinite(emb).all(-1), centre_ok)
    np.testing.assert_array_equal(np.isnan(emb).all(-1), ~centre_ok)
    # edge policy: reflect padding gives the border pixels values like any other pixel
    assert np.isfinite(emb[:, 0, 0]).any() and np.isfinite(emb[:, -1, -1]).any()


def test_resume_after_interruption(cube, fusion_ckpt, embedded, tmp_path, monkeypatch):
    out = tmp_path / "emb.nc"
    real_save, calls = embed._save_atomic, []

    def save_then_die(path, array):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(path)
        real_save(path, array)

    monkeypatch.setattr(embed, "_save_atomic", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        embed.embed_cube(cube[1], cube[0], fusion_ckpt, out, block_pixels=100)
    assert not out.exists() and len(list((tmp_path / "emb.nc.parts").glob("*.npy"))) == 2
    monkeypatch.setattr(embed, "_save_atomic", real_save)
    computed = []
    real_block = embed.embed_block
    monkeypatch.setattr(embed, "embed_block", lambda *a, **k: computed.append(1) or real_block(*a, **k))
    embed.embed_cube(cube[1], cube[0], fusion_ckpt, out, block_pixels=100)
    n_blocks = -(-20 // (100 // 23))
    assert len(computed) == n_blocks - 2                                         # finished blocks not redone
    np.testing.assert_array_equal(xr.open_dataset(out).embedding.values, xr.open_dataset(embedded).embedding.values)
    assert not (tmp_path / "emb.nc.parts").exists()


def test_fill_linear_hand_computed():
    days = np.array([0.0, 10, 20, 40, 50])
    values = np.array([np.nan, 1.0, np.nan, 5.0, np.nan])[:, None]
    filled = embed.fill_linear(days, values)[:, 0]
    np.testing.assert_allclose(filled, [np.nan, 1.0, 1 + 4 * 10 / 30, 5.0, np.nan])


def test_bad_checkpoints_give_clear_errors(cube, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="cannot be read"):
        embed.embed_cube(cube[1], cube[0], bad, tmp_path / "o.nc")
    s2_only = save(tiny_ae("s2", ("B02", "B03", "B04", "B05"), 9).eval(), "autoencoder", tmp_path / "s2.pt")
    with pytest.raises(SystemExit, match="expected the s1"):
        train.load_model(s2_only, "autoencoder", "s1")
    with pytest.raises(SystemExit, match="trained on bands"):
        train.load_model(s2_only, bands=data.S2_BANDS)


def test_pca_separates_land_cover(trained_fusion, tmp_path):
    """On the date with the most valid pixels, nearest-centroid classification of the first 3 PCs
    of the fused embedding (tiny models trained on sample_data/, conftest.py) recovers the known
    land-cover map of an unseen synthetic cube far better than chance: the embedding carries land
    cover, not noise."""
    s1, s2, _ = data.make_synthetic_cube(seed=11, size=32, start="2020-04-01", end="2020-08-31")
    data.write_cube(s1, tmp_path / "p_s1.nc")
    data.write_cube(s2, tmp_path / "p_s2.nc")
    out = embed.embed_cube(tmp_path / "p_s2.nc", tmp_path / "p_s1.nc", trained_fusion, tmp_path / "e.nc",
                           block_pixels=512)
    ratio = embed.pca_figure(out, tmp_path / "p_s2.nc", tmp_path / "pca.png", n_dates=2)
    assert (tmp_path / "pca.png").stat().st_size > 0 and ratio.sum() <= 1.0 + 1e-6
    emb = embed.select_features(xr.open_dataset(out).embedding).values            # (T, H, W, 7)
    assert emb.shape[-1] == 7
    t = np.argmax(np.isfinite(emb).all(-1).sum((1, 2)))                           # date of Fig. 6
    ok = np.isfinite(emb[t]).all(-1)
    X, y = emb[t][ok], s2.landcover.values[ok]
    mean, comps, _ = embed.pca_fit(X)
    pcs = (X - mean) @ comps.T
    half = np.random.default_rng(0).random(len(y)) < 0.5
    names = np.unique(y[half])
    centroids = np.stack([pcs[half & (y == c)].mean(0) for c in names])            # (K, 3)
    pred = names[np.argmin(((pcs[~half, None] - centroids) ** 2).sum(-1), axis=1)]
    # balanced accuracy: mean recall over classes; chance (random embedding) is 1 / K
    recall = [(pred[y[~half] == c] == c).mean() for c in names]
    assert np.mean(recall) > 1 / len(names) + 0.3, (recall, len(names))


def test_reader_combines_real_10m_and_20m_files(realdata):
    """Real S2 (Romania, 10 m + 20 m files, short band names) read block by block with a halo."""
    folder = realdata / "s2_l2a_romania"
    files = [folder / "sentinel2_cube_subset_romania_10m.nc", folder / "sentinel2_cube_subset_romania_20m.nc"]
    bands = ("B02", "B03", "B04", "B08", "B8A", "B11")
    reader = embed.CubeReader(files, None, ("s2",), {"s2": bands})
    arrays, days, _ = reader.block(0, 4)
    assert arrays["s2"].shape == (140, 6, 4 + 14, 100 + 14)          # (T, C, rows + halo, W + halo)
    assert np.all(np.diff(days["s2"]) > 0)
    whole = data.cube_array(data.open_s2(files, bands=bands), bands)    # (T, C, 100, 100)
    np.testing.assert_array_equal(arrays["s2"][:, :, 7:11, 7:107], whole[:, :, 0:4])
    valid = np.isfinite(arrays["s2"]).mean()
    assert 0.3 < valid < 0.9                                           # real clouds masked by SCL
