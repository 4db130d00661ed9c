"""modalities.py: what defines a modality, in one place, and how its files become model input.

Peters et al. (arXiv 2511.11706) train one context-aware autoencoder per sensor (Sec. III-B) and fuse
the frozen autoencoders (Sec. III-C); a new sensor joins without retraining the others. Everything the
stages know of a sensor is one `Modality` entry below: bands and units, the reader, the pretraining
sampling, the autoencoder's size, the pretraining objective, the weight and loss term of the fusion
objective, and how its frames meet the reference dates. S1 and S2 are the two entries of MODALITIES;
train_s1.py / train_s2.py (recipe.pretrain), train_fusion.py, embed.py and the training-cube loaders
below loop over the entries they are given. To add a sensor: write its reader (a function returning a
cube of the data.py convention), define a Modality, `register` it (README "Adding a modality";
tests/test_modalities.py does it end to end with a sensor defined in the test only).

Sections: 1. the Modality entry and the registry  2. S1 and S2  3. one area's files -> the model's
input (the reference grid and dates, Sec. III-C)  4. training cubes of a stage: files -> cubes ->
splits (Sec. II), prepared once into a cache.
"""
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import data
import losses
import readers

# ---------------------------------------------------------------------------------------------
# 1. The Modality entry and the registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Modality:
    """One sensor as the stages see it.

    open_raw(path) opens a file (S2: or the files of one area) lazily; prepare(raw, bands, target,
    mask_var) turns a raw Dataset, or a row block of it, into a cube of the data.py convention: float32
    bands on (time, y, x), NaN where invalid, on the grid of `target` (the reference cube) when one
    is given. The objective and fusion_term are losses of losses.py: (recon, x, valid, weights) ->
    (loss, {component: scalar}) with centre_mae and context_mae among the components.
    """
    name: str                       # files X_NAME.nc, the checkpoint's modality, embed.py --input NAME=FILE
    bands: tuple                    # default bands, in the autoencoder's channel order
    units: str                      # what the prepared values are
    open_raw: Callable
    prepare: Callable
    sampling: data.SamplingConfig   # Sec. III-B: its pretraining samples
    latent_dim: int                 # Sec. III-B
    objective: Callable             # its pretraining loss (Sec. III-B)
    fusion_centre_weight: float     # Sec. III-C: the Eq. 1 centre weight of its fusion term
    fusion_term: Callable           # its term of Eq. 8
    reference: bool = False         # True: its dates and grid are the fusion's (S2); else its frames are
    #                                 matched to those dates: the closest acquisition within --max-gap-days
    model: dict = field(default_factory=dict)   # AutoencoderConfig sizes that differ from the defaults
    add_flags: Callable = None      # its pretraining command's own flags: add_flags(parser)
    objective_from_flags: Callable = None       # (args) -> (objective, loss meta for the checkpoint)
    uses_mask: bool = False         # prepare reads --mask-var (a cloud mask)


MODALITIES = {}


def register(modality):
    """Add (or replace) an entry; returns it. Entries keep the order they were registered in."""
    MODALITIES[modality.name] = modality
    return modality


def get(name):
    """The entry of a modality name; CubeError naming the known ones."""
    if name not in MODALITIES:
        raise data.CubeError(f"unknown modality {name!r}; known: {', '.join(MODALITIES)} (modalities.register adds one)")
    return MODALITIES[name]


def fusion_order(names):
    """Modality names in the fusion model's order: registry order, the reference modality last
    (deepfeat.FusionConfig: the last one's dates are the time reference)."""
    entries = [get(n) for n in names]
    refs = [m.name for m in entries if m.reference]
    if len(names) > 1 and len(refs) != 1:
        raise data.CubeError(f"fusing {', '.join(names)} needs exactly one reference modality (its grid and "
                             f"dates are the embedding's), found {len(refs)}")
    return tuple([n for n in MODALITIES if n in names and n not in refs] + refs)


# ---------------------------------------------------------------------------------------------
# 2. Sentinel-1 and Sentinel-2 (Sec. II, III-B, III-C)
# ---------------------------------------------------------------------------------------------

def _prepare_s1(raw, bands, target=None, mask_var=None):
    return readers.prepare_s1(raw, bands, target=target)


def _prepare_s2(raw, bands, target=None, mask_var=None):
    return readers.prepare_s2(raw, bands, mask_var=mask_var)


def _add_s2_flags(parser):
    """S2's pretraining flags: the Eq. 5 objective (train_s2.py)."""
    parser.add_argument("--loss", choices=("hybrid", "balanced", "mae"), default=None,
                        help="hybrid: Eq. 5 (default); mae: the context-weighted MAE alone (lambdas 1, 0, 0; the "
                             "default with --quick, recipe.QUICK_S2_LOSS: Eq. 5 stalls at that budget, "
                             "docs/learning.md); balanced: Eq. 5's terms as lambda * log(term), each counted by its "
                             "relative change (losses.s2_loss)")
    parser.add_argument("--lambdas", type=float, nargs=3, default=None, metavar=("MAE", "SSIM", "SAM"),
                        help=f"Eq. 5 weights of the hybrid loss (default {' '.join(map(str, losses.S2_LAMBDAS))})")


# S2's objective at the --quick budget: the weighted MAE alone. Eq. 5 as written stalls there at a centre
# MAE between the constant spectrum and each pixel's temporal mean; so does any mix that keeps its SSIM
# (0.03) or SAM (0.74) term, whose gradients match or outweigh the MAE's (docs/learning.md).
QUICK_S2_LOSS = "mae"


def _s2_objective(args):
    """Sec. III-B, Eq. 5: the hybrid loss (--loss, --lambdas) -> (objective, its checkpoint meta)."""
    loss = args.loss or (QUICK_S2_LOSS if args.quick else "hybrid")
    if loss == "mae" and args.lambdas is not None:
        raise SystemExit("--lambdas sets the hybrid loss; --loss mae is lambdas 1 0 0 (give --loss hybrid)")
    lambdas = (1.0, 0.0, 0.0) if loss == "mae" else tuple(args.lambdas or losses.S2_LAMBDAS)
    objective = lambda *a: losses.s2_loss(*a, lambdas=lambdas, balanced=loss == "balanced")   # noqa: E731
    return objective, {"loss": loss, "lambdas": lambdas}


S1 = register(Modality(
    name="s1", bands=data.S1_BANDS, units="gamma0 in dB, scaled to 0-1 (readers.S1_DB_RANGE)",
    open_raw=readers.open_raw, prepare=_prepare_s1,
    # Sec. III-B: 11 of 40-frame sequences (temporal stride 40), patches every 15 px
    sampling=data.SamplingConfig(seq_len=40, t_stride=40, s_stride=15),
    latent_dim=2, objective=losses.s1_loss, fusion_centre_weight=1.5, fusion_term=losses.s1_loss,
    # two bands: a 128-wide token (8 channels x 4 x 4) instead of S2's 256, so its transformer costs a
    # quarter (embedding speed is set by the transformers, bench.py)
    model={"token_channels": 8}))

S2 = register(Modality(
    name="s2", bands=data.S2_BANDS, units="L2A surface reflectance", open_raw=readers.open_s2_raw,
    prepare=_prepare_s2,
    # Sec. III-B: 11 of 20-frame sequences (temporal stride 17), patches every 9 px; fusion samples the same way
    sampling=data.SamplingConfig(seq_len=20, t_stride=17, s_stride=9),
    latent_dim=9, objective=losses.s2_loss, fusion_centre_weight=1.75, fusion_term=losses.fusion_s2_loss,
    reference=True, add_flags=_add_s2_flags, objective_from_flags=_s2_objective, uses_mask=True))


# ---------------------------------------------------------------------------------------------
# 3. One area's files -> the model's input (Sec. III-C: every modality on the reference grid and dates)
# ---------------------------------------------------------------------------------------------

def assemble(raws, bands=None, mask_var=None, max_gap_days=6.0):
    """Raw inputs of one area (or one row block of it) -> what a model reads; the one assembly of
    training (load_training_cubes) and embedding (embed.CubeReader).

    raws {name: raw Dataset}; bands {name: bands} (default: each entry's). The reference modality
    (the only one, or the entry with reference=True) is prepared first: its grid and dates are the
    input's. Every other modality is prepared onto that grid and matched to those dates
    (data.match_dates: the closest acquisition within max_gap_days, NaN where none), its days the
    acquisitions used, so the model sees the real gaps. Returns (arrays {name: (T, C, H, W) float32},
    days {name: (T,)} (data.day_offsets), both in fusion_order, and the prepared reference cube).
    """
    names = fusion_order(list(raws))
    ref = names[-1]
    bands = {m: tuple((bands or {}).get(m) or get(m).bands) for m in names}
    ref_cube = get(ref).prepare(raws[ref], bands[ref], None, mask_var)
    arrays, days = {}, {}
    for m in names:
        if m == ref:
            arrays[m], days[m] = data.cube_array(ref_cube, bands[m]), data.day_offsets(ref_cube["time"])
            continue
        cube = get(m).prepare(raws[m], bands[m], ref_cube, mask_var)
        matched = data.match_dates(cube, ref_cube, max_gap_days, m, ref)
        arrays[m], days[m] = data.cube_array(matched, bands[m]), data.day_offsets(matched["source_time"])
    return arrays, days, ref_cube


def open_inputs(paths):
    """{name: path (or the files of one area)} -> {name: lazily opened raw Dataset}; the caller closes them."""
    return {m: get(m).open_raw(p) for m, p in paths.items()}


# ---------------------------------------------------------------------------------------------
# 4. Training cubes of a stage: files -> cubes -> splits (Sec. II)
# ---------------------------------------------------------------------------------------------

_RESOLUTION = re.compile(r"(.+)_(10|20|60)m$")        # X_10m.nc, X_20m.nc: one area, two files


def find_cubes(paths, names):
    """Expand files/folders into cube entries of the modalities `names`, sorted by name.

    One modality NAME: [X_NAME.nc ...] (a folder is scanned for *_NAME.nc; files are taken as given),
    where files named X_10m.nc and X_20m.nc (and X_60m.nc) become one entry (X_10m.nc, X_20m.nc): one
    area at two resolutions, combined by the reader. Several modalities: one {name: file} per area,
    X_NAME.nc paired by their common prefix X. A tuple or dict among `paths` is an entry already.
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    for m in names:
        get(m)
    paths = [paths] if isinstance(paths, (str, os.PathLike, dict)) else list(paths)
    suffixes = tuple(f"_{m}" for m in names)
    files, entries = [], []
    for p in paths:
        if isinstance(p, (tuple, dict)):
            entries.append({m: Path(f) for m, f in p.items()} if isinstance(p, dict) else tuple(map(Path, p)))
            continue
        p = Path(p)
        if p.is_dir() and p.suffix != ".zarr":
            found = sorted(f for s in suffixes for f in p.glob(f"*{s}.nc"))
            if not found:
                raise data.CubeError(f"{p}: no {' or '.join('*' + s + '.nc' for s in suffixes)} files found")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise data.CubeError(f"{p}: file or folder not found")
    if not files and not entries:
        raise data.CubeError("no cube files given (--cubes)")
    if len(names) == 1:
        areas = {}
        for f in sorted(set(files)):
            m = _RESOLUTION.fullmatch(f.stem)
            areas.setdefault((f.parent, m.group(1)) if m else f, []).append(f)
        entries += [tuple(group) if len(group) > 1 else group[0] for group in areas.values()]
    else:
        groups = {}
        for f in files:
            suffix = next((s for s in suffixes if f.stem.endswith(s)), None)
            if suffix is None:
                raise data.CubeError(f"{f}: fusing {', '.join(names)} needs files named "
                                     f"{', '.join('X' + s + '.nc' for s in suffixes)}")
            groups.setdefault((f.parent, f.stem[:-len(suffix)]), {})[suffix[1:]] = f
        for (folder, prefix), group in groups.items():
            for m in names:
                if m not in group:
                    raise data.CubeError(f"{folder / prefix}: incomplete set, {prefix}_{m}.nc is missing")
        entries += [{m: group[m] for m in names} for group in groups.values()]
    return sorted(entries, key=cube_name)


def cube_name(entry):
    """'folder/synth_0_s2.nc' -> 'synth_0'; the files of one area, or of one fusion set -> their prefix."""
    first = next(iter(entry.values())) if isinstance(entry, dict) else entry[0] if isinstance(entry, tuple) else entry
    stem = Path(first).stem
    m = _RESOLUTION.fullmatch(stem)
    if m:
        return m.group(1)
    suffix = next((f"_{n}" for n in MODALITIES if stem.endswith(f"_{n}")), None)
    return stem[:-len(suffix)] if suffix else stem


def _entry_paths(entry, names):
    """A cube entry -> {name: path or files of one area}."""
    if isinstance(entry, dict):
        return dict(entry)
    (name,) = names
    return {name: list(entry) if isinstance(entry, tuple) else entry}


def load_training_cubes(paths, names, bands=None, mask_var=None, max_gap_days=6.0):
    """Cubes ready for sampling: [{"name", "arrays": {m: (T, C, H, W)}, "days": {m: (T,)}}].

    `paths`: files/folders or entries (find_cubes) of the modalities `names`; each area through
    `assemble` (one modality: its own grid and dates; several: the reference's), validated for the
    reference modality's sampling (>= 11 dates, >= 15 x 15 px)."""
    names = (names,) if isinstance(names, str) else tuple(names)
    cubes = []
    for entry in find_cubes(paths, names):
        raws = open_inputs(_entry_paths(entry, names))
        try:
            arrays, days, ref_cube = assemble(raws, bands, mask_var, max_gap_days)
        finally:
            for raw in raws.values():
                raw.close()
        ref = get(fusion_order(names)[-1])
        data.validate_cube(ref_cube, (bands or {}).get(ref.name) or ref.bands, ref.sampling.n_frames,
                           ref.sampling.patch, name=cube_name(entry))
        cubes.append({"name": cube_name(entry), "arrays": arrays, "days": days})
    return cubes


def load_splits(paths, names, seed, bands=None, mask_var=None, tile=None, cache=None):
    """Find cubes, split them by cube (Sec. II: never one cube in two splits), load each split.

    Fewer than 3 cubes (one real tile, say) cannot fill train, val and test: every cube is then cut
    into tiles TILE_GAP px apart (data.tile_cube) and the tiles are split instead; `tile` (px) forces
    that with any number of cubes. Cubes are read one at a time. With `cache` (a folder) each prepared
    cube is written there once (cache_cube) and returned as files, so memory does not grow with the
    number of cubes (recipe.PatchBatches reads only the patches of a batch); without it, the arrays
    stay in memory. Prints the split; returns ({split: [cube]}, {split: [name]})."""
    names = (names,) if isinstance(names, str) else tuple(names)
    entries = find_cubes(paths, names)
    by_tile = tile is not None or len(entries) < 3
    size = tile or data.TILE_SIZE
    cube_names = [cube_name(e) for e in entries]
    twice = sorted({n for n in cube_names if cube_names.count(n) > 1})
    if twice:
        raise data.CubeError(f"two cubes are named {twice[0]!r} (in different folders?): "
                             f"{', '.join(str(e) for e in entries if cube_name(e) == twice[0])}; names decide the split")
    by_name = {}
    for k, entry in enumerate(entries, 1):
        if cache is None:
            (cube,) = load_training_cubes([entry], names, bands, mask_var)
            by_name.update((c["name"], c) for c in (data.tile_cube(cube, size) if by_tile else [cube]))
        else:
            prepared = cache_cube(entry, names, bands, mask_var, size if by_tile else None, cache)
            by_name.update((c["name"], c) for c in prepared)
            print(f"[{k}/{len(entries)}] {cube_name(entry)} ready in {cache}", flush=True)
    if by_tile:
        if len(by_name) < 3:
            raise data.CubeError(f"{len(entries)} cube(s) give {len(by_name)} tile(s) of {size} x {size} px "
                                 f"({data.TILE_GAP} px apart): train, val and test need 3; give more cubes or a "
                                 "smaller --tile")
        print(f"{len(entries)} cube(s): split by {len(by_name)} tiles of {size} x {size} px, {data.TILE_GAP} px apart")
    splits = data.split_cubes(list(by_name), seed=seed)
    print("split: " + "; ".join(f"{k} {v}" for k, v in splits.items()))
    return {split: [by_name[n] for n in members] for split, members in splits.items()}, splits


CACHE_FORMAT = "deepfeat-cube-cache-v3"


def cache_cube(entry, names, bands, mask_var, tile, cache):
    """One cube entry prepared once into `cache` -> its cubes (tiles when `tile` px) as files.

    Folder cache/NAME-KEY/ holds one (T, C, H, W) float32 .npy per modality and cube, the day
    offsets, and manifest.json, written last (data.write_atomic): a folder without it is unfinished
    and prepared again. KEY hashes what the preparation depends on (modalities, bands, mask, tile size,
    each source file's path, size and mtime), so a changed file or flag never reuses stale arrays (a
    change to the preparation code itself needs a new CACHE_FORMAT). Returned cubes: {"name",
    "arrays": {m: Path}, "clear": {m: Path} (data.clear_map, (T, H, W) bool: the patch index reads it
    instead of every band), "days": {m: (T,)}}.
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    sources = [Path(p) for p in (entry.values() if isinstance(entry, dict) else
                                 entry if isinstance(entry, tuple) else (entry,))]
    key = json.dumps([CACHE_FORMAT, list(names), {m: list(b) for m, b in (bands or {}).items()}, mask_var, tile,
                      [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in sources]])
    folder = Path(cache) / f"{cube_name(entry)}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        (cube,) = load_training_cubes([entry], names, bands, mask_var)
        written = []
        for k, c in enumerate(data.tile_cube(cube, tile) if tile else [cube]):
            for m in c["arrays"]:
                for suffix, values in (("", c["arrays"][m]), ("_days", c["days"][m]),
                                       ("_clear", data.clear_map(c["arrays"][m]))):
                    data.write_atomic(folder / f"{k}_{m}{suffix}.npy",
                                      lambda tmp: np.save(tmp, np.ascontiguousarray(values)))
            written.append({"name": c["name"], "index": k, "modalities": list(c["arrays"])})
        data.write_atomic(manifest, lambda tmp: tmp.write_text(json.dumps({"key": key, "cubes": written})))
    return [{"name": c["name"],
             "arrays": {m: folder / f"{c['index']}_{m}.npy" for m in c["modalities"]},
             "clear": {m: folder / f"{c['index']}_{m}_clear.npy" for m in c["modalities"]},
             "days": {m: np.load(folder / f"{c['index']}_{m}_days.npy") for m in c["modalities"]}}
            for c in json.loads(manifest.read_text())["cubes"]]
