"""The detector contract: result types, input validation and serialisable state.

Every detector in this package is shaped like river's (constructor parameters as
attributes, ``update(x)``, read-only ``drift_detected``) and adds what a stateful,
sharded worker needs:

* ``update_many(values)`` — a vectorised batch update. Its end state and the
  evaluations it reports are identical to feeding the same values one by one,
  whatever the batch boundaries (``update(x)`` *is* a batch of one).
* ``result`` — the latest evaluation as a frozen :class:`DetectorResult`.
* ``to_state()`` / ``from_state()`` — a JSON-serialisable dict that restores a
  detector whose subsequent behaviour is bit-identical (snapshots, handoff).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

STATE_VERSION = 1

NAN_POLICIES = ("raise", "omit")


class DetectorInputError(ValueError):
    """A batch a detector cannot accept; the detector's state is unchanged."""


@dataclass(frozen=True, slots=True, eq=False)
class DetectorResult:
    """The outcome of a detector's latest evaluation.

    Attributes:
        statistic: the test statistic (NaN before the first evaluation).
        p_value: the p-value, or None for detectors without one (sequential
            detectors, divergences).
        threshold: what the statistic or p-value is compared with (alpha for
            tests with a p-value, else the statistic's alarm threshold).
        drift: whether this evaluation raised an alarm.
        n_seen: values the detector had accepted when it evaluated.
        warning: the warning zone of detectors that have one (DDM family).
        effect_size: an effect size on a scale users can reason about, where the
            detector has one (KS D, PSI, ...); None otherwise.
        sample_size: values the statistic was computed from (window length).
        budget: the false-alarm budget the threshold was set for, as the expected
            number of values between false alarms (ARL₀); None for detectors whose
            threshold is a per-test level or an effect size, not a budget.
    """

    statistic: float
    p_value: float | None
    threshold: float
    drift: bool
    n_seen: int
    warning: bool = False
    effect_size: float | None = None
    sample_size: int = 0
    budget: float | None = None

    @property
    def evaluated(self) -> bool:
        """True once the detector has evaluated at least once."""
        return not math.isnan(self.statistic)

    def __eq__(self, other: object) -> bool:
        # NaN statistics (no evaluation yet, undefined ratios) compare equal here so
        # that a restored detector's result equals the original's.
        if not isinstance(other, DetectorResult):
            return NotImplemented
        return encode_result(self) == encode_result(other)

    def __hash__(self) -> int:
        return hash(tuple(encode_result(self).values()))


@dataclass(frozen=True, slots=True, eq=False)
class Evaluations:
    """Every evaluation one ``update_many`` call produced, as parallel arrays.

    Sequential detectors evaluate after every value, windowed tests every
    ``evaluate_every`` values; ``position`` says where in the stream (the
    detector's ``n_seen`` just after the evaluated value).
    """

    position: np.ndarray  # int64
    statistic: np.ndarray  # float64
    p_value: np.ndarray  # float64, NaN where the detector has no p-value
    drift: np.ndarray  # bool
    threshold: float
    warning: np.ndarray | None = None  # bool, for detectors with a warning zone

    def __len__(self) -> int:
        return int(self.position.shape[0])

    @property
    def alarms(self) -> np.ndarray:
        """Stream positions (``n_seen``) at which an alarm was raised."""
        return self.position[self.drift]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Evaluations):
            return NotImplemented
        return (
            np.array_equal(self.position, other.position)
            and np.array_equal(self.statistic, other.statistic, equal_nan=True)
            and np.array_equal(self.p_value, other.p_value, equal_nan=True)
            and np.array_equal(self.drift, other.drift)
            and _same_float(self.threshold, other.threshold)
            and (
                (self.warning is None and other.warning is None)
                or (
                    self.warning is not None
                    and other.warning is not None
                    and np.array_equal(self.warning, other.warning)
                )
            )
        )

    @classmethod
    def empty(cls, threshold: float) -> Evaluations:
        """No evaluations (an empty batch, or a batch between evaluation points)."""
        return cls(
            position=np.empty(0, np.int64),
            statistic=np.empty(0, np.float64),
            p_value=np.empty(0, np.float64),
            drift=np.empty(0, np.bool_),
            threshold=threshold,
        )

    @classmethod
    def concat(cls, parts: list[Evaluations], threshold: float) -> Evaluations:
        """One Evaluations holding ``parts`` in order (empty parts are skipped)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(threshold)
        return cls(
            position=np.concatenate([p.position for p in parts]),
            statistic=np.concatenate([p.statistic for p in parts]),
            p_value=np.concatenate([p.p_value for p in parts]),
            drift=np.concatenate([p.drift for p in parts]),
            threshold=threshold,
            warning=(
                None
                if any(p.warning is None for p in parts)
                else np.concatenate([p.warning for p in parts])
            ),
        )


def _same_float(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# --------------------------------------------------------------------------- state encoding
# JSON has no inf/NaN and no arrays; these helpers make states strict JSON while
# keeping every float bit-exact (Python's float repr round-trips exactly).


def encode_float(x: float) -> float | str:
    """``x`` as a strict-JSON value: finite floats as is, non-finite as strings."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def decode_float(x: float | str) -> float:
    """The float that :func:`encode_float` encoded."""
    return float(x)


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """A numpy array as a strict-JSON dict (dtype, shape, flat values)."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        values: list[Any] = [encode_float(v) for v in a.ravel().tolist()]
    elif a.dtype.kind in "biu":
        values = a.ravel().tolist()
    else:
        raise TypeError(f"cannot encode array of dtype {a.dtype} in detector state")
    return {"dtype": a.dtype.str, "shape": list(a.shape), "values": values}


def decode_array(d: dict[str, Any]) -> np.ndarray:
    """The numpy array that :func:`encode_array` encoded."""
    dtype = np.dtype(d["dtype"])
    if dtype.kind == "f":
        flat = np.array([decode_float(v) for v in d["values"]], dtype=dtype)
    else:
        flat = np.array(d["values"], dtype=dtype)
    return flat.reshape(tuple(d["shape"]))


def encode_result(r: DetectorResult) -> dict[str, Any]:
    return {
        "statistic": encode_float(r.statistic),
        "p_value": None if r.p_value is None else encode_float(r.p_value),
        "threshold": encode_float(r.threshold),
        "drift": r.drift,
        "n_seen": r.n_seen,
        "warning": r.warning,
        "effect_size": None if r.effect_size is None else encode_float(r.effect_size),
        "sample_size": r.sample_size,
        "budget": None if r.budget is None else encode_float(r.budget),
    }


def decode_result(d: dict[str, Any]) -> DetectorResult:
    return DetectorResult(
        statistic=decode_float(d["statistic"]),
        p_value=None if d["p_value"] is None else decode_float(d["p_value"]),
        threshold=decode_float(d["threshold"]),
        drift=bool(d["drift"]),
        n_seen=int(d["n_seen"]),
        warning=bool(d["warning"]),
        effect_size=None if d["effect_size"] is None else decode_float(d["effect_size"]),
        sample_size=int(d["sample_size"]),
        # states written before budgets existed have no "budget"
        budget=None if d.get("budget") is None else decode_float(d["budget"]),
    )


# --------------------------------------------------------------------------- input validation


def as_numeric_batch(values: Any, *, owner: str) -> np.ndarray:
    """``values`` as a 1-d float64 array, or a clear TypeError/ValueError.

    Accepts scalars, sequences and numpy arrays of bool, int or float. Strings,
    objects and complex numbers are refused: a numeric detector fed categories
    is a configuration error that must not pass silently.
    """
    if (
        type(values) is np.ndarray
        and values.dtype == np.float64
        and values.ndim == 1
        and values.flags.c_contiguous
    ):
        return values  # fast path: already what the kernels take (never mutated)
    if isinstance(values, np.ndarray):
        arr = values
    else:
        try:
            arr = np.asarray(values)
        except (ValueError, TypeError) as exc:  # ragged nested sequences
            raise DetectorInputError(
                f"{owner}: values are not a flat numeric sequence: {exc}"
            ) from exc
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{owner}: values must be numeric (bool, int or float), got dtype {arr.dtype}; "
            "feed categories to a categorical detector (chi2, kl, js, psi) instead"
        )
    if arr.ndim == 0:
        arr = arr.reshape(1)
    elif arr.ndim != 1:
        raise DetectorInputError(
            f"{owner}: expected a 1-d batch of values, got shape {arr.shape}; "
            "embedding matrices go to the mmd/nmDdm detectors"
        )
    return np.ascontiguousarray(arr, dtype=np.float64)


def drop_non_finite(arr: np.ndarray, *, owner: str, nan_policy: str) -> tuple[np.ndarray, int]:
    """``arr`` without NaN/inf values and how many were dropped.

    With ``nan_policy="raise"`` any non-finite value is an error that names the
    first offending position, and nothing is dropped.
    """
    finite = np.isfinite(arr)
    if finite.all():
        return arr, 0
    bad = np.flatnonzero(~finite)
    if nan_policy == "raise":
        raise DetectorInputError(
            f"{owner}: {bad.size} non-finite value(s) in a batch of {arr.size} "
            f"(first at index {bad[0]}: {arr[bad[0]]!r}); the batch was not applied. "
            "Clean the input upstream, or build the detector with nan_policy='omit' "
            "to drop and count such values."
        )
    return arr[finite], int(bad.size)


def check_nan_policy(nan_policy: str, owner: str) -> None:
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"{owner}: nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")


# --------------------------------------------------------------------------- base class


class Detector(abc.ABC):
    """Base class of every streaming detector.

    Subclasses define ``kind`` (the name in serialised state), ``_params()``
    (constructor arguments, JSON-able), ``_update_batch(arr)`` on a validated
    batch, and ``_get_state()``/``_set_state()`` for their mutable state.
    """

    kind: ClassVar[str]
    #: input the detector accepts: "numeric" (floats), "binary" (0/1), "categorical", "matrix"
    input_kind: ClassVar[str] = "numeric"

    _result: DetectorResult
    _n_seen: int
    _n_dropped: int

    # -- public API
    @property
    def drift_detected(self) -> bool:
        """Whether the latest evaluation raised an alarm."""
        return self._result.drift

    @property
    def result(self) -> DetectorResult:
        """The latest evaluation (statistic NaN and drift False before the first)."""
        return self._result

    @property
    def n_seen(self) -> int:
        """Values accepted so far (non-finite values dropped under nan_policy='omit' excluded)."""
        return self._n_seen

    @property
    def n_dropped(self) -> int:
        """Non-finite values dropped under ``nan_policy='omit'``."""
        return self._n_dropped

    def update(self, x: Any) -> None:
        """Feed one value; afterwards ``drift_detected`` and ``result`` describe it."""
        self.update_many(np.asarray([x]) if np.ndim(x) == 0 else x)

    @abc.abstractmethod
    def update_many(self, values: Any) -> Evaluations:
        """Feed a batch of values; returns the evaluations it produced, in order."""

    def _evaluated(
        self,
        positions: Any,
        stats: np.ndarray,
        pvals: np.ndarray,
        drift: np.ndarray,
        threshold: float,
        *,
        p_value: bool = True,
        effect_size: bool | np.ndarray = True,
    ) -> Evaluations:
        """Record the last of a batch's window evaluations as ``result``; return them all.

        For windowed tests (they have ``window``): the statistic doubles as the effect
        size unless ``effect_size`` is False (none) or an array (one per evaluation), and
        the p-value is reported unless ``p_value`` is False.
        """
        if len(positions):
            if isinstance(effect_size, np.ndarray):
                effect: float | None = float(effect_size[-1])
            else:
                effect = float(stats[-1]) if effect_size else None
            self._result = DetectorResult(
                statistic=float(stats[-1]),
                p_value=float(pvals[-1]) if p_value else None,
                threshold=threshold,
                drift=bool(drift[-1]),
                n_seen=int(positions[-1]),
                effect_size=effect,
                sample_size=self.window,  # type: ignore[attr-defined]
            )
        return Evaluations(np.asarray(positions, np.int64), stats, pvals, drift, threshold)

    # -- state
    @abc.abstractmethod
    def _params(self) -> dict[str, Any]:
        """Constructor arguments, JSON-serialisable, such that ``cls(**params)`` rebuilds it."""

    @abc.abstractmethod
    def _get_state(self) -> dict[str, Any]:
        """Mutable state beyond the constructor arguments, JSON-serialisable."""

    @abc.abstractmethod
    def _set_state(self, state: dict[str, Any]) -> None:
        """Restore what ``_get_state`` returned."""

    @classmethod
    def _from_params(cls, params: dict[str, Any]) -> Self:
        return cls(**params)

    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot; ``from_state`` of it continues bit-identically."""
        return {
            "detector": self.kind,
            "version": STATE_VERSION,
            "params": self._params(),
            "n_seen": self._n_seen,
            "n_dropped": self._n_dropped,
            "result": encode_result(self.result),
            "state": self._get_state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        """The detector that ``to_state`` serialised."""
        kind = state.get("detector")
        if kind != cls.kind:
            raise ValueError(
                f"{cls.__name__}.from_state: state is for detector {kind!r}, not {cls.kind!r}; "
                "use driftwarden.detectors.detector_from_state to dispatch on it"
            )
        version = state.get("version")
        if version != STATE_VERSION:
            raise ValueError(
                f"{cls.__name__}.from_state: unsupported state version {version!r} "
                f"(this build reads version {STATE_VERSION})"
            )
        det = cls._from_params(state["params"])
        det._n_seen = int(state["n_seen"])
        det._n_dropped = int(state["n_dropped"])
        det._result = decode_result(state["result"])
        det._set_state(state["state"])
        return det

    def __repr__(self) -> str:
        shown = {k: v for k, v in self._params().items() if not isinstance(v, (list, dict))}
        args = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"{type(self).__name__}({args})"


def initial_result(threshold: float, budget: float | None = None) -> DetectorResult:
    """The result a detector reports before its first evaluation."""
    return DetectorResult(
        statistic=math.nan,
        p_value=None,
        threshold=threshold,
        drift=False,
        n_seen=0,
        budget=budget,
    )
