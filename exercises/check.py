"""check.py: compare an exercise with the project's own implementation (exercises/README.md).

    python exercises/check.py --start 1          # copy the stub to exercises/mywork/ (git-ignored), once
    python exercises/check.py 1                  # check your exercises/mywork/ex01_context_kernel.py
    python exercises/check.py 1 --solution       # the reference solution, exercises/solutions/ex01_context_kernel.py
    python exercises/check.py 3 --file my_sam.py # any file defining the exercise's functions
    python exercises/check.py 7 --run runs/ex7   # a run-only exercise: reads OUT/log.csv
    python exercises/check.py 8 --run runs/ex7 runs/ex8_mae    # hybrid run, then the MAE-only run
    python exercises/check.py 9 --cube runs/quick/synth_0_embeddings.nc    # also PCA of a real cube

A code exercise is first read for shortcuts: a file that imports a module of this repository
(losses, deepfeat, embed, gpp, train, ...) or reaches one without an import statement (importlib,
__import__, exec, sys.modules) is refused with one line. Then it is called on fixed, seeded inputs
chosen so that the usual mistakes show (an off-by-one ring distance, an even-sized kernel, frame
indices instead of day offsets, SSIM constants, a NaN cloud, SAM in degrees, a BatchNorm left in
train mode, a window crossing into the validation year ...) and compared with the function the
project trains with (losses.py, deepfeat.py, embed.py, gpp.py). It prints "exercise N: OK", or for
each case what differs: the max abs difference and the first differing index with both values
there, then the exercise's hints (the usual mistakes behind such a difference, kept out of the stubs
so that they do not give the answer away). Exit status 0 on pass, 1 otherwise; a function that still
raises NotImplementedError is reported as "not implemented yet". Run it from the repository root.
"""
import argparse
import ast
import csv
import importlib.util
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
MYWORK = HERE / "mywork"                        # the learner's copies of the stubs (ignored by git)

# A small autoencoder and fusion model (the size of the training scripts' --quick preset), written
# out here so that the checker imports no training code.
TINY_AUTOENCODER = dict(width=8, token_channels=4, n_heads=4, n_layers=1, dropout=0.0)
TINY_FUSION = dict(d_model=32, n_heads=4, n_layers=1, dropout=0.0)


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
# Shortcuts: a learner's file may not use the project's own implementation
# ----------------------------------------------------------------------------------------------

# The repository's modules (the references and everything that imports them) and the exercise folders.
PROJECT_MODULES = {p.stem for p in ROOT.glob("*.py")} | {"exercises", "solutions", "check", "tests"}
# Ways to reach a module without an import statement that names it.
LOADERS = {"importlib", "runpy", "pkgutil", "builtins", "subprocess"}
DYNAMIC = {"__import__", "exec", "eval", "compile", "__builtins__"}


def shortcut(source, filename):
    """None, or one line on the first place where a learner's file reaches the project's own code:
    an import of a project module (and the first attribute read on it), a module loader, or
    sys.modules. Read from the source (ast), before the file runs."""
    tree = ast.parse(source, filename)
    found, aliases = [], {}                                    # (line, what); local name -> project module
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in modules:
                top = name.split(".")[0]
                if top in PROJECT_MODULES:
                    found.append((node.lineno, f"imports {name}, a module of this repository"))
                elif top in LOADERS:
                    found.append((node.lineno, f"imports {name}, which loads modules"))
            if isinstance(node, ast.Import):
                aliases.update({a.asname or a.name.split(".")[0]: a.name for a in node.names
                                if a.name.split(".")[0] in PROJECT_MODULES})
        elif isinstance(node, ast.Name) and node.id in DYNAMIC:
            found.append((node.lineno, f"uses {node.id}"))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr == "modules" \
                and node.value.id == "sys":
            found.append((node.lineno, "reads sys.modules"))
    if not found:
        return None
    line, what = min(found)
    uses = sorted((n.lineno, f"{n.value.id}.{n.attr}") for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                  and isinstance(n.value, ast.Name) and n.value.id in aliases)
    used = f" (line {uses[0][0]} uses {uses[0][1]})" if uses else ""
    return (f"refused: line {line} {what}{used}: the checker compares your code with the project's, "
            "so write it with torch, numpy and math")


# ----------------------------------------------------------------------------------------------
# 1. Context kernel (Sec. III-A, Eq. 1, Fig. 1) vs losses.context_weights
# ----------------------------------------------------------------------------------------------

def check_context_kernel(mod, args):
    import losses
    # default kernel; a small non-square one with a slow decay, where alpha^d instead of
    # alpha^(d - 1), Euclidean rings or swapped H/W differ by a lot; a flat kernel (alpha 1); even
    # sizes, where the centre T//2, H//2, W//2 is the later of the two middle indices, not (T - 1)/2
    cases = [{},
             dict(T=5, H=7, W=9, alpha=0.5, centre_weight=1.75, ring_weight=0.2, normalise=False),
             dict(T=3, H=5, W=5, alpha=1.0, ring_weight=1.0),
             dict(T=4, H=6, W=8, alpha=0.5, centre_weight=2.0, ring_weight=0.3, normalise=False),
             dict(T=2, H=4, W=4, alpha=0.25)]
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
    # float32, as recipe.patch_batches hands days to the model
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

    from deepfeat import AutoencoderConfig, ModalityAutoencoder
    torch.manual_seed(6)
    cfg = AutoencoderConfig("s2", ("B04", "B08"), 2, **TINY_AUTOENCODER)
    ae = ModalityAutoencoder(cfg)
    head = torch.nn.Linear(cfg.latent_dim, cfg.latent_dim)          # stands in for the fusion layers
    shape = (4, cfg.n_frames, len(cfg.bands), cfg.patch, cfg.patch)  # (B, T, C, H, W)
    days = 5 * torch.arange(float(cfg.n_frames)).repeat(4, 1)       # (B, T) every 5 days
    with torch.no_grad():
        ae.train()(torch.rand(shape), days)                        # "pretrained" BatchNorm statistics
    before = {k: v.clone() for k, v in ae.state_dict().items()}
    returned = mod.freeze(ae)
    problems = [] if returned is ae else [
        f"freeze(module) returned {type(returned).__name__}, expected the module itself (freeze(ae).encode(...))"]
    problems += [f"after freeze: parameter {n} still requires a gradient"
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

    # changed_tensors must see a buffer change and one unit in the last place, and list several
    # changes in the order of `before` (here the reverse of `after`'s)
    state = ae.state_dict()
    weight = next(k for k in state if k.endswith("conv.weight"))
    plants = {"nothing": [], "BatchNorm running_var": ["enc_blocks.0.norm.running_var"],
              "BatchNorm num_batches_tracked": ["enc_blocks.1.norm.num_batches_tracked"],
              "one ulp of a weight": [weight],
              "three tensors": [weight, "enc_blocks.0.norm.running_var", "enc_blocks.1.norm.num_batches_tracked"]}
    for what, names in plants.items():
        after = {k: v.clone() for k, v in reversed(state.items())}
        for name in names:
            t = after[name]
            after[name] = t + 1 if t.dtype == torch.long else torch.nextafter(t, t + 1)
        got = mod.changed_tensors(state, after)
        want = [k for k in state if k in names]
        if not isinstance(got, (list, tuple)) or list(got) != want:
            shown = list(got)[:3] if isinstance(got, (list, tuple)) else f"a {type(got).__name__}"
            problems.append(f"changed_tensors after changing {what}: got {shown}, expected the list {want}")
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


def pca_problems(mod, X, label, k=3):
    import embed
    mean, comps, explained = embed.pca_fit(X, k)
    got_mean, got_comps, got_explained = mod.pca_fit(X, k)
    return problems_of(compare(f"{label}: mean", got_mean, mean),
                       compare(f"{label}: components (sign-aligned), index (component, feature)",
                               aligned(got_comps, comps), comps, atol=1e-5),
                       compare(f"{label}: explained variance ratio", got_explained, explained))


def check_pca(mod, args):
    import numpy as np
    rng = np.random.default_rng(9)
    # 500 fused 7-d embeddings: distinct variances along a random orthonormal basis, mean far from 0;
    # k = 1, 3 and all 7, and 40 points in 4-d, so that neither k nor F can be hard-coded
    basis, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    X = (rng.normal(size=(500, 7)) * [5, 3, 2, 1, 0.5, 0.3, 0.1]) @ basis.T + 10 * rng.normal(size=7)
    small = rng.normal(size=(40, 4)) * [0.5, 2.0, 1.0, 0.2] - 3.0
    problems = []
    for data, k in ((X, 3), (X, 1), (X, 7), (small, 2)):
        problems += pca_problems(mod, data, f"pca_fit({len(data)} x {data.shape[1]} seeded embeddings, k={k})", k)
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
# 11. SSIM under clouds (Sec. III-A, Eq. 2-3) vs losses.ssim_map / losses.ssim / losses.ssim_loss
# ----------------------------------------------------------------------------------------------

def cloudy_inputs():
    """ssim_inputs() with missing target values (B, T, C, H, W) = (2, 3, 2, 15, 15), float64: NaN
    clouds (a 5 x 6 blob in both bands, one lone pixel in one band, one whole frame), and a `valid`
    mask that is False on a finite stripe (a saturated column) but True on the NaN clouds, which
    therefore count as missing only through their NaN."""
    import torch
    pred, target = ssim_inputs()
    target[0, 0, :, 2:7, 3:9] = float("nan")
    target[1, 1, 0, 7, 7] = float("nan")
    target[1, 2] = float("nan")
    valid = torch.ones_like(target, dtype=torch.bool)
    valid[0, 2, :, :, 14] = False
    return pred, target, valid


def check_masked_ssim(mod, args):
    import torch

    import losses
    pred, target, valid = cloudy_inputs()
    B, T, C, H, W = pred.shape

    def reference_map(p, t, v=None, **kw):                      # (B, T*C, H', W') -> (B, T, C, H', W')
        m = losses.ssim_map(p, t, v, **kw)
        return m.reshape(B, T, C, *m.shape[-2:])

    def gradient(fn, *inputs, **kw):                            # d fn(pred, ...).sum() / d pred
        p = pred.clone().requires_grad_(True)
        fn(p, *inputs, **kw).sum().backward()
        return p.grad

    nowhere = torch.full_like(target, float("nan"))
    problems = problems_of(
        compare("ssim_map(pred, target) (NaN clouds)", mod.ssim_map(pred, target), reference_map(pred, target)),
        compare("ssim_map(pred, target, valid)", mod.ssim_map(pred, target, valid), reference_map(pred, target, valid)),
        compare("ssim_map(pred, target, valid, window=5, sigma=1.0)",
                mod.ssim_map(pred, target, valid, window=5, sigma=1.0),
                reference_map(pred, target, valid, window=5, sigma=1.0)),
        compare("ssim(pred, target, valid)", mod.ssim(pred, target, valid), losses.ssim(pred, target, valid)),
        compare("ssim(pred, target, valid, window=5, sigma=1.0)", mod.ssim(pred, target, valid, window=5, sigma=1.0),
                losses.ssim(pred, target, valid, window=5, sigma=1.0)),
        compare("ssim_loss(pred, target)", mod.ssim_loss(pred, target), losses.ssim_loss(pred, target)),
        compare("ssim_loss(pred, target, valid)", mod.ssim_loss(pred, target, valid),
                losses.ssim_loss(pred, target, valid)),
        compare("ssim_loss(pred, a target that is all NaN) (no complete window)", mod.ssim_loss(pred, nowhere),
                losses.ssim_loss(pred, nowhere)),
        compare("gradient of ssim_map(pred, target, valid).sum() with respect to pred",
                gradient(mod.ssim_map, target, valid), gradient(losses.ssim_map, target, valid)),
        compare("gradient of ssim_loss(pred, target, valid) with respect to pred",
                gradient(mod.ssim_loss, target, valid), gradient(losses.ssim_loss, target, valid)))
    if not problems:
        observed = (valid & torch.isfinite(target)).double()
        share = torch.nn.functional.avg_pool2d(observed.reshape(B, T * C, H, W), 7, stride=1)   # (B, T*C, 9, 9)
        every = 1 - losses.ssim_map(pred, target, valid).mean()
        print(f"{100 * (1 - float(observed.mean())):.0f} % of the target values missing; of {share.numel()} "
              f"windows {int((share > 1 - 1e-6).sum())} complete (scored), {int((share < 1e-6).sum())} entirely "
              f"and {int(((share > 1e-6) & (share < 1 - 1e-6)).sum())} partly missing; SSIM loss over the complete "
              f"windows {float(losses.ssim_loss(pred, target, valid)):.4f}, over every window {float(every):.4f}")
    return problems


# ----------------------------------------------------------------------------------------------
# 12. The fusion stage's freezing (Sec. III-C) on a deepfeat.FusionModel
# ----------------------------------------------------------------------------------------------

def unfrozen_fusion_model():
    """A small deepfeat.FusionModel of S1 and S2 autoencoders with "pretrained" BatchNorm statistics,
    nothing frozen and its own freezing switched off (train() is nn.Module's, trainable_parameters()
    refuses), so that the learner's FusionStage does all of it; and a batch {m: (x, days)} with NaN."""
    import torch

    from deepfeat import AutoencoderConfig, FusionConfig, FusionModel, ModalityAutoencoder

    class Unfrozen(FusionModel):
        def train(self, mode=True):
            return torch.nn.Module.train(self, mode)

        def trainable_parameters(self):
            raise AttributeError("exercise 12 hands you a FusionModel without trainable_parameters: write your own")

    torch.manual_seed(12)
    configs = {"s1": AutoencoderConfig("s1", ("VV", "VH"), 2, **TINY_AUTOENCODER),
               "s2": AutoencoderConfig("s2", ("B04", "B08"), 9, **TINY_AUTOENCODER)}
    model = Unfrozen({m: ModalityAutoencoder(cfg) for m, cfg in configs.items()}, FusionConfig(**TINY_FUSION))
    model.unfreeze()
    g = seeded(12)
    batch = {}
    for m, cfg in configs.items():
        x = torch.rand(4, cfg.n_frames, len(cfg.bands), cfg.patch, cfg.patch, generator=g)   # (B, T, C, H, W)
        x[:, 3, :, :5] = float("nan")                                                       # a cloud
        batch[m] = (x, 5 * torch.arange(float(cfg.n_frames)).repeat(4, 1))                  # days (B, T)
    with torch.no_grad():
        model.train()(batch)                                   # "pretrained" BatchNorm statistics
    return model, batch


def mode_problems(stage, fusion, call, training):
    """The first module in the wrong mode after `call`: the autoencoders always in eval mode, the
    stage and the fusion layers in train mode when `training`."""
    expected = [("the FusionStage", stage, training)]
    expected += [(f"fusion.{n}".rstrip("."), m, training and not n.startswith("autoencoders"))
                 for n, m in fusion.named_modules()]
    return [f"after {call}: {name} ({type(m).__name__}) is in {'train' if m.training else 'eval'} mode"
            for name, m, want in expected if m.training != want][:1]


def check_fusion_stage(mod, args):
    import torch
    fusion, batch = unfrozen_fusion_model()
    before = {k: v.clone() for k, v in fusion.autoencoders.state_dict().items()}
    stage = mod.FusionStage(fusion)
    # gradients: none for the autoencoders, every fusion-layer parameter keeps its own
    problems = [f"after FusionStage(fusion): {n} {'requires' if p.requires_grad else 'does not require'} a gradient"
                for n, p in fusion.named_parameters() if p.requires_grad == n.startswith("autoencoders.")][:1]
    problems += mode_problems(stage, fusion, "FusionStage(fusion)", True)
    # modes: train.fit calls train() every epoch and eval() to validate
    for call, training in (("stage.train()", True), ("stage.eval()", False), ("stage.train()", True),
                           ("stage.train(False)", False), ("stage.train(True)", True)):
        returned = stage.eval() if call == "stage.eval()" else stage.train(training)
        if returned is not stage:
            problems.append(f"{call} returned {type(returned).__name__}, expected the stage itself "
                            "(nn.Module.train returns self, and model.train()(x) relies on it)")
        problems += mode_problems(stage, fusion, call, training)
        if problems:
            return problems
    # the optimizer's list: the fusion layers, in named_parameters() order (an optimizer's state is
    # saved by position, so a resumed run needs the same order)
    names = {id(p): n for n, p in fusion.named_parameters()}
    want = [n for n, _ in fusion.named_parameters() if not n.startswith("autoencoders.")]
    trainable = list(stage.trainable_parameters())
    got = [names.get(id(p), "a tensor that is no parameter of the model") for p in trainable]
    if got != want:
        frozen = [n for n in got if n.startswith("autoencoders.")]
        first = next(i for i, (a, b) in enumerate(zip(got + [None], want + [None])) if a != b)
        problems.append(f"trainable_parameters(): {len(got)} tensors, {len(frozen)} of them of the autoencoders; "
                        f"expected the {len(want)} fusion-layer parameters in fusion.named_parameters() order, first "
                        f"difference at position {first}: got {got[first] if first < len(got) else 'nothing'}, "
                        f"expected {want[first] if first < len(want) else 'nothing'}")
        return problems
    # one training step as train.fit takes it
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    fused_before = fusion.to_fused.weight.detach().clone()
    stage.train()
    recon, fused = stage(batch)
    loss = sum((recon[m] - x.nan_to_num()).abs()[torch.isfinite(x)].mean() for m, (x, _) in batch.items())
    loss.backward()
    optimizer.step()
    changed = [k for k, v in fusion.autoencoders.state_dict().items() if not torch.equal(v, before[k])]
    if changed:
        problems.append(f"{len(changed)} frozen tensors changed in one training step, first autoencoders.{changed[0]}")
    if torch.equal(fusion.to_fused.weight, fused_before):
        problems.append("the fusion layers did not change in one training step: nothing was trained")
    if not problems:
        n_frozen = sum(p.numel() for p in fusion.autoencoders.parameters())
        print(f"{len(before)} tensors of the 2 frozen autoencoders ({n_frozen:,} parameters + BatchNorm buffers) "
              f"bit-identical after stage.train(), stage.eval() and one AdamW step of the {len(want)} fusion-layer "
              f"tensors ({sum(p.numel() for p in trainable):,} parameters)")
    return problems


# ----------------------------------------------------------------------------------------------
# Hints: the usual mistakes of each exercise, printed only after a failed check
# ----------------------------------------------------------------------------------------------

HINTS = {
    1: ["alpha^d instead of alpha^(d - 1): the first ring gets ring_weight * alpha (max abs difference 0.0655 "
        "at (5, 7, 7) on the default kernel)",
        "a Euclidean or Manhattan distance instead of the Chebyshev ring max(|dy|, |dx|)",
        "H and W swapped (only the non-square cases show it)",
        "frames counted from the first frame instead of from the central frame T//2",
        "even sizes: the centre is index T//2 (T = 4: frame 2, the later of the two middle frames), not (T - 1)/2",
        "normalise ignored: with normalise=True the weights sum to 1"],
    2: ["C1 = 0.01 L instead of (0.01 L)^2 (the same for C2), or data_range ignored",
        "a uniform window, or sigma hard-coded to 1.5",
        "zero padding: a 15 x 15 frame must give a 9 x 9 map (only positions where the window fits)",
        "the covariance term without its factor 2",
        "Bessel-corrected variances (divided by n - 1): the Gaussian weights already sum to 1 (3e-4 off)",
        "ssim_loss returned as SSIM instead of 1 - SSIM",
        "the inputs are low-contrast (variances ~1e-4, the size of C1 and C2), so the constants matter",
        "Tensor.unfold cuts the windows; F.conv2d with the Gaussian as kernel blurs"],
    3: ["degrees instead of radians (57 x too large: max abs difference 71.5)",
        "the angle along time (dim 1) instead of the bands (dim 2)",
        "no clamp: float32 rounding puts the cosine of identical spectra above 1 and arccos gives NaN",
        "a clamp to [0, 1]: opposite spectra would read pi/2 instead of ~pi",
        "no eps: a zero spectrum divides 0 by 0 (NaN) instead of reading pi/2",
        "sum instead of mean over positions, or a dot product without the norms"],
    4: ["spatial attention first, or both gates computed on the input x (the spatial gate sees x * channel gate)",
        "[max, mean] instead of [mean, max] as the two input maps of the 7 x 7 conv",
        "a sigmoid on each pooling branch instead of one on their sum",
        "average pooling only, or no sigmoid on the spatial gate"],
    5: ["frame indices 0..10 instead of day offsets: the first difference is at frame 1 of the gappy window (0, 1, 0)",
        "absolute day numbers: the encoding must not change when the whole window shifts by a year",
        "offsets from the centre frame instead of the window's first date",
        "sin and cos in two halves instead of interleaved (even index sin, odd index cos)",
        "no 1/sqrt(D), or the exponent i/D instead of 2i/D"],
    6: ["no eval mode: a BatchNorm layer in train mode updates running_mean and running_var in the forward "
        "pass, with no gradient and no optimizer involved",
        "module.training = False sets the flag of the top module only; eval() sets it on every submodule",
        "no requires_grad_(False): the optimizer gets the frozen parameters and steps them",
        "freeze must return the module it froze",
        "torch.allclose or a tolerance misses a change of one unit in the last place: use torch.equal",
        "parameters only, or floating-point tensors only, miss the buffers (num_batches_tracked is an integer)",
        "names in the order of `after`, or a set: the order is `before`'s"],
    9: ["no centring: the first component then points at the mean",
        "components as columns (shape (F, k)), or the rows of the eigenvector matrix (eigh returns vectors as columns)",
        "ascending order: eigh sorts its eigenvalues from the smallest",
        "ratios over the k kept components instead of over all F (they must not sum to 1 unless k = F)",
        "singular values instead of variances (variance ~ singular value squared)",
        "k or F hard-coded: the checker tries k = 1, 3, 7 and a 4-feature set"],
    10: ["the split decided by the target's year only: a validation window then reaches back into 2019 "
         "(window of days 1010-1099 holds 85 days of [2019] ...: leakage)",
         "the target on the first day of the window instead of the last, s + window - 1",
         "a window one day short (s + window - 1 excluded), or starts from 1",
         "the last possible start dropped: range(0, N - window + 1, stride)",
         "x_ok ignored, or a crash on y_ok=None"],
    11: ["NaN * 0 is NaN: masking a NaN target by multiplying with the mask still puts NaN in the statistics; "
         "replace it (torch.where) before any arithmetic",
         "missing values filled with 0 instead of the prediction: the map then scores them as errors",
         "filled with pred instead of pred.detach(): the map's gradient then also flows through the filled target",
         "valid used alone: a value counts only where valid is True AND the target is finite",
         "the mean over every window: windows holding a missing value read as perfect, so the loss would fall "
         "as cloud cover grows; average the complete windows only",
         "a window counted as complete when its centre pixel is observed: every value in it must be",
         "the window size hard-coded to 7 in ssim, or 0 / 0 when no window is complete (SSIM is then 1)"],
    12: ["the train() trap: nn.Module.train(mode) sets the mode of every submodule, so stage.train() (called by "
         "train.fit every epoch) puts the frozen autoencoders back in train mode and their BatchNorm statistics "
         "move; override train() to put them back in eval mode",
         "train() (and so eval()) must return self, as nn.Module.train does",
         "eval mode without requires_grad_(False), or requires_grad_(False) on the whole model (nothing left to train)",
         "trainable_parameters() lists the fusion layers only, as FusionModel.trainable_parameters does (a frozen "
         "parameter in the optimizer is stepped as soon as it gets a gradient), in named_parameters() order: an "
         "optimizer's state is saved by position, so a resumed run needs the same order"],
}


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
    11: ("ex11_masked_ssim.py", check_masked_ssim),
    12: ("ex12_fusion_freezing.py", check_fusion_stage),
}
CODE_EXERCISES = [n for n, (filename, _) in EXERCISES.items() if filename]


def shown(path):
    """A path relative to the repository root when it lies inside it (as the learner typed it)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def start(n):
    """Copy stub n to MYWORK, never over an existing file (the learner's work)."""
    filename = EXERCISES[n][0]
    MYWORK.mkdir(exist_ok=True)
    try:
        with open(MYWORK / filename, "x") as f:
            f.write((HERE / filename).read_text())
    except FileExistsError:
        print(f"exercise {n}: {shown(MYWORK / filename)} exists already and was not overwritten "
              "(delete it yourself to start again)")
        return 1
    print(f"exercise {n}: copied the stub to {shown(MYWORK / filename)}; write your code there, then run "
          f"python exercises/check.py {n}")
    return 0


def load_module(path, name):
    """Import a learner's file by path (a fresh module each time, never cached under a shared name)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description="Check an exercise of exercises/README.md against the project.")
    parser.add_argument("exercise", type=int, nargs="?", choices=sorted(EXERCISES),
                        help=f"exercise number, 1-{max(EXERCISES)}")
    parser.add_argument("--start", type=int, choices=CODE_EXERCISES, metavar="N",
                        help="copy the stub of code exercise N to exercises/mywork/ (ignored by git), where you "
                             "write it; never overwrites")
    parser.add_argument("--solution", action="store_true",
                        help="check the reference solution in exercises/solutions/ (default: exercises/mywork/)")
    parser.add_argument("--file", default=None,
                        help="check this file instead (default: your exercises/mywork/exNN_*.py)")
    parser.add_argument("--run", nargs="+", default=None, metavar="OUT",
                        help="exercise 7: the train_s2.py output folder (default runs/ex7); exercise 8: the hybrid "
                             "and the MAE-only folders (default runs/ex7 runs/ex8_mae)")
    parser.add_argument("--cube", default=None, metavar="EMB.nc",
                        help="exercise 9: also compare the PCA on this embedding cube (default: none)")
    args = parser.parse_args(argv)
    if (args.exercise is None) == (args.start is None):
        parser.error("give an exercise number to check, or --start N to begin exercise N")
    if args.start is not None:
        return start(args.start)
    if str(ROOT) not in sys.path:               # losses, deepfeat, embed, gpp: the references
        sys.path.insert(0, str(ROOT))
    n = args.exercise
    filename, check = EXERCISES[n]
    module = None
    try:
        if filename is not None:
            path = Path(args.file) if args.file else (HERE / "solutions" if args.solution else MYWORK) / filename
            if not path.is_file():
                hint = f"run python exercises/check.py --start {n} first" if not (args.file or args.solution) else ""
                print(f"exercise {n}: {shown(path)} not found" + (f": {hint}" if hint else ""))
                return 1
            print(f"exercise {n}: checking {shown(path)}")
            refused = shortcut(path.read_text(), str(path))
            if refused:
                print(f"exercise {n}: {refused}")
                return 1
            module = load_module(path, f"exercise_{n}_{'solution' if args.solution else 'yours'}")
        problems = check(module, args)
    except NotImplementedError as err:
        print(f"exercise {n}: not implemented yet ({err or 'a function still raises NotImplementedError'})")
        return 1
    except FileNotFoundError as err:
        print(f"exercise {n}: {err}")
        return 1
    except Exception as err:                   # the learner's code failed: show where, then a summary
        traceback.print_exc()
        problems = [f"your code raised {type(err).__name__}: {err}"]
    for problem in problems:
        print(f"  {problem}")
    if problems and HINTS.get(n):
        print(f"hints, the usual mistakes of exercise {n}:")
        for hint in HINTS[n]:
            print(f"  - {hint}")
    print(f"exercise {n}: OK" if not problems else f"exercise {n}: {len(problems)} check(s) failed")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
