"""Exercise 11 (solution): SSIM under clouds (Sec. III-A, Eq. 2-3), one Gaussian-weighted window at a time.

Check it: python exercises/check.py 11 --solution
"""
import torch


def observed(target, valid):
    """(B, T, C, H, W) bool: valid (all True when None) and a finite target."""
    finite = torch.isfinite(target)
    return finite if valid is None else valid & finite


def ssim_map(pred, target, valid=None, window=7, sigma=1.5, data_range=1.0):
    """SSIM (Eq. 2) of every complete window position, per frame and band: (B, T, C, H', W'), on a target
    with missing values.

    pred and target are float64 (B, T, C, H, W); target holds NaN where the observation is missing
    (cloud, no acquisition); valid is bool of the same shape, or None (all True). A target value is
    observed where valid is True AND it is finite. Every missing target value is replaced by
    pred.detach() before any arithmetic; then the map is that of exercise 2: local means, variances and
    covariance under a window x window Gaussian (sigma pixels, weights summing to 1), no padding,
    C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = data_range. Returns float64.
    """
    # NaN * 0 is NaN, so the missing values are replaced, not masked; the prediction reads as no error
    target = torch.where(observed(target, valid), target, pred.detach())
    k = torch.arange(window, dtype=pred.dtype) - (window - 1) / 2
    g = torch.exp(-k ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    g2 = g[:, None] * g[None, :]                                  # (window, window), sums to 1
    p = pred.unfold(3, window, 1).unfold(4, window, 1)            # (B, T, C, H', W', window, window)
    t = target.unfold(3, window, 1).unfold(4, window, 1)

    def local_mean(z):                                            # (B, T, C, H', W')
        return (z * g2).sum(dim=(-2, -1))

    mu_p, mu_t = local_mean(p), local_mean(t)
    dp = p - mu_p[..., None, None]                                # deviations inside each window
    dt = t - mu_t[..., None, None]
    var_p, var_t, cov = local_mean(dp * dp), local_mean(dt * dt), local_mean(dp * dt)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2))


def ssim(pred, target, valid=None, window=7, sigma=1.5, data_range=1.0):
    """Mean SSIM over the map positions (sample, frame, band, y, x) whose whole window x window window
    holds observed target values only; a window with a missing value is left out. 1 when no window
    is complete. A scalar tensor.
    """
    values = ssim_map(pred, target, valid, window, sigma, data_range)                  # (B, T, C, H', W')
    windows = observed(target, valid).unfold(3, window, 1).unfold(4, window, 1)       # (..., window, window)
    complete = windows.all(dim=-1).all(dim=-1)                                         # (B, T, C, H', W')
    if not complete.any():
        return torch.ones((), dtype=pred.dtype)
    return values[complete].mean()


def ssim_loss(pred, target, valid=None):
    """SSIM loss (Eq. 3): 1 - ssim(pred, target, valid) with the default window, sigma and data_range."""
    return 1 - ssim(pred, target, valid)
