"""Concept drift from labelled outcomes: relative MSE increase and error-rate increase.

Both compare a sliding window of per-sample errors (joined from predictions and
late labels by the performance stream's owner) with the same errors of the
model on its reference data, every ``evaluate_every`` values once the window is
full. Each alarm needs a practically relevant increase *and* statistical
evidence for it, so that a large window does not alarm on a negligible change
and a small one does not alarm on noise.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
from scipy import stats

from . import _window_kernels as K
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


class _ErrorWindow(Detector):
    _BINARY: ClassVar[bool] = False

    def __init__(
        self,
        reference: Any,
        window: int,
        evaluate_every: int,
        min_increase: float,
        alpha: float,
        nan_policy: str,
    ) -> None:
        name = type(self).__name__
        ref = as_numeric_batch(reference, owner=f"{name} reference")
        ref = ref[np.isfinite(ref)]
        if ref.size < 2:
            raise ValueError(
                f"{name}: needs at least 2 finite reference errors (the model's errors on its "
                f"reference data), got {ref.size}"
            )
        if window < 2 or evaluate_every < 1:
            raise ValueError(f"{name}: need window >= 2 and evaluate_every >= 1")
        if not 0 < alpha < 1 or min_increase < 0:
            raise ValueError(f"{name}: need 0 < alpha < 1 and min_increase >= 0")
        check_nan_policy(nan_policy, name)
        self._check_domain(ref, f"{name} reference")
        self._reference = ref
        self.window = int(window)
        self.evaluate_every = int(evaluate_every)
        self.min_increase = float(min_increase)
        self.alpha = float(alpha)
        self.nan_policy = nan_policy
        self._ring = np.zeros(self.window)
        self._pos = 0
        self._count = 0
        self._n_seen = 0
        self._n_dropped = 0
        self._result = initial_result(self.min_increase)

    def _check_domain(self, arr: np.ndarray, owner: str) -> None:
        if self._BINARY:
            bad = (arr != 0.0) & (arr != 1.0)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DetectorInputError(
                    f"{owner}: expects 0 (correct) / 1 (wrong) per prediction, got {arr[i]!r} at "
                    f"index {i}; the batch was not applied"
                )
        elif (arr < 0).any():
            i = int(np.flatnonzero(arr < 0)[0])
            raise DetectorInputError(
                f"{owner}: expects squared errors (>= 0), got {arr[i]!r} at index {i}; feed "
                "(prediction - target)**2, not the residual; the batch was not applied"
            )

    @property
    def threshold(self) -> float:
        return self.min_increase

    def update_many(self, values: Any) -> Evaluations:
        """Slide a batch of per-sample errors through the window; returns its evaluations."""
        name = f"{type(self).__name__}.update_many"
        arr = as_numeric_batch(values, owner=name)
        arr, dropped = drop_non_finite(arr, owner=name, nan_policy=self.nan_policy)
        self._check_domain(arr, name)
        self._n_dropped += dropped
        if arr.size == 0:
            return Evaluations.empty(self.min_increase)
        pos, count, n_seen, positions, means, variances = K.value_window_moments(
            self._ring, self._pos, self._count, self._n_seen, arr, self.evaluate_every
        )
        self._pos, self._count, self._n_seen = int(pos), int(count), int(n_seen)
        stat, p = self._test(means, variances)
        drift = (stat > self.min_increase) & (p < self.alpha)
        return self._evaluated(positions, stat, p, drift, self.min_increase)

    def _test(self, means: np.ndarray, variances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        return {
            "reference": encode_array(self._reference),
            "window": self.window,
            "evaluate_every": self.evaluate_every,
            "min_increase": self.min_increase,
            "alpha": self.alpha,
            "nan_policy": self.nan_policy,
        }

    @classmethod
    def _from_params(cls, params: dict[str, Any]):
        return cls(**{**params, "reference": decode_array(params["reference"])})

    def window_values(self) -> np.ndarray:
        if self._count < self.window:
            return self._ring[: self._count].copy()
        return np.concatenate([self._ring[self._pos :], self._ring[: self._pos]])

    def _get_state(self) -> dict[str, Any]:
        return {"window_values": encode_array(self.window_values())}

    def _set_state(self, state: dict[str, Any]) -> None:
        v = decode_array(state["window_values"])
        self._ring[:] = 0.0
        self._ring[: v.size] = v
        self._count = int(v.size)
        self._pos = int(v.size % self.window)


class RelativeMSE(_ErrorWindow):
    """Regression concept drift: relative increase of the window MSE over the reference MSE.

    Input: per-sample squared errors ``(prediction - target)**2``; reference: the
    same on the model's reference data. Statistic ``r = MSE_window / MSE_ref - 1``.
    Decision rule: alarm when ``r > min_increase`` (default 0.2, a 20% worse
    MSE) **and** a one-sided Welch t-test of window vs reference squared errors
    (``scipy.stats.ttest_ind(window, reference, equal_var=False,
    alternative="greater")``) gives ``p < alpha`` (default 0.01).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> det = RelativeMSE(rng.normal(size=2000) ** 2, window=500, evaluate_every=500)
        >>> bool(det.update_many(rng.normal(size=500) ** 2).drift[0])
        False
        >>> ev = det.update_many(rng.normal(scale=1.3, size=500) ** 2)
        >>> bool(ev.drift[0]), bool(ev.statistic[0] > 0.5)
        (True, True)
    """

    kind = "relativeMse"

    def __init__(
        self,
        reference: Any,
        window: int = 1000,
        evaluate_every: int = 100,
        min_increase: float = 0.2,
        alpha: float = 0.01,
        nan_policy: str = "raise",
    ) -> None:
        super().__init__(reference, window, evaluate_every, min_increase, alpha, nan_policy)
        ref = self._reference
        self._ref_mean = float(np.mean(ref))
        self._ref_var = float(np.var(ref, ddof=1))
        if not self._ref_mean > 0:
            raise ValueError(
                "RelativeMSE: the reference MSE is 0 (a perfect model on its reference data), so "
                "a relative increase is undefined; use a larger or noisier reference sample"
            )

    def _test(self, means, variances):
        n1, n2 = float(self.window), float(self._reference.size)
        rel = means / self._ref_mean - 1.0
        v1, v2 = variances / n1, self._ref_var / n2
        se = np.sqrt(v1 + v2)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (means - self._ref_mean) / se
            df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
        p = stats.t.sf(t, df)
        p = np.where(se > 0, p, np.where(means > self._ref_mean, 0.0, 1.0))
        return rel, p


@lru_cache(maxsize=1 << 14)
def _fisher_greater(err_win: int, n_win: int, err_ref: int, n_ref: int) -> float:
    table = [[err_win, n_win - err_win], [err_ref, n_ref - err_ref]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


class ErrorRateIncrease(_ErrorWindow):
    """Classification concept drift: increase of the window error rate over the reference's.

    Input: 1 for a wrong prediction, 0 for a right one; reference: the same on
    the model's reference data. Statistic ``Δ = error_rate_window − error_rate_ref``.
    Decision rule: alarm when ``Δ > min_increase`` (default 0.05, five points)
    **and** a one-sided Fisher exact test of the 2×2 table (window vs reference,
    wrong vs right; ``scipy.stats.fisher_exact(..., alternative="greater")``)
    gives ``p < alpha`` (default 0.01). The p-value depends only on the window's
    error count, so it is cached.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> det = ErrorRateIncrease(rng.random(2000) < 0.1, window=500, evaluate_every=500)
        >>> bool(det.update_many(rng.random(500) < 0.1).drift[0])
        False
        >>> bool(det.update_many(rng.random(500) < 0.25).drift[0])
        True
    """

    kind = "errorRate"
    _BINARY = True

    def __init__(
        self,
        reference: Any,
        window: int = 1000,
        evaluate_every: int = 100,
        min_increase: float = 0.05,
        alpha: float = 0.01,
        nan_policy: str = "raise",
    ) -> None:
        super().__init__(reference, window, evaluate_every, min_increase, alpha, nan_policy)
        self._ref_errors = int(self._reference.sum())

    def _test(self, means, variances):
        n_ref = self._reference.size
        rate_ref = self._ref_errors / n_ref
        errors = np.rint(means * self.window).astype(np.int64)
        p = np.array(
            [_fisher_greater(int(e), self.window, self._ref_errors, n_ref) for e in errors]
        )
        return errors / self.window - rate_ref, p.reshape(errors.shape)


__all__ = ["ErrorRateIncrease", "RelativeMSE"]
