"""Exercise 3: the spectral angle mapper by hand (Sec. III-A, Eq. 4). See exercises/README.md.

Write sam, then check it against losses.sam:
    python exercises/check.py 3
(a solution is in exercises/solutions/ex03_sam.py: try first)
"""
import torch

# arccos has an infinite slope at +-1: the cosine is kept 1e-7 inside, as losses.COS_CLAMP.
COS_CLAMP = 1e-7


def sam(pred, target, eps=1e-8):
    """Mean spectral angle (Eq. 4) in radians: mean over positions of arccos(<p, t> / (|p| |t| + eps)).

    pred and target are (B, T, C, H, W); a spectrum is the C band values of one position (b, t, y, x),
    so the angle is taken along dim 2 and averaged over the B*T*H*W positions. The cosine is clamped to
    [-1 + 1e-7, 1 - 1e-7] before arccos (identical spectra then read acos(1 - 1e-7) ~ 4.5e-4 rad and
    the gradient stays finite); eps keeps a zero spectrum finite (cosine 0, angle pi/2).
    """
    raise NotImplementedError("sam (Sec. III-A, Eq. 4)")
