"""Every bad input a user can give a command line: one line on stderr naming the problem, exit status 2.

CASES is the table of the README's "Bad input" section: each row is run here through the script's own
entry point (data.run_cli(main, argv), what `python SCRIPT.py ARGS` runs), and the README must show
each row's message. Tiny synthetic cubes and untrained tiny models; ~20 s on 2 cores.

Run: python -m pytest -q tests/test_bad_input.py
"""
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import data
import synthetic
import readers
import embed
import gpp
import reproduce
import train
import train_fusion
import train_s1
import train_s2
from conftest import REALDATA, ROOT, tiny_ae
from deepfeat import FusionConfig, FusionModel

SCRIPTS = {"train_s1.py": train_s1.main, "train_s2.py": train_s2.main, "train_fusion.py": train_fusion.main,
           "embed.py": embed.main, "gpp.py": gpp.main, "readers.py": readers.main, "reproduce.py": reproduce.main}
ROMANIA_10M = "{realdata}/s2_l2a_romania/sentinel2_cube_subset_romania_10m.nc"
LAEA_WKT = 'PROJCRS["ETRS89-extended / LAEA Europe",ID["EPSG",3035]]'

# (bad input, command, what stderr must contain); {name} are files made by the `files` fixture
CASES = [
    ("spatial stride 0", "train_s2.py --s-stride 0", "argument --s-stride: must be an integer >= 1, got 0"),
    ("negative spatial stride", "train_s2.py --s-stride -3", "argument --s-stride: must be an integer >= 1, got -3"),
    ("no epochs", "train_s1.py --epochs 0", "argument --epochs: must be an integer >= 1, got 0"),
    ("GPP window stride 0", "gpp.py --stride 0", "argument --stride: must be an integer >= 1, got 0"),
    ("GPP window of 0 days", "gpp.py --window 0", "argument --window: must be an integer >= 1, got 0"),
    ("negative GPP window", "gpp.py --window -5", "argument --window: must be an integer >= 1, got -5"),
    ("embedding block of 0 pixels", "embed.py --checkpoint {s2_ckpt} --out {out_nc} --block-pixels 0",
     "argument --block-pixels: must be an integer >= 1, got 0"),
    ("unwritable output folder", "train_s2.py --cubes {good_s2} --out {a_file}/run", "cannot write there"),
    ("--resume without a checkpoint", "train_s2.py --cubes {good_s2} --resume --out {empty_dir}",
     "checkpoint.pt not found (run without --resume to start)"),
    ("missing cube file", "train_s2.py --cubes {missing}.nc", "missing.nc: file or folder not found"),
    ("a band name that is no S2 band", "train_s2.py --cubes {good_s2} --bands B02 XX",
     "--bands: 'XX' is not a Sentinel-2 band name"),
    ("real S2 file lacking bands", "train_s2.py --cubes " + ROMANIA_10M,
     "missing band(s) B05, B06, B07, B8A, B11, B12 (has B02, B03, B04, B08); train on the bands the file has with --bands"),
    ("wrong dims (lat/lon)", "train_s2.py --cubes {latlon_s2}", "has dims ('time', 'lat', 'lon'), expected (time, y, x)"),
    ("too few dates to train", "train_s2.py --cubes {short_s2}", "only 8 dates, a sample needs at least 11"),
    ("all-NaN cube", "train_s2.py --cubes {nan_s2}", "band B02 is all-NaN (no valid observation)"),
    ("S2 mask variable that is not there", "train_s2.py --cubes {good_s2} --mask-var cloudsen12",
     "mask variable 'cloudsen12' not found"),
    ("missing pretrained checkpoint", "train_fusion.py --s1-checkpoint {missing}.pt --s2-checkpoint {s2_ckpt}",
     "--s1-checkpoint {missing}.pt: not found (train it first with train_s1.py)"),
    ("checkpoint of the wrong modality", "train_fusion.py --cubes {good_dir} --s1-checkpoint {s2_ckpt} "
     "--s2-checkpoint {s2_ckpt} --out {empty_dir}", "holds the s2 autoencoder, expected the s1 one"),
    ("checkpoint holding a pickled object", "embed.py --s2 {good_s2} --checkpoint {pickled_ckpt} --out {out_nc}",
     "cannot be read (UnpicklingError): corrupt or not a deepfeat checkpoint"),
    ("fusion checkpoint without --s1", "embed.py --s2 {good_s2} --checkpoint {fusion_ckpt} --out {out_nc}",
     "this checkpoint needs --s1"),
    ("too few dates to embed", "embed.py --s2 {short_s2} --checkpoint {s2_ckpt} --out {out_nc}",
     "8 dates; an embedding needs 11 (its date and 5 on each side)"),
    ("nothing to embed (all NaN)", "embed.py --s2 {nan_s2} --checkpoint {s2_ckpt} --out {out_nc}",
     "no pixel-date could be embedded"),
    ("S1 in another CRS than S2", "embed.py --s2 {good_s2} --s1 {laea_s1} --checkpoint {fusion_ckpt} --out {out_nc}",
     "is in EPSG:3035, --s2 {good_s2} in EPSG:32632: reproject it"),
    ("S1 in another CRS, training", "train_fusion.py --cubes {laea_dir} --s1-checkpoint {s1_ckpt} "
     "--s2-checkpoint {s2_ckpt} --out {empty_dir}", "is in EPSG:3035, the target (S2) grid in EPSG:32632"),
    ("missing flux file", "gpp.py --flux {missing}.csv --features climatology", "--flux {missing}.csv: file not found"),
    ("flux file without valid GPP", "gpp.py --flux {nogpp_csv} --features climatology --out {empty_dir}",
     "no train window: every GPP value in [2017, 2018, 2019] is missing or fails the QC filter (--min-qc)"),
    ("validation year outside the data", "gpp.py --flux {flux_csv} --features climatology --val-years 2024 "
     "--out {empty_dir}", "no val window: the flux data have no day in [2024]"),
    ("unknown GPP feature set", "gpp.py --flux {flux_csv} --features fused,foo",
     "--features: unknown feature set 'foo'"),
    ("validation tower that is not there", "gpp.py --flux {flux_csv} --features climatology --val-sites nowhere "
     "--out {empty_dir}", "--val-sites 'nowhere' is not one of the sites"),
    ("embedding shard out of range", "embed.py --s2 {good_s2} --checkpoint {s2_ckpt} --out {out_nc} --shard 4/3",
     "argument --shard: expected K/N with 1 <= K <= N, got '4/3'"),
    ("merge before any shard ran", "embed.py merge {out_nc}", "no shard folders out.nc.shard-K-of-N.parts next to"),
    ("two cubes of one name", "train_s2.py --cubes {good_dir} {laea_dir} --out {empty_dir}",
     "two cubes are named 'c' (in different folders?)"),
    ("reproduce.py without a task", "reproduce.py", "give --quick (the whole table at quick size) or --claim NAME"),
    ("a claim that does not exist", "reproduce.py --claim speed", "argument --claim: invalid choice: 'speed'"),
    ("a file that is no cube", "readers.py inspect {a_file}", "cannot read as netCDF"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The files the CASES name: small synthetic cubes (good, short, all-NaN, lat/lon, other CRS), flux
    tables and tiny checkpoints."""
    d = tmp_path_factory.mktemp("bad")
    s1, s2, flux = synthetic.make_synthetic_cube(seed=3, size=16, start="2020-04-01", end="2020-06-30")
    (d / "good").mkdir()
    synthetic.write_cube(s1, d / "good" / "c_s1.nc")
    synthetic.write_cube(s2, d / "good" / "c_s2.nc")
    synthetic.write_cube(s2.isel(time=slice(0, 8)), d / "short_s2.nc")
    synthetic.write_cube(s2.map(lambda v: v * np.nan if "time" in v.dims else v), d / "nan_s2.nc")
    synthetic.write_cube(s2.rename(y="lat", x="lon"), d / "latlon_s2.nc")
    (d / "laea").mkdir()
    laea = s1.assign_coords(spatial_ref=s1.spatial_ref.assign_attrs(crs_wkt=LAEA_WKT, spatial_ref=LAEA_WKT))
    synthetic.write_cube(laea, d / "laea" / "c_s1.nc")
    synthetic.write_cube(s2, d / "laea" / "c_s2.nc")
    _, _, tower_flux = synthetic.make_synthetic_cube(seed=3, size=16, start="2017-01-01", end="2020-12-31")
    synthetic.write_fluxnet_csv(tower_flux, d / "flux.csv")
    synthetic.write_fluxnet_csv(tower_flux.assign(GPP_NT_VUT_REF=tower_flux.GPP_NT_VUT_REF * np.nan), d / "nogpp.csv")
    torch.manual_seed(0)
    s1_ae, s2_ae = tiny_ae("s1", data.S1_BANDS, 2).eval(), tiny_ae("s2", data.S2_BANDS, 9).eval()
    fusion = FusionModel({"s1": s1_ae, "s2": s2_ae}, FusionConfig(d_model=16, n_heads=2, n_layers=1)).eval()
    for name, model, kind in (("s1", s1_ae, "autoencoder"), ("s2", s2_ae, "autoencoder"), ("fusion", fusion, "fusion")):
        train.save_checkpoint(d / f"{name}.pt", {"format": train.CHECKPOINT_FORMAT, "kind": kind,
                                                 "model_config": train.model_config_dict(model),
                                                 "model": model.state_dict()})
    torch.save({"format": train.CHECKPOINT_FORMAT, "payload": Path("anything")}, d / "pickled.pt")
    (d / "a_file.txt").write_text("not a cube")
    (d / "empty").mkdir()
    return {"good_s2": d / "good" / "c_s2.nc", "good_dir": d / "good", "short_s2": d / "short_s2.nc",
            "nan_s2": d / "nan_s2.nc", "latlon_s2": d / "latlon_s2.nc", "laea_s1": d / "laea" / "c_s1.nc",
            "laea_dir": d / "laea", "flux_csv": d / "flux.csv", "nogpp_csv": d / "nogpp.csv",
            "s1_ckpt": d / "s1.pt", "s2_ckpt": d / "s2.pt", "fusion_ckpt": d / "fusion.pt",
            "pickled_ckpt": d / "pickled.pt", "a_file": d / "a_file.txt", "empty_dir": d / "empty",
            "out_nc": d / "out.nc", "missing": d / "missing", "realdata": REALDATA}


def run(command, capsys):
    """Run `SCRIPT.py ARGS` in-process as its __main__ does -> (exit status, stderr)."""
    script, *argv = command.split()
    with pytest.raises(SystemExit) as stop:
        data.run_cli(SCRIPTS[script], argv)
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize("what, command, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_one_line_exit_2(what, command, message, files, capsys):
    if "{realdata}" in command and not REALDATA.is_dir():
        pytest.skip("real data folder not found")
    code, err = run(command.format(**files), capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message.format(**files) in err


def test_readme_lists_every_case():
    """The README's bad-input table shows each case and its message, so users can look errors up."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Bad input"):]
    for what, _, message in CASES:
        assert f"| {what} |" in table, what
        assert re.sub(r"\{\w+\}", "…", message) in table, message           # file names shown as …


def test_s2_without_cloud_mask_warns_unless_told(files):
    """A real S2 file with neither SCL nor a mask variable would train on clouds as land: a warning names
    --mask-var; `--mask-var none` says the cube is masked already and silences it."""
    raw = xr.open_dataset(files["good_s2"])
    raw.attrs = {}                                       # no `cloud_mask` record: like a file from elsewhere
    with pytest.warns(UserWarning, match="clouds and shadows are NOT masked; pass --mask-var"):
        assert readers.prepare_s2(raw).attrs["cloud_mask"] == "none (no SCL or mask variable)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert readers.prepare_s2(raw, mask_var=data.NO_MASK).attrs["cloud_mask"] == "none (--mask-var none)"
        recorded = readers.prepare_s2(xr.open_dataset(files["good_s2"]))            # synthetic: records its mask
        assert recorded.attrs["cloud_mask"].startswith("applied before")


def test_ctrl_c_while_embedding_one_line_parts_kept(files, tmp_path, monkeypatch, capsys):
    """Ctrl-C in embed.py: one line (exit 130), the finished blocks stay in OUT.parts/ for the resume."""
    real_block, calls = embed.embed_block, []

    def interrupt_second(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real_block(*args, **kwargs)

    monkeypatch.setattr(embed, "embed_block", interrupt_second)
    out = tmp_path / "e.nc"
    with pytest.raises(SystemExit) as stop:
        data.run_cli(embed.main, ["--s2", str(files["good_s2"]), "--checkpoint", str(files["s2_ckpt"]),
                                  "--out", str(out), "--block-pixels", "64"])
    err = capsys.readouterr().err
    assert stop.value.code == 130 and len(err.strip().splitlines()) == 1 and "interrupted" in err
    assert len(list((tmp_path / "e.nc.parts").glob("rows_*.npy"))) == 1 and not out.exists()
