"""Context-aware reconstruction losses and metrics (Sec. III-A and III-C, Eq. 1-8).

Eq. 1 context weights, the masked weighted MAE and its centre/context split, SSIM (Eq. 2-3),
SAM (Eq. 4), the S1 and S2 pretraining objectives (Sec. III-B, Eq. 5) and the fusion objectives
(Eq. 6-8). Every function takes cubes shaped (B, T, C, H, W) (T = 11 frames, H = W = 15 pixels,
C bands); `target` may hold NaN where the observation is missing, and `valid` (bool, same shape)
marks the observations the loss may use. A value counts only where `valid` is True AND the target
is finite; NaN targets are replaced by 0 before any arithmetic so no NaN reaches a gradient.

Run the tests: python -m pytest -q tests/test_losses.py
"""
import torch
import torch.nn.functional as F

# Eq. 5 weights (MAE, SSIM, SAM) from the authors' latest code; an earlier note had (0.225, 0.025, 0.75).
S2_LAMBDAS = (0.23, 0.03, 0.74)
# Eq. 6-8 weights are not given in the paper; these are our documented choices (see the functions).
FUSION_S2_LAMBDAS = (1.0, 0.1)
JOINT_LAMBDAS = (1.0, 1.0)
FUSION_LAMBDAS = {"s1": 1.0, "s2": 1.0, "joint": 0.1}
# Eq. 4 clamp: arccos has an infinite slope at +-1, so identical spectra read acos(1 - 1e-7) ~ 4.5e-4 rad.
COS_CLAMP = 1e-7


# ---------------------------------------------------------------- Eq. 1: context weights

def context_weights(T=11, H=15, W=15, alpha=0.1, centre_weight=1.0, ring_weight=0.01, normalise=True):
    """Spatio-temporal loss weights (Sec. III-A, Eq. 1): w(t, y, x) = alpha^|dt| * s(d), (T, H, W).

    The default size is the paper's sample, 11 frames x 15 x 15 px (Sec. III-B; data.N_FRAMES, data.PATCH).

    s(0) = centre_weight and s(d) = ring_weight * alpha^(d-1) for Chebyshev ring distance
    d = max(|dy|, |dx|) >= 1, i.e. an exponential decay (ring_weight/alpha) * exp(-d ln(1/alpha)) away
    from the centre; dt counts frames from the central frame T//2. The defaults reproduce the authors'
    kernel; the fusion stage raises centre_weight (Sec. III-C: 1.5 S1, 1.75 S2; modalities.py).
    With normalise=True the weights sum to 1. `weighted_mae` divides by the valid weight sum, so only
    the ratios between weights matter to the losses.
    """
    dt = (torch.arange(T) - T // 2).abs()                                   # (T,)
    dy = (torch.arange(H) - H // 2).abs()
    dx = (torch.arange(W) - W // 2).abs()
    d = torch.maximum(dy[:, None], dx[None, :])                             # (H, W) Chebyshev ring
    spatial = torch.where(d == 0, torch.tensor(float(centre_weight)),
                          ring_weight * alpha ** (d - 1).clamp(min=0).float())
    weights = (alpha ** dt.float())[:, None, None] * spatial[None]          # (T, H, W)
    return weights / weights.sum() if normalise else weights


def plot_context_weights(weights, path):
    """Save a Fig. 1-style view of Eq. 1: the central frame's kernel (log colours) and the temporal profile."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    T, H, W = weights.shape
    w = weights.detach().cpu().numpy()
    fig, (ax_xy, ax_t) = plt.subplots(1, 2, figsize=(8, 3.5))
    im = ax_xy.imshow(w[T // 2], norm=LogNorm(vmin=w.min(), vmax=w.max()), cmap="viridis")
    ax_xy.set_title(f"central frame t={T // 2}")
    ax_xy.set_xlabel("x (pixel)")
    ax_xy.set_ylabel("y (pixel)")
    fig.colorbar(im, ax=ax_xy, label="weight")
    ax_t.semilogy(range(-(T // 2), T - T // 2), w[:, H // 2, W // 2], "o-")
    ax_t.set_title("central pixel over time")
    ax_t.set_xlabel("frame offset from centre")
    ax_t.set_ylabel("weight")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- masking and weighted MAE

def _mask(pred, target, valid):
    """Checked shapes, valid = valid & finite(target), and a NaN-free target (0 where invalid)."""
    if pred.shape != target.shape or pred.dim() != 5:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (B, T, C, H, W)")
    valid = torch.isfinite(target) if valid is None else valid & torch.isfinite(target)
    return torch.where(valid, target, torch.zeros_like(target)), valid


def _centre_onehot(T, H, W, like):
    """(T, H, W) weights that are 1 at the central coordinate (frame T//2, pixel (H//2, W//2)), else 0."""
    onehot = torch.zeros(T, H, W, dtype=like.dtype, device=like.device)
    onehot[T // 2, H // 2, W // 2] = 1.0
    return onehot


def weighted_mae(pred, target, weights, valid):
    """Context-weighted MAE (Sec. III-A): sum_valid w |pred - target| / sum_valid w; w (T, H, W) over B, C.

    The denominator is clamped at the dtype's smallest normal number, not a larger eps, because single
    kernel weights go down to ~1e-13; an all-invalid batch then returns 0 with zero gradients.
    """
    target, valid = _mask(pred, target, valid)
    w = weights.to(pred)[None, :, None] * valid                             # (B, T, C, H, W)
    return (w * (pred - target).abs()).sum() / w.sum().clamp(min=torch.finfo(pred.dtype).tiny)


def centre_mae(pred, target, valid):
    """Centre MAE (Sec. IV-A): mean_valid |pred - target| over the B x C values at frame T//2, pixel (H//2, W//2)."""
    _, T, _, H, W = pred.shape
    return weighted_mae(pred, target, _centre_onehot(T, H, W, pred), valid)


def context_mae(pred, target, weights, valid):
    """Context MAE (Sec. IV-A): weighted MAE with Eq. 1 weights over every value except the central coordinate.

    The central coordinate (frame T//2, pixel (H//2, W//2), all bands) gets weight 0 and the result is
    normalised by the remaining valid weight, so it measures the weighted error of the neighbourhood alone.
    """
    _, T, _, H, W = pred.shape
    return weighted_mae(pred, target, weights.to(pred) * (1 - _centre_onehot(T, H, W, pred)), valid)


# ---------------------------------------------------------------- Eq. 2-3: SSIM

def _gaussian_window(window, sigma, like):
    """(window, window) Gaussian kernel summing to 1."""
    k = torch.arange(window, dtype=like.dtype, device=like.device) - (window - 1) / 2
    g = torch.exp(-k ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_map(pred, target, valid=None, window=7, sigma=1.5, data_range=1.0):
    """SSIM map (Eq. 2) per frame and band: (2 mu_p mu_t + C1)(2 s_pt + C2) / ((mu_p^2 + mu_t^2 + C1)(s_p^2 + s_t^2 + C2)).

    Local statistics use a Gaussian window (7 x 7, sigma 1.5) without padding, so a 15 x 15 frame gives
    a (9, 9) map; C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = data_range. Missing target values are replaced by
    pred.detach(), so they are not scored as errors. Returns (B, T*C, H-window+1, W-window+1).
    """
    B, T, C, H, W = pred.shape
    if min(H, W) < window:
        raise ValueError(f"SSIM window {window} is larger than the {H} x {W} patch")
    target, valid = _mask(pred, target, valid)
    target = torch.where(valid, target, pred.detach())
    x = pred.reshape(B, T * C, H, W)                                        # (B, T*C, H, W)
    y = target.reshape(B, T * C, H, W)
    kernel = _gaussian_window(window, sigma, pred).expand(T * C, 1, window, window)

    def blur(z):                                                            # (B, T*C, H', W')
        return F.conv2d(z, kernel, groups=T * C)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))


def ssim(pred, target, valid=None, window=7, sigma=1.5, data_range=1.0):
    """Mean SSIM (Eq. 2) over the map positions (sample, frame, band, y, x) whose window is fully observed.

    A window holding a missing target value is left out rather than scored: ssim_map fills missing
    targets with the prediction, which reads as perfect structure, so averaging over every window would
    make the SSIM loss shrink as cloud cover grows. With no complete window SSIM is 1 (nothing to score).
    """
    values = ssim_map(pred, target, valid, window, sigma, data_range)              # (B, T*C, H', W')
    _, valid = _mask(pred, target, valid)
    B, T, C, H, W = pred.shape
    complete = F.avg_pool2d(valid.reshape(B, T * C, H, W).to(pred), window, stride=1) > 1 - 1e-6
    n = complete.sum()
    return torch.where(n > 0, (values * complete).sum() / n.clamp(min=1), torch.ones_like(values[0, 0, 0, 0]))


def ssim_loss(pred, target, valid=None):
    """SSIM loss (Eq. 3): L_SSIM = 1 - SSIM(pred, target)."""
    return 1 - ssim(pred, target, valid)


# ---------------------------------------------------------------- Eq. 4: SAM

def sam(pred, target, valid=None, weights=None, eps=1e-8):
    """Spectral angle (Eq. 4), radians: sum_v w arccos(<p, t> / (|p| |t| + eps)) / sum_v w over positions v.

    Spectra run along the band axis C; a position (b, t, y, x) counts only when all its bands are valid;
    w = weights (T, H, W) or 1. The cosine is clamped to [-1 + 1e-7, 1 - 1e-7] so gradients stay finite for
    identical spectra (whose angle then reads acos(1 - 1e-7) ~ 4.5e-4 rad, not 0); eps keeps a zero
    vector finite (cosine 0, angle pi/2; its gradient is finite but of order 1/eps).
    """
    target, valid = _mask(pred, target, valid)
    cos = (pred * target).sum(2) / (
        torch.linalg.vector_norm(pred, dim=2) * torch.linalg.vector_norm(target, dim=2) + eps)  # (B, T, H, W)
    angle = torch.arccos(cos.clamp(-1 + COS_CLAMP, 1 - COS_CLAMP))
    w = valid.all(dim=2).to(pred)                                           # (B, T, H, W)
    if weights is not None:
        w = w * weights.to(pred)[None]
    return (w * angle).sum() / w.sum().clamp(min=torch.finfo(pred.dtype).tiny)


def centre_sam(pred, target, valid=None):
    """Central-pixel SAM (Sec. IV-A): Eq. 4 at frame T//2, pixel (H//2, W//2) only, averaged over the batch."""
    _, T, _, H, W = pred.shape
    return sam(pred, target, valid, weights=_centre_onehot(T, H, W, pred))


# ---------------------------------------------------------------- composed objectives (Eq. 5-8)

def _detached(terms):
    return {name: value.detach() for name, value in terms.items()}


def s1_loss(pred, target, valid, weights):
    """S1 pretraining objective (Sec. III-B): L_S1 = weighted MAE with the Eq. 1 weights."""
    total = weighted_mae(pred, target, weights, valid)
    return total, _detached({"weighted_mae": total,
                             "centre_mae": centre_mae(pred, target, valid),
                             "context_mae": context_mae(pred, target, weights, valid)})


def s2_loss(pred, target, valid, weights, lambdas=S2_LAMBDAS, balanced=False):
    """S2 hybrid objective (Eq. 5): L_S2 = l_MAE * weighted MAE + l_SSIM * (1 - SSIM) + l_SAM * SAM.

    SAM is context-weighted over the patch. lambdas default (0.23, 0.03, 0.74), the authors' latest
    code; an earlier note used (0.225, 0.025, 0.75). `centre_sam` is logged as the paper's reported SAM.

    balanced=True (our switch, not the paper's): L = sum_i l_i * log(L_i), whose gradient is
    sum_i l_i * grad(L_i) / L_i: each term counts by its RELATIVE improvement, weighted by its lambda,
    whatever its units. In Eq. 5 as written, SAM (radians, ~5x the MAE of the same error on a 10-band
    reflectance spectrum) outweighs the MAE gradient ~30x, and SAM is blind to brightness.
    """
    terms = {"weighted_mae": weighted_mae(pred, target, weights, valid),
             "ssim": ssim_loss(pred, target, valid),
             "sam": sam(pred, target, valid, weights)}
    def scaled(term):                                          # log(0) guarded: a perfect term reads log(tiny)
        return term.clamp(min=torch.finfo(term.dtype).tiny).log() if balanced else term
    total = sum(l * scaled(terms[name]) for l, name in zip(lambdas, ("weighted_mae", "ssim", "sam")) if l > 0)
    return total, _detached({**terms,
                             "centre_sam": centre_sam(pred, target, valid),
                             "centre_mae": centre_mae(pred, target, valid),
                             "context_mae": context_mae(pred, target, weights, valid)})


def fusion_s2_loss(pred, target, valid, weights, lambdas=FUSION_S2_LAMBDAS):
    """Fusion S2 term (Sec. III-C, Eq. 6): L_S2,fus = l_MAE * weighted MAE + l_SAM * SAM at the central coordinate.

    `weights` should be built with S2's fusion centre weight (1.75, Sec. III-C). The paper gives no
    lambdas; we choose (1.0, 0.1): the validated quantity is the centre MAE, so MAE keeps unit weight and
    SAM is an auxiliary term (at the paper's converged S2 values, centre SAM ~0.027 rad, it adds ~0.003,
    about the size of the MAE term).
    """
    l_mae, l_sam = lambdas
    terms = {"weighted_mae": weighted_mae(pred, target, weights, valid),
             "centre_sam": centre_sam(pred, target, valid)}
    total = l_mae * terms["weighted_mae"] + l_sam * terms["centre_sam"]
    return total, _detached({**terms,
                             "centre_mae": centre_mae(pred, target, valid),
                             "context_mae": context_mae(pred, target, weights, valid)})


def joint_fusion_loss(preds, targets, valids, lambdas=JOINT_LAMBDAS):
    """Joint fusion term (Sec. III-C, Eq. 7): L_joint = l_SSIM * (1 - SSIM(P, T)) + l_SAM * SAM(P, T).

    P and T concatenate every modality's bands along C in sorted-name order (fusion: S1 VV, VH then the
    ten S2 bands, S1 already matched to the S2 dates on the same patch grid), so SSIM averages over all
    12 bands and SAM compares the 12-band radar-optical spectrum, unweighted over positions where every
    band is valid. This is our reading of "combining the SSIM loss and SAM to promote structural and
    spectral coherence between the two modalities"; the paper gives no lambdas, we use (1.0, 1.0).
    """
    l_ssim, l_sam = lambdas
    names = sorted(preds)
    pred = torch.cat([preds[m] for m in names], dim=2)                     # (B, T, sum C, H, W)
    target = torch.cat([targets[m] for m in names], dim=2)
    valid = torch.cat([valids[m] for m in names], dim=2)
    terms = {"ssim": ssim_loss(pred, target, valid), "sam": sam(pred, target, valid)}
    return l_ssim * terms["ssim"] + l_sam * terms["sam"], _detached(terms)


def fusion_loss(preds, targets, valids, weights, terms, lambdas=FUSION_LAMBDAS, joint_lambdas=JOINT_LAMBDAS):
    """Total fusion objective (Sec. III-C, Eq. 8): L_fus = l_S1 * L_S1 + l_S2 * L_S2,fus + l_joint * L_joint.

    terms[name] is each modality's term (S1: s1_loss, the weighted MAE; S2: fusion_s2_loss, Eq. 6;
    modalities.py names them), each with its own weights (T, H, W) from `weights[name]` (fusion
    centre weights 1.5 / 1.75). lambdas maps modality names and "joint" to their weights; an unnamed
    modality gets 1. The paper gives no values: we choose 1 for each modality and 0.1 for the joint
    term, which is patch-wide and unweighted while the fusion stage is validated on the centre MAE.
    `centre_mae` and `context_mae` are the means over modalities.
    """
    total, components = 0.0, {}
    for name in sorted(preds):
        term, parts = terms[name](preds[name], targets[name], valids[name], weights[name])
        total = total + lambdas.get(name, 1.0) * term
        components[f"loss_{name}"] = term.detach()
        components[f"centre_mae_{name}"] = parts["centre_mae"]
        components[f"context_mae_{name}"] = parts["context_mae"]
        if "centre_sam" in parts:
            components[f"centre_sam_{name}"] = parts["centre_sam"]
    joint, parts = joint_fusion_loss(preds, targets, valids, joint_lambdas)
    total = total + lambdas["joint"] * joint
    components.update(joint=joint.detach(), **parts)
    for metric in ("centre_mae", "context_mae"):
        components[metric] = torch.stack([components[f"{metric}_{m}"] for m in sorted(preds)]).mean()
    return total, components
