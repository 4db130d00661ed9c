"""Exercise 5 (solution): a date encoding that sees the gaps between acquisitions (Sec. III-B).

Check it: python exercises/check.py 5 --solution
"""
import math

import torch


def temporal_encoding(days, d_model, max_period=10000.0):
    """Sinusoidal encoding of each frame's real day offset in its window: days (B, T) -> (B, T, D).

    days are acquisition dates as float32 day numbers (data.day_offsets: days since 1970, may be
    fractional). The offset of frame j is days[:, j] - days[:, 0], in days since the window's first
    date, and with frequencies f_i = max_period^(-2i/D), i = 0 .. D/2 - 1:
        PE[..., 2i] = sin(offset * f_i),   PE[..., 2i + 1] = cos(offset * f_i),
    scaled by 1 / sqrt(D). Computed in float32, as the model's tokens are.
    """
    offsets = (days - days[:, :1]).to(torch.float32)                       # (B, T) days since first frame
    freqs = max_period ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)   # (D/2,)
    angles = offsets[..., None] * freqs                                     # (B, T, D/2)
    pe = torch.empty(*offsets.shape, d_model)                               # (B, T, D)
    pe[..., 0::2] = angles.sin()
    pe[..., 1::2] = angles.cos()
    return pe / math.sqrt(d_model)
