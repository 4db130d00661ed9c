"""check.py: compare an exercise with the project's own implementation (exercises/README.md).

    python exercises/check.py 1                  # your exercises/ex01_context_kernel.py
    python exercises/check.py 1 --solution       # the reference solution, exercises/solutions/ex01_context_kernel.py
    python exercises/check.py 3 --file my_sam.py # any file defining the exercise's functions
    python exercises/check.py 7 --run runs/ex7   # a run-only exercise: reads OUT/log.csv
    python exercises/check.py 8 --run runs/ex7 runs/ex8_mae    # hybrid run, then the MAE-only run
    python exercises/check.py 9 --cube runs/quick/synth_0_embeddings.nc    # also PCA of a real cube

A code exercise is called on fixed, seeded inputs chosen so that the usual mistakes show (an
off-by-one ring distance, frame indices instead of day offsets, SSIM constants, SAM in degrees, a
BatchNorm left in train mode, a window crossing into the validation year ...) and compared with the
function the project trains with (losses.py, deepfeat.py, embed.py, gpp.py). It prints
"exercise N: OK", or for each case what differs: the max abs difference and the first differing
index with both values there. Exit status 0 on pass, 1 otherwise; a function that still raises
NotImplementedError is reported as "not implemented yet". Run it from the repository root.
"""
import argparse
import csv
import importlib.util
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------------------------
# Comparing a result with the reference
# ----------------------------------------------------------------------------------------------

def as_array(value):
    """A tensor, array or number -> float64 numpy array (None when it is none of these)."""
    import numpy as np
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def compare(label, got, want, rtol=1e-5, atol=1e-6):
    """None when got matches want elementwise (|got - want| <= atol + rtol |want|, NaN only where
    want is NaN), else one line: the shape mismatch, or the max abs difference (and where it is
    largest) and the first differing index with both values there."""
    import numpy as np
    g, w = as_array(got), as_array(want)
    if g is None:
        return f"{label}: returned {type(got).__name__}, expected an array of shape {w.shape}"
    if g.shape != w.shape and g.ndim == w.ndim == 1:          # e.g. lists of window starts
        n = min(g.size, w.size)
        first = int(np.argmax(g[:n] != w[:n])) if (g[:n] != w[:n]).any() else n
        got_there = f"{g[first]:.6g}" if first < g.size else "nothing"
        want_there = f"{w[first]:.6g}" if first < w.size else "nothing"
        return (f"{label}: length {g.size}, expected {w.size}; first differing index ({first},): "
                f"got {got_there}, expected {want_there}")
    if g.shape != w.shape:
        return f"{label}: shape {g.shape}, expected {w.shape}"
    bad = ~np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    if not bad.any():
        return None
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    diff = np.where(bad, np.nan_to_num(np.abs(g - w), nan=np.inf), 0.0)
    largest = tuple(int(i) for i in np.unravel_index(diff.argmax(), diff.shape))
    return (f"{label}: max abs difference {abs(g[largest] - w[largest]):.3g} at {largest}, "
            f"first differing index {first}: got {g[first]:.6g}, expected {w[first]:.6g}")


def problems_of(*results):
    """The non-None results of compare()."""
    return [r for r in results if r is not None]


def seeded(seed):
    """A torch Generator with a fixed seed: the checker's inputs never change between runs."""
    import torch
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# 1. Context kernel (Sec. III-A, Eq. 1, Fig. 1) vs losses.context_weights
# ----------------------------------------------------------------------------------------------

def check_context_kernel(mod, args):
    import losses
    # default kernel; a small non-square one with a slow decay, where alpha^d instead of
    # alpha^(d - 1), Euclidean rings or swapped H/W differ by a lot; a flat kernel (alpha 1)
    cases = [{},
             dict(T=5, H=7, W=9, alpha=0.5, centre_weight=1.75, ring_weight=0.2, normalise=False),
             dict(T=3, H=5, W=5, alpha=1.0, ring_weight=1.0)]
    problems = []
    for kw in cases:
        label = "context_weights(" + ", ".join(f"{k}={v}" for k, v in kw.items()) + ")"
        # relative tolerance: the default kernel's corner weights are ~1e-13, its centre ~0.74
        problems += problems_of(compare(label, mod.context_weights(**kw), losses.context_weights(**kw),
                                        rtol=1e-5, atol=1e-20))
    if not problems:
        w = losses.context_weights()
        T, H, W = w.shape
        t, y, x = T // 2, H // 2, W // 2
        print(f"default kernel: centre weight {float(w[t, y, x]):.4f}, first ring {float(w[t, y, x + 1]):.3g}, "
              f"central frame holds {float(w[t].sum()):.3f} of the total weight")
    return problems


# ----------------------------------------------------------------------------------------------
# 2. SSIM (Sec. III-A, Eq. 2-3) vs losses.ssim_map / losses.ssim_loss
# ----------------------------------------------------------------------------------------------

def ssim_inputs():
    """Low-contrast reflectance-like cubes (B, T, C, H, W) = (2, 3, 2, 15, 15): the variances (~1e-4)
    are of the size of C1 and C2, and target is brighter than pred, so wrong constants show. float64,
    because in float32 the reference's var = E[x^2] - mu^2 already loses ~1e-5 to cancellation."""
    import torch
    g = seeded(2)
    pred = 0.1 + 0.02 * torch.rand(2, 3, 2, 15, 15, generator=g, dtype=torch.float64)
    target = 1.3 * pred + 0.01 * torch.rand(2, 3, 2, 15, 15, generator=g, dtype=torch.float64)
    return pred, target


def check_ssim(mod, args):
    import losses
    pred, target = ssim_inputs()
    B, T, C, H, W = pred.shape

    def reference(p, t, **kw):                                  # (B, T*C, H', W') -> (B, T, C, H', W')
        m = losses.ssim_map(p, t, **kw)
        return m.reshape(B, T, C, *m.shape[-2:])

    problems = problems_of(
        compare("ssim_map(pred, target)", mod.ssim_map(pred, target), reference(pred, target)),
        compare("ssim_map(pred, pred) (identical: 1 everywhere)", mod.ssim_map(pred, pred), reference(pred, pred)),
        compare("ssim_map(2 pred, 2 target, data_range=2.0)", mod.ssim_map(2 * pred, 2 * target, data_range=2.0),
                reference(2 * pred, 2 * target, data_range=2.0)),
        compare("ssim_map(pred, target, window=5, sigma=1.0)", mod.ssim_map(pred, target, window=5, sigma=1.0),
                reference(pred, target, window=5, sigma=1.0)),
        compare("ssim_loss(pred, target)", mod.ssim_loss(pred, target), losses.ssim_loss(pred, target)))
    if not problems:
        h, w = reference(pred, target).shape[-2:]
        print(f"ssim_loss on the checker's cubes: {float(losses.ssim_loss(pred, target)):.4f} "
              f"(a {H} x {W} frame gives a {h} x {w} map)")
    return problems


# ----------------------------------------------------------------------------------------------
# 3. SAM (Sec. III-A, Eq. 4) vs losses.sam
# ----------------------------------------------------------------------------------------------

def check_sam(mod, args):
    import math

    import torch

    import losses
    g = seeded(3)
    pred = torch.rand(2, 3, 4, 5, 5, generator=g) + 0.05           # (B, T, C, H, W) positive spectra
    target = torch.rand(2, 3, 4, 5, 5, generator=g) + 0.05
    B, T, C, H, W = pred.shape
    # one spectrum at a time, as (1, 1, C, 1, 1) cubes: a difference gets its position (b, t, y, x)
    one = [(pred[b, t, :, y, x].reshape(1, 1, C, 1, 1), target[b, t, :, y, x].reshape(1, 1, C, 1, 1))
           for b in range(B) for t in range(T) for y in range(H) for x in range(W)]
    per_position = torch.tensor([float(mod.sam(p, q)) for p, q in one])
    zero = torch.zeros_like(pred)
    zero[:, :, :, 0] = pred[:, :, :, 0]                             # rows y >= 1: all-zero spectra
    problems = problems_of(
        compare("sam of single spectra, index (b, t, y, x)", per_position.reshape(B, T, H, W),
                torch.stack([losses.sam(p, q) for p, q in one]).reshape(B, T, H, W)),
        compare("sam(pred, target), mean over all positions", mod.sam(pred, target), losses.sam(pred, target)),
        compare("sam(pred, 2.5 * pred) (same direction: acos(1 - 1e-7) rad)", mod.sam(pred, 2.5 * pred),
                losses.sam(pred, 2.5 * pred)),
        compare("sam(pred, -pred) (opposite: ~pi rad)", mod.sam(pred, -pred), losses.sam(pred, -pred)),
        compare("sam(zero spectra, target) (angle pi/2)", mod.sam(zero, target), losses.sam(zero, target)))
    if not problems:
        angle = float(losses.sam(pred, target))
        print(f"mean angle of the checker's random spectra: {angle:.4f} rad = {math.degrees(angle):.2f} degrees")
    return problems


# ----------------------------------------------------------------------------------------------
# 4. CBAM (Sec. III-B, Fig. 3) vs deepfeat.CBAM with the same weights
# ----------------------------------------------------------------------------------------------

def check_cbam(mod, args):
    import torch

    import deepfeat
    torch.manual_seed(4)
    reference = deepfeat.CBAM(8)
    yours = mod.CBAM(8)
    try:
        yours.load_state_dict(reference.state_dict())
    except RuntimeError as err:
        return [f"the reference weights do not load into your CBAM (keep the given __init__): {err}"]
    g = seeded(4)
    x = torch.randn(3, 8, 15, 15, generator=g)                          # (N, C, H, W)
    x = x + torch.linspace(-1, 1, 8)[None, :, None, None]               # channels differ in mean and max
    with torch.no_grad():
        return problems_of(
            compare("channel_gate(x), (N, C, 1, 1)", yours.channel_gate(x), reference.channel_gate(x)),
            compare("spatial_gate(x), (N, 1, H, W)", yours.spatial_gate(x), reference.spatial_gate(x)),
            compare("forward(x), (N, C, H, W)", yours(x), reference(x)))


# ----------------------------------------------------------------------------------------------
# 5. Temporal encoding of real day offsets (Sec. III-B) vs deepfeat.TemporalEncoding
# ----------------------------------------------------------------------------------------------

def check_temporal_encoding(mod, args):
    import torch

    import deepfeat
    D = 16
    # row 0: 11 S2 dates with cloudy gaps (days since 1970, 2022-01-08 onwards); row 1: every 5 days
    # float32, as train.patch_batches hands days to the model
    gappy = 19000.0 + torch.tensor([0.0, 5, 10, 15, 45, 50, 55, 60, 65, 95, 100])
    regular = 19000.0 + 5 * torch.arange(11.0)
    days = torch.stack([gappy, regular])                                   # (B, T)
    reference = deepfeat.TemporalEncoding(D)
    cases = [("temporal_encoding(days, 16) with gaps (row 0) and without (row 1), index (b, t, d)", days),
             ("the same dates shifted by 365.25 days", days + 365.25),
             ("fractional days (acquisition times)", days + torch.rand(2, 11, generator=seeded(5)))]
    problems = []
    for label, d in cases:
        problems += problems_of(compare(label, mod.temporal_encoding(d, D), reference(d - d[:, :1]), atol=1e-5))
    if not problems:
        enc = reference(days - days[:, :1])
        print(f"encodings of the gappy and the regular window: frames 0-3 equal, max |difference| over frames "
              f"4-10 {float((enc[0] - enc[1]).abs().max()):.3f} (frame indices 0..10 would give 0)")
    return problems


# ----------------------------------------------------------------------------------------------
# 6. Freezing (Sec. III-C): one optimizer step leaves every frozen tensor bit-identical
# ----------------------------------------------------------------------------------------------

def check_freezing(mod, args):
    import torch

    import train
    from deepfeat import AutoencoderConfig, ModalityAutoencoder
    torch.manual_seed(6)
    cfg = AutoencoderConfig("s2", ("B04", "B08"), 2, **train.QUICK_AUTOENCODER)
    ae = ModalityAutoencoder(cfg)
    head = torch.nn.Linear(cfg.latent_dim, cfg.latent_dim)          # stands in for the fusion layers
    shape = (4, cfg.n_frames, len(cfg.bands), cfg.patch, cfg.patch)  # (B, T, C, H, W)
    days = 5 * torch.arange(float(cfg.n_frames)).repeat(4, 1)       # (B, T) every 5 days
    with torch.no_grad():
        ae.train()(torch.rand(shape), days)                        # "pretrained" BatchNorm statistics
    before = {k: v.clone() for k, v in ae.state_dict().items()}
    mod.freeze(ae)
    problems = [f"after freeze: parameter {n} still requires a gradient"
                for n, p in ae.named_parameters() if p.requires_grad][:1]
    problems += [f"after freeze: submodule {n or '(the autoencoder)'} ({type(m).__name__}) is in train mode"
                 for n, m in ae.named_modules() if m.training][:1]

    # one fusion-stage step, as train.fit does it: the optimizer gets what requires a gradient
    params = [p for p in [*ae.parameters(), *head.parameters()] if p.requires_grad]
    head_before = head.weight.detach().clone()
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    x = torch.rand(shape, generator=seeded(6))
    head.train()
    loss = (ae.decode(head(ae.encode(x, days)), days) - x).abs().mean()
    loss.backward()
    optimizer.step()
    changed = [k for k, v in ae.state_dict().items() if not torch.equal(v, before[k])]
    if changed:
        problems.append(f"{len(changed)} frozen tensors changed in one optimizer step, first {changed[0]}")
    if torch.equal(head.weight, head_before):
        problems.append("the trainable head did not change: nothing was trained")

    # changed_tensors must see a buffer change and a change of one unit in the last place
    state = ae.state_dict()
    weight = next(k for k in state if k.endswith("conv.weight"))
    plants = {"nothing": None, "BatchNorm running_var": "enc_blocks.0.norm.running_var",
              "BatchNorm num_batches_tracked": "enc_blocks.1.norm.num_batches_tracked",
              "one ulp of a weight": weight}
    for what, name in plants.items():
        after = {k: v.clone() for k, v in state.items()}
        if name is not None:
            t = after[name]
            after[name] = t + 1 if t.dtype == torch.long else torch.nextafter(t, t + 1)
        got = mod.changed_tensors(state, after)
        want = [] if name is None else [name]
        if list(got) != want:
            problems.append(f"changed_tensors after changing {what}: got {list(got)[:3]}, expected {want}")
    if not problems:
        n_frozen = sum(p.numel() for p in ae.parameters())
        print(f"{len(before)} frozen tensors ({n_frozen:,} parameters + BatchNorm buffers) bit-identical after "
              f"one AdamW step of the head ({sum(p.numel() for p in head.parameters())} parameters)")
    return problems


# ----------------------------------------------------------------------------------------------
# 7. and 8. Run-only: train_s2.py logs (Sec. IV-A1, Fig. 5; Eq. 5 ablation)
# ----------------------------------------------------------------------------------------------

def read_csv_rows(path):
    """Rows of a CSV file as dicts of strings; a clear message when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the exercise's training command first (README)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_s2_run(mod, args):
    run = Path(args.run[0] if args.run else "runs/ex7")
    rows = read_csv_rows(run / "log.csv")
    columns = ("epoch", "step", "train_centre_mae", "val_centre_mae", "val_centre_sam", "val_ssim")
    missing = [c for c in columns if rows and c not in rows[0]]
    if not rows or missing:
        return [f"{run / 'log.csv'}: no epochs or no columns {missing}; is it a train_s2.py run?"]
    print("  ".join(f"{c:>16}" for c in columns))
    for row in rows:
        print("  ".join(f"{float(row[c]):>16.4f}" if "_" in c else f"{row[c]:>16}" for c in columns))
    if len(rows) < 2:
        return [f"{run / 'log.csv'} has {len(rows)} epoch; the curves need at least 2 (more --max-steps)"]
    first, last = float(rows[0]["val_centre_mae"]), float(rows[-1]["val_centre_mae"])
    if not last < first:
        return [f"validation centre MAE did not fall: epoch 1 {first:.4f}, epoch {rows[-1]['epoch']} {last:.4f}"]
    print(f"validation centre MAE fell {first:.4f} -> {last:.4f} ({100 * (1 - last / first):.0f} % lower); "
          f"curves: {run / 'loss_curves.png'}")
    return []


def check_loss_ablation(mod, args):
    runs = [Path(p) for p in (args.run or ["runs/ex7", "runs/ex8_mae"])]
    if len(runs) != 2:
        return ["give two runs: --run HYBRID_OUT MAE_OUT"]
    names = ("hybrid", "mae")
    tests = {n: {r["metric"]: float(r["value"]) for r in read_csv_rows(p / "test_metrics.csv")}
             for n, p in zip(names, runs)}
    logs = {n: read_csv_rows(p / "log.csv") for n, p in zip(names, runs)}
    if not all(logs.values()):
        return ["a log.csv without epochs: did the run finish?"]
    steps = {n: rows[-1]["step"] for n, rows in logs.items()}
    print(f"{'test metric':>14}  {'hybrid (Eq. 5)':>14}  {'MAE only':>10}  change")
    for metric in ("centre_mae", "centre_sam", "ssim", "context_mae"):
        h, m = tests["hybrid"][metric], tests["mae"][metric]
        print(f"{metric:>14}  {h:>14.4f}  {m:>10.4f}  {100 * (h / m - 1):+.0f} %")
    if steps["hybrid"] != steps["mae"]:
        return [f"the runs trained {steps['hybrid']} and {steps['mae']} steps; compare equal --max-steps"]
    if not tests["hybrid"]["ssim"] < tests["mae"]["ssim"]:
        return [f"the hybrid run's SSIM loss {tests['hybrid']['ssim']:.4f} is not below the MAE-only run's "
                f"{tests['mae']['ssim']:.4f}: are the runs given in the order hybrid, mae?"]
    return []


# ----------------------------------------------------------------------------------------------
# 9. PCA (Sec. IV-B, Fig. 6) vs embed.pca_fit
# ----------------------------------------------------------------------------------------------

def aligned(components, reference):
    """Flip the sign of each row of `components` to agree with the same row of `reference`
    (a principal axis has no preferred sign)."""
    import numpy as np
    c = np.array(components, dtype=np.float64)
    if c.shape == reference.shape:
        c *= np.where((c * reference).sum(axis=1, keepdims=True) < 0, -1.0, 1.0)
    return c


def pca_problems(mod, X, label):
    import embed
    mean, comps, explained = embed.pca_fit(X)
    got_mean, got_comps, got_explained = mod.pca_fit(X)
    return problems_of(compare(f"{label}: mean", got_mean, mean),
                       compare(f"{label}: components (sign-aligned), index (component, feature)",
                               aligned(got_comps, comps), comps, atol=1e-5),
                       compare(f"{label}: explained variance ratio", got_explained, explained))


def check_pca(mod, args):
    import numpy as np
    rng = np.random.default_rng(9)
    # 500 fused 7-d embeddings: distinct variances along a random orthonormal basis, mean far from 0
    basis, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    X = (rng.normal(size=(500, 7)) * [5, 3, 2, 1, 0.5, 0.3, 0.1]) @ basis.T + 10 * rng.normal(size=7)
    problems = pca_problems(mod, X, "pca_fit(500 x 7 seeded embeddings)")
    if args.cube and not problems:
        import embed
        emb = embed.open_embedding(args.cube)
        Y = emb.values.reshape(-1, emb.sizes["feature"])
        Y = Y[np.isfinite(Y).all(axis=1)].astype(np.float64)
        problems += pca_problems(mod, Y, f"pca_fit({args.cube})")
        if not problems:
            print(f"{args.cube}: {len(Y):,} valid pixel-dates x {Y.shape[1]} features; explained variance of "
                  "PC1-3: " + ", ".join(f"{r:.3f}" for r in mod.pca_fit(Y)[2]))
    return problems


# ----------------------------------------------------------------------------------------------
# 10. GPP windows (Sec. IV-C) vs gpp.make_windows
# ----------------------------------------------------------------------------------------------

def leaks(starts, years, split_years, window):
    """A message for the first window holding days outside split_years (the leakage a wrong split causes)."""
    import numpy as np
    for s in map(int, starts):
        days = years[s:s + window]                                  # (window,) year of each day
        outside = ~np.isin(days, list(split_years))
        if outside.any():
            return [f"window of days {s}-{s + window - 1} holds {int(outside.sum())} days of "
                    f"{sorted(set(days[outside].tolist()))}, outside the split's years {tuple(split_years)}: leakage"]
    return []


def check_gpp_windows(mod, args):
    import numpy as np

    import gpp
    dates = np.arange(np.datetime64("2017-01-01"), np.datetime64("2021-01-01"))        # (N,) 4 years, daily
    years = dates.astype("datetime64[Y]").astype(int) + 1970
    rng = np.random.default_rng(10)
    x_ok = np.ones(len(dates), bool)
    x_ok[500:520] = False                                       # a 20-day gap in the predictors (2018)
    # one missing day on the LAST day of the windows starting at 530 (90 days) and 1098 (30 days):
    # a window one day short keeps them
    ends = [530 + 89, 1098 + 29, len(dates) - 1]
    x_ok[ends[:2]] = False
    y_ok = rng.random(len(dates)) > 0.15                        # 15 % of days fail the QC filter
    # targets observed at those ends, and at the last day: 1461 - 30 = 1431 = 159 x 9, so with
    # window 30 and stride 9 the last possible start, 1431, is a window
    y_ok[ends] = True
    cases = [("train 2017-2019", (2017, 2018, 2019), y_ok, 90, 10),
             ("validation 2020", (2020,), y_ok, 90, 10),
             ("train, no target needed (y_ok None)", (2017, 2018, 2019), None, 90, 10),
             ("validation, window 30, stride 9", (2020,), y_ok, 30, 9)]
    problems = []
    for label, split, y, window, stride in cases:
        got = np.asarray(mod.make_windows(years, x_ok, y, split, window=window, stride=stride))
        want = gpp.make_windows(years, x_ok, y, split, window=window, stride=stride)
        found = compare(f"{label}: window starts (got {got.size}, expected {want.size})", got, want, 0, 0)
        if found:
            problems += [found] + leaks(got, years, split, window)
    if not problems:
        n = {label: len(gpp.make_windows(years, x_ok, y, split, w, s)) for label, split, y, w, s in cases[:2]}
        print("90-day windows, stride 10: " + ", ".join(f"{k} {v}" for k, v in n.items()))
    return problems


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

# exercise -> (learner's file, or None for a run-only exercise; check(module, args) -> problems)
EXERCISES = {
    1: ("ex01_context_kernel.py", check_context_kernel),
    2: ("ex02_ssim.py", check_ssim),
    3: ("ex03_sam.py", check_sam),
    4: ("ex04_cbam.py", check_cbam),
    5: ("ex05_temporal_encoding.py", check_temporal_encoding),
    6: ("ex06_freezing.py", check_freezing),
    7: (None, check_s2_run),
    8: (None, check_loss_ablation),
    9: ("ex09_pca.py", check_pca),
    10: ("ex10_gpp_windows.py", check_gpp_windows),
}


def load_module(path, name):
    """Import a learner's file by path (a fresh module each time, never cached under a shared name)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description="Check an exercise of exercises/README.md against the project.")
    parser.add_argument("exercise", type=int, choices=sorted(EXERCISES), help="exercise number, 1-10")
    parser.add_argument("--solution", action="store_true",
                        help="check the reference solution in exercises/solutions/ (default: your exercises/exNN_*.py)")
    parser.add_argument("--file", default=None, help="check this file instead (default: exercises/exNN_*.py)")
    parser.add_argument("--run", nargs="+", default=None, metavar="OUT",
                        help="exercise 7: the train_s2.py output folder (default runs/ex7); exercise 8: the hybrid "
                             "and the MAE-only folders (default runs/ex7 runs/ex8_mae)")
    parser.add_argument("--cube", default=None, metavar="EMB.nc",
                        help="exercise 9: also compare the PCA on this embedding cube (default: none)")
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:               # losses, deepfeat, embed, gpp, train: the references
        sys.path.insert(0, str(ROOT))
    n = args.exercise
    filename, check = EXERCISES[n]
    module = None
    try:
        if filename is not None:
            path = Path(args.file) if args.file else (HERE / "solutions" if args.solution else HERE) / filename
            module = load_module(path, f"exercise_{n}_{'solution' if args.solution else 'yours'}")
            print(f"exercise {n}: checking {path}")
        problems = check(module, args)
    except NotImplementedError as err:
        print(f"exercise {n}: not implemented yet ({err or 'a function still raises NotImplementedError'})")
        return 1
    except FileNotFoundError as err:
        print(f"exercise {n}: {err}")
        return 1
    except Exception as err:                   # the learner's code failed: show where, then a summary
        traceback.print_exc()
        print(f"exercise {n}: your code raised {type(err).__name__}: {err}")
        return 1
    for problem in problems:
        print(f"  {problem}")
    print(f"exercise {n}: OK" if not problems else f"exercise {n}: {len(problems)} check(s) failed")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
