"""Exercise 5: a date encoding that sees the gaps between acquisitions (Sec. III-B). See exercises/README.md.

Write temporal_encoding, checked against deepfeat.TemporalEncoding of the day offsets. Work in your own copy:
    python exercises/check.py --start 5    # once: copies this stub to exercises/mywork/ex05_temporal_encoding.py
    python exercises/check.py 5            # checks exercises/mywork/ex05_temporal_encoding.py
A solution is in exercises/solutions/ex05_temporal_encoding.py: try first. Hints come after a failed check.
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
    raise NotImplementedError("temporal_encoding (Sec. III-B)")
