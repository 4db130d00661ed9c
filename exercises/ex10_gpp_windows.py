"""Exercise 10: 90-day GPP windows without leakage between years (Sec. IV-C). See exercises/README.md.

Write make_windows, checked against gpp.make_windows. Work in your own copy:
    python exercises/check.py --start 10    # once: copies this stub to exercises/mywork/ex10_gpp_windows.py
    python exercises/check.py 10            # checks exercises/mywork/ex10_gpp_windows.py
A solution is in exercises/solutions/ex10_gpp_windows.py: try first. Hints come after a failed check.
"""
import numpy as np


def make_windows(years, x_ok, y_ok, split_years, window=90, stride=10):
    """Start indices (W,) int64 of one split's windows on a consecutive daily grid (Sec. IV-C).

    years (N,) int, the calendar year of each day; x_ok (N,) bool, every predictor available that day; y_ok
    (N,) bool, GPP observed (quality-filtered) that day, or None when no target is needed. Window s
    covers days s .. s + window - 1 and predicts the GPP of its LAST day, s + window - 1. Candidate
    starts are 0, stride, 2 * stride, ... A window is kept when ALL its days lie in split_years (a
    training window never holds a validation day), x_ok holds on all of them, and y_ok on its last day.
    """
    raise NotImplementedError("make_windows (Sec. IV-C)")
