"""Distribution tests on categories (or binned numeric values): chi-square, KL, JS, PSI.

A sliding window of ``window`` values is compared with the reference sample
every ``evaluate_every`` values once it is full.

Binning: a categorical reference defines the categories (keys compared as
``str``, so 1 and "1" are one category); every value not seen in the reference
lands in one extra *unseen* bucket, which counts against the reference like
any other bucket (an unseen category is drift evidence, not an error). A
numeric reference is cut into ``bins`` quantile bins with open outer ends, so
every finite value has a bin.

Zero counts: chi-square drops buckets empty in both samples; KL and PSI add a
pseudo-count (``pseudo_count``, 0.5 by default, Jeffreys) to every bucket of
both samples so that a category absent from one side gives a large finite
value instead of infinity; the Jensen–Shannon distance needs no smoothing.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from scipy import stats
from scipy.special import rel_entr

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

UNSEEN = "__unseen__"


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


class _Binning:
    """Maps raw values to bucket codes: categories (+ unseen) or numeric quantile bins."""

    def __init__(self, categories: list[str] | None, edges: np.ndarray | None) -> None:
        self.categories = categories
        self.edges = edges
        if categories is not None:
            self._index = {c: i for i, c in enumerate(categories)}
            self.n_buckets = len(categories) + 1  # + unseen
            self.labels = [*categories, UNSEEN]
        else:
            assert edges is not None
            self.n_buckets = edges.size + 1
            self.labels = [f"bin{i}" for i in range(self.n_buckets)]

    @classmethod
    def from_reference(cls, reference: Any, kind: str, bins: int, owner: str) -> _Binning:
        if kind == "categorical":
            arr = np.asarray(reference, dtype=object).ravel()
            keep = [str(v) for v in arr if not _is_missing(v)]
            if not keep:
                raise ValueError(f"{owner}: the reference sample has no (non-missing) categories")
            return cls(sorted(set(keep)), None)
        ref = as_numeric_batch(reference, owner=f"{owner} reference")
        ref = ref[np.isfinite(ref)]
        if ref.size == 0:
            raise ValueError(f"{owner}: the reference sample has no finite values to bin")
        qs = np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1])
        return cls(None, np.unique(qs))

    def codes(self, values: Any, owner: str, nan_policy: str) -> tuple[np.ndarray, int]:
        if self.categories is None:
            arr = as_numeric_batch(values, owner=owner)
            arr, dropped = drop_non_finite(arr, owner=owner, nan_policy=nan_policy)
            return np.searchsorted(self.edges, arr, side="right").astype(np.int64), dropped
        arr = np.asarray(values, dtype=object)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise DetectorInputError(
                f"{owner}: expected a 1-d batch of categories, got shape {arr.shape}"
            )
        missing = np.fromiter((_is_missing(v) for v in arr), bool, arr.size)
        dropped = 0
        if missing.any():
            if nan_policy == "raise":
                i = int(np.flatnonzero(missing)[0])
                raise DetectorInputError(
                    f"{owner}: {int(missing.sum())} missing value(s) (None/NaN; first at index {i}); "
                    "the batch was not applied. Map missing values to a category upstream, or "
                    "build the detector with nan_policy='omit' to drop and count them."
                )
            arr = arr[~missing]
            dropped = int(missing.sum())
        for v in arr:
            if not isinstance(v, (str, int, float, bool, np.generic)):
                raise TypeError(
                    f"{owner}: categories must be str, int, float or bool, got {type(v).__name__}"
                )
        unseen = len(self.categories)
        index = self._index
        codes = np.fromiter((index.get(str(v), unseen) for v in arr), np.int64, arr.size)
        return codes, dropped

    def to_json(self) -> dict[str, Any]:
        if self.categories is not None:
            return {"categories": self.categories}
        return {"edges": encode_array(self.edges)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _Binning:
        if "categories" in d:
            return cls(list(d["categories"]), None)
        return cls(None, decode_array(d["edges"]))


class _CategoricalWindow(Detector):
    """Sliding window of bucket codes compared with reference bucket counts."""

    input_kind = "categorical"
    _HAS_P_VALUE: ClassVar[bool] = False
    _DEFAULT_THRESHOLD: ClassVar[float]

    def __init__(
        self,
        reference: Any = None,
        window: int = 1000,
        evaluate_every: int = 100,
        threshold: float | None = None,
        value_kind: str = "categorical",
        bins: int = 10,
        pseudo_count: float = 0.5,
        nan_policy: str = "raise",
        binning: dict[str, Any] | None = None,
        reference_counts: list[int] | None = None,
    ) -> None:
        name = type(self).__name__
        if value_kind not in ("categorical", "numeric"):
            raise ValueError(
                f"{name}: value_kind must be 'categorical' or 'numeric', got {value_kind!r}"
            )
        if window < 1 or evaluate_every < 1:
            raise ValueError(f"{name}: window and evaluate_every must be positive integers")
        if not 2 <= bins <= 1000:
            raise ValueError(f"{name}: bins must be in [2, 1000], got {bins!r}")
        if pseudo_count <= 0:
            raise ValueError(f"{name}: pseudo_count must be positive, got {pseudo_count!r}")
        check_nan_policy(nan_policy, name)
        self.window = int(window)
        self.evaluate_every = int(evaluate_every)
        self.value_kind = value_kind
        self.bins = int(bins)
        self.pseudo_count = float(pseudo_count)
        self.nan_policy = nan_policy
        self._threshold = float(threshold if threshold is not None else self._DEFAULT_THRESHOLD)
        if binning is not None and reference_counts is not None:
            # restoring from state: the reference itself is not kept, only its counts
            self._binning = _Binning.from_json(binning)
            self._ref_counts = np.asarray(reference_counts, np.int64)
        else:
            if reference is None:
                raise ValueError(f"{name}: a reference sample is required")
            self._binning = _Binning.from_reference(reference, value_kind, self.bins, name)
            codes, _ = self._binning.codes(reference, f"{name} reference", "omit")
            self._ref_counts = np.bincount(codes, minlength=self._binning.n_buckets).astype(
                np.int64
            )
        self._ring = np.zeros(self.window, np.int64)
        self._counts = np.zeros(self._binning.n_buckets, np.int64)
        self._pos = 0
        self._count = 0
        self._n_seen = 0
        self._n_dropped = 0
        self._result = initial_result(self._threshold)

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def buckets(self) -> list[str]:
        """Bucket labels: the reference categories then the unseen bucket, or bin names."""
        return list(self._binning.labels)

    @property
    def reference_counts(self) -> np.ndarray:
        return self._ref_counts.copy()

    def window_counts(self) -> np.ndarray:
        """Counts per bucket in the current window."""
        return self._counts.copy()

    def _statistics(self, win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(statistic, p-value or NaN) per row of window counts."""
        raise NotImplementedError

    def _drift(self, stat: np.ndarray, p: np.ndarray) -> np.ndarray:
        return stat > self._threshold

    def update_many(self, values: Any) -> Evaluations:
        """Slide a batch of values through the window; returns the evaluations in it."""
        codes, dropped = self._binning.codes(
            values, f"{type(self).__name__}.update_many", self.nan_policy
        )
        self._n_dropped += dropped
        if codes.size == 0:
            return Evaluations.empty(self._threshold)
        pos, count, n_seen, positions, snaps = K.code_window_counts(
            self._ring, self._counts, self._pos, self._count, self._n_seen, codes,
            self.evaluate_every,
        )  # fmt: skip
        self._pos, self._count, self._n_seen = int(pos), int(count), int(n_seen)
        stat, p = self._statistics(snaps)
        drift = self._drift(stat, p)
        return self._evaluated(
            positions,
            stat,
            p,
            drift,
            self._threshold,
            p_value=self._HAS_P_VALUE,
            effect_size=self._effect_sizes(stat, snaps),
        )

    def _effect_sizes(self, stat: np.ndarray, win: np.ndarray) -> bool | np.ndarray:
        """Effect size per evaluation: the divergence itself (True), or an array."""
        return not self._HAS_P_VALUE

    # -- proportions with the pseudo-count (KL, PSI)
    def _smoothed(self, win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = win + self.pseudo_count
        a = a / a.sum(axis=1, keepdims=True)
        e = self._ref_counts + self.pseudo_count
        e = e / e.sum()
        return a, e

    def _params(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "evaluate_every": self.evaluate_every,
            "threshold": self._threshold,
            "value_kind": self.value_kind,
            "bins": self.bins,
            "pseudo_count": self.pseudo_count,
            "nan_policy": self.nan_policy,
            "binning": self._binning.to_json(),
            "reference_counts": self._ref_counts.tolist(),
        }

    def _window_codes(self) -> np.ndarray:
        if self._count < self.window:
            return self._ring[: self._count].copy()
        return np.concatenate([self._ring[self._pos :], self._ring[: self._pos]])

    def _get_state(self) -> dict[str, Any]:
        return {"window_codes": encode_array(self._window_codes())}

    def _set_state(self, state: dict[str, Any]) -> None:
        codes = decode_array(state["window_codes"]).astype(np.int64)
        self._ring[:] = 0
        self._counts[:] = 0
        n = codes.size
        self._ring[:n] = codes
        self._counts[:] = np.bincount(codes, minlength=self._counts.size)
        self._count = n
        self._pos = n % self.window


class Chi2(_CategoricalWindow):
    """Chi-square test of homogeneity between reference and window bucket counts.

    The 2×K contingency table of reference and window counts (buckets empty in
    both dropped) gives Pearson's statistic with K−1 degrees of freedom — the
    same statistic and p-value as ``scipy.stats.chi2_contingency(table,
    correction=False)``. Alarms when ``p < alpha``. The effect size is Cramér's V
    of that table, sqrt(statistic / (reference + window values)), in [0, 1].

    Example:
        >>> ref = ["a"] * 500 + ["b"] * 300 + ["c"] * 200
        >>> det = Chi2(ref, window=200, evaluate_every=200, alpha=0.01)
        >>> ev = det.update_many(["a"] * 100 + ["b"] * 60 + ["c"] * 40)
        >>> bool(ev.drift[0])
        False
        >>> ev = det.update_many(["a"] * 50 + ["b"] * 50 + ["z"] * 100)
        >>> bool(ev.drift[0]), det.window_counts().tolist()
        (True, [50, 50, 0, 100])
    """

    kind = "chi2"
    _HAS_P_VALUE = True
    _DEFAULT_THRESHOLD = 0.01

    def __init__(self, reference: Any = None, alpha: float = 0.01, **kwargs: Any) -> None:
        if "threshold" in kwargs:
            alpha = kwargs.pop("threshold")
        if not 0 < alpha < 1:
            raise ValueError(f"Chi2: alpha must be in (0, 1), got {alpha!r}")
        super().__init__(reference, threshold=alpha, **kwargs)

    @property
    def alpha(self) -> float:
        return self._threshold

    def _statistics(self, win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ref = np.broadcast_to(self._ref_counts, win.shape).astype(float)
        win = win.astype(float)
        col = ref + win
        keep = col > 0
        n_ref = ref.sum(axis=1, keepdims=True)
        n_win = win.sum(axis=1, keepdims=True)
        total = n_ref + n_win
        with np.errstate(divide="ignore", invalid="ignore"):
            e_ref = n_ref * col / total
            e_win = n_win * col / total
            terms = np.where(keep, (ref - e_ref) ** 2 / e_ref + (win - e_win) ** 2 / e_win, 0.0)
        stat = terms.sum(axis=1)
        dof = keep.sum(axis=1) - 1
        p = np.where(dof > 0, stats.chi2.sf(stat, np.maximum(dof, 1)), 1.0)
        stat = np.where(dof > 0, stat, 0.0)
        return stat, p

    def _drift(self, stat: np.ndarray, p: np.ndarray) -> np.ndarray:
        return p < self._threshold

    def _effect_sizes(self, stat: np.ndarray, win: np.ndarray) -> bool | np.ndarray:
        """Cramer's V of the 2 x K table, sqrt(chi2 / (reference + window values)), in [0, 1]."""
        total = float(self._ref_counts.sum()) + win.sum(axis=1).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.sqrt(np.where(total > 0, stat / total, 0.0))
        return np.asarray(v, dtype=np.float64)

    def _params(self) -> dict[str, Any]:
        params = super()._params()
        params["alpha"] = params.pop("threshold")
        return params


class KLDivergence(_CategoricalWindow):
    """KL divergence D(window ‖ reference) in nats, with pseudo-count smoothing.

    Equal to ``scipy.stats.entropy(a, e)`` on the smoothed proportions. Alarms
    when the divergence exceeds ``threshold`` (0.1 by default).

    Example:
        >>> ref = ["a"] * 500 + ["b"] * 500
        >>> det = KLDivergence(ref, window=100, evaluate_every=100)
        >>> ev = det.update_many(["a"] * 90 + ["b"] * 10)
        >>> round(float(ev.statistic[0]), 3), bool(ev.drift[0])
        (0.365, True)
    """

    kind = "kl"
    _DEFAULT_THRESHOLD = 0.1

    def _statistics(self, win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, e = self._smoothed(win)
        return rel_entr(a, e).sum(axis=1), np.full(win.shape[0], np.nan)


class JensenShannon(_CategoricalWindow):
    """Jensen–Shannon distance (base 2, in [0, 1]) between window and reference proportions.

    Equal to ``scipy.spatial.distance.jensenshannon(window, reference, base=2)``;
    needs no smoothing. Alarms above ``threshold`` (0.1 by default).

    Example:
        >>> ref = ["a"] * 500 + ["b"] * 500
        >>> det = JensenShannon(ref, window=100, evaluate_every=100)
        >>> ev = det.update_many(["a"] * 90 + ["b"] * 10)
        >>> round(float(ev.statistic[0]), 3)
        0.383
    """

    kind = "js"
    _DEFAULT_THRESHOLD = 0.1

    def _statistics(self, win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = win / win.sum(axis=1, keepdims=True)
        q = self._ref_counts / self._ref_counts.sum()
        m = (p + q) / 2.0
        js = (rel_entr(p, m).sum(axis=1) + rel_entr(q, m).sum(axis=1)) / 2.0
        js = np.maximum(js, 0.0) / np.log(2.0)
        return np.sqrt(js), np.full(win.shape[0], np.nan)


class PSI(_CategoricalWindow):
    """Population Stability Index Σ (a − e)·ln(a / e) over buckets, pseudo-count smoothed.

    Equal to ``scipy.stats.entropy(a, e) + scipy.stats.entropy(e, a)`` (PSI is the
    symmetrised KL divergence). Conventional reading: < 0.1 stable, 0.1–0.25
    moderate shift, > 0.25 major shift; alarms above ``threshold`` (0.2 by default).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> det = PSI(rng.normal(size=5000), value_kind="numeric", window=1000, evaluate_every=1000)
        >>> bool(det.update_many(rng.normal(size=1000)).drift[0])
        False
        >>> bool(det.update_many(rng.normal(1.0, size=1000)).drift[0])
        True
    """

    kind = "psi"
    _DEFAULT_THRESHOLD = 0.2

    def _statistics(self, win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, e = self._smoothed(win)
        return ((a - e) * np.log(a / e)).sum(axis=1), np.full(win.shape[0], np.nan)


__all__ = ["PSI", "UNSEEN", "Chi2", "JensenShannon", "KLDivergence"]
