"""Two-sample Kolmogorov–Smirnov detectors against a fixed reference sample.

:class:`KSWindow` tests a sliding window every ``evaluate_every`` values and
reproduces ``scipy.stats.ks_2samp(reference, window, alternative, method)``
exactly (statistic and p-value) at every evaluation point. :class:`IKS` keeps the
exact statistic after *every* value with O(log n) work per value (see
``_ks_kernels`` for the segment tree), following the incremental KS idea of
dos Reis et al. (KDD 2016).
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.stats import _stats_py as _scipy_stats_py
from scipy.stats import distributions

from . import _ks_kernels as K
from .base import (
    Detector,
    DetectorInputError,
    Evaluations,
    as_numeric_batch,
    check_nan_policy,
    decode_array,
    drop_non_finite,
    encode_array,
    initial_result,
)

ALTERNATIVES = ("two-sided", "less", "greater")
METHODS = ("auto", "exact", "asymp")
_MAX_AUTO_N = 10_000  # scipy's ks_2samp: method="auto" is exact up to this sample size


def _resolve_method(n1: int, n2: int, method: str) -> str:
    """The method scipy's ks_2samp uses for these sizes (before any exact->asymp fallback)."""
    if method == "auto":
        return "exact" if max(n1, n2) <= _MAX_AUTO_N else "asymp"
    if method == "exact":
        g = math.gcd(n1, n2)
        if (n1 // g) >= np.iinfo(np.int32).max / (n2 // g):
            return "asymp"
    return method


@lru_cache(maxsize=1 << 16)
def ks_2samp_pvalue(
    n1: int, n2: int, d: float, alternative: str, method: str
) -> tuple[float, float]:
    """(statistic, p-value) that ``scipy.stats.ks_2samp`` reports for ECDF distance ``d``.

    Mirrors scipy's path after the statistic: method resolution, the exact
    distribution (which snaps ``d`` to h/lcm(n1, n2)) with its fallback to the
    asymptotic one, then clipping. The p-value depends only on (n1, n2, d), so it
    is cached: a sliding window revisits the same few hundred distances.
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # scipy warns when it falls back from exact to asymptotic; that fallback is
        # part of the documented method choice, not something for a log line.
        warnings.simplefilter("ignore", RuntimeWarning)
        return _ks_2samp_pvalue(n1, n2, d, alternative, method)


def _ks_2samp_pvalue(
    n1: int, n2: int, d: float, alternative: str, method: str
) -> tuple[float, float]:
    mode = _resolve_method(n1, n2, method)
    prob = -np.inf
    if mode == "exact":
        g = math.gcd(n1, n2)
        success, d, prob = _scipy_stats_py._attempt_exact_2kssamp(n1, n2, g, d, alternative)
        if not success:
            mode = "asymp"
    if mode == "asymp":
        m, n = sorted([float(n1), float(n2)], reverse=True)
        en = m * n / (m + n)
        if alternative == "two-sided":
            prob = distributions.kstwo.sf(d, np.round(en))
        else:
            z = np.sqrt(en) * d
            expt = -2 * z**2 - 2 * z * (m + 2 * n) / np.sqrt(m * n * (m + n)) / 3.0
            prob = np.exp(expt)
    return float(d), float(np.clip(prob, 0, 1))


def _check_reference(reference: Any, owner: str) -> np.ndarray:
    ref = as_numeric_batch(reference, owner=f"{owner} reference")
    if ref.size == 0:
        raise ValueError(
            f"{owner}: the reference sample is empty; a KS test needs reference values"
        )
    if not np.isfinite(ref).all():
        bad = int((~np.isfinite(ref)).sum())
        raise ValueError(
            f"{owner}: the reference sample holds {bad} non-finite value(s); "
            "drop NaN/inf from the reference before building the detector"
        )
    return np.sort(ref)


class _KSBase(Detector):
    """Shared parameters, input handling and state of the two KS detectors."""

    def __init__(
        self,
        reference: Any,
        window: int = 1000,
        alpha: float = 0.01,
        alternative: str = "two-sided",
        method: str = "auto",
        min_effect: float = 0.0,
        nan_policy: str = "raise",
    ) -> None:
        name = type(self).__name__
        self._reference = _check_reference(reference, name)
        if not isinstance(window, (int, np.integer)) or window < 1:
            raise ValueError(f"{name}: window must be a positive integer, got {window!r}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"{name}: alpha must be in (0, 1), got {alpha!r}")
        if alternative not in ALTERNATIVES:
            raise ValueError(
                f"{name}: alternative must be one of {ALTERNATIVES}, got {alternative!r}"
            )
        if method not in METHODS:
            raise ValueError(f"{name}: method must be one of {METHODS}, got {method!r}")
        if not 0.0 <= min_effect <= 1.0:
            raise ValueError(
                f"{name}: min_effect (smallest KS D that may alarm) must be in [0, 1], got {min_effect!r}"
            )
        check_nan_policy(nan_policy, name)
        self.window = int(window)
        self.alpha = float(alpha)
        self.alternative = alternative
        self.method = method
        self.min_effect = float(min_effect)
        self.nan_policy = nan_policy
        self._ring = np.zeros(self.window, np.float64)
        self._pos = 0
        self._count = 0
        self._n_seen = 0
        self._n_dropped = 0
        self._result = initial_result(self.alpha)

    @property
    def reference(self) -> np.ndarray:
        """The reference sample, sorted (read-only view)."""
        v = self._reference.view()
        v.flags.writeable = False
        return v

    def window_values(self) -> np.ndarray:
        """The current window, oldest value first."""
        if self._count < self.window:
            return self._ring[: self._count].copy()
        return np.concatenate([self._ring[self._pos :], self._ring[: self._pos]])

    def _validated(self, values: Any) -> np.ndarray:
        name = type(self).__name__
        arr = as_numeric_batch(values, owner=f"{name}.update_many")
        arr, dropped = drop_non_finite(arr, owner=f"{name}.update_many", nan_policy=self.nan_policy)
        self._n_dropped += dropped
        return arr

    def _decide(self, d: float, p: float) -> bool:
        return p < self.alpha and d >= self.min_effect

    def _finish(self, positions: np.ndarray, stats: np.ndarray, pvals: np.ndarray) -> Evaluations:
        drift = (pvals < self.alpha) & (stats >= self.min_effect)
        return self._evaluated(positions, stats, pvals, drift, self.alpha)

    def _params(self) -> dict[str, Any]:
        return {
            "reference": encode_array(self._reference),
            "window": self.window,
            "alpha": self.alpha,
            "alternative": self.alternative,
            "method": self.method,
            "min_effect": self.min_effect,
            "nan_policy": self.nan_policy,
        }

    @classmethod
    def _from_params(cls, params: dict[str, Any]):
        params = dict(params)
        params["reference"] = decode_array(params["reference"])
        return cls(**params)

    def _get_state(self) -> dict[str, Any]:
        return {"window_values": encode_array(self.window_values())}

    def _set_state(self, state: dict[str, Any]) -> None:
        values = decode_array(state["window_values"])
        if values.size > self.window:
            raise ValueError(
                f"{type(self).__name__}.from_state: window holds {values.size} > {self.window} values"
            )
        # Refill from an empty window: the internal layout (ring position, sorted
        # copy, tree) is a pure function of the values in order, so the restored
        # detector continues bit-identically.
        n_seen = self._n_seen
        self._ring[:] = 0.0
        self._pos = 0
        self._count = 0
        self._load_window(values)
        self._n_seen = n_seen

    def _load_window(self, values: np.ndarray) -> None:
        raise NotImplementedError


class KSWindow(_KSBase):
    """Windowed two-sample KS test of a sliding window against a fixed reference.

    Every ``evaluate_every`` values, once the window holds ``window`` values, the
    detector runs the test of ``scipy.stats.ks_2samp(reference, window,
    alternative, method)``: the statistic and p-value are identical to scipy's.
    It alarms when ``p < alpha`` and ``D >= min_effect``. The window keeps
    sliding after an alarm (no reset): ``drift_detected`` reports the latest
    evaluation, so it stays True while the window differs from the reference.

    ``alpha`` is a per-evaluation level; across many evaluations and features,
    use the decision rules in :mod:`.decision` (Benjamini–Hochberg, minimum
    samples, minimum effect).

    Cost per value is one O(window) shift in a sorted copy of the window (a few
    hundred nanoseconds); each evaluation merges it with the sorted reference in
    O(n + window). p-values come from an LRU cache keyed by (n, m, D).

    Args:
        reference: reference sample (NaN/inf refused).
        window: sliding-window length W.
        evaluate_every: values between evaluations (k).
        alpha: per-evaluation significance level.
        alternative, method: as in ``scipy.stats.ks_2samp`` (reference is data1).
        min_effect: smallest D that may alarm (0 disables).
        nan_policy: "raise" refuses batches with NaN/inf; "omit" drops and counts them.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(7)
        >>> det = KSWindow(reference=rng.normal(size=2000), window=500, evaluate_every=100, alpha=0.01)
        >>> evals = det.update_many(rng.normal(size=1000))
        >>> det.drift_detected
        False
        >>> evals = det.update_many(rng.normal(loc=1.0, size=1000))
        >>> det.drift_detected, int(evals.alarms[0])
        (True, 1100)
    """

    kind = "ks"

    def __init__(
        self,
        reference: Any,
        window: int = 1000,
        evaluate_every: int = 100,
        alpha: float = 0.01,
        alternative: str = "two-sided",
        method: str = "auto",
        min_effect: float = 0.0,
        nan_policy: str = "raise",
    ) -> None:
        super().__init__(reference, window, alpha, alternative, method, min_effect, nan_policy)
        if not isinstance(evaluate_every, (int, np.integer)) or evaluate_every < 1:
            raise ValueError(
                f"KSWindow: evaluate_every must be a positive integer, got {evaluate_every!r}"
            )
        self.evaluate_every = int(evaluate_every)
        self._sorted = np.zeros(self.window, np.float64)

    def update_many(self, values: Any) -> Evaluations:
        """Slide ``values`` through the window; returns the evaluations that fell in the batch."""
        arr = self._validated(values)
        if arr.size == 0:
            return Evaluations.empty(self.alpha)
        pos, count, n_seen, positions, dmax, dmin, _, _ = K.ks_window_batch(
            self._reference,
            self._ring,
            self._sorted,
            self._pos,
            self._count,
            self._n_seen,
            arr,
            self.evaluate_every,
        )
        self._pos, self._count, self._n_seen = int(pos), int(count), int(n_seen)
        n1, n2 = self._reference.size, self.window
        stats = np.empty(positions.size)
        pvals = np.empty(positions.size)
        for e in range(positions.size):
            hi, lo = float(dmax[e]), float(dmin[e])
            if self.alternative == "less" or (self.alternative == "two-sided" and lo > hi):
                d = lo
            else:
                d = hi
            stats[e], pvals[e] = ks_2samp_pvalue(n1, n2, d, self.alternative, self.method)
        return self._finish(positions, stats, pvals)

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "evaluate_every": self.evaluate_every}

    def _load_window(self, values: np.ndarray) -> None:
        self._sorted[:] = 0.0
        if values.size:
            K.ks_window_batch(
                self._reference, self._ring, self._sorted, 0, 0, 0, values, values.size + 1
            )
            self._count = int(values.size)
            self._pos = int(values.size % self.window)


class IKS(_KSBase):
    """Incremental KS: the exact two-sample KS statistic after every value.

    Same test as :class:`KSWindow` with ``evaluate_every=1``, at O(log n) cost per
    value instead of O(n + W): a static segment tree over the gaps between the
    distinct sorted reference values holds, per gap, the supremum and infimum of
    the scaled ECDF difference ``m·#ref<=t − n·#window<=t`` as exact integers with
    lazy range adds; a window insertion or removal is two suffix range-adds and
    the statistic is read at the root. (dos Reis, Flach, Matwin, Batista, "Fast
    unsupervised online drift detection using incremental Kolmogorov-Smirnov
    test", KDD 2016, use a randomised treap because both of their samples move;
    with a fixed reference a static, deterministic tree suffices.)

    The statistic is ``h / lcm(n, W)`` — exactly scipy's statistic in exact mode;
    in asymptotic mode scipy's float may differ in the last bit. p-values are
    scipy's; to keep every step O(log n), ``Evaluations.p_value`` carries the exact
    p-value for a batch's last step only (NaN before it) and ``result.p_value``
    is always exact, while the per-step alarm ``p < alpha`` is decided as
    ``h >= h*``, the smallest h whose p-value is below alpha (p is monotone in
    h; found once by bisection). Testing after every value: ``alpha`` is a per-step
    level, not a false-alarm rate — choose it for the run length you can
    tolerate, or use :class:`KSWindow` with a coarser ``evaluate_every``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(7)
        >>> det = IKS(reference=rng.normal(size=2000), window=500, alpha=1e-4)
        >>> evals = det.update_many(rng.normal(size=1000))
        >>> len(evals), bool(evals.drift.any())
        (501, False)
        >>> evals = det.update_many(rng.normal(loc=1.0, size=500))
        >>> det.drift_detected
        True
    """

    kind = "iks"

    def __init__(
        self,
        reference: Any,
        window: int = 1000,
        alpha: float = 0.001,
        alternative: str = "two-sided",
        method: str = "auto",
        min_effect: float = 0.0,
        nan_policy: str = "raise",
    ) -> None:
        super().__init__(reference, window, alpha, alternative, method, min_effect, nan_policy)
        uniq, counts = np.unique(self._reference, return_counts=True)
        self._uniq = np.ascontiguousarray(uniq)
        self._cum = np.cumsum(counts).astype(np.int64)
        n1, n2 = self._reference.size, self.window
        self._g = math.gcd(n1, n2)
        self._lcm = (n1 // self._g) * n2
        self._h_crit: int | None = None
        self._reset_tree()

    def _reset_tree(self) -> None:
        self._size, self._tmax, self._lmax, self._tneg, self._lneg = K.iks_tree_build(
            self._cum, self.window
        )

    def update_many(self, values: Any) -> Evaluations:
        """Slide ``values`` through the window; returns one evaluation per value once the window is full."""
        arr = self._validated(values)
        if arr.size == 0:
            return Evaluations.empty(self.alpha)
        pos, count, n_seen, positions, smax, smin = K.iks_batch(
            self._uniq,
            self._reference.size,
            self._size,
            self._tmax,
            self._lmax,
            self._tneg,
            self._lneg,
            self._ring,
            self._pos,
            self._count,
            self._n_seen,
            arr,
        )
        self._pos, self._count, self._n_seen = int(pos), int(count), int(n_seen)
        if self.alternative == "greater":
            s = smax
        elif self.alternative == "less":
            s = smin
        else:
            s = np.maximum(smax, smin)
        h = s // self._g
        stats = h / self._lcm
        # p is non-increasing in h, so "p < alpha" is "h >= critical h", found once;
        # the exact scipy p-value is computed for the batch's last step only (a
        # per-step p-value would cost one exact distribution per distinct h).
        drift = (h >= self._critical_h()) & (stats >= self.min_effect)
        pvals = np.full(h.size, np.nan)
        if h.size:
            pvals[-1] = self._p_of_h(int(h[-1]))
        return self._evaluated(positions, stats, pvals, drift, self.alpha)

    def _p_of_h(self, h: int) -> float:
        n1, n2 = self._reference.size, self.window
        return ks_2samp_pvalue(n1, n2, h / self._lcm, self.alternative, self.method)[1]

    def _critical_h(self) -> int:
        """Smallest h whose p-value is below alpha (lcm + 1 when none is)."""
        if self._h_crit is None:
            lo, hi = 0, self._lcm + 1  # invariant: p(lo) >= alpha, p(hi) < alpha (hi virtual)
            if not self._p_of_h(self._lcm) < self.alpha:  # NaN (n = m = 1, asymptotic): never
                self._h_crit = self._lcm + 1
                return self._h_crit
            hi = self._lcm
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self._p_of_h(mid) < self.alpha:
                    hi = mid
                else:
                    lo = mid
            self._h_crit = hi
        return self._h_crit

    def _load_window(self, values: np.ndarray) -> None:
        self._reset_tree()
        if values.size:
            K.iks_batch(
                self._uniq,
                self._reference.size,
                self._size,
                self._tmax,
                self._lmax,
                self._tneg,
                self._lneg,
                self._ring,
                0,
                0,
                0,
                values,
            )
            self._count = int(values.size)
            self._pos = int(values.size % self.window)


__all__ = ["IKS", "DetectorInputError", "KSWindow", "ks_2samp_pvalue"]
