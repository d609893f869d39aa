"""Sequential change detectors: Page-Hinkley, DDM, EDDM, HDDM_A, HDDM_W and ADWIN.

Each evaluates after every value and, like river, resets itself on the value
after an alarm. The per-value work runs in compiled kernels (``_seq_kernels``)
whose arithmetic follows river 0.26.1 operation for operation, so alarms land on
exactly the same values as ``river.drift.PageHinkley``, ``river.drift.binary.DDM``,
``EDDM``, ``HDDMA``, ``HDDMW`` and ``river.drift.ADWIN`` with the same parameters
— at compiled speed, and with the whole state serialisable.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import numpy as np

from . import _seq_kernels as K
from .base import (
    Detector,
    DetectorInputError,
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

_NAN_ROWS: dict[int, np.ndarray] = {}  # read-only NaN p-value columns, by batch length


class _Sequential(Detector):
    """A detector whose state is one float64 vector, updated by a compiled kernel."""

    _STATE_NAMES: ClassVar[tuple[str, ...]]
    #: accepted values: "real" (any finite float), "binary" ({0, 1}), "unit" ([0, 1])
    _DOMAIN: ClassVar[str] = "real"
    _HAS_WARNING: ClassVar[bool] = False

    _st: np.ndarray

    def _params(self) -> dict[str, Any]:
        # river's convention, kept by every subclass: each constructor argument is an
        # attribute of the same name, so the arguments are derived, not listed twice.
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}

    def _init_common(self, nan_policy: str) -> None:
        self._pending: tuple | None = None
        check_nan_policy(nan_policy, type(self).__name__)
        self.nan_policy = nan_policy
        self._n_seen = 0
        self._n_dropped = 0
        self._result = initial_result(self.threshold, self.budget)

    #: the false-alarm budget (ARL₀, values) the threshold was chosen for, where known
    budget: float | None = None

    @property
    def threshold(self) -> float:
        """What the reported statistic is compared with."""
        raise NotImplementedError

    @property
    def warning_detected(self) -> bool:
        """Whether the latest value put the detector in its warning zone."""
        return self.result.warning

    _DOMAIN_CODES: ClassVar[dict[str, int]] = {"real": 0, "binary": 1, "unit": 2}

    def _validated(self, values: Any) -> np.ndarray:
        name = f"{type(self).__name__}.update_many"
        arr = as_numeric_batch(values, owner=name)
        # one compiled pass finds non-finite and out-of-domain values; the batch is
        # refused before any state changes
        n_nonfinite, _, n_bad, first_bad = K.scan_batch(arr, self._DOMAIN_CODES[self._DOMAIN])
        dropped = 0
        if n_nonfinite:
            arr, dropped = drop_non_finite(arr, owner=name, nan_policy=self.nan_policy)
            n_nonfinite, _, n_bad, first_bad = K.scan_batch(arr, self._DOMAIN_CODES[self._DOMAIN])
        if n_bad:
            i = int(first_bad)
            if self._DOMAIN == "binary":
                raise DetectorInputError(
                    f"{name}: expects an error stream of 0 (correct) and 1 (error); got "
                    f"{arr[i]!r} at index {i} ({int(n_bad)} value(s) outside {{0, 1}}); "
                    "the batch was not applied"
                )
            raise DetectorInputError(
                f"{name}: expects values in [0, 1] (error indicators or bounded losses); got "
                f"{arr[i]!r} at index {i}; the batch was not applied"
            )
        self._n_dropped += dropped
        return arr

    def update_many(self, values: Any) -> Evaluations:
        """Feed a batch; returns one evaluation per accepted value."""
        arr = self._validated(values)
        n = arr.shape[0]
        if n == 0:
            return Evaluations.empty(self.threshold)
        stat = np.empty(n)
        drift = np.empty(n, np.bool_)
        warning = np.empty(n, np.bool_) if self._HAS_WARNING else None
        self._run(arr, stat, drift, warning)
        start = self._n_seen
        self._n_seen = start + n
        # the DetectorResult is built on first access: most batches are never asked
        self._pending = (stat, drift, warning, self._n_seen, self._sample_size())
        nan = _NAN_ROWS.get(n)
        if nan is None:
            nan = np.full(n, np.nan)
            nan.flags.writeable = False
            if len(_NAN_ROWS) < 64:
                _NAN_ROWS[n] = nan
        return Evaluations(
            position=np.arange(start + 1, start + n + 1, dtype=np.int64),
            statistic=stat,
            p_value=nan,
            drift=drift,
            threshold=self.threshold,
            warning=warning,
        )

    @property
    def result(self) -> DetectorResult:
        """The evaluation after the latest value (statistic NaN before the first)."""
        if self._pending is not None:
            stat, drift, warning, n_seen, sample_size = self._pending
            self._result = DetectorResult(
                statistic=float(stat[-1]),
                p_value=None,
                threshold=self.threshold,
                drift=bool(drift[-1]),
                n_seen=n_seen,
                warning=bool(warning[-1]) if warning is not None else False,
                sample_size=sample_size,
                budget=self.budget,
            )
            self._pending = None
        return self._result

    @property
    def drift_detected(self) -> bool:
        """Whether the latest value raised an alarm."""
        if self._pending is not None:
            return bool(self._pending[1][-1])
        return self._result.drift

    def _run(self, arr: np.ndarray, stat: np.ndarray, drift: np.ndarray, warning) -> None:
        raise NotImplementedError

    def _sample_size(self) -> int:
        return 0

    def _get_state(self) -> dict[str, Any]:
        return {
            name: encode_float(v)
            for name, v in zip(self._STATE_NAMES, self._st.tolist(), strict=False)
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        missing = set(self._STATE_NAMES) - set(state)
        if missing:
            raise ValueError(f"{type(self).__name__}.from_state: state lacks {sorted(missing)}")
        self._st = np.array([decode_float(state[name]) for name in self._STATE_NAMES])


class PageHinkley(_Sequential):
    """Page-Hinkley test for a change in the mean, one- or two-sided.

    With the running mean x̄_t, the cumulative sums
    ``m⁺_t = α·m⁺_{t-1} + (x_t − x̄_t) − δ`` and ``m⁻_t = α·m⁻_{t-1} + (x_t − x̄_t) + δ``
    are compared with their running minimum / maximum; an increase (decrease)
    is signalled when ``m⁺_t − min m⁺ > λ`` (``max m⁻ − m⁻_t > λ``) after
    ``min_instances`` values. The detector resets on the value after an alarm.
    Alarms are identical to ``river.drift.PageHinkley`` with the same
    parameters (mode "up", "down" or "both").

    ``loc``/``scale`` standardise the input first, ``(x − loc) / scale``, so that
    ``delta`` and ``threshold`` are in reference standard deviations; river's
    defaults (δ = 0.005, λ = 50) are tuned for error rates in [0, 1] and raise
    dozens of false alarms per 100k values on a raw N(0, 1) feature. For a
    feature standardised by its reference, δ ≈ half the smallest shift worth
    detecting (0.25 for 0.5σ) and λ from a false-alarm budget (λ = 25 gives ~0.1
    false alarms per 100k values) are sensible; :func:`make_detector` uses those.

    Page, "Continuous inspection schemes", Biometrika 41 (1954); Hinkley,
    "Inference about the change-point from cumulative sum tests", Biometrika 58 (1971).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(1)
        >>> ph = PageHinkley(delta=0.25, threshold=25.0)
        >>> ev = ph.update_many(np.concatenate([rng.normal(size=2000), rng.normal(1.0, size=500)]))
        >>> [int(p) for p in ev.alarms]
        [2024]
    """

    kind = "pageHinkley"
    _STATE_NAMES = K.PH_STATE
    _MODES: ClassVar[dict[str, int]] = {"up": 0, "down": 1, "both": 2}

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
        loc: float = 0.0,
        scale: float = 1.0,
        nan_policy: str = "raise",
        budget: float | None = None,
    ) -> None:
        if mode not in self._MODES:
            raise ValueError(f"PageHinkley: mode must be one of {list(self._MODES)}, got {mode!r}")
        if not scale > 0 or not math.isfinite(scale) or not math.isfinite(loc):
            raise ValueError(
                f"PageHinkley: loc must be finite and scale positive and finite, got loc={loc!r}, "
                f"scale={scale!r}; a constant reference feature cannot be standardised"
            )
        if threshold <= 0 or delta < 0 or not 0 < alpha <= 1 or min_instances < 0:
            raise ValueError(
                "PageHinkley: need threshold > 0, delta >= 0, 0 < alpha <= 1, min_instances >= 0; "
                f"got threshold={threshold!r}, delta={delta!r}, alpha={alpha!r}, "
                f"min_instances={min_instances!r}"
            )
        self.min_instances = int(min_instances)
        self.delta = float(delta)
        self._threshold = float(threshold)
        self.alpha = float(alpha)
        self.mode = mode
        self.loc = float(loc)
        self.scale = float(scale)
        self.budget = None if budget is None else float(budget)
        self._st = K.PH_INITIAL.copy()
        self._init_common(nan_policy)

    @property
    def threshold(self) -> float:
        """λ, the alarm threshold of the cumulative statistic."""
        return self._threshold

    def _run(self, arr, stat, drift, warning) -> None:
        K.page_hinkley(
            self._st, arr, self.min_instances, self.delta, self._threshold, self.alpha,
            self._MODES[self.mode], self.loc, self.scale, stat, drift,
        )  # fmt: skip

    def _params(self) -> dict[str, Any]:
        return {
            "min_instances": self.min_instances,
            "delta": self.delta,
            "threshold": self._threshold,
            "alpha": self.alpha,
            "mode": self.mode,
            "loc": self.loc,
            "scale": self.scale,
            "nan_policy": self.nan_policy,
            "budget": self.budget,
        }


class DDM(_Sequential):
    """Drift Detection Method (Gama et al., SBIA 2004) on a 0/1 error stream.

    Tracks the error rate p_i and s_i = sqrt(p_i(1 − p_i)/i); after
    ``warm_start`` values it records p_min, s_min where p_i + s_i is smallest,
    warns when p_i + s_i > p_min + w·s_min and alarms when
    p_i + s_i > p_min + d·s_min. The reported statistic is
    (p_i + s_i − p_min)/s_min, compared with ``drift_threshold``. Identical alarms
    and warnings to ``river.drift.binary.DDM``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> ddm = DDM()
        >>> ev = ddm.update_many(np.concatenate([rng.random(1000) < 0.1, rng.random(1000) < 0.3]))
        >>> [int(p) for p in ev.alarms]
        [1053]
    """

    kind = "ddm"
    _STATE_NAMES = K.DDM_STATE
    _DOMAIN = "binary"
    _HAS_WARNING = True

    def __init__(
        self,
        warm_start: int = 30,
        warning_threshold: float = 2.0,
        drift_threshold: float = 3.0,
        nan_policy: str = "raise",
    ) -> None:
        if warm_start < 0 or warning_threshold <= 0 or drift_threshold <= 0:
            raise ValueError(
                "DDM: need warm_start >= 0 and positive thresholds; got "
                f"warm_start={warm_start!r}, warning_threshold={warning_threshold!r}, "
                f"drift_threshold={drift_threshold!r}"
            )
        self.warm_start = int(warm_start)
        self.warning_threshold = float(warning_threshold)
        self.drift_threshold = float(drift_threshold)
        self._st = K.DDM_INITIAL.copy()
        self._init_common(nan_policy)

    @property
    def threshold(self) -> float:
        return self.drift_threshold

    def _run(self, arr, stat, drift, warning) -> None:
        K.ddm(
            self._st, arr, self.warm_start, self.warning_threshold, self.drift_threshold,
            stat, drift, warning,
        )  # fmt: skip


class EDDM(_Sequential):
    """Early Drift Detection Method (Baena-García et al., 2006) on a 0/1 error stream.

    Tracks the mean p′ and standard deviation s′ of the distance between
    consecutive errors and the maximum of p′ + 2s′; once ``warm_start`` errors
    have been seen it warns when (p′ + 2s′)/max < ``alpha`` and alarms below
    ``beta``. The reported statistic is that ratio (alarm when *below* the
    threshold). Identical alarms and warnings to ``river.drift.binary.EDDM``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> eddm = EDDM(alpha=0.8, beta=0.75)
        >>> ev = eddm.update_many(np.concatenate([rng.random(1000) < 0.1, rng.random(1000) < 0.5]))
        >>> [int(p) for p in ev.alarms]
        [1117, 1222]
    """

    kind = "eddm"
    _STATE_NAMES = K.EDDM_STATE
    _DOMAIN = "binary"
    _HAS_WARNING = True

    def __init__(
        self,
        warm_start: int = 30,
        alpha: float = 0.95,
        beta: float = 0.9,
        nan_policy: str = "raise",
    ) -> None:
        if not 0 < beta <= alpha < 1 or warm_start < 0:
            raise ValueError(
                f"EDDM: need 0 < beta <= alpha < 1 and warm_start >= 0; got alpha={alpha!r}, "
                f"beta={beta!r}, warm_start={warm_start!r}"
            )
        self.warm_start = int(warm_start)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self._st = K.EDDM_INITIAL.copy()
        self._init_common(nan_policy)

    @property
    def threshold(self) -> float:
        return self.beta

    def _run(self, arr, stat, drift, warning) -> None:
        K.eddm(self._st, arr, self.warm_start, self.alpha, self.beta, stat, drift, warning)


class HDDMA(_Sequential):
    """HDDM_A (Frías-Blanco et al., IEEE TKDE 2015): Hoeffding-bound test on the mean.

    Compares the mean of the whole stream with the mean up to a cut point that
    tracks its minimum (and maximum if ``two_sided_test``); alarms when the
    difference exceeds the Hoeffding bound at ``drift_confidence`` (warning at
    ``warning_confidence``). Values must lie in [0, 1]. The reported statistic is
    the difference divided by the drift bound (alarm at >= 1). Identical alarms
    and warnings to ``river.drift.binary.HDDMA``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> det = HDDMA()
        >>> ev = det.update_many(np.concatenate([rng.random(1000) < 0.1, rng.random(1000) < 0.3]))
        >>> [int(p) for p in ev.alarms]
        [1018, 1329]
    """

    kind = "hddmA"
    _STATE_NAMES = K.HDDMA_STATE
    _DOMAIN = "unit"
    _HAS_WARNING = True

    def __init__(
        self,
        drift_confidence: float = 0.001,
        warning_confidence: float = 0.005,
        two_sided_test: bool = False,
        nan_policy: str = "raise",
    ) -> None:
        if not 0 < drift_confidence < 1 or not 0 < warning_confidence < 1:
            raise ValueError(
                "HDDMA: confidences must be in (0, 1); got "
                f"drift_confidence={drift_confidence!r}, warning_confidence={warning_confidence!r}"
            )
        self.drift_confidence = float(drift_confidence)
        self.warning_confidence = float(warning_confidence)
        self.two_sided_test = bool(two_sided_test)
        # computed exactly as the reference implementation does, once
        self._log_inv_drift = math.log(1.0 / self.drift_confidence)
        self._log2_drift = math.log(2.0 / self.drift_confidence)
        self._log2_warning = math.log(2.0 / self.warning_confidence)
        self._st = K.HDDMA_INITIAL.copy()
        self._init_common(nan_policy)

    @property
    def threshold(self) -> float:
        return 1.0

    def _run(self, arr, stat, drift, warning) -> None:
        K.hddm_a(
            self._st, arr, self._log_inv_drift, self._log2_drift, self._log2_warning,
            self.two_sided_test, stat, drift, warning,
        )  # fmt: skip


class HDDMW(_Sequential):
    """HDDM_W (Frías-Blanco et al., IEEE TKDE 2015): McDiarmid-bound test on EWMAs.

    Like :class:`HDDMA` with exponentially weighted means (weight ``lambda_val``
    on the newest value) and McDiarmid's bound. Values must lie in [0, 1].
    The reported statistic is the EWMA difference divided by the drift bound
    (alarm when > 1). Identical alarms and warnings to ``river.drift.binary.HDDMW``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> det = HDDMW()
        >>> ev = det.update_many(np.concatenate([rng.random(1000) < 0.1, rng.random(1000) < 0.5]))
        >>> bool(ev.drift[1000:].any()), bool(ev.drift[:1000].any())
        (True, False)
    """

    kind = "hddmW"
    _STATE_NAMES = K.HDDMW_STATE
    _DOMAIN = "unit"
    _HAS_WARNING = True

    def __init__(
        self,
        drift_confidence: float = 0.001,
        warning_confidence: float = 0.005,
        lambda_val: float = 0.05,
        two_sided_test: bool = False,
        nan_policy: str = "raise",
    ) -> None:
        if (
            not 0 < drift_confidence < 1
            or not 0 < warning_confidence < 1
            or not 0 < lambda_val <= 1
        ):
            raise ValueError(
                "HDDMW: confidences must be in (0, 1) and lambda_val in (0, 1]; got "
                f"drift_confidence={drift_confidence!r}, warning_confidence={warning_confidence!r}, "
                f"lambda_val={lambda_val!r}"
            )
        self.drift_confidence = float(drift_confidence)
        self.warning_confidence = float(warning_confidence)
        self.lambda_val = float(lambda_val)
        self.two_sided_test = bool(two_sided_test)
        lam = self.lambda_val
        self._consts = (
            lam,
            1.0 - lam,
            lam * lam,
            (1 - lam) ** 2,
            math.log(1 / self.drift_confidence),
            math.log(1 / self.warning_confidence),
        )
        self._st = K.HDDMW_INITIAL.copy()
        self._init_common(nan_policy)

    @property
    def threshold(self) -> float:
        return 1.0

    def _run(self, arr, stat, drift, warning) -> None:
        K.hddm_w(self._st, arr, *self._consts, self.two_sided_test, stat, drift, warning)


class ADWIN(_Sequential):
    """ADWIN (Bifet & Gavaldà, SDM 2007): adaptive windowing with exponential histograms.

    Keeps a window of recent values compressed into buckets of 2**l values
    (at most ``max_buckets`` per size) and, every ``clock`` values once the
    window exceeds ``grace_period``, checks every split into an older and a
    newer part (each at least ``min_window_length``) for a difference of means
    larger than the bound at confidence ``delta``; on a cut it drops old buckets
    and alarms. Like river, the whole window is cleared on the value after an
    alarm. Works on any real-valued stream. The reported statistic is the
    window mean. Identical alarms to ``river.drift.ADWIN`` (river 0.26.1,
    which checks every 32 values by default).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> det = ADWIN()
        >>> ev = det.update_many(np.concatenate([rng.normal(size=1000), rng.normal(1.0, size=1000)]))
        >>> [int(p) for p in ev.alarms]
        [1056]
    """

    kind = "adwin"
    _STATE_NAMES = K.ADWIN_STATE

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
        nan_policy: str = "raise",
    ) -> None:
        if not 0 < delta < 1 or clock < 1 or max_buckets < 2 or min_window_length < 1:
            raise ValueError(
                "ADWIN: need 0 < delta < 1, clock >= 1, max_buckets >= 2, min_window_length >= 1; "
                f"got delta={delta!r}, clock={clock!r}, max_buckets={max_buckets!r}, "
                f"min_window_length={min_window_length!r}"
            )
        self.delta = float(delta)
        self.clock = int(clock)
        self.max_buckets = int(max_buckets)
        self.min_window_length = int(min_window_length)
        self.grace_period = int(grace_period)
        self._st, self._totals, self._variances, self._counts = K.adwin_initial(self.max_buckets)
        self._init_common(nan_policy)

    @property
    def threshold(self) -> float:
        return self.delta

    @property
    def width(self) -> int:
        """Values in the adaptive window."""
        return int(self._st[2])

    def _sample_size(self) -> int:
        return self.width

    def _run(self, arr, stat, drift, warning) -> None:
        K.adwin(
            self._st, self._totals, self._variances, self._counts, arr, self.delta, self.clock,
            self.max_buckets, float(self.min_window_length), float(self.grace_period), stat, drift,
        )  # fmt: skip

    def _get_state(self) -> dict[str, Any]:
        levels = int(self._st[8])
        return {
            **super()._get_state(),
            "bucket_totals": encode_array(self._totals[:levels]),
            "bucket_variances": encode_array(self._variances[:levels]),
            "bucket_counts": encode_array(self._counts[:levels]),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        super()._set_state(state)
        levels = int(self._st[8])
        _, self._totals, self._variances, self._counts = K.adwin_initial(self.max_buckets)
        self._totals[:levels] = decode_array(state["bucket_totals"])
        self._variances[:levels] = decode_array(state["bucket_variances"])
        self._counts[:levels] = decode_array(state["bucket_counts"])


__all__ = ["ADWIN", "DDM", "EDDM", "HDDMA", "HDDMW", "PageHinkley"]
