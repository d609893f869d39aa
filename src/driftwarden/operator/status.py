"""DriftMonitor status as a pure function of what the operator observed.

``compute_status`` returns the whole status, conditions included, as one dict:
merge-patch replaces lists, so the condition list is always computed whole.
A condition's ``lastTransitionTime`` changes only when its ``status`` changes
(the rule of apimachinery's meta.SetStatusCondition).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from driftwarden.common import names
from driftwarden.common.contracts import DetectorStatus, WorkerStatus
from driftwarden.common.spec import (
    DEFAULT_MODEL_REPLICAS,
    MAX_DETECTION_ENTRIES,
    Condition,
    ConditionStatus,
    DetectionStatus,
    DetectorThresholds,
)
from driftwarden.operator.builders import worker_selector
from driftwarden.operator.monitor import Monitor

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
DATA_DRIFT = "DataDrift"
CONCEPT_DRIFT = "ConceptDrift"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED, DATA_DRIFT, CONCEPT_DRIFT)
MAX_LISTED_STREAMS = 50


@dataclasses.dataclass(frozen=True)
class DriftObservation:
    """What the workers' /status endpoints said, merged over shards."""

    shards_asked: int
    shards_answered: int
    drifting: tuple[str, ...] = ()
    last_drift_time: str | None = None
    # live feature streams over the shards that answered (the data-drift share's denominator)
    feature_streams: int = 0
    errors: tuple[str, ...] = ()
    # per detector name, over the shards that answered (summarise_detectors)
    detectors: tuple[DetectorThresholds, ...] = ()

    @property
    def complete(self) -> bool:
        return self.shards_asked > 0 and self.shards_answered == self.shards_asked


@dataclasses.dataclass(frozen=True)
class Observation:
    """Everything the status depends on, gathered by the reconciler."""

    shards: int
    epoch: int
    apply_error: str | None = None
    deployment: Mapping[str, Any] | None = None
    statefulset: Mapping[str, Any] | None = None
    drift: DriftObservation | None = None
    skipped_kinds: tuple[str, ...] = ()
    # a scale-down waiting for the shards' handoffs: what it waits for
    handing_off: str | None = None


def _significant(x: float) -> float:
    # 6 digits: readable in kubectl, and a threshold recomputed on another shard with
    # a different rounding does not rewrite the status
    return float(f"{x:.6g}")


def summarise_detectors(docs: Sequence[WorkerStatus]) -> tuple[DetectorThresholds, ...]:
    """Return one threshold summary per detector name over every live stream in ``docs``.

    Bounded by the detector names a spec can hold (``MAX_DETECTION_ENTRIES``), not by
    the number of streams: a 500-feature monitor has as many entries as a 5-feature one.
    """
    seen: dict[str, list[DetectorStatus]] = {}
    for doc in docs:
        for stream in doc.streams.values():
            for name, det in stream.detectors.items():
                seen.setdefault(name, []).append(det)
    out = []
    for name in sorted(seen)[:MAX_DETECTION_ENTRIES]:
        dets = seen[name]
        thresholds = [d.threshold for d in dets if d.threshold is not None]
        budgets = [d.false_alarm_budget for d in dets if d.false_alarm_budget is not None]
        out.append(
            DetectorThresholds(
                detector=name,
                streams=len(dets),
                drifting_streams=sum(d.drift for d in dets),
                threshold_min=_significant(min(thresholds)) if thresholds else None,
                threshold_max=_significant(max(thresholds)) if thresholds else None,
                values_per_false_alarm=_significant(min(budgets)) if budgets else None,
            )
        )
    return tuple(out)


def format_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rollout(obj: Mapping[str, Any] | None, want: int, what: str) -> tuple[bool, int, str]:
    """Return (done, ready count, message) for a Deployment or StatefulSet."""
    if obj is None:
        return False, 0, f"{what} does not exist yet"
    meta, status = obj.get("metadata", {}), obj.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    current = int(status.get("replicas") or 0)
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False, ready, f"{what}: controller has not observed the latest spec yet"
    if updated < want:
        return False, ready, f"{what}: {updated}/{want} pods updated"
    if ready < want:
        return False, ready, f"{what}: {ready}/{want} pods ready"
    if current > want:
        return False, ready, f"{what}: {current - want} old pods terminating"
    return True, ready, f"{what}: {ready}/{want} pods ready"


def _model_replicas_wanted(monitor: Monitor, dep: Mapping[str, Any] | None) -> int:
    """Return the model-server replicas a finished rollout has: the spec's, or the HPA's."""
    model = monitor.spec.model
    if model.autoscaling is None:
        return model.replicas or DEFAULT_MODEL_REPLICAS
    # The autoscaler owns the Deployment's replicas; whatever it set is the target.
    replicas = ((dep or {}).get("spec") or {}).get("replicas")
    return int(replicas) if replicas is not None else model.autoscaling.min_replicas


def _deployment_failure(dep: Mapping[str, Any] | None) -> str | None:
    for cond in (dep or {}).get("status", {}).get("conditions") or []:
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return f"model server: {cond.get('reason')}: {cond.get('message')}"
        if (
            cond.get("type") == "Progressing"
            and cond.get("status") == "False"
            and cond.get("reason") == "ProgressDeadlineExceeded"
        ):
            return f"model server: {cond.get('message')}"
    return None


def _is_concept(stream: str) -> bool:
    return stream == names.STREAM_PERFORMANCE


def _is_feature(stream: str) -> bool:
    return stream.startswith(names.feature_stream(""))


def _listed(streams: Sequence[str]) -> str:
    return ", ".join(streams[:10]) + (" ..." if len(streams) > 10 else "")


def _data_drift(monitor: Monitor, drift: DriftObservation) -> tuple[str, str, str, str]:
    """Return the DataDrift condition: what the DriftwardenDataDrift alert compares.

    The share of feature streams whose verdict is drift (the verdict already passed the
    minSamples gate and multiple testing) against ``alerts.dataDriftShare``, over the
    shards that answered, as the alert's recorded share is over the shards scraped.
    Prediction and embedding drift have alerts of their own and do not count.
    """
    features = [s for s in drift.drifting if _is_feature(s)]
    total = max(drift.feature_streams, len(features))
    wanted = monitor.spec.alerts.data_drift_share
    share = len(features) / total if total else 0.0
    counted = (
        f"{len(features)} of {total} feature streams drifting ({share:.0%}; "
        f"dataDriftShare {wanted:.0%})"
    )
    if features and share >= wanted:
        return (
            DATA_DRIFT,
            ConditionStatus.TRUE,
            "DriftDetected",
            f"{counted}: {_listed(features)}",
        )
    if not drift.complete:
        return (
            DATA_DRIFT,
            ConditionStatus.UNKNOWN,
            "PartialWorkerStatus",
            f"{drift.shards_answered}/{drift.shards_asked} shards answered, {counted} on "
            "those; the rest are unreachable",
        )
    if features:
        return (
            DATA_DRIFT,
            ConditionStatus.FALSE,
            "BelowDataDriftShare",
            f"{counted}: {_listed(features)}",
        )
    return (DATA_DRIFT, ConditionStatus.FALSE, "NoDrift", "no data drift on any shard")


def _conditions(monitor: Monitor, obs: Observation) -> list[tuple[str, str, str, str]]:
    """Return (type, status, reason, message) for every condition type, in order."""
    model_done, _, model_msg = _rollout(
        obs.deployment, _model_replicas_wanted(monitor, obs.deployment), "model server"
    )
    workers_done, _, workers_msg = _rollout(obs.statefulset, obs.shards, "drift workers")
    failure = _deployment_failure(obs.deployment)
    out: list[tuple[str, str, str, str]] = []
    skipped = (
        f" (not rendered: {', '.join(obs.skipped_kinds)} CRDs are not installed)"
        if obs.skipped_kinds
        else ""
    )

    if obs.apply_error:
        out.append((READY, ConditionStatus.FALSE, "ApplyFailed", obs.apply_error))
        out.append((PROGRESSING, ConditionStatus.FALSE, "ApplyFailed", obs.apply_error))
        out.append((DEGRADED, ConditionStatus.TRUE, "ApplyFailed", obs.apply_error))
    else:
        if obs.handing_off:
            out.append((READY, ConditionStatus.FALSE, "HandingOff", obs.handing_off))
            out.append((PROGRESSING, ConditionStatus.TRUE, "HandingOff", obs.handing_off))
        elif model_done and workers_done:
            out.append(
                (
                    READY,
                    ConditionStatus.TRUE,
                    "AllReplicasReady",
                    f"{model_msg}; {workers_msg}{skipped}",
                )
            )
            out.append(
                (
                    PROGRESSING,
                    ConditionStatus.FALSE,
                    "Reconciled",
                    f"every child matches generation {monitor.generation}",
                )
            )
        else:
            reason = "WorkersNotReady" if model_done else "ModelServerNotReady"
            pending = "; ".join(
                m for done, m in ((model_done, model_msg), (workers_done, workers_msg)) if not done
            )
            out.append((READY, ConditionStatus.FALSE, reason, pending))
            out.append((PROGRESSING, ConditionStatus.TRUE, "RollingOut", pending))
        if failure:
            out.append((DEGRADED, ConditionStatus.TRUE, "ModelServerFailing", failure))
        else:
            out.append((DEGRADED, ConditionStatus.FALSE, "AsExpected", "no failures observed"))

    drift = obs.drift
    concept = [s for s in (drift.drifting if drift else ()) if _is_concept(s)]
    for ctype, streams, what in ((DATA_DRIFT, [], "data"), (CONCEPT_DRIFT, concept, "concept")):
        if drift is None or drift.shards_answered == 0:
            why = "; ".join(drift.errors[:3]) if drift and drift.errors else "no shard answered yet"
            out.append(
                (
                    ctype,
                    ConditionStatus.UNKNOWN,
                    "WorkerStatusUnavailable",
                    f"cannot read the drift workers' /status: {why}",
                )
            )
        elif ctype == DATA_DRIFT:
            out.append(_data_drift(monitor, drift))
        elif streams:
            out.append(
                (
                    ctype,
                    ConditionStatus.TRUE,
                    "DriftDetected",
                    f"{len(streams)} stream(s) drifting: {_listed(streams)}",
                )
            )
        elif not drift.complete:
            out.append(
                (
                    ctype,
                    ConditionStatus.UNKNOWN,
                    "PartialWorkerStatus",
                    (
                        f"{drift.shards_answered}/{drift.shards_asked} shards answered, none "
                        f"reports {what} drift; the rest are unreachable"
                    ),
                )
            )
        else:
            out.append((ctype, ConditionStatus.FALSE, "NoDrift", f"no {what} drift on any shard"))
    return out


def merge_conditions(
    previous: Sequence[Mapping[str, Any]],
    fresh: Sequence[tuple[str, str, str, str]],
    *,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Return the new condition list; transition times move only on a status change."""
    old = {c.get("type"): c for c in previous}
    out = []
    for ctype, status, reason, message in fresh:
        before = old.get(ctype)
        changed = before is None or before.get("status") != status
        condition = Condition(
            type=ctype,
            status=ConditionStatus(status),
            reason=reason,
            message=message[:32768],
            last_transition_time=now if changed else before["lastTransitionTime"],
            observed_generation=generation,
        )
        out.append(condition.model_dump(by_alias=True, mode="json"))
    return out


def compute_status(
    monitor: Monitor,
    previous: Mapping[str, Any],
    obs: Observation,
    now: dt.datetime,
) -> dict[str, Any]:
    """Return the complete status to publish for ``monitor``."""
    stamp = format_time(now)
    conditions = merge_conditions(
        previous.get("conditions") or [],
        _conditions(monitor, obs),
        generation=monitor.generation,
        now=stamp,
    )
    sts_status = (obs.statefulset or {}).get("status") or {}
    dep_status = (obs.deployment or {}).get("status") or {}
    status: dict[str, Any] = {
        "observedGeneration": (
            monitor.generation if not obs.apply_error else previous.get("observedGeneration")
        ),
        "conditions": conditions,
        "shards": obs.shards,
        "readyShards": int(sts_status.get("readyReplicas") or 0),
        "shardEpoch": obs.epoch,
        "selector": worker_selector(monitor.name),
        "modelReplicas": int(dep_status.get("availableReplicas") or 0),
    }
    drift = obs.drift
    if drift is not None and drift.shards_answered > 0:
        status["driftingStreams"] = len(drift.drifting)
        status["driftingStreamNames"] = sorted(drift.drifting)[:MAX_LISTED_STREAMS]
    last = drift.last_drift_time if drift else None
    if last is None:
        # No timestamp from the workers: the moment a drift condition turned True.
        for cond in conditions:
            if (
                cond["type"] in (DATA_DRIFT, CONCEPT_DRIFT)
                and cond["status"] == ConditionStatus.TRUE
            ):
                last = max(last or "", cond["lastTransitionTime"])
    answered = drift is not None and drift.shards_answered > 0
    status["detection"] = DetectionStatus(
        values_per_false_alarm=monitor.spec.detectors.values_per_false_alarm,
        # always present (possibly empty): a merge patch replaces a list whole
        detectors=list(drift.detectors) if drift is not None and answered else [],
    ).model_dump(by_alias=True, mode="json", exclude_none=True)
    last = max(filter(None, (last, previous.get("lastDriftTime"))), default=None)
    if last:
        status["lastDriftTime"] = last
    if status["observedGeneration"] is None:
        del status["observedGeneration"]
    return status


def status_patch(previous: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Return the merge patch turning ``previous`` into ``new`` ({} when nothing changed).

    Only the operator's own keys are compared; keys it dropped are nulled.
    """
    patch: dict[str, Any] = {}
    for key, value in new.items():
        if previous.get(key) != value:
            patch[key] = value
    for key in previous:
        if key not in new and key in _OWN_KEYS:
            patch[key] = None
    return patch


_OWN_KEYS = frozenset(
    {
        "observedGeneration",
        "conditions",
        "shards",
        "readyShards",
        "shardEpoch",
        "selector",
        "modelReplicas",
        "driftingStreams",
        "driftingStreamNames",
        "lastDriftTime",
        "detection",
    }
)
