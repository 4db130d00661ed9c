"""Exercise 3 (solution): the spectral angle mapper by hand (Sec. III-A, Eq. 4).

Check it: python exercises/check.py 3 --solution
"""
import torch

COS_CLAMP = 1e-7                                # as losses.COS_CLAMP (Eq. 4)


def sam(pred, target, eps=1e-8):
    """Mean spectral angle (Eq. 4) in radians: mean over positions of arccos(<p, t> / (|p| |t| + eps)).

    pred and target are float32 (B, T, C, H, W); a spectrum is the C band values of one position
    (b, t, y, x), so the angle is taken along dim 2 and averaged over the B*T*H*W positions. The cosine
    is clamped to [-1 + COS_CLAMP, 1 - COS_CLAMP] before arccos. Returns a scalar tensor.
    """
    dot = (pred * target).sum(dim=2)                                              # (B, T, H, W)
    norms = torch.linalg.vector_norm(pred, dim=2) * torch.linalg.vector_norm(target, dim=2)
    cos = (dot / (norms + eps)).clamp(-1 + COS_CLAMP, 1 - COS_CLAMP)
    return torch.arccos(cos).mean()
