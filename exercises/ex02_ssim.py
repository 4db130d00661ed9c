"""Exercise 2: SSIM by hand (Sec. III-A, Eq. 2-3). See exercises/README.md.

Write ssim_map and ssim_loss, checked against losses.ssim_map and losses.ssim_loss. Work in your own copy:
    python exercises/check.py --start 2    # once: copies this stub to exercises/mywork/ex02_ssim.py
    python exercises/check.py 2            # checks exercises/mywork/ex02_ssim.py
A solution is in exercises/solutions/ex02_ssim.py: try first. Hints come after a failed check.
"""
import torch


def ssim_map(pred, target, window=7, sigma=1.5, data_range=1.0):
    """SSIM (Eq. 2) of every complete window position, per frame and band: (B, T, C, H', W').

    SSIM = (2 mu_p mu_t + C1)(2 s_pt + C2) / ((mu_p^2 + mu_t^2 + C1)(s_p^2 + s_t^2 + C2)), where the
    local means, variances and covariance are weighted by a window x window Gaussian (standard
    deviation sigma pixels, weights summing to 1) centred on each position that fits inside the frame
    (no padding: H' = H - window + 1, W' = W - window + 1). C1 = (0.01 L)^2 and C2 = (0.03 L)^2 with
    L = data_range. pred and target are float64 (B, T, C, H, W) without missing values; return float64.
    """
    raise NotImplementedError("ssim_map (Sec. III-A, Eq. 2)")


def ssim_loss(pred, target):
    """SSIM loss (Eq. 3): 1 - SSIM, with SSIM the mean of ssim_map over every position, frame and band
    (default window, sigma and data_range); a scalar tensor."""
    raise NotImplementedError("ssim_loss (Sec. III-A, Eq. 3)")
