"""Exercise 2 (solution): SSIM by hand (Sec. III-A, Eq. 2-3), one Gaussian-weighted window at a time.

Check it: python exercises/check.py 2 --solution
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


def ssim_loss(pred, target):
    """SSIM loss (Eq. 3): 1 - SSIM, with SSIM the mean of ssim_map over every position, frame and band
    (default window, sigma and data_range); a scalar tensor."""
    return 1 - ssim_map(pred, target).mean()
