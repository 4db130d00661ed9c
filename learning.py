"""learning.py: does the method learn? Learning curves against trivial predictors of the centre.

A reconstruction error means little alone: Sec. IV-A reports the centre MAE of the autoencoders, and
this script puts it on a curve, step by step, beside what needs no learning at all, computed on the
SAME patches (the stage's own val and test batches):
  constant      the training split's mean spectrum (one spectrum for every patch);
  series mean   the same pixel averaged over every other date of its cube (a whole year);
  window mean   the same pixel averaged over the patch's other frames (~100 days around the centre);
  nearest date  the same pixel on the clear frame nearest in days to the centre date (centre left out);
  PCA-k         the centre spectrum through a k-component PCA of the training spectra, k = the latent
                size (what a linear code of the same size keeps; exact for S1, 2 of 2 bands).
The autoencoder sees the centre observation, the first three predictors do not: a model below them
has learned to carry the centre through its bottleneck. Whether it does is measured directly too:
  centre Jacobian  nudge one band of the central pixel-date and see how the reconstructed centre moves
                   (finite differences, eval mode): a model that carries its centre gives the identity
                   (singular values 1), one that rebuilds the centre from its context gives ~0;
  centre / context the centre MAE over the context MAE (Sec. IV-A reports 0.26 for S2, 0.02 for S1).
Every run is also scored on cubes of seeds that no training run uses (UNSEEN_SEEDS), and a second
synthetic world of independent pixels (synthetic.independent_pixels), where nothing but the centre
predicts the centre, tests in minutes whether a recipe can pass a pixel at all. It also runs the
ablations that explain why Eq. 5 as written stalls here (docs/learning.md), and measures each Eq. 5
term's gradient.

    python learning.py --quick                  # sample_data + real S2 Romania / S1 Myanmar, ~75 min on 2 cores
    python learning.py --quick --runs s2 s1     # some runs only (--list names them)
    python learning.py --runs s2 --steps 20000 --device cuda --work runs/learning_gpu   # full size, on a GPU

Every run is a stage command (train_s1.py, train_s2.py, train_fusion.py with --log-test) into
WORK/<run>/, reused when its command is unchanged: an interrupted study resumes. Writes
docs/learning.md and docs/learning.png (with --quick; WORK otherwise).
"""
import contextlib
import csv
import glob
import io
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import data
import losses
import modalities
import recipe
import synthetic
import train
import train_fusion
import train_s1
import train_s2

ROOT = Path(__file__).resolve().parent
REALDATA = ROOT.parent / "shared" / "realdata"
ROMANIA = sorted(glob.glob(str(REALDATA / "s2_l2a_romania" / "*.nc")))
MYANMAR = [str(REALDATA / "s1_grd_myanmar" / "s1_vv_vh_myanmar_2014_2018.nc")]
ROMANIA_BANDS = ("B02", "B03", "B04", "B08", "B8A", "B11")     # the six bands its two files hold
ABLATION_STEPS = 800                                           # optimiser steps of the ablations and real areas
INDEPENDENT_STEPS = 1500                                       # optimiser steps in the independent-pixels world
# Cube seeds no training run, test, benchmark or sample cube uses (sample data 0-4, tower 100, tests below
# 1000, bench.py 1000+): the cubes every model is also judged on, never trained or tuned on.
UNSEEN_SEEDS = (7001, 7002, 7003)
INDEPENDENT_SEEDS = (7101, 7102, 7103, 7104, 7105)             # the independent world's training cubes
INDEPENDENT_UNSEEN_SEEDS = (7201, 7202, 7203)
WORLD_SIZE = 48                                                # px per side of the generated cubes
PAPER_RATIO = {"s2": 0.0037 / 0.0141, "s1": 0.0006 / 0.0319}   # Sec. IV-A: val centre / context MAE


# ----------------------------------------------------------------------------------------------
# 1. Trivial predictors of the centre spectrum
# ----------------------------------------------------------------------------------------------

def pca_basis(spectra, k):
    """Mean (C,) and leading k principal axes (C, k) of clear spectra (N, C), in float64."""
    spectra = spectra.double()
    mean = spectra.mean(0)
    return mean, torch.linalg.eigh(torch.cov((spectra - mean).T))[1][:, -k:]


def baseline_centres(x, days, mean, basis, series_mean=None):
    """The centre spectrum (B, C) of each patch as the trivial predictors give it.

    constant       the training mean spectrum `mean`;
    series_mean    `series_mean` (B, C) as given (series_means: the pixel over its cube's other dates);
    window_mean    the centre pixel's mean over the patch's other frames, band by band (NaN skipped;
                   `mean` where a band has no other valid frame);
    nearest        the centre pixel on the clear frame (all bands valid) nearest in DAYS to the centre
                   date, the centre frame itself excluded (`mean` when no other frame is clear);
    pca            the centre projected on the principal axes `basis` and back (missing bands taken
                   as `mean` before projecting).
    x (B, T, C, H, W) with NaN, days (B, T)."""
    B, T, C, H, W = x.shape
    pixel = x[:, :, :, H // 2, W // 2].double()                                 # (B, T, C) the centre pixel
    centre = pixel[:, T // 2]                                                   # (B, C)
    filled = torch.where(torch.isfinite(centre), centre, mean)
    pca = (filled - mean) @ basis @ basis.T + mean
    others = torch.cat([pixel[:, :T // 2], pixel[:, T // 2 + 1:]], dim=1)       # (B, T-1, C)
    temporal = others.nanmean(1)                                                # (B, C)
    temporal = torch.where(torch.isfinite(temporal), temporal, mean)
    clear = torch.isfinite(pixel).all(2)                                        # (B, T) clear centre pixel
    clear[:, T // 2] = False
    gap = torch.where(clear, (days - days[:, T // 2:T // 2 + 1]).abs(), torch.inf)
    nearest = pixel[torch.arange(B), gap.argmin(1)]                             # (B, C)
    nearest = torch.where(clear.any(1, keepdim=True), nearest, mean)
    found = {"constant": mean.expand(B, C), "window_mean": temporal, "nearest": nearest, "pca": pca}
    if series_mean is not None:
        found["series_mean"] = torch.where(torch.isfinite(series_mean), series_mean.double(), mean)
    return {name: v.float() for name, v in found.items()}


def series_means(batches, modality):
    """For the batches of a PatchBatches (unshuffled), each patch's centre pixel averaged over every
    date of its cube but the centre date, band by band -> one (B, C) tensor per batch."""
    maps = {}                                        # the current cube: {k: (sums (C, H, W), counts, array)}
    P, F = batches.sampling.patch, batches.sampling.n_frames
    for i in range(len(batches)):
        idx = batches.order[i * batches.batch_size:(i + 1) * batches.batch_size]
        out = []
        for k, f, y, x in zip(batches.cube[idx], batches.frames[idx], batches.y0[idx], batches.x0[idx]):
            if k not in maps:
                a = np.asarray(recipe.open_array(batches.cubes[k]["arrays"][modality]), dtype=np.float64)
                maps = {k: (np.nansum(a, 0), np.isfinite(a).sum(0), a)}      # (C, H, W) sums and counts
            total, n, a = maps[k]
            yc, xc, t = y + P // 2, x + P // 2, f[F // 2]
            v = a[t, :, yc, xc]
            ok = np.isfinite(v)
            out.append((total[:, yc, xc] - np.where(ok, v, 0)) / np.maximum(n[:, yc, xc] - ok, 1))
        yield torch.from_numpy(np.array(out))


def training_spectra(batches, modality, n_batches=20):
    """Clear spectra (N, C) of every pixel of the first n training batches (None: all) of one modality."""
    chunks = []
    for batch in itertools.islice(batches(0), n_batches):
        x = batch[modality][0]                                                  # (B, T, C, H, W)
        chunks.append(x.permute(0, 1, 3, 4, 2).reshape(-1, x.shape[2]))
    spectra = torch.cat(chunks)
    return spectra[torch.isfinite(spectra).all(1)]


def centre_prediction(x, centre):
    """A predictor of the centre alone as a reconstruction: x (B, T, C, H, W) with NaN as 0 and the
    central pixel-date replaced by `centre` (B, C), for the centre metrics (which read only it)."""
    B, T, C, H, W = x.shape
    pred = torch.nan_to_num(x)
    pred[:, T // 2, :, H // 2, W // 2] = centre
    return pred


@torch.no_grad()
def centre_scores(batches, modality, mean, basis, models=None, series=None):
    """Centre MAE and centre SAM of each predictor over `batches` -> {(method, metric): value}.
    models {method: predict(batch) -> reconstruction of `modality` (B, T, C, H, W)}: trained models,
    scored with their Eq. 1 context MAE too; series yields each batch's series_mean (series_means)."""
    totals, count = {}, 0
    weights = losses.context_weights()
    for batch, series_mean in zip(batches, series if series is not None else itertools.repeat(None)):
        x, days = batch[modality]                                               # (B, T, C, H, W), (B, T)
        B = x.shape[0]
        valid = torch.isfinite(x)
        preds = {method: predict(batch) for method, predict in (models or {}).items()}
        for method, pred in preds.items():
            totals[method, "context_mae"] = (totals.get((method, "context_mae"), 0.0)
                                             + float(losses.context_mae(pred, x, weights, valid)) * B)
        for method, centre in baseline_centres(x, days, mean, basis, series_mean).items():
            preds[method] = centre_prediction(x, centre)
        for method, pred in preds.items():
            for metric, fn in (("centre_mae", losses.centre_mae), ("centre_sam", losses.centre_sam)):
                totals[method, metric] = totals.get((method, metric), 0.0) + float(fn(pred, x, valid)) * B
        count += B
    return {key: v / max(count, 1) for key, v in totals.items()}


@torch.no_grad()
def centre_jacobian(predict, batches, modality, eps=0.02, max_patches=256):
    """How the reconstructed centre follows the observed one: the (C, C) Jacobian d recon_centre /
    d x_centre (row: band out, column: band nudged) of the central pixel-date, by finite differences
    of `eps` in every band, averaged over the first `max_patches` patches of `batches` (clear centres).
    predict(batch) -> reconstruction (B, T, C, H, W) of `modality`, the model in eval mode.
    Returns (J, its singular values (C,) in descending order, det J)."""
    total, n = 0.0, 0
    for batch in batches:
        x, days = batch[modality]                                               # (B, T, C, H, W)
        B, T, C, H, W = x.shape
        base = predict(batch)[:, T // 2, :, H // 2, W // 2]                     # (B, C)
        columns = []
        for c in range(C):
            nudged = x.clone()
            nudged[:, T // 2, c, H // 2, W // 2] += eps
            moved = predict({**batch, modality: (nudged, days)})[:, T // 2, :, H // 2, W // 2]
            columns.append((moved - base) / eps)                                # (B, C) d out / d x_c
        total = total + torch.stack(columns, dim=-1).double().sum(0)            # (C, C)
        n += B
        if n >= max_patches:
            break
    J = total / max(n, 1)
    return J, torch.linalg.svdvals(J), float(torch.linalg.det(J))


def principal_gains(J, spectra, share=0.99):
    """The centre Jacobian seen in the data's own directions: singular values of U^T J U, U the
    leading principal axes of the training spectra (N, C) that hold `share` of their variance. A
    model that carries every direction the data varies in gives 1s here even where it (rightly)
    drops nudges off the data, which the singular values of J alone count as lost."""
    mean, axes = pca_basis(spectra, spectra.shape[1])                                  # (C,), (C, C) ascending
    axes = axes.flip(1)                                                                # leading first
    variance = ((spectra.double() - mean) @ axes).var(0)                               # (C,) along each axis
    k = int(np.searchsorted((variance.cumsum(0) / variance.sum()).numpy(), share)) + 1
    U = axes[:, :k]                                                                    # (C, k)
    return torch.linalg.svdvals(U.T @ J @ U)


def unseen_batches(folder, names, bands, sampling, batch_size, seed, cache):
    """Val-style batches (unshuffled, seed `seed`) of every cube in `folder`: cubes no run trained on."""
    key = names[-1]
    with contextlib.redirect_stdout(io.StringIO()):
        cubes = [c for entry in modalities.find_cubes(folder, names)
                 for c in modalities.cache_cube(entry, names, bands, None, None, cache)]
    return recipe.patch_batches(cubes, sampling, key, batch_size, seed, shuffle=False)(0)


def stage_data(script, argv, out, unseen=None):
    """The batches a finished stage run trained and scored on (same flags, same seed, same split),
    and its model: ({"train", "val", "test"}: batches, model); with `unseen` (a folder of cubes no
    run trained on) also "new": the same sampling on those cubes."""
    parser = data.ArgumentParser()
    recipe.add_common_args(parser, out=str(out))
    args, _ = parser.parse_known_args(argv)
    kind = "fusion" if script is train_fusion else "autoencoder"
    model, _ = train.load_model(out / "checkpoint.pt", kind)
    aes = dict(model.autoencoders) if kind == "fusion" else {model.cfg.modality: model}
    names = tuple(aes)
    key = names[-1]                                           # the reference modality (fusion: the last)
    cfg, sampling, _ = recipe.start_stage(args, modalities.get(key).sampling, kind)
    with contextlib.redirect_stdout(io.StringIO()):
        cubes, _ = modalities.load_splits(args.cubes, names, cfg.split_seed, {m: ae.cfg.bands for m, ae in aes.items()},
                                          tile=args.tile, cache=recipe.cache_dir(args))
    batches = recipe.split_batches(cubes, sampling, key, cfg)
    if unseen is not None:
        new = unseen_batches(unseen, names, {m: ae.cfg.bands for m, ae in aes.items()}, sampling, cfg.batch_size,
                             cfg.split_seed, recipe.cache_dir(args))
        batches["new"] = lambda: new
    return batches, model


def baselines_of_run(script, argv, out, unseen=None):
    """{split: {modality: {(method, metric): value}}} for val, test and (with `unseen`, a folder of cubes
    no run trained on) new: the trained model and the trivial predictors on the run's own patches (PCA
    fitted on its training patches; for a fusion run also "own": each modality's own frozen autoencoder),
    plus {"jacobian": {split: {modality: (J, singular values, det, principal_gains)}}} for test and new."""
    batches, model = stage_data(script, argv, out, unseen)
    if script is train_fusion:
        modalities = list(model.autoencoders)
        k = {m: model.cfg.fused_dim for m in modalities}
    else:
        modalities, k = [model.cfg.modality], {model.cfg.modality: model.cfg.latent_dim}
    result = {split: {} for split in ("val", "test", "new") if split in batches}
    result["jacobian"] = {split: {} for split in ("test", "new") if split in batches}
    for m in modalities:
        spectra = training_spectra(batches["train"], m)
        mean, basis = pca_basis(spectra, min(k[m], spectra.shape[1]))
        if script is train_fusion:
            def predict(batch, m=m):
                return model(batch)[0][m]

            def own(batch, m=m):                                  # the modality's own frozen autoencoder
                return model.autoencoders[m](*batch[m])[0]
            models = {"model": predict, "own": own}
        else:
            def predict(batch):
                return model(*batch[m])[0]
            models = {"model": predict}
        for split in result["jacobian"]:
            J, sv, det = centre_jacobian(predict, batches[split](), m)
            result["jacobian"][split][m] = (J, sv, det, principal_gains(J, spectra))
        for split in ("val", "test", "new"):
            if split in result:
                loader = batches[split]()
                result[split][m] = centre_scores(loader, m, mean, basis, models, series_means(loader.dataset, m))
    return result


STAGE_SCRIPTS = {"train_s1.py": train_s1, "train_s2.py": train_s2, "train_fusion.py": train_fusion}


def score_run(out):
    """A finished run's folder -> baselines_of_run on its own test patches, the command read from its
    checkpoint's meta (so any run of train_s1.py, train_s2.py or train_fusion.py can be scored)."""
    command = train.load_checkpoint(Path(out) / "checkpoint.pt")["meta"]["command"]
    if command[0] not in STAGE_SCRIPTS:
        raise data.InputError(f"{out}: a run of {command[0]}; --score reads runs of {', '.join(STAGE_SCRIPTS)}")
    return baselines_of_run(STAGE_SCRIPTS[command[0]], command[1:], Path(out))


def score_lines(name, result, split="test"):
    """One line per modality: the model's centre MAE beside the trivial predictors', the centre / context
    ratio (the paper's in brackets) and the centre singular values."""
    lines = []
    for m, b in result[split].items():
        sv = result["jacobian"][split][m][1]
        lines.append(f"{name} {m.upper()} {split}: centre MAE model {b['model', 'centre_mae']:.4f} | "
                     + " | ".join(f"{label} {b[k, 'centre_mae']:.4f}" for k, label in BASELINES.items())
                     + f" | centre / context {b['model', 'centre_mae'] / b['model', 'context_mae']:.2f} "
                       f"(paper {PAPER_RATIO.get(m, float('nan')):.2f}) | centre singular values "
                     + ", ".join(f"{v:.2f}" for v in sv[:3]) + (", ..." if len(sv) > 3 else ""))
    return lines


# ----------------------------------------------------------------------------------------------
# 2. Why Eq. 5 stalls: each term's share of the gradient
# ----------------------------------------------------------------------------------------------

def term_gradient_norms(out, argv, n_batches=5, lambdas=losses.S2_LAMBDAS):
    """The lambda-weighted gradient norm of each Eq. 5 term (MAE, SSIM, SAM) over all trainable
    parameters of the S2 checkpoint in `out`, averaged over n training batches -> {term: norm}."""
    batches, model = stage_data(train_s2, argv, out)
    model.train()
    weights = losses.context_weights()
    norms = {"weighted_mae": 0.0, "ssim": 0.0, "sam": 0.0}
    for batch, _ in zip(batches["train"](0), range(n_batches)):
        x, days = batch["s2"]
        valid = torch.isfinite(x)
        recon, _ = model(x, days)
        terms = {"weighted_mae": losses.weighted_mae(recon, x, weights, valid),
                 "ssim": losses.ssim_loss(recon, x, valid), "sam": losses.sam(recon, x, valid, weights)}
        for lam, (name, term) in zip(lambdas, terms.items()):
            grads = torch.autograd.grad(lam * term, list(model.parameters()), retain_graph=True, allow_unused=True)
            norms[name] += torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None)).item() / n_batches
    return norms


# ----------------------------------------------------------------------------------------------
# 3. The runs: each a stage command, run once
# ----------------------------------------------------------------------------------------------

def is_done(out, argv):
    """True when the folder OUT holds a done.json recording exactly this command (argv with --out)."""
    marker = Path(out) / "done.json"
    return marker.is_file() and json.loads(marker.read_text()) == argv


def mark_done(out, argv):
    """Record that the command argv finished into OUT (data.write_atomic: never half written)."""
    data.write_atomic(Path(out) / "done.json", lambda tmp: tmp.write_text(json.dumps(argv)))


def run_once(script, out, argv, out_arg=None):
    """`script.main([*argv, "--out", out_arg or out])` unless OUT is_done with that command (an
    interrupted study resumes); its stdout goes to OUT/run.log."""
    out = Path(out)
    argv = [*argv, "--out", str(out_arg or out)]
    if is_done(out, argv):
        return
    out.mkdir(parents=True, exist_ok=True)
    tic = time.time()
    with open(out / "run.log", "w") as log, contextlib.redirect_stdout(log):
        script.main(argv)
    mark_done(out, argv)
    print(f"    {out.name}: {time.time() - tic:.0f} s", flush=True)


def study_runs(work):
    """name -> (stage script, its flags beyond the common ones, what the run shows, its world). The
    default recipe of each stage (its --quick steps, or --steps), then the ablations: one change at a time
    against the default recipe at the same ABLATION_STEPS, the independent-pixels world (INDEPENDENT_STEPS,
    the recipe and the paper's architecture) and the real areas. World "smooth": the cubes of --cubes,
    judged also on UNSEEN_SEEDS; "independent": independent_world(work); "real": a real area."""
    short = ["--max-steps", str(ABLATION_STEPS)]
    indep = ["--cubes", str(Path(work) / "worlds" / "independent"), "--max-steps", str(INDEPENDENT_STEPS)]
    runs = {
        "s1": (train_s1, [], "S1 autoencoder, the default recipe", "smooth"),
        "s2": (train_s2, [], "S2 autoencoder, the default recipe", "smooth"),
        "fusion": (train_fusion, ["--s1-checkpoint", str(work / "s1" / "checkpoint.pt"),
                                  "--s2-checkpoint", str(work / "s2" / "checkpoint.pt")],
                   "fusion of the frozen s1 and s2 runs into the 7-d embedding", "smooth"),
        "s2_independent": (train_s2, indep, "S2 in the independent-pixels world, the default recipe", "independent"),
        "s2_independent_paper": (train_s2, [*indep, "--no-centre-path"],
                                 "S2 in the independent-pixels world, the paper's architecture", "independent"),
        "s1_independent": (train_s1, indep, "S1 in the independent-pixels world, the default recipe", "independent"),
        "s1_independent_paper": (train_s1, [*indep, "--no-centre-path"],
                                 "S1 in the independent-pixels world, the paper's architecture", "independent"),
        "s1_short": (train_s1, short, "S1, the default recipe", "smooth"),
        "s1_paper_arch": (train_s1, [*short, "--no-centre-path"], "S1, the paper's architecture (no centre path)",
                          "smooth"),
        "s1_plateau": (train_s1, [*short, "--schedule", "plateau"], "S1, the authors' plateau schedule", "smooth"),
        "s2_short": (train_s2, short, "S2, the default recipe (weighted MAE)", "smooth"),
        "s2_paper_arch": (train_s2, [*short, "--no-centre-path"], "S2, the paper's architecture (no centre path)",
                          "smooth"),
        "s2_plateau": (train_s2, [*short, "--schedule", "plateau"], "S2, the authors' plateau schedule", "smooth"),
        "s2_eq5": (train_s2, [*short, "--loss", "hybrid"], "S2, Eq. 5 as written (lambdas 0.23, 0.03, 0.74)", "smooth"),
        "s2_balanced": (train_s2, [*short, "--loss", "balanced"], "S2, Eq. 5 with each term as lambda log(term)",
                        "smooth"),
        "s2_mae_ssim": (train_s2, [*short, "--loss", "hybrid", "--lambdas", "0.23", "0.03", "0"],
                        "S2, Eq. 5 without its SAM term (0.23 MAE + 0.03 SSIM)", "smooth"),
    }
    if ROMANIA:
        runs["romania_s2"] = (train_s2, [*short, "--cubes", *ROMANIA, "--bands", *ROMANIA_BANDS],
                              "real S2 L2A, Romania (10 m + 20 m files, 6 bands, 9 tiles)", "real")
    if Path(MYANMAR[0]).is_file():
        runs["myanmar_s1"] = (train_s1, [*short, "--cubes", *MYANMAR], "real S1 GRD, Myanmar (30 m, 9 tiles)", "real")
    return runs


def world_folder(folder, seeds, world):
    """`folder` holding the synthetic cubes of `seeds` (synthetic.make_cubes, one year, WORLD_SIZE px),
    written once: a folder that has them all is reused as it is (its files' times key the cache)."""
    folder = Path(folder)
    if not all((folder / f"synth_{s}_{m}.nc").is_file() for s in seeds for m in ("s1", "s2")):
        synthetic.make_cubes(folder, seeds, WORLD_SIZE, world=world)
    return folder


def independent_world(work):
    """The independent-pixels world's training cubes (INDEPENDENT_SEEDS) in WORK/worlds/independent."""
    return world_folder(Path(work) / "worlds" / "independent", INDEPENDENT_SEEDS, "independent")


def unseen_world(work, world):
    """Cubes no run trains on, of the run's world: UNSEEN_SEEDS or INDEPENDENT_UNSEEN_SEEDS; None for real areas."""
    if world == "real":
        return None
    seeds = INDEPENDENT_UNSEEN_SEEDS if world == "independent" else UNSEEN_SEEDS
    return world_folder(Path(work) / "worlds" / f"{world}_unseen", seeds, world)


def read_log(out):
    """OUT/log.csv -> {column: np.array}."""
    with open(Path(out) / "log.csv") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) if r[k] else np.nan for r in rows]) for k in rows[0]}


# ----------------------------------------------------------------------------------------------
# 4. The page: docs/learning.md and docs/learning.png
# ----------------------------------------------------------------------------------------------

BASELINES = {"constant": "constant", "series_mean": "series mean", "window_mean": "window mean",
             "nearest": "nearest date", "pca": "PCA-k"}


def plot_curves(results, path):
    """One panel per run and modality: val (dashed) and test (solid) centre MAE against the step
    (log axis), the trivial predictors of the test patches as horizontal lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    panels = [(name, m) for name, r in results.items() for m in r["baselines"]["test"]]
    cols = 4
    fig, axes = plt.subplots(-(-len(panels) // cols), cols, figsize=(4 * cols, 3 * -(-len(panels) // cols)),
                             squeeze=False)
    for ax, (name, m) in zip(axes.flat, panels):
        log, suffix = results[name]["log"], ("" if results[name]["kind"] != "fusion" else f"_{m}")
        for split, style in (("val", "--"), ("test", "-")):
            ax.loglog(log["step"], log[f"{split}_centre_mae{suffix}"], style, color="k", label=f"model, {split}")
        for (method, label), color in zip(BASELINES.items(), ("C0", "C1", "C2", "C3", "C4")):
            ax.axhline(results[name]["baselines"]["test"][m][method, "centre_mae"], color=color, lw=1, label=label)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{name}: {m.upper()} centre MAE", fontsize=9)
        ax.set_xlabel("optimiser step")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    data.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=90))
    plt.close(fig)


def markdown(results, grads, header):
    """The page: one table row per run and modality, then the gradient shares of Eq. 5."""
    lines = [header, "", "![learning curves](learning.png)", "",
             "| run | what it shows | steps | val centre MAE | test centre MAE | test: constant | series mean "
             "| window mean | nearest date | PCA-k | model / series mean | test centre SAM |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for m, b in r["baselines"]["test"].items():
            val = r["baselines"]["val"][m]["model", "centre_mae"]
            test = b["model", "centre_mae"]
            lines.append(f"| {name} | {r['what']} ({m.upper()}) | {int(r['log']['step'][-1])} | {val:.4f} | {test:.4f} | "
                         + " | ".join(f"{b[k, 'centre_mae']:.4f}" for k in BASELINES)
                         + f" | {test / b['series_mean', 'centre_mae']:.2f} | {b['model', 'centre_sam']:.4f} |")
    lines += ["", *centre_table(results), "", *findings(results, grads), "", *ablations(results)]
    if grads:
        lines += ["", "Each Eq. 5 term's lambda-weighted gradient norm over all parameters, at the end of the run "
                  "(5 training batches, train mode):", "",
                  "| checkpoint | MAE (0.23) | SSIM (0.03) | SAM (0.74) | SSIM / MAE | SAM / MAE |", "|---|---|---|---|---|---|"]
        for name, g in grads.items():
            lines.append(f"| {name} | {g['weighted_mae']:.4f} | {g['ssim']:.4f} | {g['sam']:.4f} | "
                         f"{g['ssim'] / g['weighted_mae']:.1f} | {g['sam'] / g['weighted_mae']:.1f} |")
    return "\n".join(lines) + "\n"


def centre_table(results):
    """Does the centre get through? Per run, modality and split (test: the run's own test cubes; new:
    cubes of seeds no run trains on): centre and context MAE, their ratio beside the paper's, the
    trivial predictors and the centre Jacobian's singular values and determinant."""
    lines = ["## Does the centre get through?", "",
             "Centre Jacobian: nudge one band of the central pixel-date by 0.02, see how the reconstructed centre "
             "moves (eval mode, 256 patches): singular values 1 = the centre is carried, 0 = rebuilt from its context. "
             "In the data's directions: the same Jacobian in the principal axes holding 99 % of the training spectra's "
             "variance (principal_gains): a nudge off the data may rightly be dropped. "
             f"New cubes: seeds {', '.join(map(str, UNSEEN_SEEDS))} (independent world: "
             f"{', '.join(map(str, INDEPENDENT_UNSEEN_SEEDS))}), which no run trains on.", "",
             "| run | split | centre MAE | context MAE | centre / context (paper) | constant | window mean "
             "| nearest date | PCA-k | centre singular values | det | in the data's directions |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for split, by_m in r["baselines"]["jacobian"].items():
            for m, (_, sv, det, gains) in by_m.items():
                b = r["baselines"][split][m]
                ratio = b["model", "centre_mae"] / b["model", "context_mae"]
                lines.append(f"| {name} ({m.upper()}) | {split} | {b['model', 'centre_mae']:.4f} | "
                             f"{b['model', 'context_mae']:.4f} | {ratio:.2f} ({PAPER_RATIO.get(m, float('nan')):.2f}) | "
                             + " | ".join(f"{b[k, 'centre_mae']:.4f}" for k in ("constant", "window_mean", "nearest", "pca"))
                             + f" | {', '.join(f'{v:.2f}' for v in sv[:3])}{', ...' if len(sv) > 3 else ''} | {det:.2g} | "
                             + ", ".join(f"{v:.2f}" for v in gains) + " |")
    return lines


def centre_targets(results):
    """The recipe's targets on new cubes, each with its numbers and whether it holds."""
    def new(name, m):
        return results[name]["baselines"]["new"][m]

    def sv(name, m):
        return results[name]["baselines"]["jacobian"]["new"][m][1]

    def gains(name, m):
        return results[name]["baselines"]["jacobian"]["new"][m][3]

    def mae(name, m):
        return new(name, m)["model", "centre_mae"]
    checks = []
    if "s2" in results:
        b, v = new("s2", "s2"), sv("s2", "s2")
        checks += [(f"S2 centre MAE {mae('s2', 's2'):.4f} below the window mean {b['window_mean', 'centre_mae']:.4f}",
                    mae("s2", "s2") < b["window_mean", "centre_mae"]),
                   (f"S2 centre MAE at most 1.5 x the nearest clear date ({mae('s2', 's2') / b['nearest', 'centre_mae']:.2f} x)",
                    mae("s2", "s2") <= 1.5 * b["nearest", "centre_mae"]),
                   (f"S2 top three centre singular values >= 0.5 ({', '.join(f'{x:.2f}' for x in v[:3])}; in the "
                    f"data's directions {', '.join(f'{x:.2f}' for x in gains('s2', 's2'))})",
                    bool((v[:3] >= 0.5).all()))]
    if "s1" in results:
        b, v = new("s1", "s1"), sv("s1", "s1")
        checks += [(f"S1 both centre singular values >= 0.25 ({', '.join(f'{x:.2f}' for x in v)})", bool((v >= 0.25).all())),
                   (f"S1 centre MAE {mae('s1', 's1'):.4f} below the nearest date {b['nearest', 'centre_mae']:.4f}",
                    mae("s1", "s1") < b["nearest", "centre_mae"])]
    if "fusion" in results:
        for m in ("s2", "s1"):
            ratio = mae("fusion", m) / new("fusion", m)["own", "centre_mae"]
            checks.append((f"fused 7-d {m.upper()} centre MAE {mae('fusion', m):.4f} within 1.25 x its own autoencoder's "
                           f"on the same patches ({ratio:.2f} x)", ratio <= 1.25))
    for name in ("s2_independent", "s1_independent"):
        if name in results:
            m = name[:2]
            v = sv(name, m)
            checks.append((f"independent world, {m.upper()}: centre MAE {mae(name, m):.4f} against the constant "
                           f"{new(name, m)['constant', 'centre_mae']:.4f}; centre singular values "
                           f"{', '.join(f'{x:.2f}' for x in v)}", None))
    return [f"- {text}: {'holds' if ok else 'does not hold'}" if ok is not None else f"- {text}" for text, ok in checks]


def findings(results, grads):
    """What the tables say, in numbers read from them (the runs that are there)."""
    def test(name, m):
        return results[name]["baselines"]["test"][m]["model", "centre_mae"]

    def base(name, m, method):
        return results[name]["baselines"]["test"][m][method, "centre_mae"]
    lines = ["## What this shows", "", "The recipe's targets, on new cubes:", "", *centre_targets(results), ""]
    for name, m in (("s2", "s2"), ("s1", "s1")):
        if name in results:
            lines.append(f"- {m.upper()}, the default recipe: test centre MAE {test(name, m):.4f}, "
                         f"{test(name, m) / base(name, m, 'series_mean'):.2f} x the series mean "
                         f"({base(name, m, 'series_mean'):.4f}); window mean {base(name, m, 'window_mean'):.4f}, "
                         f"nearest clear date {base(name, m, 'nearest'):.4f}.")
    if "fusion" in results:
        lines.append("- Fusion: on its test patches the 7-d embedding reconstructs " + ", ".join(
            f"{m.upper()} at {test('fusion', m) / base('fusion', m, 'own'):.2f} x its own frozen autoencoder"
            for m in ("s2", "s1")) + ".")
    for m in ("s2", "s1"):
        for paper, recipe_run, where in ((f"{m}_paper_arch", f"{m}_short", "new cubes"),
                                         (f"{m}_independent_paper", f"{m}_independent", "new independent cubes")):
            if {paper, recipe_run} <= set(results):
                runs = [(results[r]["baselines"]["new"][m]["model", "centre_mae"],
                         results[r]["baselines"]["jacobian"]["new"][m][1]) for r in (paper, recipe_run)]
                lines.append(f"- {m.upper()} on {where}, at equal steps: the paper's architecture {runs[0][0]:.4f} "
                             f"(centre singular values {', '.join(f'{v:.2f}' for v in runs[0][1][:3])}), with the "
                             f"centre path {runs[1][0]:.4f} ({', '.join(f'{v:.2f}' for v in runs[1][1][:3])}).")
    if {"s2_short", "s2_eq5"} <= set(results) and "s2_eq5" in grads:
        g = grads["s2_eq5"]
        lines.append(f"- Eq. 5 as written ends at {test('s2_eq5', 's2') / test('s2_short', 's2'):.2f} x the MAE "
                     f"alone at equal steps; its SAM term's gradient is {g['sam'] / g['weighted_mae']:.0f} x the "
                     f"MAE term's and its SSIM term's {g['ssim'] / g['weighted_mae']:.1f} x: patch-wide spectral "
                     "shape and structure, which a 9-d code of one pixel-date cannot hold, take the update.")
    return lines


def ablation_base(name):
    """The default-recipe run an ablation is compared with at equal steps (None: not an ablation):
    the independent world's paper-architecture runs with that world's recipe, the others with
    s1_short / s2_short."""
    if name.endswith("_independent_paper"):
        return name[:-len("_paper")]
    if name[:3] in ("s1_", "s2_") and "independent" not in name and not name.endswith("_short"):
        return f"{name[:2]}_short"
    return None


def ablations(results):
    """The one-change-at-a-time table: each ablation's test centre MAE against its default-recipe run
    at the same steps (s1_short, s2_short), and the step from which its val curve stays within 5 %
    of its final value (where it flattened)."""
    lines = [f"## Ablations at equal steps ({ABLATION_STEPS}; independent world {INDEPENDENT_STEPS})", "",
             "| run | what changes | test centre MAE | default recipe, same steps | ratio | val flat from step |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        base = ablation_base(name)
        if base is None or base not in results:
            continue
        (m,), log = r["baselines"]["test"], r["log"]
        test = r["baselines"]["test"][m]["model", "centre_mae"]
        ref = results[base]["baselines"]["test"][m]["model", "centre_mae"]
        val = log["val_centre_mae"]
        flat = int(log["step"][np.flatnonzero(np.abs(val - val[-1]) > 0.05 * val[-1])[-1] + 1]
                   if (np.abs(val - val[-1]) > 0.05 * val[-1]).any() else log["step"][0])
        lines.append(f"| {name} | {r['what']} | {test:.4f} | {ref:.4f} | {test / ref:.2f} | {flat} |")
    return lines


def main(argv=None):
    parser = data.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the stages' --quick preset (recipe.PRESETS['quick']; ablations and real areas "
                             f"{ABLATION_STEPS} steps) on sample_data/ and the real files; writes docs/learning.md")
    parser.add_argument("--runs", nargs="+", default=None, help="only these runs (default: all; --list names them)")
    parser.add_argument("--list", action="store_true", help="list the runs and exit")
    parser.add_argument("--score", nargs="+", default=None, metavar="RUN",
                        help="score finished runs (folders with checkpoint.pt) against the trivial predictors on "
                             "their test patches, print one line per modality and exit (default: none)")
    parser.add_argument("--cubes", nargs="+", default=["sample_data"], help="cubes of the synthetic runs "
                        "(default sample_data)")
    parser.add_argument("--steps", type=data.positive_int, default=None,
                        help="optimiser steps of the default-recipe runs s1, s2, fusion (default: the stage's own)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--work", default=None, help="folder for the runs (default runs/learning, "
                        "runs/learning_quick with --quick)")
    parser.add_argument("--out", default=None, help="folder for learning.md/.png (default docs/ with --quick, WORK otherwise)")
    args = parser.parse_args(argv)
    if args.score:
        for run in args.score:
            print("\n".join(score_lines(Path(run).name, score_run(run))), flush=True)
        return
    work = Path(args.work or ("runs/learning_quick" if args.quick else "runs/learning"))
    runs = study_runs(work)
    if args.list:
        for name, (script, extra, what, _) in runs.items():
            print(f"{name:<22}{what}: {Path(script.__file__).name} {' '.join(extra)}")
        return
    unknown = sorted(set(args.runs or []) - set(runs))
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; --list names them")
    out = Path(args.out or ("docs" if args.quick else work))
    recipe.prepare_output(work, resume=False)
    recipe.prepare_output(out, resume=False)
    common = ["--seed", str(args.seed), "--device", args.device, "--cache", str(work / "cache"), "--log-test",
              *(["--quick"] if args.quick else [])]
    names = args.runs or list(runs)
    if "fusion" in names:                                   # fusion needs its two autoencoders
        names = [n for n in ("s1", "s2") if n not in names] + names
    if any(runs[n][3] == "independent" for n in names):
        independent_world(work)
    results, grads = {}, {}
    for i, name in enumerate(names, 1):
        script, extra, what, world = runs[name]
        steps = ["--max-steps", str(args.steps)] if args.steps and "--max-steps" not in extra else []
        run_argv = [*common, *steps, *(["--cubes", *args.cubes] if "--cubes" not in extra else []), *extra]
        print(f"[{i}/{len(names)}] {name}: {what}", flush=True)
        run_once(script, work / name, run_argv)
        results[name] = {"what": what, "world": world, "log": read_log(work / name),
                         "kind": "fusion" if script is train_fusion else "ae",
                         "baselines": baselines_of_run(script, run_argv, work / name, unseen_world(work, world))}
        if name in ("s2_short", "s2_eq5"):
            grads[name] = term_gradient_norms(work / name, run_argv)
    command = " ".join(["python learning.py", *(sys.argv[1:] if argv is None else argv)])
    minutes = sum(np.nansum(r["log"]["seconds"]) for r in results.values()) / 60
    header = (f"# Does the method learn?\n\nWritten by `{command}` ({minutes:.0f} min of training; "
              f"{'the stages --quick preset' if args.quick else 'full size'}, seed {args.seed}, device "
              f"{train.resolve_device(args.device)}). Centre MAE of the model and of five predictors that need "
              "no learning, on the same val / test patches (learning.py docstring).")
    plot_curves(results, out / "learning.png")
    text = markdown(results, grads, header)
    data.write_atomic(out / "learning.md", lambda tmp: tmp.write_text(text))
    print(text)


if __name__ == "__main__":
    data.run_cli(main)
