"""Exercise 1: the context kernel of Eq. 1 (Sec. III-A, Fig. 1). See exercises/README.md.

Write context_weights, checked against losses.context_weights. Work in your own copy:
    python exercises/check.py --start 1    # once: copies this stub to exercises/mywork/ex01_context_kernel.py
    python exercises/check.py 1            # checks exercises/mywork/ex01_context_kernel.py
A solution is in exercises/solutions/ex01_context_kernel.py: try first. Hints come after a failed check.
"""
import torch


def context_weights(T=11, H=15, W=15, alpha=0.1, centre_weight=1.0, ring_weight=0.01, normalise=True):
    """Spatio-temporal loss weights of Eq. 1 (Sec. III-A): w(t, y, x) = alpha^|dt| * s(d), shape (T, H, W).

    dt = t - T//2 counts frames from the central frame; d = max(|y - H//2|, |x - W//2|) is the
    Chebyshev ring of the pixel around the central pixel (ring 1 = the 8 neighbours). The spatial
    factor is s(0) = centre_weight and s(d) = ring_weight * alpha^(d - 1) for d >= 1, so the first
    ring gets ring_weight and every further ring alpha times less. normalise=True divides by the sum.
    T, H, W are ints, odd or even; the result is a floating-point tensor (float32 or float64).
    """
    raise NotImplementedError("context_weights (Sec. III-A, Eq. 1)")
