"""Compiled per-value kernels of the sequential detectors (numba, IEEE-exact, no fastmath).

Each kernel walks a batch in order, mutating a flat float64 state vector, and
writes the per-value statistic, drift flag and warning flag. The arithmetic is
written operation for operation like the published algorithms as river 0.26.1
implements them (same operand order, same constants), so that alarms land on
the same values; the oracle tests in tests/unit/test_detectors_sequential.py
hold us to that. Logarithms of constants are computed once in Python and passed
in, exactly as the Python reference computes them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# ----------------------------------------------------------------------------- Page-Hinkley
# state: n, mean, sum_inc, sum_dec, min_inc, max_dec, drift
PH_STATE = ("n", "mean", "sum_increase", "sum_decrease", "min_increase", "max_decrease", "drift")
PH_INITIAL = np.array([0.0, 0.0, 0.0, 0.0, np.inf, -1.0, 0.0])


@njit(cache=True, nogil=True)
def page_hinkley(st, batch, min_instances, delta, threshold, alpha, mode, loc, scale, stat, drift):
    """mode: 0 = up (increase), 1 = down (decrease), 2 = both."""
    n, mean, s_inc, s_dec, m_inc, m_dec, dr = st[0], st[1], st[2], st[3], st[4], st[5], st[6]
    for t in range(batch.shape[0]):
        x = (batch[t] - loc) / scale
        if dr != 0.0:
            n, mean, s_inc, s_dec, m_inc, m_dec, dr = 0.0, 0.0, 0.0, 0.0, np.inf, -1.0, 0.0
        n += 1.0
        mean += (1.0 / n) * (x - mean)
        dev = x - mean
        s_inc = alpha * s_inc + dev - delta
        s_dec = alpha * s_dec + dev + delta
        m_inc = min(m_inc, s_inc)
        m_dec = max(m_dec, s_dec)
        t_inc = s_inc - m_inc
        t_dec = m_dec - s_dec
        if mode == 0:
            s = t_inc
        elif mode == 1:
            s = t_dec
        else:
            s = max(t_dec, t_inc)
        stat[t] = s
        if n >= min_instances:
            if mode == 0:
                alarm = t_inc > threshold
            elif mode == 1:
                alarm = t_dec > threshold
            else:
                alarm = t_inc > threshold or t_dec > threshold
            dr = 1.0 if alarm else 0.0
        drift[t] = dr != 0.0
    st[0], st[1], st[2], st[3], st[4], st[5], st[6] = n, mean, s_inc, s_dec, m_inc, m_dec, dr


# ----------------------------------------------------------------------------- DDM
# state: n, p (mean error), p_min, s_min, ps_min, drift, warning
DDM_STATE = ("n", "p", "p_min", "s_min", "ps_min", "drift", "warning")
DDM_INITIAL = np.array([0.0, 0.0, np.nan, np.nan, np.inf, 0.0, 0.0])


@njit(cache=True, nogil=True)
def ddm(st, batch, warm_start, warning_threshold, drift_threshold, stat, drift, warning):
    n, p, p_min, s_min, ps_min, dr, wa = st[0], st[1], st[2], st[3], st[4], st[5], st[6]
    for t in range(batch.shape[0]):
        x = batch[t]
        if dr != 0.0:
            n, p, p_min, s_min, ps_min, dr, wa = 0.0, 0.0, np.nan, np.nan, np.inf, 0.0, 0.0
        n += 1.0
        p += (1.0 / n) * (x - p)
        s = math.sqrt(p * (1 - p) / n)
        z = np.nan
        if n > warm_start:
            if p + s <= ps_min:
                p_min = p
                s_min = s
                ps_min = p_min + s_min
            wa = 1.0 if p + s > p_min + warning_threshold * s_min else 0.0
            if p + s > p_min + drift_threshold * s_min:
                dr = 1.0
                wa = 0.0
            # reported statistic: how many s_min the error rate sits above its minimum
            excess = p + s - p_min
            if s_min > 0.0:
                z = excess / s_min
            elif excess > 0.0:
                z = np.inf
            else:
                z = 0.0
        stat[t] = z
        drift[t] = dr != 0.0
        warning[t] = wa != 0.0
    st[0], st[1], st[2], st[3], st[4], st[5], st[6] = n, p, p_min, s_min, ps_min, dr, wa


# ----------------------------------------------------------------------------- EDDM
# state: n, last_error, n_errors, dist_n, dist_mean, dist_s, p2s_max, level, drift, warning
EDDM_STATE = (
    "n", "last_error", "n_errors", "dist_n", "dist_mean", "dist_s", "p2s_max", "level",
    "drift", "warning",
)  # fmt: skip
EDDM_INITIAL = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, np.nan, 0.0, 0.0])


@njit(cache=True, nogil=True)
def eddm(st, batch, warm_start, alpha, beta, stat, drift, warning):
    n, last, n_err, dn, dmean, ds, p2s_max, level, dr, wa = (
        st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7], st[8], st[9]
    )  # fmt: skip
    for t in range(batch.shape[0]):
        x = batch[t]
        if dr != 0.0:
            n, last, n_err, dn, dmean, ds, p2s_max, level, dr, wa = (
                0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, np.nan, 0.0, 0.0
            )  # fmt: skip
        n += 1.0
        if x == 1.0:
            n_err += 1.0
            # Welford update of the distance between consecutive errors
            dist = n - last
            mean_old = dmean
            dn += 1.0
            dmean += (1.0 / dn) * (dist - dmean)
            ds += 1.0 * (dist - mean_old) * (dist - dmean)
            if n > warm_start:
                var = ds / (dn - 1) if dn > 1 else 0.0
                p2s = dmean + 2 * var**0.5
                if p2s > p2s_max:
                    p2s_max = p2s
                elif n_err > warm_start:
                    level = p2s / p2s_max
                    if level < beta:
                        dr = 1.0
                    elif level < alpha:
                        wa = 1.0
                    else:
                        wa = 0.0
            last = n
        stat[t] = level
        drift[t] = dr != 0.0
        warning[t] = wa != 0.0
    st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7], st[8], st[9] = (
        n, last, n_err, dn, dmean, ds, p2s_max, level, dr, wa
    )  # fmt: skip


# ----------------------------------------------------------------------------- HDDM_A
# state: z_n, z_mean, lo_n, lo_mean, hi_n, hi_mean, drift, warning
HDDMA_STATE = ("z_n", "z_mean", "min_n", "min_mean", "max_n", "max_mean", "drift", "warning")
HDDMA_INITIAL = np.zeros(8)


@njit(cache=True, nogil=True)
def _hddma_changed(big_n, big_mean, small_n, small_mean, log2_conf):
    # Mean of the whole stream vs the mean up to the cut point (Hoeffding bound).
    if small_n == big_n:
        return False
    m = (big_n - small_n) / small_n * (1.0 / big_n)
    eps = math.sqrt(m / 2 * log2_conf)
    return big_mean - small_mean >= eps


@njit(cache=True, nogil=True)
def _hddma_ratio(big_n, big_mean, small_n, small_mean, log2_conf):
    if small_n == big_n:
        return 0.0
    m = (big_n - small_n) / small_n * (1.0 / big_n)
    return (big_mean - small_mean) / math.sqrt(m / 2 * log2_conf)


@njit(cache=True, nogil=True)
def hddm_a(st, batch, log_inv_drift, log2_drift, log2_warning, two_sided, stat, drift, warning):
    zn, zm, ln, lm, hn, hm, dr, wa = st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]
    for t in range(batch.shape[0]):
        x = batch[t]
        if dr != 0.0:
            zn, zm, ln, lm, hn, hm, dr, wa = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        zn += 1.0
        zm += (1.0 / zn) * (x - zm)
        if ln == 0:
            ln, lm = zn, zm
        if hn == 0:
            hn, hm = zn, zm
        eps_z = math.sqrt(1.0 / (2 * zn) * log_inv_drift)
        eps_x = math.sqrt(1.0 / (2 * ln) * log_inv_drift)
        if lm + eps_x >= zm + eps_z:
            ln, lm = zn, zm
        eps_x = math.sqrt(1.0 / (2 * hn) * log_inv_drift)
        if hm - eps_x <= zm - eps_z:
            hn, hm = zn, zm
        if _hddma_changed(zn, zm, ln, lm, log2_drift):
            wa = 0.0
            dr = 1.0
        elif _hddma_changed(zn, zm, ln, lm, log2_warning):
            wa = 1.0
            dr = 0.0
        else:
            wa = 0.0
            dr = 0.0
        s = _hddma_ratio(zn, zm, ln, lm, log2_drift)
        if two_sided:
            if _hddma_decr(zn, zm, hn, hm, log2_drift):
                dr = 1.0
            elif _hddma_decr(zn, zm, hn, hm, log2_warning):
                wa = 1.0
            s_dec = _hddma_decr_ratio(zn, zm, hn, hm, log2_drift)
            s = max(s, s_dec)
        stat[t] = s
        drift[t] = dr != 0.0
        warning[t] = wa != 0.0
    st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7] = zn, zm, ln, lm, hn, hm, dr, wa


@njit(cache=True, nogil=True)
def _hddma_decr(zn, zm, hn, hm, log2_conf):
    if hn == zn:
        return False
    m = (zn - hn) / hn * (1.0 / zn)
    eps = math.sqrt(m / 2 * log2_conf)
    return hm - zm >= eps


@njit(cache=True, nogil=True)
def _hddma_decr_ratio(zn, zm, hn, hm, log2_conf):
    if hn == zn:
        return 0.0
    m = (zn - hn) / hn * (1.0 / zn)
    return (hm - zm) / math.sqrt(m / 2 * log2_conf)


# ----------------------------------------------------------------------------- HDDM_W
# Five "sample infos" (EWMA, initialised flag, independent-bound coefficient):
# total, s1_incr, s2_incr, s1_decr, s2_decr -> state[0:15]; then the two cut
# points, drift, warning.
HDDMW_STATE = (
    *tuple(
        f"{name}_{field}"
        for name in ("total", "s1_incr", "s2_incr", "s1_decr", "s2_decr")
        for field in ("ewma", "init", "ibc")
    ),
    "incr_cutpoint",
    "decr_cutpoint",
    "drift",
    "warning",
)
HDDMW_INITIAL = np.array([0.0, 0.0, 1.0] * 5 + [np.inf, -np.inf, 0.0, 0.0])


@njit(cache=True, nogil=True)
def _sample_update(st, i, x, lam, one_minus_lam, lam_sq, c_lam_sq):
    if st[i + 1] == 0.0:
        st[i] = x
    else:
        st[i] = lam * x + one_minus_lam * st[i]
    st[i + 1] = 1.0
    st[i + 2] = lam_sq + c_lam_sq * st[i + 2]


@njit(cache=True, nogil=True)
def _sample_reset(st, i):
    st[i] = 0.0
    st[i + 1] = 0.0
    st[i + 2] = 1.0


@njit(cache=True, nogil=True)
def _sample_copy(st, src, dst):
    st[dst] = st[src]
    st[dst + 1] = st[src + 1]
    st[dst + 2] = st[src + 2]


@njit(cache=True, nogil=True)
def _mcdiarmid(ibc, log_inv_conf):
    return math.sqrt(ibc * log_inv_conf / 2)


@njit(cache=True, nogil=True)
def _hddmw_margin(st, i1, i2, log_inv_conf):
    """(sample2 - sample1) minus the McDiarmid bound, and the ratio of the two."""
    if st[i1 + 1] == 0.0 or st[i2 + 1] == 0.0:
        return False, 0.0
    bound = _mcdiarmid(st[i1 + 2] + st[i2 + 2], log_inv_conf)
    diff = st[i2] - st[i1]
    return diff > bound, diff / bound


@njit(cache=True, nogil=True)
def hddm_w(
    st, batch, lam, one_minus_lam, lam_sq, c_lam_sq, log_inv_drift, log_inv_warning, two_sided,
    stat, drift, warning,
):  # fmt: skip
    TOTAL, S1I, S2I, S1D, S2D = 0, 3, 6, 9, 12
    for t in range(batch.shape[0]):
        x = batch[t]
        if st[17] != 0.0:
            for i in (TOTAL, S1I, S2I, S1D, S2D):
                _sample_reset(st, i)
            st[15] = np.inf
            st[16] = -np.inf
            st[17] = 0.0
            st[18] = 0.0
        _sample_update(st, TOTAL, x, lam, one_minus_lam, lam_sq, c_lam_sq)
        # cut point for an increase of the mean
        eps = _mcdiarmid(st[TOTAL + 2], log_inv_drift)
        if st[TOTAL] + eps < st[15]:
            st[15] = st[TOTAL] + eps
            _sample_copy(st, TOTAL, S1I)
            _sample_reset(st, S2I)
        else:
            _sample_update(st, S2I, x, lam, one_minus_lam, lam_sq, c_lam_sq)
        changed, s = _hddmw_margin(st, S1I, S2I, log_inv_drift)
        if changed:
            st[18] = 0.0
            st[17] = 1.0
        elif _hddmw_margin(st, S1I, S2I, log_inv_warning)[0]:
            st[18] = 1.0
            st[17] = 0.0
        else:
            st[18] = 0.0
            st[17] = 0.0
        # cut point for a decrease of the mean
        eps = _mcdiarmid(st[TOTAL + 2], log_inv_drift)
        if st[TOTAL] - eps > st[16]:
            st[16] = st[TOTAL] - eps
            _sample_copy(st, TOTAL, S1D)
            _sample_reset(st, S2D)
        else:
            _sample_update(st, S2D, x, lam, one_minus_lam, lam_sq, c_lam_sq)
        if two_sided:
            changed, s_dec = _hddmw_margin(st, S2D, S1D, log_inv_drift)
            if changed:
                st[17] = 1.0
            elif _hddmw_margin(st, S2D, S1D, log_inv_warning)[0]:
                st[18] = 1.0
            s = max(s, s_dec)
        stat[t] = s
        drift[t] = st[17] != 0.0
        warning[t] = st[18] != 0.0


# ----------------------------------------------------------------------------- ADWIN
# ADWIN2 (Bifet & Gavaldà 2007) with exponential-histogram buckets: level l holds
# up to max_buckets+1 (total, variance) summaries of 2**l values each, oldest
# first. Scalars (state vector): total, variance, width, total_width, n_buckets,
# max_n_buckets, tick, n_detections, n_levels, drift.
ADWIN_STATE = (
    "total", "variance", "width", "total_width", "n_buckets", "max_n_buckets", "tick",
    "n_detections", "n_levels", "drift",
)  # fmt: skip
ADWIN_MAX_LEVELS = 64


def adwin_initial(max_buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Empty ADWIN: (scalars, bucket totals, bucket variances, bucket counts per level)."""
    scalars = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    totals = np.zeros((ADWIN_MAX_LEVELS, max_buckets + 1))
    variances = np.zeros((ADWIN_MAX_LEVELS, max_buckets + 1))
    counts = np.zeros(ADWIN_MAX_LEVELS, np.int64)
    return scalars, totals, variances, counts


@njit(cache=True, nogil=True)
def _adwin_drop_front(totals, variances, counts, level, k):
    """Remove the k oldest summaries of ``level``."""
    c = counts[level]
    for i in range(c - k):
        totals[level, i] = totals[level, i + k]
        variances[level, i] = variances[level, i + k]
    for i in range(c - k, c):
        totals[level, i] = 0.0
        variances[level, i] = 0.0
    counts[level] = c - k


@njit(cache=True, nogil=True)
def adwin(
    sc, totals, variances, counts, batch, delta, clock, max_buckets, min_window_length,
    grace_period, stat, drift,
):  # fmt: skip
    for t in range(batch.shape[0]):
        value = batch[t]
        if sc[9] != 0.0:
            # river resets the whole window on the value after a detection
            for i in range(10):
                sc[i] = 0.0
            sc[8] = 1.0
            totals[:, :] = 0.0
            variances[:, :] = 0.0
            counts[:] = 0
        total, variance, width = sc[0], sc[1], sc[2]
        n_levels = np.int64(sc[8])
        # insert the value as a new summary of one
        c0 = counts[0]
        totals[0, c0] = value
        variances[0, c0] = 0.0
        counts[0] = c0 + 1
        sc[4] += 1.0
        sc[5] = max(sc[5], sc[4])
        width += 1.0
        inc = 0.0
        if width > 1.0:
            dv = value - total / (width - 1.0)
            inc = (width - 1.0) * dv * dv / width
        variance += inc
        total += value
        # merge the two oldest summaries of every overfull level into the next one
        level = 0
        while counts[level] == max_buckets + 1:
            n1 = float(np.int64(1) << level)
            t0 = totals[level, 0]
            t1 = totals[level, 1]
            mu1 = t0 / n1
            mu2 = t1 / n1
            v12 = variances[level, 0] + variances[level, 1] + n1 * 0.5 * (mu1 - mu2) * (mu1 - mu2)
            if level + 1 >= n_levels:
                n_levels = level + 2
            cn = counts[level + 1]
            totals[level + 1, cn] = t0 + t1
            variances[level + 1, cn] = v12
            counts[level + 1] = cn + 1
            sc[4] += 1.0
            _adwin_drop_front(totals, variances, counts, level, 2)
            if counts[level + 1] <= max_buckets:
                break
            level += 1
        # test every cut between old and recent parts, every `clock` values
        detected = False
        sc[6] += 1.0
        tick = np.int64(sc[6])
        if tick % clock == 0 and width > grace_period:
            reduce_width = True
            while reduce_width:
                reduce_width = False
                exit_flag = False
                n0 = 0.0
                nr = width
                u0 = 0.0
                u1 = total
                for idx in range(n_levels - 1, -1, -1):
                    if exit_flag:
                        break
                    size = float(np.int64(1) << idx)
                    cnt = counts[idx]
                    cut = False
                    for k in range(cnt):
                        n0 += size
                        nr -= size
                        tk = totals[idx, k]
                        u0 += tk
                        u1 -= tk
                        if idx == 0 and k == cnt - 1:
                            exit_flag = True
                            break
                        dmean = (u0 / n0) - (u1 / nr)
                        if nr >= min_window_length and n0 >= min_window_length:
                            dprime = math.log(2.0 * math.log(width) / delta)
                            m_recip = 1.0 / (n0 - min_window_length + 1.0) + 1.0 / (
                                nr - min_window_length + 1.0
                            )
                            eps = (
                                math.sqrt(2.0 * m_recip * (variance / width) * dprime)
                                + 2.0 / 3.0 * dprime * m_recip
                            )
                            if abs(dmean) > eps:
                                reduce_width = True
                                detected = True
                                if width > 0.0:
                                    # drop the oldest summary
                                    last = n_levels - 1
                                    nb = float(np.int64(1) << last)
                                    u = totals[last, 0]
                                    v = variances[last, 0]
                                    mu = u / nb
                                    width -= nb
                                    total -= u
                                    mu_w = total / width
                                    variance -= v + nb * width * (mu - mu_w) * (mu - mu_w) / (
                                        nb + width
                                    )
                                    _adwin_drop_front(totals, variances, counts, last, 1)
                                    sc[4] -= 1.0
                                    if counts[last] == 0:
                                        n_levels -= 1
                                    cut = True
                                    break
                    if cut:
                        break
        sc[0], sc[1], sc[2] = total, variance, width
        sc[8] = float(n_levels)
        sc[3] += width
        if detected:
            sc[7] += 1.0
        sc[9] = 1.0 if detected else 0.0
        stat[t] = total / width if width > 0.0 else 0.0
        drift[t] = detected


# ----------------------------------------------------------------------------- validation
@njit(cache=True, nogil=True)
def scan_batch(arr, domain):
    """One pass over a batch: (non-finite count, first non-finite index, out-of-domain
    count among finite values, first such index). domain: 0 real, 1 {0, 1}, 2 [0, 1]."""
    n_bad_f = 0
    first_f = -1
    n_bad_d = 0
    first_d = -1
    for i in range(arr.shape[0]):
        x = arr[i]
        if not math.isfinite(x):
            n_bad_f += 1
            if first_f < 0:
                first_f = i
        elif (domain == 1 and x != 0.0 and x != 1.0) or (domain == 2 and (x < 0.0 or x > 1.0)):
            n_bad_d += 1
            if first_d < 0:
                first_d = i
    return n_bad_f, first_f, n_bad_d, first_d
