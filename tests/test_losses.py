"""Tests for losses.py (Eq. 1-8): hand-computed values and plain-loop references for each vectorised loss.

Run: python -m pytest -q tests/test_losses.py
"""
import math

import numpy as np
import pytest
import torch

import losses
from losses import (centre_mae, centre_sam, context_mae, context_weights,
                    fusion_loss, fusion_s2_loss, joint_fusion_loss, s1_loss, s2_loss, sam, ssim,
                    ssim_loss, ssim_map, weighted_mae)

C1, C2 = 0.01 ** 2, 0.03 ** 2


def cube(shape, seed, nan_fraction=0.0):
    """Seeded float64 cube in [0, 1) with a fraction of NaN 'clouds', and its validity mask."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    x[torch.rand(shape, generator=g) < nan_fraction] = float("nan")
    return x, torch.isfinite(x)


# ---------------------------------------------------------------- Eq. 1 kernel

def test_kernel_hand_values_unnormalised():
    w = context_weights(normalise=False)
    assert w.shape == (11, 15, 15)
    assert w[5, 7, 7] == pytest.approx(1.0)                 # centre_weight * alpha^0
    assert w[5, 7, 9] == pytest.approx(0.01 * 0.1)          # ring 2, central frame
    assert w[5, 9, 6] == pytest.approx(0.01 * 0.1)          # Chebyshev: max(2, 1) = 2
    assert w[3, 7, 7] == pytest.approx(0.1 ** 2)            # two frames away, centre pixel
    assert w[0, 7, 8] == pytest.approx(0.1 ** 5 * 0.01)     # five frames away, ring 1
    assert w[6, 0, 14] == pytest.approx(0.1 * 0.01 * 0.1 ** 6)  # corner: ring 7, one frame away


def test_kernel_normalised_centre_and_sum():
    # Sum = temporal geometric series x (centre + ring d has 8d pixels of weight 0.01 * 0.1^(d-1)).
    temporal = 1 + 2 * (0.1 + 0.01 + 0.001 + 1e-4 + 1e-5)
    spatial = 1 + 0.01 * (8 + 16 * 0.1 + 24 * 0.01 + 32 * 1e-3 + 40 * 1e-4 + 48 * 1e-5 + 56 * 1e-6)
    w = context_weights()
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(w[5, 7, 7]) == pytest.approx(1.0 / (temporal * spatial), rel=1e-6)
    assert float(w.max()) == float(w[5, 7, 7])
    assert int(w.argmax()) == 5 * 15 * 15 + 7 * 15 + 7


def test_kernel_symmetric_and_monotone():
    w = context_weights()
    for dims in [(0,), (1,), (2,)]:
        assert torch.equal(w, w.flip(dims))
    assert torch.equal(w, w.transpose(1, 2))
    ring_values = [w[5, 7, 7 + d] for d in range(8)]
    assert all(a > b for a, b in zip(ring_values, ring_values[1:]))
    assert all(a > b for a, b in zip(w[5:, 7, 7], w[6:, 7, 7]))
    d = torch.maximum((torch.arange(15) - 7).abs()[:, None], (torch.arange(15) - 7).abs()[None])
    for ring in range(8):   # a ring is a level set of Eq. 1
        assert torch.allclose(w[:, d == ring], w[:, 7, 7 + ring][:, None])


def test_kernel_is_exponential_decay():
    w = context_weights(alpha=0.2, ring_weight=0.05, normalise=False)
    for d in range(1, 8):
        assert float(w[5, 7, 7 + d]) == pytest.approx(0.05 / 0.2 * math.exp(-d * math.log(1 / 0.2)), rel=1e-5)


# Sec. III-C: the fusion stage's centre weights (modalities.py holds them per modality)
FUSION_CENTRE_WEIGHT = {"s1": 1.5, "s2": 1.75}


def test_fusion_centre_weight_raises_only_the_centre():
    base = context_weights(normalise=False)
    for modality, value in FUSION_CENTRE_WEIGHT.items():
        raised = context_weights(centre_weight=value, normalise=False)
        assert float(raised[5, 7, 7]) == value
        off = torch.ones(11, 15, 15, dtype=torch.bool)
        off[:, 7, 7] = False
        assert torch.equal(raised[off], base[off])
        assert context_weights(centre_weight=value)[5, 7, 7] > context_weights()[5, 7, 7]


def test_plot_context_weights_writes_png(tmp_path):
    path = tmp_path / "weights.png"
    losses.plot_context_weights(context_weights(), path)
    assert path.stat().st_size > 1000


# ---------------------------------------------------------------- masked MAE

def test_weighted_mae_matches_loop_reference():
    shape = (3, 4, 2, 5, 6)       # distinct T, H, W catch broadcasting on the wrong axis
    pred, _ = cube(shape, 0)
    target, valid = cube(shape, 1, nan_fraction=0.3)
    valid &= cube(shape, 2)[0] > 0.2
    weights = torch.rand(4, 5, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    num = den = 0.0
    for b, t, c, y, x in np.ndindex(*shape):
        if valid[b, t, c, y, x]:
            num += float(weights[t, y, x]) * abs(float(pred[b, t, c, y, x]) - float(target[b, t, c, y, x]))
            den += float(weights[t, y, x])
    assert float(weighted_mae(pred, target, weights, valid)) == pytest.approx(num / den, rel=1e-12)


def test_weighted_mae_unmasked_hand_value():
    # One sample, one band, T = H = W = 1 plus a second frame: |0.5 - 0.2| w=3, |0.1 - 0.4| w=1.
    pred = torch.tensor([0.5, 0.1]).reshape(1, 2, 1, 1, 1)
    target = torch.tensor([0.2, 0.4]).reshape(1, 2, 1, 1, 1)
    weights = torch.tensor([3.0, 1.0]).reshape(2, 1, 1)
    valid = torch.ones_like(target, dtype=torch.bool)
    assert float(weighted_mae(pred, target, weights, valid)) == pytest.approx((3 * 0.3 + 1 * 0.3) / 4)
    target_far = torch.tensor([0.2, 1.1]).reshape(1, 2, 1, 1, 1)
    assert float(weighted_mae(pred, target_far, weights, valid)) == pytest.approx((3 * 0.3 + 1.0) / 4)


def test_masked_values_are_ignored_and_nan_gives_finite_gradients():
    pred, _ = cube((2, 11, 3, 15, 15), 4)
    pred.requires_grad_(True)
    target, valid = cube((2, 11, 3, 15, 15), 5, nan_fraction=0.2)
    weights = context_weights().double()
    loss = weighted_mae(pred, target, weights, valid)
    value = float(loss.detach())
    changed = target.clone()
    changed[~valid] = 7.0                     # new values where masked: loss must not move
    assert float(weighted_mae(pred, changed, weights, valid).detach()) == value
    nan_but_marked_valid = torch.ones_like(valid)   # NaN targets count as invalid even if valid says True
    assert float(weighted_mae(pred, target, weights, nan_but_marked_valid).detach()) == value
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[~valid] == 0).all()


def test_all_masked_is_zero_with_zero_gradients():
    pred, _ = cube((2, 11, 2, 15, 15), 6)
    pred.requires_grad_(True)
    target = torch.full_like(pred, float("nan"))
    for fn in (lambda: weighted_mae(pred, target, context_weights(), torch.ones_like(target, dtype=torch.bool)),
               lambda: centre_mae(pred, target, None), lambda: sam(pred, target)):
        pred.grad = None
        loss = fn()
        loss.backward()
        assert float(loss.detach()) == 0.0
        assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_centre_and_context_mae():
    pred = torch.zeros(2, 11, 3, 15, 15, dtype=torch.float64)
    target = torch.zeros_like(pred)
    target[:, 5, :, 7, 7] = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, float("nan")]], dtype=torch.float64)
    valid = torch.isfinite(target)
    weights = context_weights().double()
    assert float(centre_mae(pred, target, valid)) == pytest.approx((0.1 + 0.2 + 0.3 + 0.4 + 0.5) / 5)
    assert float(context_mae(pred, target, weights, valid)) == 0.0   # only the centre is wrong
    target = torch.ones_like(pred)
    target[:, 5, :, 7, 7] = 0.0                                       # only the context is wrong
    assert float(centre_mae(pred, target, valid)) == 0.0
    assert float(context_mae(pred, target, weights, valid)) == pytest.approx(1.0)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="must both be"):
        weighted_mae(torch.zeros(1, 11, 2, 15, 15), torch.zeros(1, 11, 3, 15, 15), context_weights(), None)


# ---------------------------------------------------------------- Eq. 2-3 SSIM

def ssim_loop_reference(pred, target, window=7, sigma=1.5):
    """Plain-loop SSIM: Gaussian-weighted statistics of every 7 x 7 window of every frame and band."""
    k = [math.exp(-(i - (window - 1) / 2) ** 2 / (2 * sigma ** 2)) for i in range(window)]
    g = np.outer(k, k) / sum(k) ** 2
    B, T, C, H, W = pred.shape
    values = []
    for b, t, c in np.ndindex(B, T, C):
        for i in range(H - window + 1):
            for j in range(W - window + 1):
                x = pred[b, t, c, i:i + window, j:j + window].numpy()
                y = target[b, t, c, i:i + window, j:j + window].numpy()
                mx, my = (g * x).sum(), (g * y).sum()
                vx, vy = (g * (x - mx) ** 2).sum(), (g * (y - my) ** 2).sum()
                cxy = (g * (x - mx) * (y - my)).sum()
                values.append((2 * mx * my + C1) * (2 * cxy + C2) / ((mx ** 2 + my ** 2 + C1) * (vx + vy + C2)))
    return float(np.mean(values))


def test_ssim_matches_loop_reference():
    pred, _ = cube((2, 2, 2, 9, 10), 7)
    target, _ = cube((2, 2, 2, 9, 10), 8)
    target = 0.6 * target + 0.4 * pred        # correlated, so SSIM is far from 0
    assert ssim_map(pred, target).shape == (2, 4, 3, 4)
    assert float(ssim(pred, target)) == pytest.approx(ssim_loop_reference(pred, target), rel=1e-10)


def test_ssim_constant_patches_hand_value():
    # Constant patches: variances and covariance vanish, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 0.3, 0.5
    pred = torch.full((1, 11, 2, 15, 15), a, dtype=torch.float64)
    target = torch.full_like(pred, b)
    assert float(ssim(pred, target)) == pytest.approx((2 * a * b + C1) / (a * a + b * b + C1), rel=1e-9)


def test_ssim_identity_symmetry_noise_and_mask():
    x, _ = cube((2, 11, 3, 15, 15), 9)
    noise, _ = cube((2, 11, 3, 15, 15), 10)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-12)
    y = x + 0.1 * (noise - 0.5)
    assert float(ssim(x, y)) == pytest.approx(float(ssim(y, x)), rel=1e-12)
    assert 1.0 > float(ssim(x, y)) > float(ssim(x, x + 0.4 * (noise - 0.5)))
    valid = noise > 0.3
    changed = y.clone()
    changed[~valid] = float("nan")
    assert float(ssim(x, y, valid)) == float(ssim(x, changed, valid))
    assert float(ssim(x, torch.full_like(x, float("nan")))) == pytest.approx(1.0, abs=1e-12)


def test_ssim_leaves_out_windows_with_missing_values():
    """A cloud is not scored as perfect structure. 7 x 7 windows on a 15 x 15 frame give a 9 x 9 map;
    a cloud over pixels rows 0-3, cols 0-3 touches exactly the windows whose top-left corner (i, j)
    has i <= 3 and j <= 3 (16 of 81). SSIM with the cloud = mean of the cloud-free map over the other
    65 windows; averaging all 81 (the masked ones read ~1) would make the loss fall as clouds grow."""
    x, _ = cube((2, 3, 2, 15, 15), 11)
    noise, _ = cube((2, 3, 2, 15, 15), 12)
    y = 0.5 * x + noise                                                   # SSIM ~0.4: room to inflate
    valid = torch.ones_like(x, dtype=torch.bool)
    valid[..., :4, :4] = False
    touched = torch.zeros(9, 9, dtype=torch.bool)
    touched[:4, :4] = True
    expected = ssim_map(x, y)[..., ~touched].mean()                       # (B, T*C, 65) -> mean
    assert float(ssim(x, y, valid)) == pytest.approx(float(expected), rel=1e-12)
    # a cloud over rows 0-5 leaves the windows with i >= 6 (map rows 6-8); scoring every window instead
    # would count the 2/3 half-cloudy ones as near-perfect
    more_cloud = torch.ones_like(valid)
    more_cloud[..., :6, :] = False
    assert float(ssim(x, y, more_cloud)) == pytest.approx(float(ssim_map(x, y)[..., 6:, :].mean()), rel=1e-12)
    assert float(ssim_map(x, y, more_cloud).mean()) > float(ssim(x, y, more_cloud)) + 0.15


def test_ssim_window_larger_than_patch_raises():
    with pytest.raises(ValueError, match="larger than"):
        ssim(torch.zeros(1, 1, 1, 5, 5), torch.zeros(1, 1, 1, 5, 5))


# ---------------------------------------------------------------- Eq. 4 SAM

def spectra(*vectors):
    """(1, 1, C, 1, len) cube whose pixels carry the given spectra."""
    return torch.tensor(vectors, dtype=torch.float64).T.reshape(1, 1, len(vectors[0]), 1, len(vectors))


def test_sam_hand_values():
    floor = math.acos(1 - 1e-7)     # the documented clamp floor for identical spectra
    p = spectra([1.0, 2.0, 3.0])
    assert float(sam(p, p)) == pytest.approx(floor, rel=1e-6)
    assert float(sam(spectra([1.0, 0.0, 0.0]), spectra([0.0, 1.0, 0.0]))) == pytest.approx(math.pi / 2)
    assert float(sam(spectra([1.0, 0.0]), spectra([1.0, 1.0]))) == pytest.approx(math.pi / 4)
    pred, target = spectra([0.2, 0.5, 0.1], [0.3, 0.3, 0.9]), spectra([0.4, 0.1, 0.6], [0.1, 0.8, 0.2])
    # Scale invariant up to eps = 1e-8 in the denominator.
    assert float(sam(3.5 * pred, target)) == pytest.approx(float(sam(pred, target)), rel=1e-7)


def test_sam_weights_and_band_mask():
    # Two pixels: orthogonal (pi/2, weight 3) and 45 degrees (pi/4, weight 1).
    pred, target = spectra([1.0, 0.0], [1.0, 0.0]), spectra([0.0, 1.0], [1.0, 1.0])
    weights = torch.tensor([3.0, 1.0]).reshape(1, 1, 2)
    assert float(sam(pred, target, weights=weights)) == pytest.approx((3 * math.pi / 2 + math.pi / 4) / 4)
    target[0, 0, 1, 0, 0] = float("nan")     # one missing band drops the whole first pixel
    assert float(sam(pred, target, weights=weights)) == pytest.approx(math.pi / 4)


def test_sam_matches_loop_reference():
    pred, _ = cube((2, 3, 4, 5, 6), 11)
    target, valid = cube((2, 3, 4, 5, 6), 12, nan_fraction=0.1)
    weights = torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    num = den = 0.0
    for b, t, y, x in np.ndindex(2, 3, 5, 6):
        if valid[b, t, :, y, x].all():
            p, q = pred[b, t, :, y, x].numpy(), target[b, t, :, y, x].numpy()
            cos = np.clip(p @ q / (np.linalg.norm(p) * np.linalg.norm(q) + 1e-8), -1 + 1e-7, 1 - 1e-7)
            num += float(weights[t, y, x]) * math.acos(cos)
            den += float(weights[t, y, x])
    assert float(sam(pred, target, valid, weights)) == pytest.approx(num / den, rel=1e-10)


def test_sam_finite_gradients_for_zero_and_identical_spectra():
    for pred_vec, target_vec in [([0.0, 0.0, 0.0], [0.2, 0.3, 0.4]), ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
                                 ([0.2, 0.3, 0.4], [0.2, 0.3, 0.4])]:
        pred = spectra(pred_vec).requires_grad_(True)
        loss = sam(pred, spectra(target_vec))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()


def test_centre_sam_uses_only_the_central_coordinate():
    pred, _ = cube((2, 11, 4, 15, 15), 14)
    target, _ = cube((2, 11, 4, 15, 15), 15)
    ref = np.mean([math.acos(np.clip(float(pred[b, 5, :, 7, 7] @ target[b, 5, :, 7, 7]) /
                                     (float(pred[b, 5, :, 7, 7].norm() * target[b, 5, :, 7, 7].norm()) + 1e-8),
                                     -1 + 1e-7, 1 - 1e-7)) for b in range(2)])
    assert float(centre_sam(pred, target)) == pytest.approx(ref, rel=1e-10)


# ---------------------------------------------------------------- Eq. 5-8 composed objectives

@pytest.fixture
def fusion_batch():
    preds = {"s1": cube((2, 11, 2, 15, 15), 20)[0], "s2": cube((2, 11, 10, 15, 15), 21)[0]}
    targets, valids = {}, {}
    for seed, name in enumerate(preds):
        targets[name], valids[name] = cube(preds[name].shape, 30 + seed, nan_fraction=0.1)
    weights = {m: context_weights(centre_weight=FUSION_CENTRE_WEIGHT[m]).double() for m in preds}
    return preds, targets, valids, weights


def test_s1_and_s2_losses_are_their_parts(fusion_batch):
    preds, targets, valids, _ = fusion_batch
    p, t, v, w = preds["s2"], targets["s2"], valids["s2"], context_weights().double()
    total, parts = s1_loss(p, t, v, w)
    assert float(total) == float(weighted_mae(p, t, w, v))
    assert float(parts["centre_mae"]) == float(centre_mae(p, t, v))
    assert float(parts["context_mae"]) == float(context_mae(p, t, w, v))
    total, parts = s2_loss(p, t, v, w, lambdas=(2.0, 3.0, 5.0))
    expected = 2.0 * weighted_mae(p, t, w, v) + 3.0 * (1 - ssim(p, t, v)) + 5.0 * sam(p, t, v, w)
    assert float(total) == pytest.approx(float(expected), rel=1e-12)
    assert float(parts["ssim"]) == pytest.approx(float(ssim_loss(p, t, v)), rel=1e-12)
    assert {"centre_mae", "context_mae", "sam", "ssim", "centre_sam"} <= set(parts)
    default, _ = s2_loss(p, t, v, w)
    expected = 0.23 * weighted_mae(p, t, w, v) + 0.03 * (1 - ssim(p, t, v)) + 0.74 * sam(p, t, v, w)
    assert float(default) == pytest.approx(float(expected), rel=1e-12)


def test_fusion_terms_are_their_parts(fusion_batch):
    preds, targets, valids, weights = fusion_batch
    p, t, v, w = preds["s2"], targets["s2"], valids["s2"], weights["s2"]
    total, _ = fusion_s2_loss(p, t, v, w, lambdas=(2.0, 7.0))
    assert float(total) == pytest.approx(float(2.0 * weighted_mae(p, t, w, v) + 7.0 * centre_sam(p, t, v)))

    joint, parts = joint_fusion_loss(preds, targets, valids, lambdas=(3.0, 4.0))
    cat = [torch.cat([d["s1"], d["s2"]], dim=2) for d in (preds, targets, valids)]
    assert cat[0].shape[2] == 12
    assert float(joint) == pytest.approx(float(3.0 * ssim_loss(*cat) + 4.0 * sam(*cat)), rel=1e-12)

    terms = {"s1": s1_loss, "s2": lambda *a: fusion_s2_loss(*a, lambdas=(2.0, 7.0))}
    total, parts = fusion_loss(preds, targets, valids, weights, terms, lambdas={"s1": 0.5, "s2": 2.0, "joint": 0.3},
                               joint_lambdas=(3.0, 4.0))
    s1 = weighted_mae(preds["s1"], targets["s1"], weights["s1"], valids["s1"])
    s2 = 2.0 * weighted_mae(p, t, w, v) + 7.0 * centre_sam(p, t, v)
    assert float(total) == pytest.approx(float(0.5 * s1 + 2.0 * s2 + 0.3 * joint), rel=1e-12)
    assert float(parts["centre_mae"]) == pytest.approx(
        (float(centre_mae(preds["s1"], targets["s1"], valids["s1"])) + float(centre_mae(p, t, v))) / 2)
    assert float(parts["context_mae_s2"]) == float(context_mae(p, t, w, v))
    for key in ("centre_mae_s1", "centre_mae_s2", "context_mae_s1", "context_mae_s2", "centre_mae",
                "context_mae", "sam", "ssim"):
        assert key in parts and not parts[key].requires_grad


def test_fusion_loss_default_backward_is_finite(fusion_batch):
    preds, targets, valids, weights = fusion_batch
    for p in preds.values():
        p.requires_grad_(True)
    total, _ = fusion_loss(preds, targets, valids, weights, {"s1": s1_loss, "s2": fusion_s2_loss})
    total.backward()
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in preds.values())
