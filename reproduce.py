"""reproduce.py: the paper's claims rerun on trained models, with fair baselines and one verdict rule.

    python reproduce.py --quick                  # every claim on sample_data/, 3 seeds, ~45 min on 2 cores
    python reproduce.py --claim frozen --cubes /data/cubes --device cuda --jobs 1   # one claim, full size
    python reproduce.py --list                   # the claims and the training runs each needs

Writes docs/claims.md (two tables: the paper's claims, then this project's hypotheses and
baselines), docs/claims.csv (one row per quantity with every seed's value) and docs/claims.png (the
comparisons, one dot per seed, and the validation curves of every training run).

The rule, one for every row, fixed before any number was seen. A row measures a statistic theta (a
difference, a ratio, an accuracy) and states the region R the claim puts it in (theta > 0,
theta <= 1.25, 0.8 <= theta <= 1.25, ...). theta_s is its value for seed s on all test units, mean
and sd are over the seeds (sd: the sample standard deviation, ddof 1), and the 95 % interval is a
paired bootstrap of the mean: test units drawn with replacement (patches for reconstruction and the
land-cover probe, days for GPP), the same draw for every run and seed, 2000 draws.
    supported     the interval lies inside R and the mean is inside by more than sd;
    contradicted  the interval lies outside R and the mean is outside by more than sd;
    inconclusive  otherwise (and with fewer than MIN_SEEDS seeds).
"not checked" rows give our number and say why a verdict is out of reach here (a paper value from
the full model on 500 real cubes, sites we cannot download). The split is fixed: --split-seed picks
the train/val/test cubes and the val/test patches; --seed changes only the weights and the training
patches, so every run of a row is scored on the same test units.

Training runs go through the stage scripts' command lines (train_s1.py, train_s2.py,
train_fusion.py) in subprocesses, --jobs at a time with one torch thread each (two at a time are
~1.6x faster than one at two threads on 2 cores), into WORK/<run>/seed<k>/, and are reused when
their command is unchanged; the scores of every run and the GPP predictions are cached beside
them: an interrupted reproduce.py resumes where it stopped. The downstream tasks read the trained
models in this process: the land-cover probe on the fusion stage's own patches, GPP at synthetic
towers through embed.embed_block (the pixel embed.py would write) and gpp.run_experiment.
"""
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import data
import embed
import fluxnet
import gpp
import learning
import losses
import modalities
import recipe
import synthetic
import train
import train_fusion
import train_s1
import train_s2

ROOT = Path(__file__).resolve().parent
US_WI7 = ROOT.parent / "shared" / "realdata" / "fluxnet" / "FLX_US-Wi7_FLUXNET2015_FULLSET_DD_2005-2005_1-4.csv"
STAGES = {"train_s1.py": train_s1, "train_s2.py": train_s2, "train_fusion.py": train_fusion}
QUICK_AE_STEPS = learning.ABLATION_STEPS      # 800: where Eq. 5 and the MAE have separated (docs/learning.md)
QUICK_FUSION_STEPS = 400
# GPP transformers at quick size: 6 experiments x 3 seeds; gpp.py --quick's 15 epochs would add ~8 min
QUICK_GPP_EPOCHS = 10
FULL_AE_STEPS = 20000
MIN_SEEDS = 3
BOOTSTRAP_DRAWS = 2000
SAME = 1.25                                   # "about equal" / "costs little": within this factor
TOWER_SEEDS = (synthetic.TOWER_SEED, 101, 102, 103, 104, 105)   # six synthetic towers, 2017-2020
TOWER_SIZE = 15                               # px: the tower pixel's patch is all its embedding needs
YEARS = (2017, 2018, 2019, 2020)              # the towers' years: 2017-2019 train, 2020 validates (Sec. IV-C)
GPP_SETS = ("fused", "s1+s2", "random", "pca7", "inputs", "ndvi", "annual")   # gpp_sites
GPP_WINDOWS = (60, 90, 120)                   # days (Sec. IV-C tested 60-120, chose 90)
GPP_STRIDE = 10                               # training windows every 10 days (Sec. IV-C)
RIDGE_BLOCKS = 9                              # the ridge sees a window as 9 block means (10 days for 90)
RIDGE_LAMBDA = 1.0                            # on standardised features
KNN_K = 15                                    # neighbours of the non-linear land-cover probe
PROBES = ("ridge", "k-NN")                    # the land-cover probes: linear and non-linear


# ----------------------------------------------------------------------------------------------
# 1. The rule: a statistic, a paired bootstrap over test units, three verdicts
# ----------------------------------------------------------------------------------------------

@dataclass
class Region:
    """Where the claim puts the statistic: lo < theta < hi (either side may be infinite)."""
    lo: float
    hi: float
    text: str


def above(t):
    return Region(t, np.inf, f"> {t:g}")


def below(t):
    return Region(-np.inf, t, f"< {t:g}")


def between(lo, hi):
    return Region(lo, hi, f"{lo:g} .. {hi:g}")


def verdict(per_seed, draws, region):
    """The rule (module docstring). per_seed (S,) theta of each seed; draws (D,) bootstrap draws of
    their mean -> (verdict, mean, sd, (ci_lo, ci_hi))."""
    per_seed = np.asarray(per_seed, float)
    mean = float(per_seed.mean())
    sd = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else np.nan
    ci = tuple(float(v) for v in np.percentile(draws, [2.5, 97.5]))
    margin = min(mean - region.lo, region.hi - mean)            # > 0 inside R: distance to its edge
    if len(per_seed) < MIN_SEEDS:
        return "inconclusive", mean, sd, ci
    if region.lo < ci[0] and ci[1] < region.hi and margin > sd:
        return "supported", mean, sd, ci
    if (ci[1] < region.lo or ci[0] > region.hi) and -margin > sd:
        return "contradicted", mean, sd, ci
    return "inconclusive", mean, sd, ci


def resample(n, draws=BOOTSTRAP_DRAWS, seed=0):
    """(draws, n) counts of each unit in `draws` samples of n units drawn with replacement."""
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=draws).astype(float)


def wmean(values, weights):
    """values (S, N) per seed and unit (NaN: the unit does not count), weights (D, N) -> (D, S)."""
    ok = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):                  # no unit drawn: NaN
        return (weights @ np.where(ok, values, 0.0).T) / (weights @ ok.T)


def judge(statistic, n_units, region):
    """statistic(weights {unit set: (D, N)}) -> (D, S), theta per seed for unit weights. n_units
    {unit set: N}: units of one set are paired across the runs that share it (the same test
    patches or days); different sets (train vs val patches) are drawn independently.
    -> (verdict, mean, sd, ci, per_seed)."""
    per_seed = statistic({k: np.ones((1, n)) for k, n in n_units.items()})[0]
    draws = statistic({k: resample(n, seed=i) for i, (k, n) in enumerate(sorted(n_units.items()))}).mean(1)
    return (*verdict(per_seed, draws, region), per_seed)


def mean_of(values, unit="test"):
    """The statistic 'mean over units' of values (S, N) on the unit set `unit`."""
    return lambda w: wmean(values, w[unit])


def rmse_of(sq_errors, unit="days"):
    return lambda w: np.sqrt(wmean(sq_errors, w[unit]))


def difference(a, b):
    """theta = a - b, both statistics."""
    return lambda w: a(w) - b(w)


def ratio(a, b):
    return lambda w: a(w) / b(w)


# ----------------------------------------------------------------------------------------------
# 2. Rows
# ----------------------------------------------------------------------------------------------

COLUMNS = ("table", "claim", "quantity", "region", "paper", "ours", "verdict", "why", "data", "values")


@dataclass
class Table:
    rows: list = field(default_factory=list)
    panels: dict = field(default_factory=dict)     # figure panel title -> [(label, values per seed)]

    def judged(self, table, claim, quantity, paper, region, statistic, n_units, data_name, why="", fmt="{:.4g}"):
        """One row under the rule; returns the verdict."""
        v, mean, sd, ci, per_seed = judge(statistic, n_units, region)
        rule = (f"95 % CI [{fmt.format(ci[0])}, {fmt.format(ci[1])}], sd {sd:.2g} over {len(per_seed)} seeds; "
                f"{' '.join(f'{n}={k}' for k, n in n_units.items())} units")
        self.rows.append({"table": table, "claim": claim, "quantity": quantity, "region": f"θ {region.text}",
                          "paper": paper, "ours": f"{fmt.format(mean)} ± {sd:.2g} [{fmt.format(ci[0])}, "
                                                 f"{fmt.format(ci[1])}]",
                          "verdict": v, "why": f"{why}{'; ' if why else ''}{rule}", "data": data_name,
                          "values": ";".join(f"{x:.6g}" for x in per_seed)})
        return v

    def unchecked(self, table, claim, quantity, paper, ours, why, data_name, values=()):
        self.rows.append({"table": table, "claim": claim, "quantity": quantity, "region": "-", "paper": paper,
                          "ours": ours, "verdict": "not checked", "why": why, "data": data_name,
                          "values": ";".join(f"{x:.6g}" for x in values)})


def mean_sd(values, fmt="{:.4f}"):
    """'0.0312 ± 0.0011' (sample sd over seeds)."""
    v = np.asarray(values, float)
    return f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1)) if len(v) > 1 else '-'}"


# ----------------------------------------------------------------------------------------------
# 3. Training runs: the stage scripts in subprocesses, cached by command
# ----------------------------------------------------------------------------------------------

@dataclass
class Context:
    """What every claim needs: the settings and the folder of runs."""
    work: Path
    cubes: list
    seeds: list
    quick: bool
    ae_steps: int
    fusion_steps: int
    gpp_epochs: int
    device: str
    jobs: int
    split_seed: int = 0

    def arms(self):
        """Run name -> (stage script, its flags, the runs of the same seed it needs first)."""
        ae, long = ["--max-steps", str(self.ae_steps)], ["--max-steps", str(self.ae_steps + self.fusion_steps)]

        def fusion(s1, s2, *extra):
            return "train_fusion.py", ["--max-steps", str(self.fusion_steps), *extra], (s1, s2)
        return {
            "s1": ("train_s1.py", ae, ()),
            "s2": ("train_s2.py", [*ae, "--loss", "mae"], ()),                 # the project's S2 recipe
            "s2_hybrid": ("train_s2.py", [*ae, "--loss", "hybrid"], ()),        # Eq. 5, the paper's
            "s2_flat": ("train_s2.py", [*ae, "--loss", "mae", "--kernel-alpha", "1", "--kernel-ring", "1"], ()),
            "s1_long": ("train_s1.py", long, ()),
            "s2_long": ("train_s2.py", [*long, "--loss", "mae"], ()),
            "fusion": fusion("s1", "s2"),
            "fusion_joint": fusion("s1", "s2", "--unfreeze"),
            "fusion_long": fusion("s1_long", "s2_long"),
            "fusion_w1": fusion("s1", "s2", "--centre-weight", "s1=1", "s2=1"),
            **{f"fusion_dim{d}": fusion("s1", "s2", "--fused-dim", str(d)) for d in self.fused_dims() if d != 7},
        }

    def fused_dims(self):
        return (5, 7, 9) if self.quick else (3, 5, 7, 9, 12)

    def out(self, name, seed):
        return self.work / name / f"seed{seed}"

    def argv(self, name, seed):
        """The full command line of run `name` for `seed` (with --out)."""
        script, flags, needs = self.arms()[name]
        argv = ["--seed", str(seed), "--split-seed", str(self.split_seed), "--device", self.device,
                "--cache", str(self.work / "cache"), "--cubes", *self.cubes, *flags]
        if self.quick:
            argv.append("--quick")
        if needs:
            for m, dep in zip(("s1", "s2"), needs):
                argv += [f"--{m}-checkpoint", str(self.out(dep, seed) / "checkpoint.pt")]
        return [*argv, "--out", str(self.out(name, seed))]

    def done(self, name, seed):
        return learning.is_done(self.out(name, seed), self.argv(name, seed))

    def train_all(self, names):
        """Train every run in `names` and what it needs, for every seed, `jobs` subprocesses at a time
        (OMP_NUM_THREADS=1 each when more than one), the runs a run needs first."""
        arms, order = self.arms(), []

        def add(name):
            for dep in arms[name][2]:
                add(dep)
            if name not in order:
                order.append(name)
        for name in names:
            add(name)
        todo = [(n, s) for n in order for s in self.seeds if not self.done(n, s)]
        running, tic, total = {}, time.time(), len(todo)
        env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if self.jobs > 1 else {})}
        while todo or running:
            for item in [t for t in todo if all(self.done(d, t[1]) for d in arms[t[0]][2])]:
                if len(running) >= self.jobs:
                    break
                name, seed = item
                todo.remove(item)
                out = self.out(name, seed)
                out.mkdir(parents=True, exist_ok=True)
                log = open(out / "run.log", "w")
                cmd = [sys.executable, str(ROOT / arms[name][0]), *self.argv(name, seed)]
                running[item] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT),
                                 log, time.time())
            if not running:
                raise SystemExit(f"runs {todo} wait for runs that cannot start")
            time.sleep(0.5)
            for item, (proc, log, start) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[item]
                name, seed = item
                if proc.returncode != 0:
                    for other, _, _ in running.values():
                        other.kill()
                    tail = (self.out(name, seed) / "run.log").read_text().strip().splitlines()[-1:]
                    raise SystemExit(f"{name} seed {seed} failed (exit {proc.returncode}): {' '.join(tail)} "
                                     f"(log: {self.out(name, seed) / 'run.log'})")
                learning.mark_done(self.out(name, seed), self.argv(name, seed))
                print(f"  [{total - len(todo) - len(running)}/{total}] {name} seed {seed}: "
                      f"{time.time() - start:.0f} s ({(time.time() - tic) / 60:.1f} min in all)", flush=True)
        if total:
            record_time(self.work, "training", time.time() - tic)

    def metrics(self, name):
        """{metric: [value per seed]} from each run's OUT/test_metrics.csv."""
        per_seed = []
        for s in self.seeds:
            with open(self.out(name, s) / "test_metrics.csv") as f:
                per_seed.append({r["metric"]: float(r["value"]) for r in csv.DictReader(f)})
        return {k: [m[k] for m in per_seed] for k in per_seed[0]}

    def data_name(self):
        return "synthetic: " + ", ".join(self.cubes)


# ----------------------------------------------------------------------------------------------
# 4. Scores per test unit, cached beside each run
# ----------------------------------------------------------------------------------------------

def patch_errors(pred, x):
    """Per patch: centre MAE and centre SAM (Sec. IV-A) and the context MAE with one flat weight for
    every pixel and frame (so runs trained with different Eq. 1 kernels are scored alike) ->
    {name: (B,)}; NaN where the centre has no valid band. pred, x (B, T, C, H, W)."""
    valid = torch.isfinite(x)
    B, T, C, H, W = x.shape
    flat = torch.ones(T, H, W)
    out = {"centre_mae": [], "centre_sam": [], "context_mae_flat": []}
    for i in range(B):
        p, t, v = pred[i:i + 1].float(), x[i:i + 1], valid[i:i + 1]
        seen = bool(v[0, T // 2, :, H // 2, W // 2].any())
        out["centre_mae"].append(float(losses.centre_mae(p, t, v)) if seen else np.nan)
        out["centre_sam"].append(float(losses.centre_sam(p, t, v)) if seen else np.nan)
        out["context_mae_flat"].append(float(losses.context_mae(p, t, flat, v)))
    return {k: np.array(v) for k, v in out.items()}


def concat(parts):
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def record_time(work, key, seconds):
    """Add `seconds` under `key` in WORK/timing.json: the header reports what the cached work cost."""
    path = Path(work) / "timing.json"
    timing = json.loads(path.read_text()) if path.is_file() else {}
    timing[key] = timing.get(key, 0.0) + seconds
    data.write_atomic(path, lambda tmp: tmp.write_text(json.dumps(timing)))


def cached(path, compute, work):
    """compute() -> {name: array}, saved to `path` (.npz, data.write_atomic) and read back after;
    its time goes to WORK/timing.json."""
    if not path.is_file():
        tic = time.time()
        values = compute()
        data.write_atomic(path, lambda tmp: np.savez(tmp, **values))
        record_time(work, "scoring and downstream", time.time() - tic)
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def stage(ctx, name, seed):
    """(batches, model) of a finished run: learning.stage_data with its own command, but the training
    patches drawn with the split seed, so every seed's model is scored on the same training patches."""
    argv = ctx.argv(name, seed)[:-2]                                        # without --out
    argv[argv.index("--seed") + 1] = str(ctx.split_seed)
    return learning.stage_data(STAGES[ctx.arms()[name][0]], argv, ctx.out(name, seed))


def autoencoder_scores(ctx, name, seed):
    """An autoencoder run's per-patch errors on its train (epoch 0), val and test patches, and the
    trivial predictors' centre MAE on the test patches (learning.baseline_centres)."""
    def compute():
        batches, model = stage(ctx, name, seed)
        m = model.cfg.modality
        scores = {}
        with torch.no_grad():
            for split, loader in (("train", batches["train"](0)), ("val", batches["val"]()),
                                  ("test", batches["test"]())):
                errors = concat([patch_errors(model(*b[m])[0], b[m][0]) for b in loader])
                scores.update({f"{split}/{k}": v for k, v in errors.items()})
            spectra = learning.training_spectra(batches["train"], m, n_batches=None)
            mean, basis = learning.pca_basis(spectra, min(model.cfg.latent_dim, spectra.shape[1]))
            loader = batches["test"]()
            parts = []
            for batch, series in zip(loader, learning.series_means(loader.dataset, m)):
                x, days = batch[m]
                part = {}
                for method, centre in learning.baseline_centres(x, days, mean, basis, series).items():
                    part[f"test/{method}"] = patch_errors(learning.centre_prediction(x, centre), x)["centre_mae"]
                parts.append(part)
            scores.update(concat(parts))
        return scores
    return cached(ctx.out(name, seed) / "scores.npz", compute, ctx.work)


def landcover_maps(ctx):
    """Cube name -> its (H, W) `landcover` (the synthetic cubes carry one), or {} when a cube lacks it."""
    maps = {}
    for entry in modalities.find_cubes(ctx.cubes, ("s1", "s2")):
        with xr.open_dataset(entry["s2"]) as ds:
            if "landcover" not in ds:
                return {}
            maps[modalities.cube_name(entry)] = ds["landcover"].values.astype(int)
    return maps


def probe_inputs(batch):
    """The 12 input channels at each patch's centre pixel and date (S2 bands then S1): (B, 12)."""
    parts = []
    for m in ("s2", "s1"):
        x = batch[m][0]
        parts.append(x[:, x.shape[1] // 2, :, x.shape[3] // 2, x.shape[4] // 2])
    return torch.cat(parts, 1).double().numpy()


def random_twin(model, seed):
    """The same fusion architecture with random weights (seeded by `seed`), in eval mode."""
    torch.manual_seed(10_000 + seed)
    return train.build_model("fusion", train.model_config_dict(model)).eval()


def fusion_scores(ctx, name, seed):
    """A fusion run's per-patch centre MAE of each modality, through the embedding and through its own
    autoencoders on the same test patches; and, for the land-cover probe, on its training patches
    (epoch 0) and held-out patches (val + test cubes): the fused embedding, the S1 and S2 latents, the
    same architecture with random weights, the 12 input channels and the land-cover class."""
    def compute():
        batches, model = stage(ctx, name, seed)
        lc = landcover_maps(ctx) if name == "fusion" else {}     # the probe reads the default fusion run only
        named = {c["name"] for split in ("train", "val", "test") for c in batches[split]().dataset.cubes}
        lc = lc if named <= set(lc) else {}                     # tiles of a cube: no label map by name
        scores = {}
        with torch.no_grad():
            for split in ("val", "test"):
                parts = []
                for b in batches[split]():
                    recon, _ = model(b)
                    part = {}
                    for m in model.cfg.modalities:
                        part[m] = patch_errors(recon[m], b[m][0])["centre_mae"]
                        part[f"own_{m}"] = patch_errors(model.autoencoders[m](*b[m])[0], b[m][0])["centre_mae"]
                    parts.append(part)
                scores.update({f"{split}/{k}": v for k, v in concat(parts).items()})
            if lc:
                random = random_twin(model, seed)
                for split, loaders in (("train", [batches["train"](0)]),
                                       ("heldout", [batches["val"](), batches["test"]()])):
                    feats = {"fused": [], "s1": [], "s2": [], "random": [], "inputs": [], "landcover": []}
                    for loader in loaders:
                        ds = loader.dataset
                        P = ds.sampling.patch
                        names = [ds.cubes[k]["name"] for k in ds.cube[ds.order]]
                        feats["landcover"] += [lc[n][y + P // 2, x + P // 2]
                                               for n, y, x in zip(names, ds.y0[ds.order], ds.x0[ds.order])]
                        for b in loader:
                            fused, latents = model.encode(b)
                            feats["fused"].append(fused.numpy())
                            feats["s1"].append(latents["s1"].numpy())
                            feats["s2"].append(latents["s2"].numpy())
                            feats["random"].append(random.encode(b)[0].numpy())
                            feats["inputs"].append(probe_inputs(b))
                    scores.update({f"{split}/{k}": np.asarray(np.concatenate(v) if k != "landcover" else v)
                                   for k, v in feats.items()})
        return scores
    return cached(ctx.out(name, seed) / "scores.npz", compute, ctx.work)


# ----------------------------------------------------------------------------------------------
# 5. Downstream: a linear land-cover probe and GPP at towers
# ----------------------------------------------------------------------------------------------

def ridge_fit(X, Y, lam=RIDGE_LAMBDA):
    """Ridge regression on standardised X (N, F) with an intercept -> predict(X') -> (N', K)."""
    mu, sd = X.mean(0), np.maximum(X.std(0), 1e-9)
    Z = np.c_[(X - mu) / sd, np.ones(len(X))]
    penalty = lam * np.eye(Z.shape[1])
    penalty[-1, -1] = 0.0                                                   # the intercept is free
    W = np.linalg.solve(Z.T @ Z + penalty, Z.T @ Y)
    return lambda Xn: np.c_[(Xn - mu) / sd, np.ones(len(Xn))] @ W


def ndvi(inputs, bands):
    """NDVI (N, 1) from the input channels (N, C) in `bands` order."""
    red, nir = inputs[:, bands.index("B04")], inputs[:, bands.index("B08")]
    return ((nir - red) / (nir + red))[:, None]


def probe_features(scores, bands):
    """{feature set: (train (N, F), held-out (M, F))}: the fused 7-d embedding, the S1 + S2 latents
    side by side (11-d), the fused embedding of the same architecture with random weights, the 12
    inputs, their PCA-7 (embed.pca_fit on the training patches) and NDVI. A missing input (no S1
    within the matching gap) is taken as its training mean."""
    fill = np.nanmean(scores["train/inputs"], 0)
    inputs = {s: np.where(np.isfinite(scores[f"{s}/inputs"]), scores[f"{s}/inputs"], fill) for s in ("train", "heldout")}
    mean, comps, _ = embed.pca_fit(inputs["train"], 7)

    def sets(s):
        return {"fused 7-d": scores[f"{s}/fused"], "S1 + S2 latents 11-d": np.c_[scores[f"{s}/s1"], scores[f"{s}/s2"]],
                "random weights 7-d": scores[f"{s}/random"], "12 inputs": inputs[s],
                "PCA-7 of the inputs": (inputs[s] - mean) @ comps.T, "NDVI": ndvi(inputs[s], bands)}
    train_sets, held = sets("train"), sets("heldout")
    return {k: (train_sets[k], held[k]) for k in train_sets}


def knn_predict(train_x, train_y, test_x, classes, k=KNN_K, chunk=1024):
    """k-nearest-neighbour vote (Euclidean on features standardised by the training rows) -> the
    class of each test row (ties: the lower class index)."""
    mu, sd = train_x.mean(0), np.maximum(train_x.std(0), 1e-9)
    A, k = (train_x - mu) / sd, min(k, len(train_x))
    onehot = (train_y[:, None] == classes[None]).astype(float)             # (N, K)
    out = []
    for s in range(0, len(test_x), chunk):
        B = (test_x[s:s + chunk] - mu) / sd
        d = (B ** 2).sum(1)[:, None] - 2 * B @ A.T + (A ** 2).sum(1)[None]   # (b, N) squared distances
        near = np.argpartition(d, k - 1, axis=1)[:, :k]                     # (b, k)
        out.append(classes[onehot[near].sum(1).argmax(1)])
    return np.concatenate(out) if out else np.zeros(0, classes.dtype)


def probe_correct(train_x, train_y, test_x, test_y, classes, probe="ridge"):
    """Land-cover probe -> 1.0 / 0.0 per held-out unit: "ridge" (linear: ridge on one-hot classes,
    argmax) or "k-NN" (non-linear: knn_predict)."""
    if probe == "k-NN":
        return (knn_predict(train_x, train_y, test_x, classes) == test_y).astype(float)
    predict = ridge_fit(train_x, (train_y[:, None] == classes[None]).astype(float))
    return (classes[predict(test_x).argmax(1)] == test_y).astype(float)


def balanced_accuracy(correct, labels, classes):
    """statistic: the mean over classes of each class's accuracy; correct (S, N), labels (N,)."""
    def stat(w):
        return np.nanmean([wmean(correct, w["heldout"] * (labels == c)) for c in classes], axis=0)
    return stat


def tower_files(ctx):
    """Six synthetic flux towers in WORK/towers (2017-2020, TOWER_SIZE px, seeds TOWER_SEEDS)."""
    out = []
    for seed in TOWER_SEEDS:
        prefix = ctx.work / "towers" / f"tower{seed}"
        paths = {k: Path(f"{prefix}_{k}.nc") for k in ("s1", "s2")} | {"flux": Path(f"{prefix}_gpp.csv")}
        if not paths["flux"].is_file():
            prefix.parent.mkdir(parents=True, exist_ok=True)
            s1, s2, flux = synthetic.make_synthetic_cube(seed, size=TOWER_SIZE, start=synthetic.TOWER_START,
                                                         end=synthetic.TOWER_END)
            synthetic.write_cube(s1, paths["s1"])
            synthetic.write_cube(s2, paths["s2"])
            synthetic.write_fluxnet_csv(flux, paths["flux"])
        out.append((f"tower{seed}", paths))
    return out


def tower_features(model, random, paths):
    """At the tower pixel, per S2 date: the fused embedding, the S1 + S2 latents, the random-weights
    embedding (embed.embed_block on the tower's patch, the values embed.py writes there) and the 12
    input channels -> (days (T,), years (T,), {name: (T, F)})."""
    aes, ref, names = embed.model_parts(model)
    half = aes[ref].cfg.patch // 2
    reader = embed.CubeReader({m: str(paths[m]) for m in aes}, {m: ae.cfg.bands for m, ae in aes.items()},
                              half_patch=half)
    row, col = gpp.tower_pixel(reader.grid)
    arrays, days, time_coord = reader.block(row, row + 1)
    arrays = {m: a[..., col:col + 2 * half + 1] for m, a in arrays.items()}        # (T, C, P, P)
    emb = embed.embed_block(model, arrays, days, quality_every=0)[0][:, 0, 0]        # (T, F)
    rnd = embed.embed_block(random, arrays, days, quality_every=0)[0][:, 0, 0]
    fused = [i for i, n in enumerate(names) if n.startswith("fused_")]
    latents = [i for i, n in enumerate(names) if not n.startswith("fused_")]
    inputs = np.concatenate([arrays[m][:, :, half, half] for m in ("s2", "s1")], 1)  # (T, 12)
    return np.floor(days[ref]), time_coord.dt.year.values, {"fused": emb[:, fused], "s1+s2": emb[:, latents], "random": rnd[:, fused],
                                 "inputs": inputs}


def gpp_sites(ctx, seed):
    """gpp.SiteData of every tower with daily features: fused, s1+s2, random, inputs, pca7 (of the
    inputs, fitted on the training years of all towers), ndvi, annual (each year's mean fused
    embedding at the tower: a yearly embedding, Sec. V)."""
    model, _ = train.load_model(ctx.out("fusion", seed) / "checkpoint.pt", "fusion")
    random = random_twin(model, seed)
    bands = list(model.autoencoders["s2"].cfg.bands)
    raw = []
    for site, paths in tower_files(ctx):
        with torch.no_grad():
            obs_days, obs_years, feats = tower_features(model, random, paths)
        flux = fluxnet.quality_filter(fluxnet.read_fluxnet(paths["flux"]))
        raw.append((site, obs_days, obs_years, feats, flux))
    fit_rows = np.concatenate([f["inputs"][np.isin(y, YEARS[:3])] for _, _, y, f, _ in raw])
    mean, comps, _ = embed.pca_fit(fit_rows[np.isfinite(fit_rows).all(1)], 7)
    sites = []
    for site, obs_days, obs_years, feats, flux in raw:
        feats = {**feats, "pca7": (feats["inputs"] - mean) @ comps.T, "ndvi": ndvi(feats["inputs"], bands)}
        days = data.day_offsets(flux.time.values)
        daily = {k: data.interpolate_time(obs_days, v.astype(np.float64), days) for k, v in feats.items()}
        years = flux.time.dt.year.values
        annual = np.full_like(daily["fused"], np.nan)
        for y in np.unique(years):
            annual[years == y] = np.nanmean(feats["fused"][obs_years == y], 0)
        daily["annual"] = annual
        sites.append(gpp.SiteData(site, flux.time.values, days, years, flux.time.dt.dayofyear.values,
                                  flux[fluxnet.GPP].values, daily))
    return sites


def window_summary(values, starts, window):
    """(W, RIDGE_BLOCKS x F): each window's days (gpp.gather_windows) averaged in RIDGE_BLOCKS blocks."""
    w = gpp.gather_windows(values, starts, window)                                   # (W, L, F)
    return np.concatenate([c.mean(1) for c in np.array_split(w, RIDGE_BLOCKS, axis=1)], 1)


def ridge_predictions(sites, fs, window, train_years, train_sites, val_years, val_sites):
    """Ridge on window summaries: trained on the windows (stride GPP_STRIDE) of train_sites in
    train_years, predicting every day of val_sites whose window lies in val_years -> {site: (N,)}."""
    X, y = [], []
    for s in sites:
        if s.site in train_sites:
            st = gpp.make_windows(s.year, gpp.features_ok(s, [fs]), np.isfinite(s.gpp), train_years, window,
                                  GPP_STRIDE)
            X.append(window_summary(s.features[fs], st, window))
            y.append(s.gpp[st + window - 1])
    predict = ridge_fit(np.concatenate(X), np.concatenate(y)[:, None])
    out = {}
    for s in sites:
        if s.site in val_sites:
            st = gpp.make_windows(s.year, gpp.features_ok(s, [fs]), None, val_years, window, 1)
            out[s.site] = np.full(len(s.days), np.nan)
            if len(st):
                out[s.site][st + window - 1] = predict(window_summary(s.features[fs], st, window))[:, 0]
    return out


def climatology_predictions(sites, train_years, train_sites, val_sites):
    """The mean seasonal cycle of the training towers' training years (gpp.climatology), pooled when
    the validation towers are not among them -> {site: (N,)}."""
    out = {}
    for s in sites:
        if s.site not in val_sites:
            continue
        pool = [s] if s.site in train_sites else [t for t in sites if t.site in train_sites]
        clim = gpp.climatology(*(np.concatenate(a) for a in zip(*[
            (t.doy, t.gpp, np.isin(t.year, train_years)) for t in pool])))
        out[s.site] = clim[s.doy - 1]
    return out


def gpp_predictions(ctx, seed):
    """Every GPP prediction of one seed, per day and tower -> {"obs/site", "<experiment>/<set>/site": (N,)}.

    transformer   gpp.run_experiment, the paper's split (2017-2019 train, 2020 validates), no annual
                  phase input (the paper's model): every feature set at 90 days on the same windows;
                  the fused embedding at 60 and 120 days; the fused embedding with the phase input;
    ridge         every feature set at 90 days, same split (ridge_predictions);
    loyo, loto    ridge, fused / inputs / climatology, each year (each tower) held out once.
    The climatology is in each experiment under "climatology"."""
    def compute():
        sites = gpp_sites(ctx, seed)
        names = [s.site for s in sites]
        out = {f"obs/{s.site}": s.gpp for s in sites}
        preset = recipe.PRESETS["quick" if ctx.quick else "paper"]["gpp"]     # gpp.py's settings, our epochs
        cfg = train.TrainConfig(epochs=ctx.gpp_epochs, batch_size=preset["batch_size"], lr=preset["lr"], seed=seed,
                                device=ctx.device, monitor="mae")
        folder = ctx.work / "gpp" / f"seed{seed}"
        runs = {"transformer": (90, list(GPP_SETS), False)} | {
            f"transformer_w{w}": (w, ["fused"], False) for w in GPP_WINDOWS if w != 90} | {
            "transformer_phase": (90, ["fused"], True)}
        for exp, (window, sets, phase) in runs.items():
            with open(folder.parent / f"seed{seed}_{exp}.log", "w") as log:
                stdout, sys.stdout = sys.stdout, log
                try:
                    _, curves = gpp.run_experiment(sites, [*sets, gpp.BASELINE], window, GPP_STRIDE, YEARS[:3],
                                                   YEARS[3:], {"d_model": preset["d_model"], "annual_phase": phase},
                                                   cfg, folder / exp)
                finally:
                    sys.stdout = stdout
            for fs, per_site in curves.items():
                out.update({f"{exp}/{fs}/{site}": v for site, v in per_site.items()})
        for fs in GPP_SETS:
            out.update({f"ridge/{fs}/{k}": v for k, v in ridge_predictions(
                sites, fs, 90, YEARS[:3], names, YEARS[3:], names).items()})
        out.update({f"ridge/climatology/{k}": v for k, v in climatology_predictions(
            sites, YEARS[:3], names, names).items()})
        for exp, folds in (("loyo", [((y,), names, tuple(t for t in YEARS if t != y), names) for y in YEARS]),
                           ("loto", [(YEARS, [n], YEARS, [m for m in names if m != n]) for n in names])):
            for val_years, val_sites, train_years, train_sites in folds:
                fold = {fs: ridge_predictions(sites, fs, 90, train_years, train_sites, val_years, val_sites)
                        for fs in ("fused", "inputs")}
                fold["climatology"] = climatology_predictions(sites, train_years, train_sites, val_sites)
                for fs, pred in fold.items():            # each fold fills its held-out days
                    for site, p in pred.items():
                        key = f"{exp}/{fs}/{site}"
                        held = np.isin(sites[names.index(site)].year, val_years)
                        out[key] = np.where(held, p, out.get(key, np.full(len(p), np.nan)))
        years = {f"year/{s.site}": s.year for s in sites}
        return {**out, **years}
    (ctx.work / "gpp").mkdir(parents=True, exist_ok=True)
    return cached(ctx.work / "gpp" / f"seed{seed}.npz", compute, ctx.work)


def gpp_errors(ctx, arms, years=(2020,)):
    """Squared errors {arm: (S, N)} over the days (all towers pooled) in `years` where every arm of
    every seed has a prediction and GPP is observed: the same days for every arm. arm =
    "<experiment>/<feature set>"."""
    per_seed = [gpp_predictions(ctx, s) for s in ctx.seeds]
    sites = sorted(k[4:] for k in per_seed[0] if k.startswith("obs/"))
    keep, errors = [], {a: [] for a in arms}
    for site in sites:
        ok = np.isin(per_seed[0][f"year/{site}"], years) & np.isfinite(per_seed[0][f"obs/{site}"])
        for p in per_seed:
            for a in arms:
                ok &= np.isfinite(p[f"{a}/{site}"])
        keep.append(ok)
    for a in arms:
        for p in per_seed:
            errors[a].append(np.concatenate([(p[f"{a}/{s}"] - p[f"obs/{s}"])[k] ** 2 for s, k in zip(sites, keep)]))
    return {a: np.array(v) for a, v in errors.items()}


# ----------------------------------------------------------------------------------------------
# 6. The claims
# ----------------------------------------------------------------------------------------------

PAPER, OURS = "paper", "project"


def test_units(values):
    return {"test": values.shape[1]}


def per_seed(ctx, name, key, scores=autoencoder_scores):
    """(S, N) values `key` of run `name` for every seed."""
    return np.array([scores(ctx, name, s)[key] for s in ctx.seeds])


def claim_hybrid_loss(ctx, t):
    """Sec. III-B, Eq. 5: the hybrid loss improves the S2 centre reconstruction by 42 % over the
    context-weighted MAE alone, at equal steps on the same test patches."""
    claim = "hybrid S2 loss (Eq. 5) improves the centre MAE by 42 % (III-B)"
    hyb, mae = per_seed(ctx, "s2_hybrid", "test/centre_mae"), per_seed(ctx, "s2", "test/centre_mae")
    t.panels["S2 centre MAE: Eq. 5 vs MAE alone"] = [("MAE", np.nanmean(mae, 1)), ("Eq. 5", np.nanmean(hyb, 1))]
    t.judged(PAPER, claim, "θ = 100 (1 - centre MAE Eq. 5 / MAE alone), % (test)", "42 %", above(0),
             lambda w: 100 * (1 - wmean(hyb, w["test"]) / wmean(mae, w["test"])), test_units(hyb), ctx.data_name(),
             fmt="{:.1f}")
    hyb, mae = per_seed(ctx, "s2_hybrid", "test/centre_sam"), per_seed(ctx, "s2", "test/centre_sam")
    t.judged(PAPER, claim, "θ = centre SAM, MAE alone - Eq. 5 (rad, test)", "SAM enforces spectral consistency",
             above(0), difference(mean_of(mae), mean_of(hyb)), test_units(hyb), ctx.data_name())


def claim_train_val(ctx, t):
    """Sec. IV-A1: training and validation curves agree (S2 0.0037 / 0.0037, S1 0.0009 / 0.0006)."""
    claim = "train ≈ val for both autoencoders (IV-A1)"
    for name, m, paper in (("s2_hybrid", "S2 (Eq. 5)", "0.0037 / 0.0037 = 1.00"), ("s2", "S2 (MAE)", "-"),
                           ("s1", "S1", "0.0006 / 0.0009 = 0.67")):
        tr, va = per_seed(ctx, name, "train/centre_mae"), per_seed(ctx, name, "val/centre_mae")
        t.judged(PAPER, claim, f"θ = {m} centre MAE, val / train (train: epoch-0 patches of the training cubes)",
                 paper, between(1 / SAME, SAME), lambda w, tr=tr, va=va: wmean(va, w["val"]) / wmean(tr, w["train"]),
                 {"train": tr.shape[1], "val": va.shape[1]}, ctx.data_name(), fmt="{:.3f}")


def claim_fusion(ctx, t):
    """Sec. IV-A2: fusion keeps the reconstruction (S2 0.0040 fused vs 0.0037 alone, S1 0.0004 vs
    0.0006) and validation agrees with test (S1 0.0004 / 0.0004, S2 0.0039 / 0.0040)."""
    claim = "fusion keeps the reconstruction; val ≈ test (IV-A2)"
    for m, paper, region in (("s2", "0.0040 / 0.0037 = 1.08", below(SAME)), ("s1", "0.0004 / 0.0006 = 0.67", below(1))):
        fused = per_seed(ctx, "fusion", f"test/{m}", fusion_scores)
        own = per_seed(ctx, "fusion", f"test/own_{m}", fusion_scores)
        t.judged(PAPER, claim, f"θ = {m.upper()} centre MAE, 7-d embedding / its own autoencoder (the same test "
                 "patches)", paper, region, ratio(mean_of(fused), mean_of(own)), test_units(fused), ctx.data_name(),
                 fmt="{:.3f}")
        t.panels[f"{m.upper()} centre MAE: own autoencoder vs fused"] = [("own", np.nanmean(own, 1)),
                                                                         ("fused", np.nanmean(fused, 1))]
    for m, paper in (("s1", "0.0004 / 0.0004 = 1.00"), ("s2", "0.0040 / 0.0039 = 1.03")):
        te = per_seed(ctx, "fusion", f"test/{m}", fusion_scores)
        va = per_seed(ctx, "fusion", f"val/{m}", fusion_scores)
        t.judged(PAPER, claim, f"θ = fused {m.upper()} centre MAE, test / val", paper, between(1 / SAME, SAME),
                 lambda w, te=te, va=va: wmean(te, w["test"]) / wmean(va, w["val"]),
                 {"test": te.shape[1], "val": va.shape[1]}, ctx.data_name(), fmt="{:.3f}")


def fused_mean(ctx, name):
    """(S, N): the mean of the S1 and S2 fused centre MAE of each test patch."""
    return np.nanmean([per_seed(ctx, name, f"test/{m}", fusion_scores) for m in ("s1", "s2")], 0)


def claim_frozen(ctx, t):
    """Sec. III-C: staged training (frozen autoencoders, only the fusion layers trained) costs little
    against joint fine-tuning, at equal autoencoder steps: 'frozen long' pretrains N + F steps, then
    fuses F steps frozen; 'joint' pretrains N and fine-tunes everything F steps."""
    claim = "frozen autoencoders cost little against joint training (III-C)"
    steps = f"autoencoders {ctx.ae_steps} + {ctx.fusion_steps} steps in both"
    for m in ("s2", "s1"):
        frozen = per_seed(ctx, "fusion_long", f"test/{m}", fusion_scores)
        joint = per_seed(ctx, "fusion_joint", f"test/{m}", fusion_scores)
        t.judged(PAPER, claim, f"θ = {m.upper()} fused centre MAE, frozen / joint ({steps})", "frozen chosen",
                 below(SAME), ratio(mean_of(frozen), mean_of(joint)), test_units(frozen), ctx.data_name(), fmt="{:.3f}")
    short = fused_mean(ctx, "fusion")
    t.panels["fused centre MAE (S1+S2)/2: training arms"] = [
        ("frozen", np.nanmean(short, 1)), ("frozen long", np.nanmean(fused_mean(ctx, "fusion_long"), 1)),
        ("joint", np.nanmean(fused_mean(ctx, "fusion_joint"), 1))]
    t.judged(OURS, "more pretraining steps help the fusion", f"θ = fused centre MAE (S1+S2)/2, frozen after "
             f"{ctx.ae_steps} - after {ctx.ae_steps + ctx.fusion_steps} pretraining steps", "-", above(0),
             difference(mean_of(short), mean_of(fused_mean(ctx, "fusion_long"))), test_units(short), ctx.data_name())
    t.judged(OURS, "joint fine-tuning at unequal steps (the confounded comparison)", "θ = fused centre MAE "
             f"(S1+S2)/2, frozen - joint; joint also trains the autoencoders {ctx.fusion_steps} more steps", "-",
             above(0), difference(mean_of(short), mean_of(fused_mean(ctx, "fusion_joint"))), test_units(short),
             ctx.data_name())


def claim_fused_dim(ctx, t):
    """Sec. III-C: the 7-d bottleneck 'achieved the lowest reconstruction MAE for the central pixel'."""
    dims = ctx.fused_dims()
    runs = {d: fused_mean(ctx, "fusion" if d == 7 else f"fusion_dim{d}") for d in dims}
    t.panels["fused centre MAE (S1+S2)/2 by fused dim"] = [(f"{d}-d", np.nanmean(v, 1)) for d, v in runs.items()]
    others = [d for d in dims if d != 7]
    t.judged(PAPER, "7 fused dims give the lowest centre MAE (III-C)", "θ = centre MAE (S1+S2)/2 at 7 dims - the "
             f"lowest of {', '.join(map(str, others))} dims" + (" (--quick: 5 and 9; 3 and 12 at full size)"
                                                                 if ctx.quick else ""),
             "7 lowest", below(0), lambda w: mean_of(runs[7])(w) - np.min([mean_of(runs[d])(w) for d in others], 0),
             test_units(runs[7]), ctx.data_name())


def claim_centre_weight(ctx, t):
    """Sec. III-C: the fusion loss raises the centre weight to 1.5 (S1) and 1.75 (S2) 'to emphasize
    its reconstruction accuracy', against the pretraining kernel's centre weight 1."""
    for m, w in (("s2", "1.75"), ("s1", "1.5")):
        raised = per_seed(ctx, "fusion", f"test/{m}", fusion_scores)
        flat = per_seed(ctx, "fusion_w1", f"test/{m}", fusion_scores)
        t.judged(PAPER, "raised fusion centre weights (1.5 S1, 1.75 S2) lower the centre MAE (III-C)",
                 f"θ = fused {m.upper()} centre MAE, weight 1 - weight {w}", "-", above(0),
                 difference(mean_of(flat), mean_of(raised)), test_units(raised), ctx.data_name())


def claim_kernel(ctx, t):
    """Eq. 1, Sec. III-A: the steep context kernel (alpha 0.1, first ring 0.01) favours the centre,
    against a flat kernel (1, 1); its price in the context, scored with one flat weight for both."""
    steep, flat = per_seed(ctx, "s2", "test/centre_mae"), per_seed(ctx, "s2_flat", "test/centre_mae")
    t.panels["S2 centre MAE: Eq. 1 kernel"] = [("flat", np.nanmean(flat, 1)), ("steep", np.nanmean(steep, 1))]
    t.judged(PAPER, "the steep Eq. 1 kernel favours the centre (III-A)", "θ = S2 centre MAE, flat - steep kernel",
             "steep chosen (untested, Sec. V)", above(0), difference(mean_of(flat), mean_of(steep)),
             test_units(steep), ctx.data_name())
    steep, flat = per_seed(ctx, "s2", "test/context_mae_flat"), per_seed(ctx, "s2_flat", "test/context_mae_flat")
    t.judged(OURS, "the steep kernel costs context accuracy", "θ = S2 context MAE (one flat weight for both), steep - "
             "flat", "-", above(0), difference(mean_of(steep), mean_of(flat)), test_units(steep), ctx.data_name())


def claim_baselines(ctx, t):
    """The autoencoders against predictors that need no learning, on the same test patches: a model
    below them carries the centre pixel through its bottleneck (learning.py)."""
    for name, m in (("s2", "S2"), ("s1", "S1")):
        ae = per_seed(ctx, name, "test/centre_mae")
        for method, text in (("series_mean", "its pixel's mean over the cube's other dates"),
                             ("window_mean", "its pixel's mean over the patch's other frames"),
                             ("nearest", "its pixel on the nearest clear date"), ("pca", "PCA-k of the bands")):
            base = per_seed(ctx, name, f"test/{method}")
            if method == "pca" and np.nanmax(base) < 1e-6:
                t.unchecked(OURS, "the autoencoder beats trivial predictors of the centre", f"{m} centre MAE, {text}",
                            "-", f"{np.nanmean(base):.1e}", f"PCA with as many components as {m} has bands "
                            "reconstructs every spectrum exactly: no comparison", ctx.data_name())
                continue
            t.judged(OURS, "the autoencoder beats trivial predictors of the centre", f"θ = {m} centre MAE, "
                     f"autoencoder - {text}", "-", below(0), difference(mean_of(ae), mean_of(base)), test_units(ae),
                     ctx.data_name())


def claim_landcover(ctx, t):
    """Sec. IV-B: the fused embedding separates land-cover types. Two probes, a linear one (ridge on
    one-hot classes) and a non-linear one (k-NN), trained on the training cubes' patch centres, scored
    on the held-out (val + test) cubes by balanced accuracy, for the embedding and the baselines of
    equal or larger dimension."""
    scores = [fusion_scores(ctx, "fusion", s) for s in ctx.seeds]
    if "train/landcover" not in scores[0]:
        t.unchecked(PAPER, "the embedding separates land cover (IV-B, Fig. 6)", "land-cover probe", "qualitative",
                    "-", "the cubes carry no `landcover` variable", ctx.data_name())
        return
    bands = list(train.load_model(ctx.out("fusion", ctx.seeds[0]) / "checkpoint.pt")[0].autoencoders["s2"].cfg.bands)
    labels_tr, labels = scores[0]["train/landcover"], scores[0]["heldout/landcover"]
    classes = np.unique(labels_tr)
    sets = [probe_features(s, bands) for s in scores]
    held = np.unique(labels)
    n = {"heldout": len(labels)}
    data_name = f"{ctx.data_name()}; train {len(labels_tr)}, held-out {len(labels)} patch centres, {len(held)} classes"
    for probe in PROBES:
        correct = {k: np.array([probe_correct(f[k][0], labels_tr, f[k][1], labels, classes, probe) for f in sets])
                   for k in sets[0]}
        acc = {k: balanced_accuracy(c, labels, held) for k, c in correct.items()}
        t.judged(PAPER, "the embedding separates land cover (IV-B, Fig. 6)", f"θ = balanced accuracy of a {probe} "
                 "probe on the fused 7-d embedding - chance", "qualitative (PCA vs RGB)", above(0),
                 lambda w: acc["fused 7-d"](w) - 1 / len(held), n, data_name, fmt="{:.3f}")
        level = {k: a({"heldout": np.ones((1, len(labels)))})[0] for k, a in acc.items()}      # (S,) per set
        short = dict(zip(level, ("fused", "S1+S2", "random", "inputs", "PCA-7", "NDVI")))
        t.panels[f"land-cover probe ({probe}), balanced accuracy"] = [(short[k], v) for k, v in level.items()]
        for other in [k for k in acc if k != "fused 7-d"]:
            t.judged(OURS, "the fused embedding separates land cover better than the baselines", f"θ = {probe} probe "
                     f"balanced accuracy, fused 7-d - {other}", "-", above(0), difference(acc["fused 7-d"], acc[other]),
                     n, data_name, f"balanced accuracy {level['fused 7-d'].mean():.3f} vs {level[other].mean():.3f}",
                     fmt="{:.3f}")


def towers_name():
    return f"synthetic: {len(TOWER_SEEDS)} towers, train 2017-2019, every day of 2020 scored"


def claim_gpp(ctx, t):
    """Sec. IV-C: daily GPP from 90-day embedding windows at six synthetic towers, the paper's year
    split, every validation day scored; the transformer without the annual-phase input, as the
    paper's; the baselines at equal dimension with the same transformer and with a ridge regression."""
    where = towers_name()
    arms = [f"{r}/{fs}" for r in ("transformer", "ridge") for fs in (*GPP_SETS, "climatology")]
    err = gpp_errors(ctx, arms)
    n = {"days": err[arms[0]].shape[1]}
    rmse = {a: rmse_of(e) for a, e in err.items()}
    t.judged(PAPER, "embeddings carry GPP information beyond the seasonal cycle (IV-C)", "θ = RMSE, climatology - "
             "fused embedding (transformer, no phase input)", "RMSE 4.40 (no baseline given)", above(0),
             difference(rmse["transformer/climatology"], rmse["transformer/fused"]), n, where)
    t.judged(OURS, "positive control: the inputs carry GPP information", "θ = RMSE, climatology - the 12 inputs "
             "(transformer)", "-", above(0), difference(rmse["transformer/climatology"], rmse["transformer/inputs"]),
             n, where)
    t.panels["GPP RMSE 2020, transformer"] = [(fs[:6], np.sqrt(np.nanmean(err[f"transformer/{fs}"], 1)))
                                              for fs in (*GPP_SETS, "climatology")]
    t.panels["GPP RMSE 2020, ridge"] = [(fs[:6], np.sqrt(np.nanmean(err[f"ridge/{fs}"], 1)))
                                        for fs in (*GPP_SETS, "climatology")]
    names = {"s1+s2": "S1 + S2 latents 11-d", "random": "random weights 7-d", "pca7": "PCA-7 of the 12 inputs",
             "inputs": "the 12 inputs", "ndvi": "NDVI", "climatology": "climatology"}
    for reg in ("transformer", "ridge"):
        for fs, text in names.items():
            if reg == "transformer" and fs == "climatology":
                continue                                             # the paper's row above
            levels = [np.sqrt(np.nanmean(err[f"{reg}/{k}"], 1)).mean() for k in (fs, "fused")]
            t.judged(OURS, f"the fused 7-d embedding predicts GPP better than the baselines ({reg})",
                     f"θ = RMSE, {text} - fused 7-d", "-", above(0),
                     difference(rmse[f"{reg}/{fs}"], rmse[f"{reg}/fused"]), n, where,
                     f"RMSE {levels[0]:.2f} vs {levels[1]:.2f}")
    t.judged(PAPER, "daily embeddings beat a yearly one for GPP (Sec. V)", "θ = RMSE, each year's mean fused "
             "embedding - the daily fused embedding (transformer)", "argued, not measured", above(0),
             difference(rmse["transformer/annual"], rmse["transformer/fused"]), n, where)
    pred = gpp_predictions(ctx, ctx.seeds[0])
    fused = np.sqrt(np.nanmean(err["transformer/fused"], 1))
    spread = np.concatenate([pred[k][pred[f"year/{k[4:]}"] == 2020] for k in pred if k.startswith("obs/")])
    spread = spread[np.isfinite(spread)]
    t.unchecked(PAPER, "GPP accuracy (IV-C)", "RMSE (gC m-2 d-1) and NRMSE by range / by mean, fused, 2020",
                "RMSE 4.40, NRMSE 0.0958 (9 FLUXNET sites)", f"{mean_sd(fused)}; NRMSE {fused.mean() / np.ptp(spread):.3f}"
                f" / {fused.mean() / spread.mean():.3f}", "synthetic towers, not the paper's nine sites", where, fused)


def claim_gpp_windows(ctx, t):
    """Sec. IV-C: 60-120-day windows tested, 90 days chosen; scored on the same target days."""
    arms = [f"transformer_w{w}/fused" if w != 90 else "transformer/fused" for w in GPP_WINDOWS]
    err = gpp_errors(ctx, arms)
    n = {"days": err[arms[0]].shape[1]}
    t.panels["GPP RMSE 2020 by window (days)"] = [(str(w), np.sqrt(np.nanmean(err[a], 1)))
                                                  for w, a in zip(GPP_WINDOWS, arms)]
    for w, a in zip(GPP_WINDOWS, arms):
        if w != 90:
            t.judged(PAPER, "a 90-day window predicts GPP best (IV-C)", f"θ = RMSE, {w}-day - 90-day window (the "
                     "same target days)", "90 chosen", above(0),
                     difference(rmse_of(err[a]), rmse_of(err["transformer/fused"])), n, towers_name())
    err = gpp_errors(ctx, ["transformer/fused", "transformer_phase/fused"])
    t.judged(OURS, "an annual-phase input helps the GPP transformer", "θ = RMSE, fused without - with the "
             "phase input", "no phase input", above(0),
             difference(rmse_of(err["transformer/fused"]), rmse_of(err["transformer_phase/fused"])),
             {"days": err["transformer/fused"].shape[1]}, towers_name())


def claim_gpp_transfer(ctx, t):
    """Held-out years and towers (ridge: one fit per fold): does the embedding beat the climatology
    on a year or a tower it never saw? And how much the synthetic towers leave beyond the
    climatology at all (synthetic.make_synthetic_cube's GPP_EXPECTED)."""
    for exp, text in (("loyo", "each year held out once (2017-2020)"), ("loto", "each tower held out once")):
        err = gpp_errors(ctx, [f"{exp}/fused", f"{exp}/inputs", f"{exp}/climatology"], YEARS)
        n = {"days": err[f"{exp}/fused"].shape[1]}
        for fs, name in (("fused", "fused 7-d"), ("inputs", "the 12 inputs")):
            t.judged(OURS, f"GPP on unseen data, ridge: {text}", f"θ = RMSE, climatology - {name}", "-", above(0),
                     difference(rmse_of(err[f"{exp}/climatology"]), rmse_of(err[f"{exp}/{fs}"])), n,
                     f"synthetic: {len(TOWER_SEEDS)} towers, {text}")
    parts = {"variance": [], "clim": [], "surface": [], "floor": []}
    for seed in TOWER_SEEDS:
        _, _, flux = synthetic.make_synthetic_cube(seed, size=TOWER_SIZE, start=synthetic.TOWER_START,
                                                   end=synthetic.TOWER_END)
        year = flux.time.dt.year.values
        obs, expected = flux[fluxnet.GPP].values, flux["GPP_EXPECTED"].values
        clim = gpp.climatology(flux.time.dt.dayofyear.values, obs, year < 2020)[flux.time.dt.dayofyear.values - 1]
        ok = (year == 2020) & np.isfinite(obs)
        parts["variance"].append(np.var(obs[ok]))
        parts["clim"].append(np.mean((obs - clim)[ok] ** 2))
        parts["surface"].append(np.mean((expected - clim)[ok] ** 2))
        parts["floor"].append(np.mean((obs - expected)[ok] ** 2))
    v = {k: float(np.mean(x)) for k, x in parts.items()}
    t.unchecked(OURS, "what an embedding could capture at these towers", "2020 GPP variance; climatology MSE; its "
                "part set by the surface (phenology, soil moisture); the noise floor", "-",
                f"{v['variance']:.2f}; {v['clim']:.2f}; {v['surface']:.2f} ({100 * v['surface'] / v['clim']:.0f} %); "
                f"{v['floor']:.2f} (RMSE {np.sqrt(v['floor']):.2f})",
                "the generator's own decomposition, mean over the towers: of the climatology's squared error, "
                "the surface part is what an embedding of the land surface could remove; the rest (daily clouds, "
                "measurement noise) is beyond any embedding, so no predictor gets below the floor", towers_name())


def claim_values(ctx, t):
    """The paper's absolute values (Sec. IV-A, IV-C): checkable only at full size on real data; shown
    for the record with the project's recipe at this size."""
    where = ctx.data_name()
    s1, s2, hyb, fu = ctx.metrics("s1"), ctx.metrics("s2"), ctx.metrics("s2_hybrid"), ctx.metrics("fusion")
    why = (f"the paper's full model on 500 real annual cubes; here the small model, {ctx.ae_steps} autoencoder and "
           f"{ctx.fusion_steps} fusion steps, synthetic cubes (docs/learning.md: the 6000-step curves)")
    for text, paper, values in (("S1 centre MAE, test", "0.0006 (val)", s1["centre_mae"]),
                                ("S1 context MAE, test", "0.0319 (val)", s1["context_mae"]),
                                ("S2 centre MAE, test (MAE recipe)", "0.0037 (val)", s2["centre_mae"]),
                                ("S2 centre MAE, test (Eq. 5)", "0.0037 (val)", hyb["centre_mae"]),
                                ("S2 centre SAM (rad), test (Eq. 5)", "0.0278 (val)", hyb["centre_sam"]),
                                ("S2 SSIM loss, test (Eq. 5)", "0.1431 (val)", hyb["ssim"]),
                                ("S2 context MAE, test (Eq. 5)", "0.0141 (val)", hyb["context_mae"]),
                                ("fused S1 centre MAE, test", "0.0004", fu["centre_mae_s1"]),
                                ("fused S2 centre MAE, test", "0.0040", fu["centre_mae_s2"])):
        t.unchecked(PAPER, "the paper's values (IV-A)", text, paper, mean_sd(values), why, where, values)


def claim_offline(ctx, t):
    """Claims that need data this repository cannot download, and the paper's numbers checked against
    each other."""
    t.unchecked(PAPER, "GPP across vegetation types (IV-C, Fig. 7)", "DBF / ENF / GRA sites", "9 FLUXNET sites",
                "-", "needs the nine sites' FLUXNET and Sentinel data (gpp.py --flux ... runs them)", "-")
    t.unchecked(PAPER, "GPP comparable to the literature (IV-C)", "NRMSE / RMSE", "Montero et al. NRMSE ~0.13 (19 "
                "forests); Pabon-Moreno et al. RMSE 2.5-3.0 (58 sites)", "-", "different sites, years and inputs: "
                "the paper itself calls the setups not directly comparable", "-")
    ranges = []
    if US_WI7.is_file():
        flux = fluxnet.quality_filter(fluxnet.read_fluxnet(US_WI7))[fluxnet.GPP].values
        flux = flux[np.isfinite(flux)]
        ranges.append(f"US-Wi7 2005 (real): range {np.ptp(flux):.1f}, mean {flux.mean():.1f}")
    t.unchecked(OURS, "the paper's numbers against each other", "GPP normaliser implied by RMSE / NRMSE (train, "
                "val), gC m-2 d-1", f"{3.09 / 0.0917:.1f}, {4.40 / 0.0958:.1f}", "; ".join(ranges) or "-",
                "neither reading fits daily GPP: a mean is 2-6 and a site's range ~10-20, while 34-46 would need a "
                "range 2-3 x larger, and different for train and val over the same nine sites", "Sec. IV-C")


# name -> (function, the training runs it reads)
CLAIMS = {"hybrid_loss": (claim_hybrid_loss, ("s2", "s2_hybrid")),
          "train_val": (claim_train_val, ("s1", "s2", "s2_hybrid")),
          "fusion": (claim_fusion, ("fusion",)),
          "frozen": (claim_frozen, ("fusion", "fusion_long", "fusion_joint")),
          "fused_dim": (claim_fused_dim, ("fusion", "fusion_dim")),
          "centre_weight": (claim_centre_weight, ("fusion", "fusion_w1")),
          "kernel": (claim_kernel, ("s2", "s2_flat")),
          "baselines": (claim_baselines, ("s1", "s2")),
          "landcover": (claim_landcover, ("fusion",)),
          "gpp": (claim_gpp, ("fusion",)),
          "gpp_windows": (claim_gpp_windows, ("fusion",)),
          "gpp_transfer": (claim_gpp_transfer, ("fusion",)),
          "values": (claim_values, ("s1", "s2", "s2_hybrid", "fusion")),
          "offline": (claim_offline, ())}


def runs_of(ctx, names):
    """The training runs the claims `names` read (fusion_dim: every swept dimension)."""
    arms = ctx.arms()
    return [a for n in names for r in CLAIMS[n][1] for a in ([r] if r in arms else [a for a in arms if a.startswith(r)])]


# ----------------------------------------------------------------------------------------------
# 7. The tables and the figure
# ----------------------------------------------------------------------------------------------

def write_markdown(rows, path, header, figure):
    lines = [header, "", f"![comparisons, one dot per seed; validation curves]({figure.name})", ""]
    for table, title in ((PAPER, "## The paper's claims"), (OURS, "## This project's hypotheses and baselines")):
        counts = {v: sum(r["verdict"] == v for r in rows if r["table"] == table)
                  for v in ("supported", "inconclusive", "contradicted", "not checked")}
        lines += [title, "", ", ".join(f"{n} {v}" for v, n in counts.items()), "",
                  "| claim | θ | claim says | paper | ours: mean ± sd [95 % CI] | verdict | why |",
                  "|---|---|---|---|---|---|---|"]
        previous = None
        for r in (r for r in rows if r["table"] == table):
            cells = [r["claim"] if r["claim"] != previous else "", r["quantity"], r["region"], r["paper"], r["ours"],
                     f"**{r['verdict']}**", f"{r['why']} ({r['data']})"]
            previous = r["claim"]
            lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
        lines.append("")
    data.write_atomic(path, lambda tmp: tmp.write_text("\n".join(lines)))


def validation_curves(ctx, names):
    """{run: [(steps, val centre MAE) per seed]} from each run's log.csv."""
    curves = {}
    for name in names:
        curves[name] = []
        for s in ctx.seeds:
            with open(ctx.out(name, s) / "log.csv") as f:
                rows = list(csv.DictReader(f))
            curves[name].append(([int(r["step"]) for r in rows], [float(r["val_centre_mae"]) for r in rows]))
    return curves


def plot(panels, curves, path):
    """One panel per comparison (a bar at each mean, one dot per seed), then the validation curves."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(panels) + (1 if curves else 0)
    cols = min(max(n, 1), 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.0 * rows), squeeze=False)
    for ax, (title, bars) in zip(axes.flat, panels.items()):
        for i, (label, values) in enumerate(bars):
            ax.bar(i, np.mean(values), color="0.8")
            ax.plot(np.full(len(values), i), values, "k.", ms=5)
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
        ax.set_title(title, fontsize=8)
    if curves:
        ax = axes.flat[len(panels)]
        for k, (name, per_seed) in enumerate(curves.items()):
            for j, (steps, values) in enumerate(per_seed):
                ax.plot(steps, values, color=f"C{k % 10}", lw=0.8, label=name if j == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("step", fontsize=7)
        ax.set_title("val centre MAE of every run, every seed", fontsize=8)
        ax.legend(fontsize=5, ncol=2)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    data.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# 8. Command line
# ----------------------------------------------------------------------------------------------

def main(argv=None):
    parser = data.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"every claim with the stages' --quick model, {QUICK_AE_STEPS} autoencoder and "
                             f"{QUICK_FUSION_STEPS} fusion steps per run, on sample_data/, 3 seeds, writes docs/ "
                             "(~45 min on 2 CPU cores)")
    parser.add_argument("--claim", nargs="+", choices=sorted(CLAIMS), default=None,
                        help="run only these claims (default: all)")
    parser.add_argument("--list", action="store_true", help="list the claims and exit")
    parser.add_argument("--cubes", nargs="+", default=["sample_data"], help="training cubes (default sample_data)")
    parser.add_argument("--seeds", type=data.positive_int, default=MIN_SEEDS,
                        help=f"seeds per run (default {MIN_SEEDS}; the rule needs {MIN_SEEDS})")
    parser.add_argument("--split-seed", type=int, default=0, help="the train/val/test split of every run (default 0)")
    parser.add_argument("--max-steps", type=data.positive_int, default=None,
                        help=f"autoencoder steps per run (default {QUICK_AE_STEPS} with --quick, {FULL_AE_STEPS} "
                             "otherwise); fusion runs take half as many")
    parser.add_argument("--gpp-epochs", type=data.positive_int, default=None,
                        help=f"GPP transformer epochs (default {recipe.PRESETS['paper']['gpp']['epochs']}, gpp.py's; "
                             f"{QUICK_GPP_EPOCHS} with --quick)")
    parser.add_argument("--jobs", type=data.positive_int, default=2,
                        help="training runs at a time, one torch thread each when more than one (default 2)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--work", default=None, help="folder for the runs (default runs/reproduce, "
                        "runs/reproduce_quick with --quick)")
    parser.add_argument("--out", default=None, help="folder for claims.md/.csv/.png (default docs/ with --quick, "
                        "WORK otherwise)")
    args = parser.parse_args(argv)
    if args.list:
        for name, (fn, runs) in CLAIMS.items():
            print(f"{name:<14}{' '.join(fn.__doc__.split())} [runs: {', '.join(runs) or 'none'}]")
        return
    if not args.quick and args.claim is None:
        parser.error("give --quick (the whole table at quick size) or --claim NAME (full size)")
    work = Path(args.work or ("runs/reproduce_quick" if args.quick else "runs/reproduce"))
    out = Path(args.out or ("docs" if args.quick else work))
    recipe.prepare_output(work, resume=False)
    recipe.prepare_output(out, resume=False)
    ae_steps = args.max_steps or (QUICK_AE_STEPS if args.quick else FULL_AE_STEPS)
    gpp_epochs = args.gpp_epochs or (QUICK_GPP_EPOCHS if args.quick else recipe.PRESETS["paper"]["gpp"]["epochs"])
    ctx = Context(work.resolve(), args.cubes, list(range(args.seeds)), args.quick, ae_steps,
                  QUICK_FUSION_STEPS if args.quick and not args.max_steps else max(1, ae_steps // 2),
                  gpp_epochs, args.device, args.jobs, args.split_seed)
    names = args.claim or list(CLAIMS)
    tic = time.time()
    runs = list(dict.fromkeys(runs_of(ctx, names)))
    print(f"training {len(runs)} runs x {len(ctx.seeds)} seeds ({args.jobs} at a time): {', '.join(runs)}", flush=True)
    ctx.train_all(runs)
    table = Table()
    for i, name in enumerate(names, 1):
        t = time.time()
        CLAIMS[name][0](ctx, table)
        print(f"[{i}/{len(names)}] {name}: {time.time() - t:.0f} s ({(time.time() - tic) / 60:.1f} min in all)",
              flush=True)
    command = " ".join(["python reproduce.py", *(sys.argv[1:] if argv is None else argv)])
    timing = json.loads((work / "timing.json").read_text()) if (work / "timing.json").is_file() else {}
    cost = ", ".join(f"{k} {v / 60:.0f} min" for k, v in timing.items())
    header = (f"# The paper's claims, rerun on trained models\n\nWritten by `{command}` on {os.cpu_count()} CPU "
              f"cores ({cost or 'all cached'}; a rerun reuses every finished run and score). Runs: the stages' {'--quick model' if args.quick else 'full model'}"
              f", {ctx.ae_steps} autoencoder and {ctx.fusion_steps} fusion steps (the quick preset's cosine schedule "
              f"over that many steps); S2 with the weighted MAE unless a row says Eq. 5; seeds "
              f"{', '.join(map(str, ctx.seeds))} on the split of --split-seed {ctx.split_seed}; the last figure "
              "panel shows every run's validation curve. The learning curves to 6000 steps and the comparison with "
              "predictors that need no learning are in docs/learning.md.\n\n"
              "**The rule** (reproduce.py docstring): each row states its statistic θ and the region the claim "
              "puts it in. θ is computed per seed on all test units; mean and sd (sample sd, ddof 1) over the "
              f"seeds; a 95 % paired bootstrap interval of the mean over test units ({BOOTSTRAP_DRAWS} draws, the "
              "same draw for every run and seed: patches, probe patches or GPP days). **supported**: the interval "
              "inside the region and the mean inside by more than sd; **contradicted**: the interval outside and "
              "the mean outside by more than sd; **inconclusive** otherwise. 'About equal' and 'costs little' "
              f"mean within a factor {SAME}. **not checked**: our number, and why no verdict is possible here.")
    data.write_csv(out / "claims.csv", table.rows, COLUMNS)
    curves = validation_curves(ctx, runs)
    plot(table.panels, curves, out / "claims.png")
    write_markdown(table.rows, out / "claims.md", header, out / "claims.png")
    for r in table.rows:
        print(f"{r['verdict']:<14}{r['quantity'][:70]:<72}{r['ours']}")
    print(f"wrote {out / 'claims.md'}, {out / 'claims.csv'}, {out / 'claims.png'}")


if __name__ == "__main__":
    data.run_cli(main)
