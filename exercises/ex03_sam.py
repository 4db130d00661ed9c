"""Exercise 3: the spectral angle mapper by hand (Sec. III-A, Eq. 4). See exercises/README.md.

Write sam, checked against losses.sam. Work in your own copy:
    python exercises/check.py --start 3    # once: copies this stub to exercises/mywork/ex03_sam.py
    python exercises/check.py 3            # checks exercises/mywork/ex03_sam.py
A solution is in exercises/solutions/ex03_sam.py: try first. Hints come after a failed check.
"""
import torch

COS_CLAMP = 1e-7                                # as losses.COS_CLAMP (Eq. 4)


def sam(pred, target, eps=1e-8):
    """Mean spectral angle (Eq. 4) in radians: mean over positions of arccos(<p, t> / (|p| |t| + eps)).

    pred and target are float32 (B, T, C, H, W); a spectrum is the C band values of one position
    (b, t, y, x), so the angle is taken along dim 2 and averaged over the B*T*H*W positions. The cosine
    is clamped to [-1 + COS_CLAMP, 1 - COS_CLAMP] before arccos. Returns a scalar tensor.
    """
    raise NotImplementedError("sam (Sec. III-A, Eq. 4)")
