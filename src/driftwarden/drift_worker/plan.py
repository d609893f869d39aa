"""What a worker serves: the monitor's streams, their detectors and decision settings.

A :class:`MonitorPlan` is built once at start-up, from ``monitor.json`` (the
DriftMonitor spec) and the model bundle's feature schema and reference sample
(:func:`plan_from_bundle`), or directly from a list of :class:`StreamSpec` in tests
and benchmarks. Every shard of a monitor builds the same plan, so any shard can take
over any stream.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftwarden.common import names
from driftwarden.common.durations import parse_duration
from driftwarden.common.spec import DetectorConfig, DriftMonitorSpec
from driftwarden.drift_worker.streams import (
    DetectorFactory,
    JoinConfig,
    StreamSpec,
    detector_identity,
)


@dataclass(frozen=True)
class DetectorGate:
    """A detector's own decision settings, as the monitor spec sets them (None: unset)."""

    min_effect: float | None = None
    alpha: float | None = None


@dataclass(frozen=True)
class MonitorPlan:
    """The streams one monitor has and how to build their detectors."""

    monitor: str
    streams: dict[str, StreamSpec]
    factory: DetectorFactory
    join: JoinConfig = field(default_factory=JoinConfig)
    min_samples: int = 200
    fdr: float = 0.05
    multiple_testing: str = "benjaminiHochberg"
    # how long an alarm of a detector without a p-value holds its verdict (spec.detectors.alarmHold)
    alarm_hold_s: float = 900.0
    # per stream, per detector name: the config's own minEffect and alpha where set, which
    # the monitor's decision applies with multiple-testing control (detectors.decision.decide)
    gates: dict[str, dict[str, DetectorGate]] = field(default_factory=dict)
    _identities: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    def spec(self, stream: str) -> StreamSpec | None:
        return self.streams.get(stream)

    def gate(self, stream: str, detector: str) -> DetectorGate:
        """Return the configured minEffect and alpha of one detector on one stream."""
        return self.gates.get(stream, {}).get(detector, _NO_GATE)

    def detector_identities(self) -> dict[str, dict[str, Any]]:
        """Return, per stream, the identity of its reference and of each detector it builds.

        ``{stream: {"reference": digest, "detectors": {name: identity}}}``, computed once.
        A detector's identity (:func:`streams.detector_identity`) covers its type,
        parameters and reference; a shard logs this table whenever it differs from the
        one in effect on its volume, which is how configuration changes re-baseline.
        """
        if not self._identities:
            for name in sorted(self.streams):
                spec = self.streams[name]
                built = self.factory(spec)
                self._identities[name] = {
                    "reference": reference_digest(spec.reference),
                    "detectors": {det: detector_identity(d.to_state()) for det, d in built.items()},
                }
        return json.loads(json.dumps(self._identities))


_NO_GATE = DetectorGate()


def reference_digest(reference: Any) -> str | None:
    """Return a digest of a stream's reference sample (numbers, strings or a matrix)."""
    if reference is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    if isinstance(reference, np.ndarray) and reference.dtype.kind in "biuf":
        h.update(str(reference.shape).encode())
        h.update(np.ascontiguousarray(reference, dtype=np.float64).tobytes())
    else:
        h.update(json.dumps([str(x) for x in reference]).encode())
    return h.hexdigest()


def detector_configs(spec: DriftMonitorSpec, stream: StreamSpec) -> list[DetectorConfig]:
    """Return the configured detectors of ``stream`` (defaults by stream kind and task)."""
    d = spec.detectors
    if stream.kind == "numeric":
        if stream.name == names.STREAM_PREDICTION and d.prediction is not None:
            return list(d.prediction)
        return list(d.numeric)
    if stream.kind == "categorical":
        if stream.name == names.STREAM_PREDICTION and d.prediction is not None:
            return list(d.prediction)
        return list(d.categorical)
    if stream.kind == "embedding":
        return list(d.embedding)
    if d.concept is not None:
        return list(d.concept)
    from driftwarden.common.spec import DetectorType

    default = DetectorType.RELATIVE_MSE if stream.task == "regression" else DetectorType.ERROR_RATE
    return [DetectorConfig(type=default)]


def named_configs(configs: list[DetectorConfig]) -> list[tuple[str, DetectorConfig]]:
    """Return each config with its detector name: its type, ``type#2`` for a repeat."""
    out: list[tuple[str, DetectorConfig]] = []
    taken: set[str] = set()
    for config in configs:
        name, k = config.type.value, 2
        while name in taken:
            name, k = f"{config.type.value}#{k}", k + 1
        taken.add(name)
        out.append((name, config))
    return out


def detector_gates(
    spec: DriftMonitorSpec, streams: dict[str, StreamSpec]
) -> dict[str, dict[str, DetectorGate]]:
    """Return, per stream, the detectors whose config sets minEffect or alpha."""
    gates: dict[str, dict[str, DetectorGate]] = {}
    for stream in streams.values():
        for name, config in named_configs(detector_configs(spec, stream)):
            if config.min_effect is not None or config.alpha is not None:
                gate = DetectorGate(min_effect=config.min_effect, alpha=config.alpha)
                gates.setdefault(stream.name, {})[name] = gate
    return gates


def stream_seed(stream: str) -> int:
    """Return a seed derived from the stream name, so every shard draws the same numbers."""
    return int.from_bytes(hashlib.blake2b(stream.encode(), digest_size=4).digest(), "big")


def spec_factory(spec: DriftMonitorSpec, tests_in_monitor: int = 1) -> DetectorFactory:
    """Return a factory building each stream's detectors with the detectors package.

    ``tests_in_monitor``: how many detectors the whole monitor runs; the monitor's
    false-alarm budget (``detectors.valuesPerFalseAlarm``) is split evenly over them,
    so every shard builds the same thresholds (docs/detectors.md, "Budgets").
    """
    from driftwarden import detectors as det_pkg

    make_detector = det_pkg.make_detector
    window, every = spec.workers.window, spec.workers.evaluate_every
    budget = det_pkg.split_budget(spec.detectors.values_per_false_alarm, tests_in_monitor)

    def build(stream: StreamSpec) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, config in named_configs(detector_configs(spec, stream)):
            out[name] = make_detector(
                config,
                reference=stream.reference,
                # concept-drift detectors read per-sample errors: numbers
                kind="numeric" if stream.kind == "performance" else stream.kind,
                window=window,
                evaluate_every=every,
                seed=stream_seed(stream.name),
                budget=budget,
            )
        return out

    return build


def _prediction_streams(manifest: Any, reference: Any) -> dict[str, StreamSpec]:
    """Return the prediction stream and, if the bundle has labels, the performance stream."""
    streams: dict[str, StreamSpec] = {}
    task = manifest.task
    preds = reference["prediction"]
    target = reference["target"] if manifest.target is not None else None
    if task == "regression":
        values = np.asarray(preds, dtype=np.float64)
        streams[names.STREAM_PREDICTION] = StreamSpec(names.STREAM_PREDICTION, "numeric", values)
        if target is not None:
            errors = (np.asarray(target, dtype=np.float64) - values) ** 2
    else:
        streams[names.STREAM_PREDICTION] = StreamSpec(
            names.STREAM_PREDICTION,
            "categorical",
            [str(x) for x in preds.tolist()],
            categories=tuple(manifest.prediction.classes or ()),
        )
        if target is not None:
            errors = (
                np.asarray([str(x) for x in preds]) != np.asarray([str(x) for x in target])
            ).astype(np.float64)
    if target is not None:
        streams[names.STREAM_PERFORMANCE] = StreamSpec(
            names.STREAM_PERFORMANCE, "performance", errors, task=task
        )
    return streams


def plan_from_bundle(monitor: str, spec: DriftMonitorSpec, bundle: Any) -> MonitorPlan:
    """Return the plan for a monitor whose model is ``bundle`` (see driftwarden.bundles)."""
    manifest = bundle.manifest
    reference = bundle.reference  # DataFrame: features, prediction, target
    streams: dict[str, StreamSpec] = {}
    for feature in manifest.features:
        col = reference[feature.name]
        if feature.type == "numeric":
            ref: Any = np.asarray(col, dtype=np.float64)
            streams[names.feature_stream(feature.name)] = StreamSpec(
                names.feature_stream(feature.name), "numeric", ref
            )
        else:
            ref = [str(x) for x in col.tolist()]
            streams[names.feature_stream(feature.name)] = StreamSpec(
                names.feature_stream(feature.name),
                "categorical",
                ref,
                categories=tuple(feature.categories or ()),
            )
    # A model-free bundle (model served elsewhere) has a prediction stream only if it
    # declares a prediction, and a concept stream only with labels as well: the concept
    # detectors read per-row errors, which need both.
    if manifest.prediction is not None:
        streams.update(_prediction_streams(manifest, reference))
    if manifest.embedding is not None:
        emb = bundle.reference_embeddings
        if emb is not None:
            group = manifest.embedding.group
            streams[names.embedding_stream(group)] = StreamSpec(
                names.embedding_stream(group),
                "embedding",
                np.asarray(emb),
                dim=manifest.embedding.dim,
            )
    tests = sum(len(detector_configs(spec, s)) for s in streams.values())
    return MonitorPlan(
        monitor=monitor,
        streams=streams,
        factory=spec_factory(spec, tests_in_monitor=max(tests, 1)),
        join=JoinConfig(max_delay_s=parse_duration(spec.label_join.max_delay)),
        min_samples=spec.detectors.min_samples,
        fdr=spec.detectors.fdr,
        multiple_testing=spec.detectors.multiple_testing.value,
        alarm_hold_s=spec.alarm_hold_seconds(),
        gates=detector_gates(spec, streams),
    )


def warm_up(plan: MonitorPlan) -> float:
    """Run every detector type of the plan once on its own reference; return the seconds.

    Detector kernels are compiled (numba) or loaded from the on-disk cache the first
    time they run in a process. Doing that at start-up, before the shard reports
    healthy, keeps it out of the first handoff a new shard receives, which would
    otherwise stretch the reshard pause by a second or more.
    """
    import time

    from driftwarden.drift_worker.streams import StreamState

    started = time.perf_counter()
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for spec in plan.streams.values():
        detectors = plan.factory(spec)
        key = (spec.kind, tuple(sorted(type(d).__name__ for d in detectors.values())))
        if key in seen or spec.reference is None:
            continue
        seen.add(key)
        sample: Any = spec.reference[:512]  # enough to run every kernel, cheap for MMD
        if spec.kind == "performance":
            sample = np.asarray(sample, dtype=np.float64)
        for det in detectors.values():
            try:
                det.update_many(sample)
                type(det).from_state(det.to_state())
            except (TypeError, ValueError):
                pass  # a detector that cannot take its own reference is reported when used
        StreamState.from_state(
            spec, StreamState(spec=spec, detectors=detectors).to_state(), plan.factory, plan.join
        )
    return time.perf_counter() - started
