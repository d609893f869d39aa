"""Compiled per-value kernels of the e-detectors (``edetectors``).

Both kernels run CUSUM-style e-detectors in the log domain: every component keeps
``log M = max(log M, 0) + log L`` where ``L`` is a conditional e-value (mean 1 under
the null), and the detector's statistic is the log of the components' average.
They reset every component to ``log M = 0`` on the value after an alarm, like the
other sequential detectors. ``cache=True`` and no fastmath, so results are
bit-identical across processes and batch boundaries.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def mixture_cusum(log_m, state, scores, quad, lin, const, log_k, threshold, stat, drift):
    """Mixture of K CUSUM e-detectors with quadratic log e-values ``a z² + b z + c``.

    ``log_m`` (K,) holds each component's log M; ``state[0]`` is 1.0 when the previous
    value alarmed (so this one starts afresh). ``scores`` are the standardised values.
    """
    k = log_m.shape[0]
    for i in range(scores.shape[0]):
        if state[0] != 0.0:
            for j in range(k):
                log_m[j] = 0.0
            state[0] = 0.0
        z = scores[i]
        top = -math.inf
        for j in range(k):
            prev = log_m[j]
            if prev < 0.0:
                prev = 0.0
            v = prev + (quad[j] * z + lin[j]) * z + const[j]
            log_m[j] = v
            if v > top:
                top = v
        acc = 0.0
        for j in range(k):
            acc += math.exp(log_m[j] - top)
        s = top + math.log(acc) - log_k
        stat[i] = s
        if s >= threshold:
            drift[i] = True
            state[0] = 1.0
        else:
            drift[i] = False


@njit(cache=True, nogil=True)
def multinomial_cusum(state, counts, ring, codes, log_p, prior, threshold, stat, drift):
    """CUSUM e-detector on bucket codes with a predictable plug-in alternative.

    ``state`` = [log M, ring position, values in the ring, alarmed-on-previous-value];
    ``ring`` holds the last ``ring.size`` codes and ``counts`` their bucket counts.
    The alternative for value t is the frequencies of the ring — values before t
    only — shrunk towards the reference probabilities p with ``prior``
    pseudo-values: q(k) = (counts[k] + prior·p(k)) / (filled + prior). So
    q(x_t)/p(x_t) has mean exactly 1 under p: an e-value, and
    log M ← max(log M, 0) + log q(x_t) − log p(x_t).
    """
    w = ring.shape[0]
    for i in range(codes.shape[0]):
        if state[3] != 0.0:
            state[0] = 0.0
            state[3] = 0.0
        c = codes[i]
        lp = log_p[c]
        filled = state[2]
        log_q = math.log(counts[c] + prior * math.exp(lp)) - math.log(filled + prior)
        prev = state[0]
        if prev < 0.0:
            prev = 0.0
        v = prev + log_q - lp
        state[0] = v
        pos = int(state[1])
        if filled >= w:
            counts[ring[pos]] -= 1.0
        else:
            state[2] = filled + 1.0
        ring[pos] = c
        counts[c] += 1.0
        state[1] = float((pos + 1) % w)
        stat[i] = v
        if v >= threshold:
            drift[i] = True
            state[3] = 1.0
        else:
            drift[i] = False


@njit(cache=True, nogil=True)
def count_alarms(log_m, state, scores, quad, lin, const, log_k, threshold):
    """How many alarms :func:`mixture_cusum` raises on ``scores`` (calibration runs)."""
    k = log_m.shape[0]
    alarms = 0
    for i in range(scores.shape[0]):
        if state[0] != 0.0:
            for j in range(k):
                log_m[j] = 0.0
            state[0] = 0.0
        z = scores[i]
        top = -math.inf
        for j in range(k):
            prev = log_m[j]
            if prev < 0.0:
                prev = 0.0
            v = prev + (quad[j] * z + lin[j]) * z + const[j]
            log_m[j] = v
            if v > top:
                top = v
        acc = 0.0
        for j in range(k):
            acc += math.exp(log_m[j] - top)
        if top + math.log(acc) - log_k >= threshold:
            alarms += 1
            state[0] = 1.0
    return alarms


def empty_state() -> np.ndarray:
    return np.zeros(1)
