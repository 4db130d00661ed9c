"""Exercise 10 (solution): 90-day GPP windows without leakage between years (Sec. IV-C), as a plain loop.

Check it: python exercises/check.py 10 --solution
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
    starts = []
    for s in range(0, len(years) - window + 1, stride):
        days = slice(s, s + window)
        target = s + window - 1
        if (np.isin(years[days], list(split_years)).all() and x_ok[days].all()
                and (y_ok is None or y_ok[target])):
            starts.append(s)
    return np.array(starts, dtype=np.int64)
