"""Compiled kernels for the KS detectors (numba, no fastmath: IEEE-exact like scipy)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _search_left(a, n, x):
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _search_right(a, n, x):
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def sorted_replace(sorted_win, count, old, new):
    """Replace one occurrence of ``old`` by ``new`` in ``sorted_win[:count]``, keeping order."""
    i_old = _search_left(sorted_win, count, old)
    i_new = _search_right(sorted_win, count, new)
    if i_new > i_old:
        # new goes to the right of old: shift the values between one step left
        for t in range(i_old, i_new - 1):
            sorted_win[t] = sorted_win[t + 1]
        sorted_win[i_new - 1] = new
    else:
        for t in range(i_old, i_new, -1):
            sorted_win[t] = sorted_win[t - 1]
        sorted_win[i_new] = new


@njit(cache=True, nogil=True)
def sorted_insert(sorted_win, count, x):
    i = _search_right(sorted_win, count, x)
    for t in range(count, i, -1):
        sorted_win[t] = sorted_win[t - 1]
    sorted_win[i] = x


@njit(cache=True, nogil=True)
def ks_extrema(ref, win, m):
    """scipy's ECDF-difference extremes of ``ref`` vs ``win[:m]`` (both sorted).

    With D(t) = #ref<=t/n - #win<=t/m, the maximum over the data points sits
    just below a window value (D only rises across reference values) and the
    minimum at a window value, so one pass over the window with a pointer into
    the reference finds both. Each candidate is computed with scipy's float
    operations (i/n - j/m), so the maxima equal ``ks_2samp``'s bit for bit; the
    same extremes are also returned as exact integers i*m - j*n.

    Returns (max D, clip(-min D, 0, 1), max S, -min S) with S = n*m*D.
    """
    n = ref.shape[0]
    i = 0
    j = 0
    # D is 0.0 at the largest data point, so 0 is always among the candidates.
    fmax = 0.0
    fmin = 0.0
    smax = np.int64(0)
    smin = np.int64(0)
    while j < m:
        v = win[j]
        while i < n and ref[i] < v:
            i += 1
        f = i / n - j / m
        fmax = max(fmax, f)
        s = np.int64(i) * m - np.int64(j) * n
        smax = max(smax, s)
        while i < n and ref[i] == v:
            i += 1
        jr = j + 1
        while jr < m and win[jr] == v:
            jr += 1
        f = i / n - jr / m
        fmin = min(fmin, f)
        s = np.int64(i) * m - np.int64(jr) * n
        smin = min(smin, s)
        j = jr
    neg = -fmin
    neg = min(neg, 1.0)
    return fmax, neg, smax, -smin


@njit(cache=True, nogil=True)
def ks_window_batch(ref, ring, sorted_win, pos, count, n_seen, batch, evaluate_every):
    """Slide ``batch`` through the window; evaluate every ``evaluate_every`` values once full.

    Mutates ``ring`` and ``sorted_win`` in place. Returns the new (pos, count,
    n_seen) and, per evaluation, its stream position and the ECDF extremes.
    """
    w = ring.shape[0]
    n_b = batch.shape[0]
    n_eval_max = n_b // evaluate_every + 1
    positions = np.empty(n_eval_max, np.int64)
    dmaxs = np.empty(n_eval_max, np.float64)
    dmins = np.empty(n_eval_max, np.float64)
    smaxs = np.empty(n_eval_max, np.int64)
    smins = np.empty(n_eval_max, np.int64)
    k = 0
    for t in range(n_b):
        x = batch[t]
        if count < w:
            sorted_insert(sorted_win, count, x)
            count += 1
        else:
            sorted_replace(sorted_win, count, ring[pos], x)
        ring[pos] = x
        pos += 1
        if pos == w:
            pos = 0
        n_seen += 1
        if count == w and n_seen % evaluate_every == 0:
            dmax, dmin, smax, smin = ks_extrema(ref, sorted_win, count)
            positions[k] = n_seen
            dmaxs[k] = dmax
            dmins[k] = dmin
            smaxs[k] = smax
            smins[k] = smin
            k += 1
    return pos, count, n_seen, positions[:k], dmaxs[:k], dmins[:k], smaxs[:k], smins[:k]


# ----------------------------------------------------------------------------- IKS tree
# A static segment tree over the K+1 gaps between the K distinct sorted reference
# values u_1 < ... < u_K (gap 0 = (-inf, u_1), gap k = [u_k, u_{k+1})). With n
# reference and m window values and S(t) = m*#ref<=t - n*#win<=t, leaf k holds
#   A_k = sup of S on gap k  = c_k*m - n*#win<=u_k   (attained at u_k; A_0 = 0)
#   B_k = inf of S on gap k  = c_k*m - n*#win<u_{k+1}
# Inserting (removing) a window value x in gap k subtracts (adds) n to A on
# [k, K] if x == u_k else [k+1, K], and to B on [k, K]: two suffix range-adds.
# Nodes keep subtree max of A / min of B plus a pending add, so both updates are
# O(log K) and sup S / inf S are read at the root in O(1), in exact integers.


@njit(cache=True, nogil=True)
def _tree_add_max(t, lazy, size, lo, hi, val):
    """Add ``val`` to leaves [lo, hi) of a max tree.

    The min tree of B is kept as the max tree of -B, so this one routine serves both.
    """
    if lo >= hi:
        return
    l0 = lo + size
    r0 = hi + size
    lo = l0
    hi = r0
    while lo < hi:
        if lo & 1:
            t[lo] += val
            if lo < size:
                lazy[lo] += val
            lo += 1
        if hi & 1:
            hi -= 1
            t[hi] += val
            if hi < size:
                lazy[hi] += val
        lo >>= 1
        hi >>= 1
    p = l0
    while p > 1:
        p >>= 1
        a = t[2 * p]
        b = t[2 * p + 1]
        t[p] = (max(b, a)) + lazy[p]
    p = r0 - 1
    while p > 1:
        p >>= 1
        a = t[2 * p]
        b = t[2 * p + 1]
        t[p] = (max(b, a)) + lazy[p]


@njit(cache=True, nogil=True)
def iks_tree_build(cum_counts, m):
    """Empty-window trees for distinct-reference cumulative counts ``cum_counts`` (length K)."""
    n_leaves = cum_counts.shape[0] + 1
    size = 1
    while size < n_leaves:
        size <<= 1
    big = np.int64(1 << 62)
    tmax = np.full(2 * size, -big, np.int64)
    tneg = np.full(2 * size, -big, np.int64)  # max tree of -B: its root is -inf B
    lmax = np.zeros(size, np.int64)
    lneg = np.zeros(size, np.int64)
    tmax[size] = 0
    tneg[size] = 0
    for k in range(1, n_leaves):
        v = np.int64(cum_counts[k - 1]) * m
        tmax[size + k] = v
        tneg[size + k] = -v
    for p in range(size - 1, 0, -1):
        tmax[p] = max(tmax[2 * p + 1], tmax[2 * p])
        tneg[p] = max(tneg[2 * p + 1], tneg[2 * p])
    return size, tmax, lmax, tneg, lneg


@njit(cache=True, nogil=True)
def _iks_apply(uniq, n_ref, size, tmax, lmax, tneg, lneg, x, sign):
    n_leaves = uniq.shape[0] + 1
    k = _search_right(uniq, uniq.shape[0], x)
    val = -sign * np.int64(n_ref)
    a_lo = k if (k >= 1 and uniq[k - 1] == x) else k + 1
    _tree_add_max(tmax, lmax, size, a_lo, n_leaves, val)
    _tree_add_max(tneg, lneg, size, k, n_leaves, -val)


@njit(cache=True, nogil=True)
def iks_batch(uniq, n_ref, size, tmax, lmax, tneg, lneg, ring, pos, count, n_seen, batch):
    """Slide ``batch`` through the window, reading sup S and -inf S after every full-window value.

    Returns the new (pos, count, n_seen) and, per evaluated value, its stream
    position and the two integer extremes (both clipped at 0).
    """
    w = ring.shape[0]
    n_b = batch.shape[0]
    positions = np.empty(n_b, np.int64)
    smaxs = np.empty(n_b, np.int64)
    smins = np.empty(n_b, np.int64)
    k = 0
    for t in range(n_b):
        x = batch[t]
        if count == w:
            _iks_apply(uniq, n_ref, size, tmax, lmax, tneg, lneg, ring[pos], -1)
        else:
            count += 1
        _iks_apply(uniq, n_ref, size, tmax, lmax, tneg, lneg, x, 1)
        ring[pos] = x
        pos += 1
        if pos == w:
            pos = 0
        n_seen += 1
        if count == w:
            hi = tmax[1]
            lo = tneg[1]
            positions[k] = n_seen
            smaxs[k] = max(0, hi)
            smins[k] = max(0, lo)
            k += 1
    return pos, count, n_seen, positions[:k], smaxs[:k], smins[:k]
