"""Exercise 11: SSIM under clouds, the masked SSIM loss of Eq. 2-3 (Sec. III-A). See exercises/README.md.

Write ssim_map, ssim and ssim_loss, checked against losses.ssim_map, losses.ssim and losses.ssim_loss
(values and gradients). Work in your own copy, starting from your exercise 2:
    python exercises/check.py --start 11    # once: copies this stub to exercises/mywork/ex11_masked_ssim.py
    python exercises/check.py 11            # checks exercises/mywork/ex11_masked_ssim.py
A solution is in exercises/solutions/ex11_masked_ssim.py: try first. Hints come after a failed check.
"""
import torch


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
    raise NotImplementedError("ssim_map with missing values (Sec. III-A, Eq. 2)")


def ssim(pred, target, valid=None, window=7, sigma=1.5, data_range=1.0):
    """Mean SSIM over the map positions (sample, frame, band, y, x) whose whole window x window window
    holds observed target values only; a window with a missing value is left out. 1 when no window
    is complete. A scalar tensor.
    """
    raise NotImplementedError("ssim over complete windows (Sec. III-A, Eq. 2)")


def ssim_loss(pred, target, valid=None):
    """SSIM loss (Eq. 3): 1 - ssim(pred, target, valid) with the default window, sigma and data_range."""
    raise NotImplementedError("ssim_loss with missing values (Sec. III-A, Eq. 3)")
