"""Compiled sliding-window kernels shared by the categorical and concept-drift detectors."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def code_window_counts(ring, counts, pos, count, n_seen, codes, evaluate_every):
    """Slide integer ``codes`` through a window, keeping per-code counts.

    Returns (pos, count, n_seen, positions, counts at each evaluation) where an
    evaluation happens every ``evaluate_every`` values once the window is full.
    """
    w = ring.shape[0]
    n_b = codes.shape[0]
    n_max = n_b // evaluate_every + 1
    positions = np.empty(n_max, np.int64)
    snaps = np.empty((n_max, counts.shape[0]), np.int64)
    k = 0
    for t in range(n_b):
        c = codes[t]
        if count == w:
            counts[ring[pos]] -= 1
        else:
            count += 1
        counts[c] += 1
        ring[pos] = c
        pos += 1
        if pos == w:
            pos = 0
        n_seen += 1
        if count == w and n_seen % evaluate_every == 0:
            positions[k] = n_seen
            snaps[k, :] = counts
            k += 1
    return pos, count, n_seen, positions[:k], snaps[:k]


@njit(cache=True, nogil=True)
def value_window_moments(ring, pos, count, n_seen, values, evaluate_every):
    """Slide ``values`` through a window; at each evaluation return the window's mean and
    unbiased variance, computed afresh from the window in arrival order (two-pass), so
    results never depend on how the stream was split into batches."""
    w = ring.shape[0]
    n_b = values.shape[0]
    n_max = n_b // evaluate_every + 1
    positions = np.empty(n_max, np.int64)
    means = np.empty(n_max)
    variances = np.empty(n_max)
    k = 0
    for t in range(n_b):
        if count < w:
            count += 1
        ring[pos] = values[t]
        pos += 1
        if pos == w:
            pos = 0
        n_seen += 1
        if count == w and n_seen % evaluate_every == 0:
            s = 0.0
            for i in range(w):
                s += ring[(pos + i) % w]
            mean = s / w
            ss = 0.0
            for i in range(w):
                d = ring[(pos + i) % w] - mean
                ss += d * d
            positions[k] = n_seen
            means[k] = mean
            variances[k] = ss / (w - 1) if w > 1 else 0.0
            k += 1
    return pos, count, n_seen, positions[:k], means[:k], variances[:k]
