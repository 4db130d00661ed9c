"""A third modality, defined in this file only, goes end to end through the registry (modalities.py):
pretrain its autoencoder (recipe.pretrain, as train_s1.py / train_s2.py do), fuse it with the frozen
S1 and S2 autoencoders (train_fusion.py --checkpoint NAME=PATH), embed a cube (embed.py --input
NAME=FILE). And the layers of the code: no import cycle, the loop imports the model only, the model
and the losses nothing of the data layer, no stage script imports another.
"""
import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import data
import embed
import losses
import modalities
import readers
import recipe
import train
import train_fusion
from conftest import write_areas
from deepfeat import FusionConfig, FusionModel, ModalityAutoencoder

ROOT = Path(__file__).resolve().parents[1]
BANDS = ("red", "nir", "swir")            # a Landsat-like optical sensor: three bands, its own 8-day revisit


def prepare_l8(raw, bands, target=None, mask_var=None):
    """The sensor's reader: float32 bands on (time, y, x); onto the reference grid when given one."""
    cube = raw[list(bands)].astype("float32").transpose("time", "y", "x")
    if target is not None:
        cube = cube.sel(y=target.y, x=target.x, method="nearest").assign_coords(y=target.y, x=target.x)
    return cube.load()


L8 = modalities.Modality(
    name="l8", bands=BANDS, units="surface reflectance", open_raw=readers.open_raw, prepare=prepare_l8,
    sampling=data.SamplingConfig(seq_len=16, t_stride=8, s_stride=9), latent_dim=3, objective=losses.s1_loss,
    fusion_centre_weight=1.5, fusion_term=losses.s1_loss)


def l8_like(s2, offset_days=1):
    """The sensor's cube of an area: every second S2 date moved by `offset_days`, three S2 bands x 0.9."""
    keep = s2.isel(time=slice(0, None, 2))
    values = {b: (("time", "y", "x"), 0.9 * keep[s].values) for b, s in zip(BANDS, ("B04", "B08", "B11"))}
    return xr.Dataset(values, coords={"time": keep.time.values + np.timedelta64(offset_days, "D"),
                                      "y": s2.y.values, "x": s2.x.values})


@pytest.fixture
def l8_registered(monkeypatch):
    assert "l8" not in modalities.MODALITIES                     # defined here, nowhere in the project
    monkeypatch.setitem(modalities.MODALITIES, "l8", L8)
    return L8


@pytest.fixture(scope="module")
def three_sensor_cubes(tmp_path_factory):
    """Three 32 x 32 px areas with S1, S2 and l8 files (X_s1.nc, X_s2.nc, X_l8.nc)."""
    return write_areas(tmp_path_factory.mktemp("three"), (20, 21, 22), "a", size=32, more=lambda s2: {"l8": l8_like(s2)})


def test_a_modality_defined_in_a_test_pretrains_fuses_and_embeds(l8_registered, three_sensor_cubes, tmp_path):
    common = ["--quick", "--max-steps", "2", "--cubes", str(three_sensor_cubes), "--cache", str(tmp_path / "cache")]
    # pretrain: the recipe of train_s1.py / train_s2.py, with the entry's bands, sampling and latent size
    recipe.pretraining_command("l8", [*common, "--out", str(tmp_path / "l8")])
    l8_ckpt = train.load_checkpoint(tmp_path / "l8" / "checkpoint.pt", "autoencoder", "l8")
    assert tuple(l8_ckpt["model_config"]["bands"]) == BANDS and l8_ckpt["model_config"]["latent_dim"] == 3
    # fuse with the shipped, frozen S1 and S2 autoencoders: l8 is matched to the S2 dates like S1
    train_fusion.main([*common, "--out", str(tmp_path / "fusion"), "--s1-checkpoint", str(ROOT / "models/s1/checkpoint.pt"),
                       "--s2-checkpoint", str(ROOT / "models/s2/checkpoint.pt"),
                       "--checkpoint", f"l8={tmp_path / 'l8' / 'checkpoint.pt'}"])
    fusion = train.load_checkpoint(tmp_path / "fusion" / "checkpoint.pt", "fusion")
    assert tuple(fusion["model_config"]["fusion"]["modalities"]) == ("s1", "l8", "s2")     # the reference last
    assert fusion["meta"]["loss"]["centre_weight"] == {"s1": 1.5, "l8": 1.5, "s2": 1.75}
    for name, tensor in train.load_checkpoint(tmp_path / "l8" / "checkpoint.pt")["model"].items():
        assert torch.equal(fusion["model"][f"autoencoders.l8.{name}"], tensor)              # frozen
    # embed one area: the l8 frames the model reads are the l8 acquisitions closest to each S2 date
    files = {m: three_sensor_cubes / f"a0_{m}.nc" for m in ("s1", "s2", "l8")}
    embed.main(["--s2", str(files["s2"]), "--s1", str(files["s1"]), "--input", f"l8={files['l8']}",
                "--checkpoint", str(tmp_path / "fusion" / "checkpoint.pt"), "--out", str(tmp_path / "e.nc")])
    with xr.open_dataset(tmp_path / "e.nc") as emb:
        features = [str(f) for f in emb.feature.values]
        assert features == [f"fused_{i}" for i in range(7)] + ["s1_0", "s1_1", "l8_0", "l8_1", "l8_2"] + \
            [f"s2_{i}" for i in range(9)]
        assert np.isfinite(emb.embedding.values).any()
    reader = embed.CubeReader(files, {"s1": data.S1_BANDS, "s2": data.S2_BANDS, "l8": BANDS})
    _, days, time = reader.block(0, 1)
    l8_days = data.day_offsets(xr.open_dataset(files["l8"]).time)
    nearest = l8_days[np.abs(l8_days[None] - days["s2"][:, None]).argmin(1)]
    assert np.array_equal(days["l8"], np.where(np.abs(nearest - days["s2"]) <= 6, nearest, days["s2"]))


def test_the_fused_embedding_reads_the_third_modality(l8_registered, three_sensor_cubes, tmp_path):
    """The l8 input reaches the fused embedding: the same fusion model, l8 frames changed -> other values."""
    torch.manual_seed(0)
    s1, s2 = (train.load_model(ROOT / "models" / m / "checkpoint.pt")[0] for m in ("s1", "s2"))
    l8 = ModalityAutoencoder(dataclasses.replace(s1.cfg, modality="l8", bands=BANDS, latent_dim=3))
    aes = {"s1": s1, "l8": l8, "s2": s2}
    model = FusionModel(aes, FusionConfig(modalities=tuple(aes))).eval()
    files = {m: three_sensor_cubes / f"a1_{m}.nc" for m in ("s1", "s2", "l8")}
    bands = {m: ae.cfg.bands for m, ae in aes.items()}
    arrays, days, _ = embed.CubeReader(files, bands).block(0, 2)
    with torch.no_grad():
        base = embed.embed_block(model, arrays, days, quality_every=0)[0]
        arrays["l8"] = arrays["l8"] * 1.5
        moved = embed.embed_block(model, arrays, days, quality_every=0)[0]
    fused = np.isfinite(base[..., 0])
    moves = np.abs(moved[..., :7] - base[..., :7])[fused] > 0                            # (n, 7)
    assert fused.any() and moves.mean() > 0.9             # the windows with l8 observations (NaN scales to NaN)
    np.testing.assert_array_equal(moved[..., 7:9], base[..., 7:9])                       # s1 latents do not


def test_unknown_modality_and_no_reference_are_one_clear_error(l8_registered):
    with pytest.raises(data.CubeError, match="unknown modality 'l9'; known: s1, s2, l8"):
        modalities.get("l9")
    with pytest.raises(data.CubeError, match="needs exactly one reference modality"):
        modalities.fusion_order(["s1", "l8"])
    assert modalities.fusion_order(["s2", "l8", "s1"]) == ("s1", "l8", "s2")


# ----------------------------------------------------------------------------------------------
# The layers (README "Files"): imports read from the source, including those inside functions
# ----------------------------------------------------------------------------------------------

MODULES = sorted(p.stem for p in ROOT.glob("*.py"))


def project_imports(module):
    """The project modules `module` imports anywhere in its source (top level or inside a function)."""
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found & set(MODULES)


def test_no_import_cycle():
    graph = {m: project_imports(m) for m in MODULES}
    state = {}

    def visit(m, path):
        if state.get(m) == "open":
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if state.get(m) != "done":
            state[m] = "open"
            for n in sorted(graph[m]):
                visit(n, path + [m])
            state[m] = "done"
    for m in MODULES:
        visit(m, [])


def test_the_layers():
    """deepfeat.py and losses.py import no project module; data.py none either; the loop (train.py)
    the model and data.py's two file writers only; no stage script imports another script."""
    assert project_imports("deepfeat") == set() and project_imports("losses") == set()
    assert project_imports("data") == set()
    assert project_imports("train") == {"deepfeat", "data"}
    tree = ast.parse((ROOT / "train.py").read_text())
    from_data = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "data" for a in n.names]
    assert from_data == ["write_atomic", "write_csv"]
    scripts = {"train_s1", "train_s2", "train_fusion", "gpp", "embed", "reproduce", "learning", "bench"}
    for stage in ("train_s1", "train_s2", "train_fusion", "gpp", "embed", "recipe", "modalities"):
        assert not project_imports(stage) & scripts, stage
