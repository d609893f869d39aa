"""E-detectors: sequential change detectors whose threshold follows from a false-alarm budget.

A false-alarm *budget* is the expected number of values between two false alarms
(ARL₀), not a per-test α repeated forever. Both detectors here are e-detectors
(Shin, Ramdas & Rinaldo, "E-detectors: a nonparametric framework for sequential
change detection", NEJSDS 2024): CUSUM-style processes

    M_t = max(M_{t-1}, 1) · L_t,    E[L_t | past] = 1 under no change,

so M_t − t is a supermartingale and an alarm at M_t ≥ 1/α has ARL₀ ≥ 1/α
(Ville's inequality through optional stopping; Lorden's bound for CUSUM). The
average of e-detectors is again one, which is how a mixture over unknown change
sizes and directions keeps the guarantee.

* :class:`MixtureCUSUM` (``mixtureCusum``) — mean and variance shifts of unknown
  size and direction on numeric streams.
* :class:`MultinomialCUSUM` (``multinomialCusum``) — any change of a categorical
  distribution, or of a numeric one binned at reference quantiles (shape changes
  with equal mean and variance).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, ClassVar

import numpy as np
from scipy import optimize, special

from . import _e_kernels as K
from .base import (
    Detector,
    DetectorResult,
    Evaluations,
    as_numeric_batch,
    check_nan_policy,
    decode_array,
    decode_float,
    drop_non_finite,
    encode_array,
    encode_float,
    initial_result,
)

#: The factory's default budget: one false alarm per million values of a stream.
DEFAULT_BUDGET = 1_000_000.0

# The alternatives MixtureCUSUM mixes over, in reference standard deviations: mean
# shifts of both signs on a doubling grid (each true shift is within a factor √2 of a
# grid point, which costs at most ~12 % of the per-value evidence), and a doubling or
# halving of the variance. Eight components cost log 8 ≈ 2.1 nats of threshold.
DEFAULT_MEAN_SHIFTS = (-1.0, -0.5, -0.25, 0.25, 0.5, 1.0)
DEFAULT_VARIANCE_RATIOS = (2.0, 0.5)

# Calibration by simulation (see MixtureCUSUM.calibrate): run lengths are measured at
# a threshold where ARL₀ ≈ CALIBRATION_ARL, then extrapolated with slope 1 in log ARL₀.
CALIBRATION_ARL = 5_000.0
CALIBRATION_VALUES = 1_000_000
_PILOT_ARL = 200.0
_PILOT_VALUES = 100_000
_MIN_CALIBRATION_ALARMS = 30

_THRESHOLD_CACHE: dict[tuple[Any, ...], float] = {}
_CACHE_LIMIT = 256


def check_budget(budget: float, owner: str) -> float:
    """``budget`` as a float, or a ValueError that says what a budget is."""
    if not (isinstance(budget, (int, float, np.integer, np.floating)) and budget > 1):
        raise ValueError(
            f"{owner}: budget (expected values between false alarms, ARL₀) must be a number "
            f"greater than 1, got {budget!r}"
        )
    return float(budget)


# --------------------------------------------------------------------------- scores


def _reference_sorted(reference: Any, owner: str) -> np.ndarray:
    ref = as_numeric_batch(reference, owner=f"{owner} reference")
    ref = ref[np.isfinite(ref)]
    if ref.size < 20:
        raise ValueError(
            f"{owner}: the reference sample has {ref.size} finite values; at least 20 are needed "
            "to standardise the stream by its ranks"
        )
    if ref[0] == ref[-1] and np.all(ref == ref[0]):
        raise ValueError(
            f"{owner}: the reference sample is constant, so a change in mean or variance "
            "cannot be measured against it; use a categorical detector or drop the feature"
        )
    return np.sort(ref)


def score_table(n: int) -> np.ndarray:
    """Normal scores by doubled mid-rank ``left + right`` ∈ [0, 2n] against n reference values.

    A value with ``left`` reference values below it and ``right`` at or below it has
    mid-rank r = (left + right)/2 and score Φ⁻¹((r + ½)/(n + 1)): for a continuous
    stream with no change the score is close to N(0, 1) whatever the stream's
    distribution, heavy tails included, and bounded (|z| ≤ Φ⁻¹(1 − ½/(n + 1))).
    """
    idx = np.arange(2 * n + 1, dtype=np.float64)
    return special.ndtri((idx / 2.0 + 0.5) / (n + 1.0))


def score_index(sorted_ref: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Doubled mid-ranks ``left + right`` of ``values`` in the sorted reference."""
    left = np.searchsorted(sorted_ref, values, side="left")
    right = np.searchsorted(sorted_ref, values, side="right")
    return left + right


def null_index_pmf(sorted_ref: np.ndarray) -> np.ndarray:
    """Probabilities of each doubled mid-rank for a new value drawn like the reference.

    Values tied in the reference are atoms: a new value equals one with the
    reference frequency of that value. The rest of the mass (the reference's
    untied values) is spread over the gaps between reference values, each gap
    weighted by how many of its two neighbours are untied — for a continuous
    reference every one of the n + 1 gaps has probability 1/(n + 1), the exact
    distribution of a new value's rank.
    """
    n = sorted_ref.size
    values, start, counts = np.unique(sorted_ref, return_index=True, return_counts=True)
    del values
    untied = np.repeat(counts == 1, counts).astype(np.float64)  # per sorted position
    pmf = np.zeros(2 * n + 1)
    n_untied = float(untied.sum())
    if n_untied > 0:
        left = np.concatenate([[untied[0]], untied])  # neighbour below each gap
        right = np.concatenate([untied, [untied[-1]]])  # neighbour above each gap
        gap_weight = (left + right) / 2.0
        pmf[0::2] = gap_weight / gap_weight.sum() * (n_untied / n)
    tied = counts >= 2
    np.add.at(pmf, 2 * start[tied] + counts[tied], counts[tied] / n)
    return pmf / pmf.sum()


def gaussian_components(
    mean_shifts: tuple[float, ...], variance_ratios: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients (a, b, c) of log N(z; μ, σ²)/N(z; 0, 1) = a z² + b z + c per alternative."""
    mus = [float(m) for m in mean_shifts] + [0.0] * len(variance_ratios)
    variances = [1.0] * len(mean_shifts) + [float(v) for v in variance_ratios]
    a = np.array([0.5 - 0.5 / v for v in variances])
    b = np.array([m / v for m, v in zip(mus, variances, strict=True)])
    c = np.array(
        [-0.5 * math.log(v) - m * m / (2 * v) for m, v in zip(mus, variances, strict=True)]
    )
    return a, b, c


def tilt(pmf: np.ndarray, z: np.ndarray, a: float, b: float, c: float) -> float:
    """θ > 0 with E[exp(θ·ℓ(Z))] = 1 under ``pmf``, ℓ(z) = a z² + b z + c; 0 if none exists.

    exp(θ·ℓ) is then an exact e-value for the reference's score distribution, even
    where the stream is not Gaussian (the Cramér root of the log-likelihood ratio).
    """
    support = pmf > 0
    p, zz = pmf[support], z[support]
    ell = (a * zz + b) * zz + c
    log_p = np.log(p)
    if float(np.dot(p, ell)) >= 0.0 or float(ell.max()) <= 0.0:
        return 0.0  # no evidence this alternative could ever gather: the component is inert

    def phi(theta: float) -> float:
        return float(special.logsumexp(log_p + theta * ell))

    hi = 1.0
    while phi(hi) < 0.0:
        hi *= 2.0
        if hi > 1e6:
            return 0.0
    return float(optimize.brentq(phi, 1e-9, hi, xtol=1e-14, rtol=1e-13, maxiter=200))


class MixtureCUSUM(Detector):
    """Mixture-CUSUM e-detector for mean and variance shifts of unknown size and direction.

    Each value is turned into its normal score against the reference,
    z = Φ⁻¹((mid-rank + ½)/(n + 1)) — for a continuous stream with no change
    z ≈ N(0, 1) whatever the stream's distribution (heavy-tailed, skewed), and
    ties of discrete streams get their mid-rank. For each alternative j (mean
    shifts ``mean_shifts`` at unit variance, variance ratios ``variance_ratios``
    at zero mean) the log-likelihood ratio ℓ_j(z) of N(μ_j, σ_j²) against N(0, 1)
    is tilted by θ_j so that exp(θ_j ℓ_j(Z)) has mean exactly 1 under the
    reference's score distribution: an e-value. Each component runs a CUSUM
    e-detector, log M_j ← max(log M_j, 0) + θ_j ℓ_j(z); the statistic is
    log((1/K) Σ_j M_j), compared with ``threshold``.

    **Threshold from the budget.** Ville/Lorden: an alarm at log M ≥ log(budget)
    has ARL₀ ≥ budget under the reference distribution (``calibrate=False``).
    That bound ignores the ~1/KL values a CUSUM needs to renew, so it alarms later
    than necessary; with ``calibrate=True`` (default) the threshold is instead set
    by simulation from the reference: run lengths are measured on values drawn
    from the reference's score distribution at a threshold where ARL₀ ≈ 5,000,
    and extrapolated to the budget with the renewal-theory slope (log ARL₀ grows
    like the threshold), never above log(budget). The threshold is computed once,
    stored in the state and reported in ``result.threshold`` with ``budget``.

    Resets on the value after an alarm, like the other sequential detectors.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(3)
        >>> det = MixtureCUSUM(rng.normal(size=5000), budget=1e6)
        >>> ev = det.update_many(np.concatenate([rng.normal(size=20000), rng.normal(0.5, 1, 300)]))
        >>> [int(p) for p in ev.alarms]  # a 0.5σ shift at 20,000: alarm after 175, restart
        [20175, 20274]
        >>> round(det.threshold, 2), det.result.budget  # Ville's threshold would be 13.82
        (11.35, 1000000.0)
    """

    kind: ClassVar[str] = "mixtureCusum"

    def __init__(
        self,
        reference: Any,
        budget: float = DEFAULT_BUDGET,
        threshold: float | None = None,
        calibrate: bool = True,
        mean_shifts: tuple[float, ...] | list[float] = DEFAULT_MEAN_SHIFTS,
        variance_ratios: tuple[float, ...] | list[float] = DEFAULT_VARIANCE_RATIOS,
        calibration_seed: int = 0,
        nan_policy: str = "raise",
    ) -> None:
        name = type(self).__name__
        self._reference = _reference_sorted(reference, name)
        self.budget = check_budget(budget, name)
        self.calibrate = bool(calibrate)
        self.mean_shifts = tuple(float(m) for m in mean_shifts)
        self.variance_ratios = tuple(float(v) for v in variance_ratios)
        if not self.mean_shifts and not self.variance_ratios:
            raise ValueError(f"{name}: give at least one mean shift or variance ratio")
        if any(m == 0 or not math.isfinite(m) for m in self.mean_shifts):
            raise ValueError(f"{name}: mean_shifts must be finite and non-zero")
        if any(not (v > 0 and v != 1 and math.isfinite(v)) for v in self.variance_ratios):
            raise ValueError(f"{name}: variance_ratios must be positive, finite and not 1")
        self.calibration_seed = int(calibration_seed)
        check_nan_policy(nan_policy, name)
        self.nan_policy = nan_policy

        n = self._reference.size
        self._table = score_table(n)
        pmf = null_index_pmf(self._reference)
        a, b, c = gaussian_components(self.mean_shifts, self.variance_ratios)
        thetas = np.array([tilt(pmf, self._table, *abc) for abc in zip(a, b, c, strict=True)])
        self._quad, self._lin, self._const = thetas * a, thetas * b, thetas * c
        self._log_k = math.log(len(thetas))
        if threshold is None:
            threshold = self._calibrated_threshold(pmf) if self.calibrate else math.log(self.budget)
        if not (math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"{name}: threshold must be positive and finite, got {threshold!r}")
        self.threshold = float(threshold)
        self._log_m = np.zeros(len(thetas))
        self._flag = K.empty_state()
        self._n_seen = 0
        self._n_dropped = 0
        self._result = initial_result(self.threshold, self.budget)

    # -- calibration
    def _calibrated_threshold(self, pmf: np.ndarray) -> float:
        key = (
            hashlib.blake2b(pmf.tobytes(), digest_size=16).hexdigest(),
            self._quad.tobytes(),
            self._lin.tobytes(),
            self._const.tobytes(),
            self.budget,
            self.calibration_seed,
        )
        cached = _THRESHOLD_CACHE.get(key)
        if cached is None:
            cached = calibrate_threshold(
                pmf, self._table, self._quad, self._lin, self._const, self.budget,
                seed=self.calibration_seed,
            )  # fmt: skip
            if len(_THRESHOLD_CACHE) >= _CACHE_LIMIT:
                _THRESHOLD_CACHE.pop(next(iter(_THRESHOLD_CACHE)))
            _THRESHOLD_CACHE[key] = cached
        return cached

    # -- updates
    def scores(self, values: Any) -> np.ndarray:
        """The normal scores of ``values`` against the reference (what the CUSUMs see)."""
        arr = as_numeric_batch(values, owner=f"{type(self).__name__}.scores")
        return self._table[score_index(self._reference, arr)]

    def update_many(self, values: Any) -> Evaluations:
        """Feed a batch; returns one evaluation per accepted value."""
        name = f"{type(self).__name__}.update_many"
        arr = as_numeric_batch(values, owner=name)
        arr, dropped = drop_non_finite(arr, owner=name, nan_policy=self.nan_policy)
        self._n_dropped += dropped
        n = arr.shape[0]
        if n == 0:
            return Evaluations.empty(self.threshold)
        z = self._table[score_index(self._reference, arr)]
        stat = np.empty(n)
        drift = np.empty(n, np.bool_)
        K.mixture_cusum(
            self._log_m, self._flag, z, self._quad, self._lin, self._const, self._log_k,
            self.threshold, stat, drift,
        )  # fmt: skip
        start = self._n_seen
        self._n_seen = start + n
        self._result = DetectorResult(
            statistic=float(stat[-1]),
            p_value=None,
            threshold=self.threshold,
            drift=bool(drift[-1]),
            n_seen=self._n_seen,
            budget=self.budget,
        )
        return Evaluations(
            position=np.arange(start + 1, start + n + 1, dtype=np.int64),
            statistic=stat,
            p_value=np.full(n, np.nan),
            drift=drift,
            threshold=self.threshold,
        )

    # -- state
    def _params(self) -> dict[str, Any]:
        return {
            "reference": encode_array(self._reference),
            "budget": self.budget,
            "threshold": self.threshold,
            "calibrate": self.calibrate,
            "mean_shifts": list(self.mean_shifts),
            "variance_ratios": list(self.variance_ratios),
            "calibration_seed": self.calibration_seed,
            "nan_policy": self.nan_policy,
        }

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> MixtureCUSUM:
        params = dict(params)
        params["reference"] = decode_array(params["reference"])
        return cls(**params)

    def _get_state(self) -> dict[str, Any]:
        return {
            "log_m": [encode_float(v) for v in self._log_m.tolist()],
            "alarmed": bool(self._flag[0]),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        log_m = np.array([decode_float(v) for v in state["log_m"]])
        if log_m.shape != self._log_m.shape:
            raise ValueError(
                f"{type(self).__name__}.from_state: {log_m.size} components in the state, "
                f"{self._log_m.size} in the parameters"
            )
        self._log_m = log_m
        self._flag = np.array([1.0 if state["alarmed"] else 0.0])


def calibrate_threshold(
    pmf: np.ndarray,
    table: np.ndarray,
    quad: np.ndarray,
    lin: np.ndarray,
    const: np.ndarray,
    budget: float,
    *,
    seed: int = 0,
) -> float:
    """The mixture-CUSUM threshold whose ARL₀ is ``budget`` under the reference, by simulation.

    Renewal theory gives log ARL₀(h) = h + c + o(1) for a CUSUM e-detector (the
    Cramér root of every tilted component is 1), and Ville gives c ≥ 0. c is
    estimated from simulated run lengths at a threshold where ARL₀ ≈ 5,000 (about
    200 alarms in a million values drawn from the reference's score distribution),
    then h = log(budget) − c. Never above log(budget), the Ville threshold.
    """
    log_k = math.log(quad.size)
    rng = np.random.Generator(np.random.PCG64(seed))

    def offset(h: float, n_values: int) -> float | None:
        z = table[rng.choice(pmf.size, size=n_values, p=pmf)]
        alarms = K.count_alarms(np.zeros(quad.size), K.empty_state(), z, quad, lin, const, log_k, h)
        if alarms < _MIN_CALIBRATION_ALARMS:
            return None
        return math.log(n_values / alarms) - h

    log_budget = math.log(budget)
    pilot_h = math.log(_PILOT_ARL)
    c = offset(pilot_h, _PILOT_VALUES)
    if c is None:
        return log_budget  # the pilot saw too few alarms to estimate c: keep Ville's threshold
    h1 = max(math.log(CALIBRATION_ARL) - c, 0.1)
    c1 = offset(h1, CALIBRATION_VALUES)
    if c1 is not None:
        c = c1
    return float(min(log_budget, max(log_budget - c, 0.5 * log_budget)))


# --------------------------------------------------------------------------- multinomial

DEFAULT_LEARNING_WINDOW = 250
DEFAULT_SHAPE_BINS = 20


class MultinomialCUSUM(Detector):
    """CUSUM e-detector for any change of a categorical (or binned numeric) distribution.

    Values are mapped to buckets — the reference's categories plus ``__unseen__``,
    or for numeric streams ``bins`` reference-quantile bins (so with no change each
    bin has probability ≈ 1/bins whatever the distribution: a distribution-free
    shape test) — and p is the reference's bucket frequencies (pseudo-count
    ``pseudo_count``). The alternative q_t is *learnt*: the bucket frequencies of
    the last ``learning_window`` values, shrunk towards p with ``prior``
    pseudo-values (default: one per bucket). q_t depends on earlier values only, so
    q_t(x_t)/p(x_t) is an exact e-value under p, and the CUSUM e-detector
    log M ← max(log M, 0) + log(q_t(x_t)/p(x_t)) alarms at log M ≥ ``threshold``,
    by default log(budget): ARL₀ ≥ budget under p (Ville), for any change — a new
    category, a category-mix change, or a change of shape with equal mean and
    variance. A plug-in alternative of this kind is the nonanticipating
    estimation of Lorden & Pollak (Ann. Statist. 2005) over a sliding window.

    Evidence is reset on the value after an alarm (the learnt frequencies are kept).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> ref = rng.choice(["a", "b", "c"], size=3000, p=[0.5, 0.3, 0.2])
        >>> det = MultinomialCUSUM(ref, budget=1e6)
        >>> before = rng.choice(["a", "b", "c"], size=20000, p=[0.5, 0.3, 0.2])
        >>> after = rng.choice(["a", "b", "c"], size=2000, p=[0.3, 0.3, 0.4])
        >>> ev = det.update_many(np.concatenate([before, after]))
        >>> int(ev.alarms[0]) - 20000 < 600, det.buckets
        (True, ['a', 'b', 'c', '__unseen__'])
    """

    kind: ClassVar[str] = "multinomialCusum"
    input_kind: ClassVar[str] = "categorical"

    def __init__(
        self,
        reference: Any = None,
        budget: float = DEFAULT_BUDGET,
        threshold: float | None = None,
        value_kind: str = "categorical",
        bins: int = DEFAULT_SHAPE_BINS,
        learning_window: int = DEFAULT_LEARNING_WINDOW,
        prior: float | None = None,
        pseudo_count: float = 0.5,
        nan_policy: str = "raise",
        _binning: Any = None,
    ) -> None:
        from .categorical import _Binning

        name = type(self).__name__
        if value_kind not in ("categorical", "numeric"):
            raise ValueError(f"{name}: value_kind must be 'categorical' or 'numeric'")
        if not isinstance(bins, (int, np.integer)) or bins < 2:
            raise ValueError(f"{name}: bins must be an integer >= 2, got {bins!r}")
        if not isinstance(learning_window, (int, np.integer)) or learning_window < 1:
            raise ValueError(f"{name}: learning_window must be a positive integer")
        if not pseudo_count > 0:
            raise ValueError(f"{name}: pseudo_count must be > 0, got {pseudo_count!r}")
        check_nan_policy(nan_policy, name)
        self.budget = check_budget(budget, name)
        self.value_kind = value_kind
        self.bins = int(bins)
        self.learning_window = int(learning_window)
        self.pseudo_count = float(pseudo_count)
        self.nan_policy = nan_policy
        if _binning is not None:
            self._binning = _Binning.from_json(_binning["binning"])
            ref_counts = decode_array(_binning["reference_counts"])
        else:
            if reference is None:
                raise ValueError(f"{name}: a reference sample is required")
            self._binning = _Binning.from_reference(reference, value_kind, self.bins, name)
            codes, _ = self._binning.codes(reference, f"{name} reference", "omit")
            ref_counts = np.bincount(codes, minlength=self._binning.n_buckets).astype(np.float64)
        self._reference_counts = ref_counts
        n_buckets = self._binning.n_buckets
        p = (ref_counts + self.pseudo_count) / (ref_counts.sum() + self.pseudo_count * n_buckets)
        self._log_p = np.log(p)
        self.prior = float(prior) if prior is not None else float(n_buckets)
        if not self.prior > 0:
            raise ValueError(f"{name}: prior must be > 0, got {prior!r}")
        self.threshold = float(threshold) if threshold is not None else math.log(self.budget)
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"{name}: threshold must be positive and finite")
        self._state = np.zeros(4)
        self._counts = np.zeros(n_buckets)
        self._ring = np.zeros(self.learning_window, np.int64)
        self._n_seen = 0
        self._n_dropped = 0
        self._result = initial_result(self.threshold, self.budget)

    @property
    def buckets(self) -> list[str]:
        """Bucket labels: categories (+ ``__unseen__``) or ``bin0..binK``."""
        return list(self._binning.labels)

    def update_many(self, values: Any) -> Evaluations:
        """Feed a batch; returns one evaluation per accepted value."""
        name = f"{type(self).__name__}.update_many"
        codes, dropped = self._binning.codes(values, name, self.nan_policy)
        self._n_dropped += dropped
        n = codes.shape[0]
        if n == 0:
            return Evaluations.empty(self.threshold)
        stat = np.empty(n)
        drift = np.empty(n, np.bool_)
        K.multinomial_cusum(
            self._state, self._counts, self._ring, np.ascontiguousarray(codes), self._log_p,
            self.prior, self.threshold, stat, drift,
        )  # fmt: skip
        start = self._n_seen
        self._n_seen = start + n
        self._result = DetectorResult(
            statistic=float(stat[-1]),
            p_value=None,
            threshold=self.threshold,
            drift=bool(drift[-1]),
            n_seen=self._n_seen,
            sample_size=int(self._state[2]),
            budget=self.budget,
        )
        return Evaluations(
            position=np.arange(start + 1, start + n + 1, dtype=np.int64),
            statistic=stat,
            p_value=np.full(n, np.nan),
            drift=drift,
            threshold=self.threshold,
        )

    def _params(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "threshold": self.threshold,
            "value_kind": self.value_kind,
            "bins": self.bins,
            "learning_window": self.learning_window,
            "prior": self.prior,
            "pseudo_count": self.pseudo_count,
            "nan_policy": self.nan_policy,
            # the reference enters only through its bucketing and counts
            "_binning": {
                "binning": self._binning.to_json(),
                "reference_counts": encode_array(self._reference_counts),
            },
        }

    def _get_state(self) -> dict[str, Any]:
        filled, pos = int(self._state[2]), int(self._state[1])
        w = self.learning_window
        ring = self._ring[:filled] if filled < w else np.roll(self._ring, -pos)
        return {
            "log_m": encode_float(self._state[0]),
            "alarmed": bool(self._state[3]),
            "recent": encode_array(ring.astype(np.int64)),  # oldest first
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        recent = decode_array(state["recent"]).astype(np.int64)
        if recent.size > self.learning_window or (
            recent.size and recent.max() >= self._counts.size
        ):
            raise ValueError(f"{type(self).__name__}.from_state: recent codes do not fit")
        self._ring[:] = 0
        self._ring[: recent.size] = recent
        self._counts = np.bincount(recent, minlength=self._counts.size).astype(np.float64)
        self._state = np.array(
            [
                decode_float(state["log_m"]),
                float(recent.size % self.learning_window),
                float(recent.size),
                1.0 if state["alarmed"] else 0.0,
            ]
        )
