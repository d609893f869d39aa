"""Per-stream state on a worker: the stream's detectors, de-dup marks and label join.

A :class:`StreamState` is what moves between shards on a reshard and what a snapshot
stores: everything needed to continue the stream bit-identically elsewhere. Applying
a segment is deterministic: the same segments in the same order give the same state,
whatever shard applies them and whether it is a replay of the write-ahead log.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from driftwarden.ingest import wire

log = logging.getLogger("driftwarden.worker")

#: What a stream carries (the one stream-kind type); its detectors see the values'
#: shape (``detectors.ValueKind``): a performance stream's per-sample errors are numeric.
StreamKind = Literal["numeric", "categorical", "embedding", "performance"]
Task = Literal["regression", "classification"]

# Senders kept per stream for de-duplication. A sender id is one model-server
# process; retries only ever come from a live sender, so forgetting the least
# recently seen of more than this many is safe in practice (documented limit).
MAX_SENDERS_PER_STREAM = 1024


class SegmentError(ValueError):
    """A segment that does not fit its stream (wrong kind, type or shape)."""


@dataclass(frozen=True)
class StreamSpec:
    """What a stream is: its name, value kind and the reference its detectors compare to.

    ``reference`` is the training-time sample: floats (numeric, and the per-row
    error for ``performance``), strings (categorical), or a ``(rows, dim)`` matrix
    (embedding). ``task`` (performance only) decides how a prediction and its label
    make an error: squared error (regression) or mismatch 0/1 (classification).
    """

    name: str
    kind: StreamKind
    reference: Any = None
    categories: tuple[str, ...] | None = None
    task: Task | None = None
    dim: int | None = None


@dataclass(frozen=True)
class JoinConfig:
    """Label join limits: how late a label may come, how many predictions may wait."""

    max_delay_s: float = 3600.0
    max_pending: int = 1_000_000


# Live-vs-reference histograms of numeric streams use the reference deciles as
# bucket bounds: a stream without drift fills every bucket with ~10 % of its values.
HISTOGRAM_QUANTILES = tuple(q / 10 for q in range(1, 10))


def histogram_edges(spec: StreamSpec) -> np.ndarray | None:
    """Return the bucket upper bounds of a numeric stream (reference deciles), or None."""
    if spec.kind != "numeric" or spec.reference is None:
        return None
    ref = np.asarray(spec.reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return None
    return np.unique(np.quantile(ref, HISTOGRAM_QUANTILES))


def bucket_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Return per-bucket counts (``x <= edge[i]``, last bucket ``+Inf``) of ``values``."""
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)


# A factory turns a stream spec into named detectors (fresh state).
DetectorFactory = Callable[[StreamSpec], dict[str, Any]]


def detector_identity(state: dict[str, Any]) -> str:
    """Return the fingerprint of what a detector *is*, from its ``to_state()`` dict.

    The identity is the detector type, its state version and its parameters
    (``params``: alpha, window, thresholds, ``minEffect``, seed and the reference
    sample itself), never what it has seen. A detector built from the same
    configuration and reference has the same identity in any process, so a restored
    state is comparable with what the monitor's spec asks for now: equal identities
    mean the state may continue, different ones mean the detector must re-baseline.
    """
    doc = {key: state.get(key) for key in ("detector", "version", "params")}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Rebaseline:
    """How a stream's detectors changed against the configuration: names per change."""

    changed: tuple[str, ...] = ()  # same detector type, other parameters or reference
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed)

    def items(self) -> list[tuple[str, str]]:
        """Return ``(detector, change)`` pairs, change one of changed|added|removed."""
        return (
            [(d, "changed") for d in self.changed]
            + [(d, "added") for d in self.added]
            + [(d, "removed") for d in self.removed]
        )


def _label_key(v: Any) -> str:
    """Return a label or class prediction as the string the join compares."""
    if isinstance(v, str):
        return v
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def errors_for(task: Task, predictions: list[Any], labels: list[Any]) -> np.ndarray:
    """Return the per-row error the concept-drift detectors consume."""
    if task == "regression":
        p = np.asarray(predictions, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        return (y - p) ** 2
    return np.fromiter(
        (_label_key(a) != _label_key(b) for a, b in zip(predictions, labels, strict=True)),
        dtype=np.float64,
        count=len(predictions),
    )


class LabelJoin:
    """Joins predictions (by id) with labels that arrive later, or sometimes earlier.

    Event time is the segments' ``ts`` (set by the sender), never the worker's clock,
    so a replay of the log and another shard reach the same joins. A prediction waits
    up to ``max_delay_s`` for its label; a label that comes first waits as long for
    its prediction; what outlives the delay is counted and dropped (expired). At most
    ``max_pending`` of each wait: beyond, the oldest is dropped and counted apart
    (evicted), so a full join is told from late labels. A prediction under an id that
    is already waiting replaces the waiting one (counted: replaced); its label joins
    the latest.
    """

    def __init__(self, task: Task, config: JoinConfig) -> None:
        self.task = task
        self.config = config
        self.clock = float("-inf")
        self.predictions: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self.labels: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self.joined = 0
        self.expired_predictions = 0
        self.unmatched_labels = 0
        self.evicted_predictions = 0
        self.evicted_labels = 0
        self.replaced_predictions = 0

    def add_predictions(self, ids: list[str], values: Any, ts: float) -> np.ndarray:
        """Record predictions; return the errors of those whose label was already here."""
        self.clock = max(self.clock, ts)
        preds: list[Any] = []
        labs: list[Any] = []
        vals = values.tolist() if isinstance(values, np.ndarray) else values
        for pid, v in zip(ids, vals, strict=True):
            waiting = self.labels.pop(pid, None)
            if waiting is not None:
                preds.append(v)
                labs.append(waiting[0])
            else:
                if pid in self.predictions:
                    self.replaced_predictions += 1
                self.predictions[pid] = (v, ts)
                self.predictions.move_to_end(pid)
        self._expire()
        return self._emit(preds, labs)

    def add_labels(self, ids: list[str], values: Any, ts: float) -> np.ndarray:
        """Record labels; return the errors of those that met their prediction."""
        self.clock = max(self.clock, ts)
        preds: list[Any] = []
        labs: list[Any] = []
        vals = values.tolist() if isinstance(values, np.ndarray) else values
        for pid, y in zip(ids, vals, strict=True):
            waiting = self.predictions.pop(pid, None)
            if waiting is not None:
                preds.append(waiting[0])
                labs.append(y)
            else:
                self.labels[pid] = (y, ts)
                self.labels.move_to_end(pid)
        self._expire()
        return self._emit(preds, labs)

    def _emit(self, preds: list[Any], labs: list[Any]) -> np.ndarray:
        self.joined += len(preds)
        if not preds:
            return np.empty(0, dtype=np.float64)
        return errors_for(self.task, preds, labs)

    def _expire(self) -> None:
        horizon = self.clock - self.config.max_delay_s
        limit = self.config.max_pending
        # Oldest first: an entry past the horizon expires; one still in time but over
        # the bound is evicted.
        while self.predictions and (
            len(self.predictions) > limit or next(iter(self.predictions.values()))[1] < horizon
        ):
            _, (_, ts) = self.predictions.popitem(last=False)
            if ts < horizon:
                self.expired_predictions += 1
            else:
                self.evicted_predictions += 1
        while self.labels and (
            len(self.labels) > limit or next(iter(self.labels.values()))[1] < horizon
        ):
            _, (_, ts) = self.labels.popitem(last=False)
            if ts < horizon:
                self.unmatched_labels += 1
            else:
                self.evicted_labels += 1

    def to_state(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "clock": None if self.clock == float("-inf") else self.clock,
            "predictions": [[k, v, t] for k, (v, t) in self.predictions.items()],
            "labels": [[k, v, t] for k, (v, t) in self.labels.items()],
            "joined": self.joined,
            "expired_predictions": self.expired_predictions,
            "unmatched_labels": self.unmatched_labels,
            "evicted_predictions": self.evicted_predictions,
            "evicted_labels": self.evicted_labels,
            "replaced_predictions": self.replaced_predictions,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: JoinConfig) -> LabelJoin:
        join = cls(state["task"], config)
        join.clock = float("-inf") if state["clock"] is None else float(state["clock"])
        join.predictions = OrderedDict((k, (v, float(t))) for k, v, t in state["predictions"])
        join.labels = OrderedDict((k, (v, float(t))) for k, v, t in state["labels"])
        join.joined = int(state["joined"])
        join.expired_predictions = int(state["expired_predictions"])
        join.unmatched_labels = int(state["unmatched_labels"])
        # absent from states saved before they were counted apart
        join.evicted_predictions = int(state.get("evicted_predictions", 0))
        join.evicted_labels = int(state.get("evicted_labels", 0))
        join.replaced_predictions = int(state.get("replaced_predictions", 0))
        return join


@dataclass
class StreamState:
    """One stream's detectors plus the bookkeeping that must travel with them."""

    spec: StreamSpec
    detectors: dict[str, Any]
    join: LabelJoin | None = None
    values_total: int = 0
    rejected_values: int = 0
    segments_applied: int = 0
    last_ts: float | None = None
    last_drift_ts: dict[str, float] = field(default_factory=dict)
    # alarming evaluations per detector (driftwarden_stream_alarms_total); travels with the
    # stream and replays alike, so the counter is the same on every shard that holds it
    alarms: dict[str, int] = field(default_factory=dict)
    # sender id -> highest seq applied; ordered by last use for bounded eviction
    high_water: OrderedDict[str, int] = field(default_factory=OrderedDict)
    # bumped on every handoff; lets a receiver recognise a re-sent (stale) copy
    generation: int = 0
    # live values per reference-decile bucket (numeric streams), and their sum
    hist: np.ndarray | None = None
    hist_sum: float = 0.0
    # saved detectors the configuration no longer names (left out on restore)
    configured_out: tuple[str, ...] = ()
    _edges: np.ndarray | None = None

    def __post_init__(self) -> None:
        self._edges = histogram_edges(self.spec)
        if self._edges is not None and self.hist is None:
            self.hist = np.zeros(self._edges.size + 1, dtype=np.int64)

    @property
    def edges(self) -> np.ndarray | None:
        return self._edges

    @classmethod
    def fresh(cls, spec: StreamSpec, factory: DetectorFactory, join: JoinConfig) -> StreamState:
        """Return a stream with empty detectors (nothing seen yet)."""
        state = cls(spec=spec, detectors=factory(spec))
        if spec.kind == "performance":
            state.join = LabelJoin(spec.task or "regression", join)
        return state

    # ------------------------------------------------------------------ checks

    def check(self, seg: wire.Segment) -> None:
        """Raise :class:`SegmentError` if ``seg`` cannot be applied to this stream."""
        kind, v = self.spec.kind, seg.columns["v"]
        where = f"stream {self.spec.name!r} (seq {seg.seq})"
        if kind == "performance":
            if seg.kind not in (wire.KIND_PREDICTIONS, wire.KIND_LABELS):
                raise SegmentError(
                    f"{where}: the performance stream takes 'predictions' or 'labels' segments, got {seg.kind!r}"
                )
            if self.spec.task == "regression" and not isinstance(v, np.ndarray):
                raise SegmentError(
                    f"{where}: a regression model's predictions and labels must be numbers"
                )
            return
        expected = wire.KIND_EMBEDDING if kind == "embedding" else wire.KIND_VALUES
        if seg.kind != expected:
            raise SegmentError(
                f"{where}: a {kind} stream takes {expected!r} segments, got {seg.kind!r}"
            )
        if kind == "numeric" and not isinstance(v, np.ndarray):
            raise SegmentError(f"{where}: a numeric stream takes numbers, got strings")
        if kind == "categorical" and isinstance(v, np.ndarray):
            if self.spec.categories and all(c.lstrip("-").isdigit() for c in self.spec.categories):
                return  # integer-coded categories may arrive as numbers
            raise SegmentError(f"{where}: a categorical stream takes strings, got numbers")
        if kind == "embedding" and self.spec.dim is not None and v.shape[1] != self.spec.dim:
            raise SegmentError(
                f"{where}: embedding rows have {v.shape[1]} columns, the stream expects {self.spec.dim}"
            )

    def is_duplicate(self, sender: str, seq: int) -> bool:
        """Return True if ``(sender, seq)`` was already applied to this stream."""
        mark = self.high_water.get(sender)
        return mark is not None and seq <= mark

    # ------------------------------------------------------------------ apply

    def apply(self, sender: str, seg: wire.Segment) -> int:
        """Apply one segment (skipping a duplicate); return the values it added."""
        if self.is_duplicate(sender, seg.seq):
            return 0
        self.high_water[sender] = seg.seq
        self.high_water.move_to_end(sender)
        while len(self.high_water) > MAX_SENDERS_PER_STREAM:
            self.high_water.popitem(last=False)
        self.segments_applied += 1
        self.last_ts = seg.ts if self.last_ts is None else max(self.last_ts, seg.ts)
        v = seg.columns["v"]
        if self.join is not None:
            ids = seg.columns["id"]
            assert isinstance(ids, list)
            if seg.kind == wire.KIND_PREDICTIONS:
                errors = self.join.add_predictions(ids, v, seg.ts)
            else:
                errors = self.join.add_labels(ids, v, seg.ts)
            count = len(ids)
            self._feed(errors, seg.ts)
        else:
            count = len(v)  # rows: one value per row, an embedding row counts once
            if self.spec.kind == "categorical" and isinstance(v, np.ndarray):
                v = [_label_key(x) for x in v.tolist()]
            if (
                self._edges is not None
                and self.hist is not None
                and isinstance(v, np.ndarray)
                and v.ndim == 1
            ):
                self.hist += bucket_counts(self._edges, v)
                self.hist_sum += float(v.sum())
            self._feed(v, seg.ts)
        self.values_total += count
        return count

    def _feed(self, values: Any, ts: float) -> None:
        if len(values) == 0:
            return
        for name, det in self.detectors.items():
            try:
                evaluations = det.update_many(values)
            except ValueError as exc:
                # Checked up front where possible; what a detector still refuses is
                # counted (deterministically, so a replay counts the same) not fatal.
                self.rejected_values += len(values)
                log.warning(
                    "stream %s detector %s refused %d values: %s",
                    self.spec.name,
                    name,
                    len(values),
                    exc,
                )
                continue
            drift = getattr(evaluations, "drift", None)
            if drift is not None and len(drift) and bool(np.any(drift)):
                self.last_drift_ts[name] = ts
                self.alarms[name] = self.alarms.get(name, 0) + int(np.count_nonzero(drift))

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        """Return a JSON-serialisable state; :meth:`from_state` restores it exactly."""
        return {
            "stream": self.spec.name,
            "generation": self.generation,
            "values_total": self.values_total,
            "rejected_values": self.rejected_values,
            "segments_applied": self.segments_applied,
            "last_ts": self.last_ts,
            "last_drift_ts": dict(self.last_drift_ts),
            "alarms": dict(self.alarms),
            "high_water": [[k, v] for k, v in self.high_water.items()],
            "detectors": {name: det.to_state() for name, det in self.detectors.items()},
            "join": None if self.join is None else self.join.to_state(),
            "hist": None if self.hist is None else self.hist.tolist(),
            "hist_sum": self.hist_sum,
        }

    @classmethod
    def from_state(
        cls, spec: StreamSpec, state: dict[str, Any], factory: DetectorFactory, join: JoinConfig
    ) -> StreamState:
        """Return the stream a :meth:`to_state` dict describes (detectors rebuilt exactly).

        Saved detectors are restored as they were saved, with their own parameters
        and reference, even where the monitor's configuration has changed since: the
        log records after this state were applied to exactly those detectors, and a
        replay must reach the same result. A saved detector the configuration no
        longer names is left out (nothing will read it); bringing the rest in line
        with the configuration is :meth:`rebaseline`, a logged step of its own.
        """
        if state["stream"] != spec.name:
            raise ValueError(f"state of stream {state['stream']!r} given for {spec.name!r}")
        templates = factory(spec)
        detectors = {}
        for name, det_state in state["detectors"].items():
            if name in templates:
                detectors[name] = type(templates[name]).from_state(det_state)
        out = cls(spec=spec, detectors=detectors)
        out.generation = int(state["generation"])
        out.values_total = int(state["values_total"])
        out.rejected_values = int(state["rejected_values"])
        out.segments_applied = int(state["segments_applied"])
        out.last_ts = state["last_ts"]
        out.last_drift_ts = {
            k: float(v) for k, v in state["last_drift_ts"].items() if k in detectors
        }
        # states saved before the counter existed start it at 0
        out.alarms = {k: int(v) for k, v in state.get("alarms", {}).items() if k in detectors}
        out.high_water = OrderedDict((k, int(v)) for k, v in state["high_water"])
        out.configured_out = tuple(sorted(set(state["detectors"]) - set(detectors)))
        if state["join"] is not None:
            out.join = LabelJoin.from_state(state["join"], join)
        if (
            out.hist is not None
            and state.get("hist") is not None
            and len(state["hist"]) == out.hist.size
        ):
            out.hist = np.asarray(state["hist"], dtype=np.int64)
            out.hist_sum = float(state.get("hist_sum", 0.0))
        return out

    def rebaseline(
        self,
        factory: DetectorFactory,
        expected: dict[str, str] | None = None,
        previous: dict[str, str] | None = None,
        *,
        new_reference: bool = False,
    ) -> Rebaseline:
        """Bring the detectors in line with the configuration; return what changed.

        The configured detectors are what ``factory`` builds; ``expected`` maps each to
        its identity in effect (:func:`detector_identity`; by default that of the
        freshly built detector). ``previous``: the identities of the configuration the
        stream was fed under until now, where the log recorded one; a detector is
        re-baselined if that differs from ``expected`` (even if a replay rebuilt it
        from today's configuration) or if its own state's identity does. A changed
        detector starts again empty against its new reference and parameters, an
        added one starts empty, a removed one is dropped. Detectors whose identity is
        unchanged keep their state, and so do the stream's de-dup marks, counters and
        label join. ``new_reference``: the live histogram (over the reference's
        deciles) starts again too.
        """
        templates = factory(self.spec)
        expected = expected or {}

        def want(name: str) -> str:
            return expected.get(name) or detector_identity(templates[name].to_state())

        changed, added = [], []
        for name in templates:
            if name not in self.detectors or (previous is not None and name not in previous):
                added.append(name)
            elif (previous is not None and previous[name] != want(name)) or detector_identity(
                self.detectors[name].to_state()
            ) != want(name):
                changed.append(name)
        removed = (set(self.detectors) | set(self.configured_out)) - set(templates)
        if previous is not None:
            removed |= set(previous) - set(templates)
        change = Rebaseline(
            changed=tuple(sorted(changed)),
            added=tuple(sorted(added)),
            removed=tuple(sorted(removed)),
        )
        if new_reference and self.hist is not None:
            self.hist = np.zeros_like(self.hist)
            self.hist_sum = 0.0
        if not change:
            return change
        for name in change.removed:
            self.detectors.pop(name, None)
            self.last_drift_ts.pop(name, None)
            self.alarms.pop(name, None)
        for name in (*change.changed, *change.added):
            self.detectors[name] = templates[name]
            self.last_drift_ts.pop(name, None)
        # the configured order, so every shard lists (and serialises) detectors alike
        self.detectors = {name: self.detectors[name] for name in templates}
        self.configured_out = ()
        return change

    # ------------------------------------------------------------------ read side

    def window_fill(self) -> float:
        """Return the fullest detector window as a fraction (0..1)."""
        best = 0.0
        for det in self.detectors.values():
            window = getattr(det, "window", None)
            result = getattr(det, "result", None)
            size = getattr(result, "sample_size", 0) or 0
            if window:
                best = max(best, min(1.0, size / float(window)))
            elif getattr(det, "n_seen", 0):
                best = 1.0
        return best
