"""The reconcile pass against an in-memory API: idempotence, restores, resharding, pruning.

The fake API keeps objects by path, bumps resourceVersion on every write, adds server
defaults and a status, as the API server does; the cluster tier repeats these checks
against a real one.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import logging
from typing import Any

import httpx
import pytest

from driftwarden.common.contracts import WorkerStatus
from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import MAX_DETECTION_ENTRIES, DriftMonitorStatus
from driftwarden.operator import builders
from driftwarden.operator.kube import FIELD_MANAGER, ApiError, kind_of
from driftwarden.operator.monitor import Monitor
from driftwarden.operator.reconcile import (
    ChildCache,
    MonitorState,
    Reconciler,
    RetryLater,
    child_key,
    is_subset,
    overlay,
)
from driftwarden.operator.settings import OperatorSettings
from driftwarden.operator.status import (
    DriftObservation,
    Observation,
    compute_status,
    merge_conditions,
    status_patch,
    summarise_detectors,
)
from driftwarden.operator.workers import probe_workers
from driftwarden.testing.operator import (
    FAKE_DRIFT_TIME,
    FAKE_THRESHOLD,
    fake_stream,
    fake_worker_status,
)
from support.operator import FAKE
from support.operator import monitor as _monitor

LOG = logging.getLogger("test")


class FakeApi:
    """Just enough of KubeApi: objects by key, versions, defaults, write counters."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.version = 100
        self.writes: dict[tuple[str, str], int] = {}
        self.status: dict[str, Any] = {}
        self.fail_kind: str | None = None
        self.missing_crds: set[str] = set()
        self.invalid_on_apply: set[str] = set()
        self.gets = 0
        # Field managers of each Deployment's spec.replicas, as server-side apply tracks them.
        self.replica_owners: dict[tuple[str, str, str, str], set[str]] = {}

    def _count(self, verb: str, kind: str) -> None:
        self.writes[(verb, kind)] = self.writes.get((verb, kind), 0) + 1

    def total_writes(self) -> int:
        return sum(self.writes.values())

    def _bump(self) -> str:
        self.version += 1
        return str(self.version)

    async def get(self, path: str) -> dict[str, Any] | None:
        self.gets += 1
        for key, obj in self.objects.items():
            if kind_of(obj).path(key[2], key[3]) == path:
                return copy.deepcopy(obj)
        return None

    async def apply(
        self, obj: dict[str, Any], *, force: bool = True, field_manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        self._count("apply", obj["kind"])
        if field_manager != FIELD_MANAGER:
            return self._apply_replicas_only(obj, force=force, manager=field_manager)
        if obj["kind"] == self.fail_kind:
            raise ApiError("PATCH", "/x", 500, '{"reason": "InternalError", "message": "boom"}')
        if obj["kind"] in self.invalid_on_apply:
            self.invalid_on_apply.discard(obj["kind"])
            raise ApiError("PATCH", "/x", 422, '{"reason": "Invalid", "message": "dup port"}')
        if obj["kind"] in self.missing_crds:
            raise ApiError("PATCH", "/x", 404, '{"reason": "NotFound", "message": "no kind"}')
        key = child_key(obj)
        stored = copy.deepcopy(obj)
        held = self.objects.get(key)
        stored["metadata"]["resourceVersion"] = self._bump()
        stored["metadata"]["uid"] = held["metadata"]["uid"] if held else f"uid-{self.version}"
        stored["metadata"]["generation"] = held["metadata"].get("generation", 0) + 1 if held else 1
        if obj["kind"] == "Deployment":
            self._own_replicas(key, stored, held)
        if obj["kind"] in ("Deployment", "StatefulSet"):
            # Server defaults the operator never sets.
            stored["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
            stored["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = (
                "/dev/termination-log"
            )
            stored["status"] = (held or {}).get("status", {})
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def _own_replicas(
        self, key: tuple[str, str, str, str], stored: dict[str, Any], held: dict[str, Any] | None
    ) -> None:
        """Server-side apply's rule for spec.replicas: a field its last manager drops resets."""
        owners = self.replica_owners.setdefault(key, set())
        if "replicas" in stored["spec"]:
            owners.clear()  # forced: the operator takes it over
            owners.add(FIELD_MANAGER)
            return
        owners.discard(FIELD_MANAGER)
        kept = (held or {}).get("spec", {}).get("replicas")
        stored["spec"]["replicas"] = kept if owners and kept is not None else 1

    def _apply_replicas_only(
        self, obj: dict[str, Any], *, force: bool, manager: str
    ) -> dict[str, Any]:
        key = child_key(obj)
        held = self.objects[key]
        want = obj["spec"]["replicas"]
        owners = self.replica_owners.setdefault(key, set())
        if held["spec"].get("replicas") != want and owners - {manager} and not force:
            raise ApiError("PATCH", "/x", 409, '{"reason": "Conflict", "message": "owned"}')
        if held["spec"].get("replicas") != want:
            owners.clear()
        owners.add(manager)
        held["spec"]["replicas"] = want
        held["metadata"]["resourceVersion"] = self._bump()
        return copy.deepcopy(held)

    def scale_as_autoscaler(self, key: tuple[str, str, str, str], replicas: int) -> None:
        """Change replicas through the scale subresource, as the HPA controller does."""
        obj = self.objects[key]
        obj["spec"]["replicas"] = replicas
        obj["metadata"]["resourceVersion"] = self._bump()
        # An update that changes a field takes it from every other manager.
        self.replica_owners[key] = {"horizontal-pod-autoscaler"}

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._count("create", obj["kind"])
        key = child_key(obj)
        if key in self.objects:
            raise ApiError("POST", "/x", 409, '{"reason": "AlreadyExists", "message": "exists"}')
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = self._bump()
        self.objects[key] = stored
        return copy.deepcopy(stored)

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._count("replace", obj["kind"])
        key = child_key(obj)
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = self._bump()
        self.objects[key] = stored
        return copy.deepcopy(stored)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self._count("delete", kind)
        return self.objects.pop((api_version, kind, namespace, name), None) is not None

    async def patch_status(
        self, gv: str, plural: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        self._count("patch-status", plural)
        for key, value in patch.items():
            if value is None:
                self.status.pop(key, None)
            else:
                self.status[key] = copy.deepcopy(value)
        return {"metadata": {"resourceVersion": self._bump()}, "status": dict(self.status)}

    # --- what controllers and people do ---------------------------------------------------

    def make_ready(self) -> None:
        for obj in self.objects.values():
            if obj["kind"] in ("Deployment", "StatefulSet"):
                want = obj["spec"]["replicas"]
                obj["status"] = {
                    "observedGeneration": obj["metadata"]["generation"],
                    "replicas": want,
                    "readyReplicas": want,
                    "updatedReplicas": want,
                    "availableReplicas": want,
                }
                obj["metadata"]["resourceVersion"] = self._bump()


class Harness:
    def __init__(self, settings: OperatorSettings | None = None) -> None:
        self.api = FakeApi()
        self.cache = ChildCache()
        self.settings = settings or OperatorSettings(worker_status_url="")
        self.reconciler = Reconciler(self.api, self.cache, self.settings, FAKE, None)  # type: ignore[arg-type]
        self.state = MonitorState()
        self.spec: dict[str, Any] = {"model": {"bundle": "builtin://diamonds"}}
        self.generation = 1
        self.version = 1

    def body(self) -> dict[str, Any]:
        return {
            "apiVersion": "driftwarden.io/v1alpha1",
            "kind": "DriftMonitor",
            "metadata": {
                "name": "diamonds",
                "namespace": "ml",
                "uid": "0b7f3f6e-7d0e-4e4c-9a55-3f1c9d1f2a10",
                "generation": self.generation,
                "resourceVersion": str(self.version),
                "labels": {},
            },
            "spec": copy.deepcopy(self.spec),
            "status": copy.deepcopy(self.api.status),
        }

    def reconciler_monitor(self) -> Monitor:
        return Monitor.from_body(self.body())

    def watch(self) -> None:
        """Deliver the current objects to the cache, as kopf's watch handlers do."""
        for obj in self.api.objects.values():
            self.cache.put(obj)

    def run(self, *, sync: bool = True) -> int:
        before = self.api.total_writes()
        self.version = self.api.version + 1  # the body kopf hands over is the latest
        asyncio.run(self.reconciler.reconcile(self.body(), self.state, LOG))
        if sync:
            self.watch()
        return self.api.total_writes() - before


def test_first_pass_creates_every_child_and_an_idle_pass_writes_nothing() -> None:
    h = Harness()
    writes = h.run()
    kinds = sorted(k[1] for k in h.api.objects)
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "Service",
            "Service",
            "Deployment",
            "StatefulSet",
            "NetworkPolicy",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "PodDisruptionBudget",
            "ServiceMonitor",
            "ServiceMonitor",
            "PrometheusRule",
            "Secret",
        ]
    )
    assert writes == len(kinds) + 1  # every child plus one status patch
    assert h.api.gets == 0  # a brand-new monitor has nothing to read back
    h.api.make_ready()
    h.watch()
    assert h.run() == 1  # Ready flips: one status patch
    assert h.api.status["conditions"][0]["status"] == "True"
    assert h.run() == 0
    assert h.run() == 0
    # A restarted operator: empty cache and state, one GET per child, zero writes.
    h.cache = ChildCache()
    h.reconciler = Reconciler(h.api, h.cache, h.settings, FAKE, None)  # type: ignore[arg-type]
    h.state = MonitorState()
    assert h.run() == 0
    assert h.api.gets == len(kinds)  # one read per child it had not cached


def test_without_the_hash_skip_every_pass_reapplies_every_child() -> None:
    h = Harness(OperatorSettings(worker_status_url="", input_hash_skip=False))
    h.run()
    h.api.make_ready()
    h.watch()
    h.run()
    # every child re-applied; the credential Secret is created once, never re-applied
    assert h.run() == len(h.api.objects) - 1


def test_a_child_deleted_or_edited_by_hand_is_restored() -> None:
    h = Harness()
    h.run()
    h.api.make_ready()
    h.watch()
    h.run()
    key = ("apps/v1", "Deployment", "ml", "diamonds-model")
    del h.api.objects[key]
    h.cache.remove(key)
    h.run()
    assert key in h.api.objects
    assert h.api.writes[("apply", "Deployment")] == 2
    # The restored Deployment's pods are not ready yet, and the status says so.
    assert _conditions(h.api.status)["Ready"]["reason"] == "ModelServerNotReady"

    h.api.objects[key]["spec"]["replicas"] = 7  # kubectl scale deployment by hand
    h.api.objects[key]["metadata"]["resourceVersion"] = h.api._bump()
    h.watch()
    h.run()
    assert h.api.objects[key]["spec"]["replicas"] == 2
    assert h.api.writes[("apply", "Deployment")] == 3


def test_an_edit_apply_cannot_merge_is_replaced_with_the_desired_fields() -> None:
    h = Harness()
    h.run()
    key = ("v1", "Service", "ml", "diamonds-model")
    svc = h.api.objects[key]
    svc["spec"]["ports"] = [{"name": "http", "port": 9999, "targetPort": "http"}]
    svc["spec"]["clusterIP"] = "10.96.0.7"  # server-assigned, must survive
    svc["metadata"]["resourceVersion"] = h.api._bump()
    h.api.invalid_on_apply = {"Service"}  # apply would keep both port entries
    h.watch()
    h.run()
    restored = h.api.objects[key]
    assert [p["port"] for p in restored["spec"]["ports"]] == [8000]
    assert restored["spec"]["clusterIP"] == "10.96.0.7"
    assert h.api.writes[("replace", "Service")] == 1


def test_overlay_replaces_lists_and_keeps_unset_fields() -> None:
    actual = {
        "spec": {"clusterIP": "1.2.3.4", "ports": [{"port": 1}, {"port": 2}]},
        "metadata": {"uid": "u", "labels": {"a": "1", "b": "2"}},
    }
    desired = {"spec": {"ports": [{"port": 1}]}, "metadata": {"labels": {"a": "x"}}}
    assert overlay(actual, desired) == {
        "spec": {"clusterIP": "1.2.3.4", "ports": [{"port": 1}]},
        "metadata": {"uid": "u", "labels": {"a": "x", "b": "2"}},
    }


def test_scaling_publishes_a_new_epoch_and_the_statefulset_follows() -> None:
    h = Harness()
    h.spec["workers"] = {"shards": 3}
    h.run()
    assert h.api.status["shardEpoch"] == 1
    for shards, epoch in ((5, 2), (2, 3)):
        h.spec["workers"] = {"shards": shards}
        h.generation += 1
        h.run()
        sts = h.api.objects[("apps/v1", "StatefulSet", "ml", "diamonds-workers")]
        config = h.api.objects[("v1", "ConfigMap", "ml", "diamonds-driftwarden")]
        shard_map = builders.read_shard_map(config)
        assert sts["spec"]["replicas"] == shards
        assert (shard_map.epoch, shard_map.shards) == (epoch, shards)
        assert (h.api.status["shards"], h.api.status["shardEpoch"]) == (shards, epoch)
    assert shard_map.history == ((1, 3), (2, 5))
    h.api.make_ready()
    h.watch()
    h.run()
    assert h.run() == 0  # the epoch is stable while the shard count is


def test_removing_the_receivers_prunes_the_alertmanager_config() -> None:
    h = Harness()
    ref = {"name": "hook", "key": "url"}
    h.spec["alerts"] = {"receivers": [{"name": "oncall", "webhook": {"urlSecretRef": ref}}]}
    h.run()
    key = ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig", "ml", "diamonds-driftwarden")
    assert key in h.api.objects
    h.spec["alerts"] = {}
    h.generation += 1
    h.run()
    assert key not in h.api.objects
    assert h.api.writes[("delete", "AlertmanagerConfig")] == 1


def test_missing_prometheus_operator_crds_are_skipped_and_reported() -> None:
    h = Harness()
    h.api.missing_crds = {"ServiceMonitor", "PrometheusRule"}
    h.run()
    h.api.make_ready()
    h.watch()
    h.run()
    ready = next(c for c in h.api.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert "PrometheusRule, ServiceMonitor CRDs are not installed" in ready["message"]
    assert h.run() == 0  # not retried on every pass


def test_apply_failure_is_reported_in_status_and_retried() -> None:
    h = Harness()
    h.api.fail_kind = "StatefulSet"
    with pytest.raises(RetryLater):
        h.run()
    conditions = {c["type"]: c for c in h.api.status["conditions"]}
    assert conditions["Ready"]["reason"] == "ApplyFailed"
    assert conditions["Degraded"]["status"] == "True"
    assert "boom" in conditions["Degraded"]["message"]
    h.api.fail_kind = None
    h.run()
    assert {c["type"]: c for c in h.api.status["conditions"]}["Degraded"]["status"] == "False"


def test_the_status_the_operator_wrote_wins_over_a_stale_body() -> None:
    h = Harness()
    h.run()
    stale = h.body()
    stale["status"] = {}
    stale["metadata"]["resourceVersion"] = "1"
    before = h.api.total_writes()
    asyncio.run(h.reconciler.reconcile(stale, h.state, LOG))
    assert h.api.total_writes() == before


# --- is_subset, cache ordering ---------------------------------------------------------


def test_is_subset_ignores_server_defaults_but_not_edits() -> None:
    desired = {
        "spec": {
            "replicas": 2,
            "ports": [{"port": 80}],
            "resources": {"requests": {"memory": "1024Mi", "cpu": "0.1"}},
        }
    }
    actual = {
        "spec": {
            "replicas": 2,
            "ports": [{"port": 80, "protocol": "TCP"}],
            "resources": {"requests": {"memory": "1Gi", "cpu": "100m"}},
        },
        "status": {},
    }
    assert is_subset(desired, actual)
    assert not is_subset(desired, {**actual, "spec": {**actual["spec"], "replicas": 3}})
    assert not is_subset({"a": [1, 2]}, {"a": [1, 2, 3]})
    assert not is_subset({"a": {"b": 1}}, {"a": None})
    assert not is_subset({"requests": {"memory": "1Gi"}}, {"requests": {"memory": "2Gi"}})
    assert not is_subset({"image": "1Gi"}, {"image": "1024Mi"})  # quantities only in resources


def test_cache_never_goes_back_to_an_older_version() -> None:
    cache = ChildCache()
    new = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "a",
            "namespace": "n",
            "resourceVersion": "20",
            "managedFields": [{"manager": "x"}],
            "ownerReferences": [{"kind": "DriftMonitor", "controller": True, "uid": "u"}],
        },
    }
    old = copy.deepcopy(new)
    old["metadata"]["resourceVersion"] = "10"
    assert cache.put(new)
    assert not cache.put(old)
    assert not cache.put(new)
    assert "managedFields" not in cache.get(child_key(new))["metadata"]
    assert cache.owned_by("u") == [child_key(new)]
    cache.remove(child_key(new))
    assert cache.owned_by("u") == [] and len(cache) == 0


# --- status ---------------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=5)


def _ready(kind: str, want: int, ready: int, generation: int = 1) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": generation,
            "replicas": want,
            "readyReplicas": ready,
            "updatedReplicas": want,
            "availableReplicas": ready,
        },
    }


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_status_conditions_and_transition_times() -> None:
    monitor = _monitor({"model": {"bundle": "builtin://d"}})
    rolling = Observation(
        shards=3,
        epoch=1,
        deployment=_ready("Deployment", 2, 2),
        statefulset=_ready("StatefulSet", 3, 1),
    )
    first = compute_status(monitor, {}, rolling, NOW)
    cond = _conditions(first)
    assert [c["type"] for c in first["conditions"]] == [
        "Ready",
        "Progressing",
        "Degraded",
        "DataDrift",
        "ConceptDrift",
    ]
    assert (cond["Ready"]["status"], cond["Ready"]["reason"]) == ("False", "WorkersNotReady")
    assert "1/3 pods ready" in cond["Ready"]["message"]
    assert cond["Progressing"]["status"] == "True"
    assert cond["DataDrift"]["status"] == "Unknown"
    assert first["readyShards"] == 1 and first["shards"] == 3 and first["shardEpoch"] == 1
    assert first["selector"] == builders.worker_selector("diamonds")
    assert "driftingStreams" not in first

    same = compute_status(monitor, first, rolling, LATER)
    assert same == first  # nothing changed, not even a timestamp
    assert status_patch(first, same) == {}

    ready = Observation(
        shards=3,
        epoch=1,
        deployment=_ready("Deployment", 2, 2),
        statefulset=_ready("StatefulSet", 3, 3),
    )
    second = compute_status(monitor, first, ready, LATER)
    cond2 = _conditions(second)
    assert cond2["Ready"]["status"] == "True"
    assert cond2["Ready"]["lastTransitionTime"] == "2026-11-23T10:05:00Z"
    assert cond2["Degraded"]["lastTransitionTime"] == "2026-11-23T10:00:00Z"  # unchanged
    patch = status_patch(first, second)
    assert set(patch) == {"conditions", "readyShards"}


def test_status_drift_from_workers() -> None:
    monitor = _monitor({"model": {"bundle": "builtin://d"}})
    drift = DriftObservation(
        shards_asked=3, shards_answered=3, drifting=("feature:carat", "performance")
    )
    obs = Observation(shards=3, epoch=2, drift=drift)
    status = compute_status(monitor, {}, obs, NOW)
    cond = _conditions(status)
    assert cond["DataDrift"]["status"] == "True" and "feature:carat" in cond["DataDrift"]["message"]
    assert cond["ConceptDrift"]["status"] == "True"
    assert status["driftingStreams"] == 2
    assert status["lastDriftTime"] == "2026-11-23T10:00:00Z"
    partial = DriftObservation(shards_asked=3, shards_answered=2, errors=("shard 2: refused",))
    cond = _conditions(compute_status(monitor, status, Observation(3, 2, drift=partial), LATER))
    assert (cond["DataDrift"]["status"], cond["DataDrift"]["reason"]) == (
        "Unknown",
        "PartialWorkerStatus",
    )
    clean = DriftObservation(shards_asked=3, shards_answered=3)
    after = compute_status(monitor, status, Observation(3, 2, drift=clean), LATER)
    assert _conditions(after)["DataDrift"]["status"] == "False"
    assert after["lastDriftTime"] == "2026-11-23T10:00:00Z"  # kept


def _shard_doc(ordinal: int, streams: range, drifting: set[int]) -> WorkerStatus:
    """A shard holding ``feature:f<i>`` for i in ``streams``, each with two detectors."""
    out = {}
    for i in streams:
        stream = fake_stream(drift=i in drifting)
        cusum = stream.detectors["mixtureCusum"].model_copy(
            update={"threshold": 10.0 + i / 1000, "false_alarm_budget": 2.5e7}
        )
        ks = cusum.model_copy(
            update={"threshold": 0.01, "false_alarm_budget": None, "drift": False}
        )
        out[f"feature:f{i}"] = stream.model_copy(
            update={"detectors": {"mixtureCusum": cusum, "ks": ks}}
        )
    return fake_worker_status("n/diamonds", ordinal, 2, out)


def test_status_reports_the_budget_and_thresholds_per_detector_not_per_stream() -> None:
    monitor = _monitor(
        {"model": {"bundle": "builtin://d"}, "detectors": {"valuesPerFalseAlarm": 50_000_000}}
    )
    docs = [_shard_doc(0, range(300), {7}), _shard_doc(1, range(300, 600), {400, 401})]
    summary = summarise_detectors(docs)
    drift = DriftObservation(
        shards_asked=2, shards_answered=2, drifting=("feature:f7",), detectors=summary
    )
    status = compute_status(monitor, {}, Observation(shards=2, epoch=1, drift=drift), NOW)
    assert status["detection"] == {
        "valuesPerFalseAlarm": 50_000_000,
        "detectors": [  # 600 streams, two entries: one per detector name, sorted
            {
                "detector": "ks",
                "streams": 600,
                "driftingStreams": 0,
                "thresholdMin": 0.01,
                "thresholdMax": 0.01,
            },
            {
                "detector": "mixtureCusum",
                "streams": 600,
                "driftingStreams": 3,
                "thresholdMin": 10.0,
                "thresholdMax": 10.599,
                "valuesPerFalseAlarm": 2.5e7,
            },
        ],
    }
    # what the operator writes is the CRD's status model
    DriftMonitorStatus.model_validate(status)
    assert compute_status(monitor, status, Observation(2, 1, drift=drift), LATER) == status

    # no shard answered: the budget stays, the per-detector list empties (a merge patch
    # replaces the list whole)
    silent = DriftObservation(shards_asked=2, shards_answered=0, errors=("refused",))
    after = compute_status(monitor, status, Observation(2, 1, drift=silent), LATER)
    assert after["detection"] == {"valuesPerFalseAlarm": 50_000_000, "detectors": []}
    assert status_patch(status, after)["detection"] == after["detection"]


def test_the_detector_summary_is_bounded_and_skips_thresholds_that_are_not_finite() -> None:
    stream = fake_stream(drift=False)
    detectors = {
        f"ks#{k}": stream.detectors["mixtureCusum"].model_copy(update={"threshold": None})
        for k in range(MAX_DETECTION_ENTRIES + 5)
    }
    doc = fake_worker_status(
        "n/m", 0, 1, {"feature:a": stream.model_copy(update={"detectors": detectors})}
    )
    summary = summarise_detectors([doc])
    assert len(summary) == MAX_DETECTION_ENTRIES
    assert summary[0].threshold_min is None and summary[0].threshold_max is None


def test_deployment_failure_is_degraded() -> None:
    dep = _ready("Deployment", 2, 0)
    dep["status"]["conditions"] = [
        {
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": "quota exceeded",
        }
    ]
    status = compute_status(
        _monitor({"model": {"bundle": "builtin://d"}}), {}, Observation(3, 1, deployment=dep), NOW
    )
    cond = _conditions(status)["Degraded"]
    assert (cond["status"], cond["reason"]) == ("True", "ModelServerFailing")
    assert "quota exceeded" in cond["message"]


def test_merge_conditions_keeps_transition_time_on_reason_change() -> None:
    before = merge_conditions([], [("Ready", "False", "A", "a")], generation=1, now="t1")
    after = merge_conditions(before, [("Ready", "False", "B", "b")], generation=2, now="t2")
    assert after[0]["lastTransitionTime"] == "t1"
    assert (after[0]["reason"], after[0]["observedGeneration"]) == ("B", 2)


# --- worker /status -----------------------------------------------------------------


def _status(ordinal: int = 0, **streams: bool) -> httpx.Response:
    """A shard's /status answer: the typed document, ``stream=drift`` per stream."""
    doc = fake_worker_status(
        "n/m",
        ordinal,
        3,
        {
            name.replace("_", ":", 1): fake_stream(
                drift=drift, last_drift_time=FAKE_DRIFT_TIME if drift else None
            )
            for name, drift in streams.items()
        },
    )
    return httpx.Response(200, content=doc.to_json(), headers={"content-type": "application/json"})


def test_probe_workers_merges_shards_and_tolerates_unreachable_ones() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        ordinal = int(request.url.host.split("-")[-1])
        if ordinal == 2:
            raise httpx.ConnectError("connection refused", request=request)
        if ordinal == 1:
            return _status(ordinal, feature_x=True)
        return _status(ordinal, feature_y=False)

    async def go() -> DriftObservation:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await probe_workers(
                http, "http://w-{ordinal}/status", monitor="m", namespace="n", shards=3, timeout=1
            )

    obs = asyncio.run(go())
    assert (obs.shards_asked, obs.shards_answered) == (3, 2)
    assert obs.drifting == ("feature:x",)
    assert obs.last_drift_time == "2026-11-23T10:00:00Z"
    [cusum] = obs.detectors  # from the two shards that answered
    assert (cusum.detector, cusum.streams, cusum.drifting_streams) == ("mixtureCusum", 2, 1)
    assert cusum.threshold_min == cusum.threshold_max == FAKE_THRESHOLD
    assert len(obs.errors) == 1 and "shard 2" in obs.errors[0] and "ConnectError" in obs.errors[0]


def test_probe_workers_names_the_bad_field_of_a_malformed_status() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "w-1":
            doc = json.loads(_status(1, feature_x=True).content)
            doc["streams"]["feature:x"]["drift"] = "maybe"
            return httpx.Response(200, json=doc)
        return _status(0, feature_y=False)

    async def go() -> DriftObservation:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await probe_workers(
                http, "http://w-{ordinal}/status", monitor="m", namespace="n", shards=2, timeout=1
            )

    obs = asyncio.run(go())
    assert (obs.shards_asked, obs.shards_answered) == (2, 1)
    [error] = obs.errors
    assert (
        "shard 1" in error and "streams.feature:x.drift: Input should be a valid boolean" in error
    ), error


def test_a_reshard_pushes_the_new_map_to_every_old_and_new_shard() -> None:
    puts: list[tuple[str, ShardMap]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            puts.append((request.url.host, ShardMap.model_validate_json(request.content)))
            if request.url.host == "diamonds-workers-4":
                return httpx.Response(503, json={"error": "starting"})
            return httpx.Response(200, json={"adopted": 0})
        if request.url.path == "/v1/handoff":  # every shard settled: scale-downs go ahead
            return httpx.Response(200, json={"epoch": 99, "outgoing": [], "awaiting": []})
        return _status()

    h = Harness(
        OperatorSettings(worker_status_url="http://{monitor}-workers-{ordinal}:8080/status")
    )
    h.reconciler.http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    h.spec["workers"] = {"shards": 3}
    h.run()
    assert puts == []  # the first map reaches the shards through the ConfigMap
    for shards, epoch, reached in ((5, 2, 5), (2, 3, 5)):
        h.spec["workers"] = {"shards": shards}
        h.generation += 1
        h.run()
        pushed = puts[-reached:]
        assert sorted(host for host, _ in pushed) == [
            f"diamonds-workers-{k}" for k in range(reached)
        ]
        assert {(m.epoch, m.shards) for _, m in pushed} == {(epoch, shards)}
    assert len(puts) == 10
    h.run()
    assert len(puts) == 10  # a pass with a stable epoch pushes nothing


class FakeShards:
    """Shards answering PUT /v1/shardmap and GET /v1/handoff from what the test sets."""

    def __init__(self) -> None:
        self.epoch: dict[str, int] = {}
        self.outgoing: dict[str, list[str]] = {}
        self.puts: list[tuple[str, int]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if request.method == "PUT":
            shard_map = ShardMap.model_validate_json(request.content)
            self.puts.append((host, shard_map.epoch))
            self.epoch[host] = max(self.epoch.get(host, 0), shard_map.epoch)
            return httpx.Response(200, json={"adopted": shard_map.epoch})
        if request.url.path == "/v1/handoff":
            return httpx.Response(
                200,
                json={
                    "epoch": self.epoch.get(host, 1),
                    "outgoing": self.outgoing.get(host, []),
                    "awaiting": [],
                },
            )
        return _status()


def _replicas(h: Harness) -> int:
    return h.api.objects[("apps/v1", "StatefulSet", "ml", "diamonds-workers")]["spec"]["replicas"]


def test_a_scale_down_shrinks_the_statefulset_only_after_every_shard_handed_off() -> None:
    shards = FakeShards()
    h = Harness(
        OperatorSettings(worker_status_url="http://{monitor}-workers-{ordinal}:8080/status")
    )
    h.reconciler.http = httpx.AsyncClient(transport=httpx.MockTransport(shards.handler))
    h.spec["workers"] = {"shards": 3}
    h.run()
    assert _replicas(h) == 3
    shards.outgoing["diamonds-workers-2"] = ["feature:carat"]  # still pushing to its successor
    h.spec["workers"] = {"shards": 2}
    h.generation += 1
    h.run()
    config = h.api.objects[("v1", "ConfigMap", "ml", "diamonds-driftwarden")]
    assert builders.read_shard_map(config).shards == 2  # the new map is published ...
    assert sorted(shards.puts) == [(f"diamonds-workers-{k}", 2) for k in range(3)]  # and pushed
    assert _replicas(h) == 3  # ... but the pod being removed keeps running
    progressing = next(c for c in h.api.status["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "HandingOff"
    assert "shard 2 has 1 outgoing" in progressing["message"]
    assert h.state.next_pass_in == h.settings.scale_down_poll_seconds
    h.run()
    assert _replicas(h) == 3
    shards.outgoing.clear()  # the handoff is done
    h.run()
    assert _replicas(h) == 2
    assert h.state.next_pass_in is None
    h.api.make_ready()
    h.watch()
    h.run()
    assert next(c for c in h.api.status["conditions"] if c["type"] == "Ready")["status"] == "True"


def test_a_shard_that_has_not_seen_the_new_epoch_holds_the_scale_down() -> None:
    shards = FakeShards()
    h = Harness(
        OperatorSettings(worker_status_url="http://{monitor}-workers-{ordinal}:8080/status")
    )
    h.reconciler.http = httpx.AsyncClient(transport=httpx.MockTransport(shards.handler))
    h.spec["workers"] = {"shards": 3}
    h.run()
    original = shards.handler

    def deaf_shard_1(request: httpx.Request) -> httpx.Response:
        if request.url.host == "diamonds-workers-1" and request.method == "PUT":
            return httpx.Response(503, json={"error": "starting"})
        return original(request)

    h.reconciler.http = httpx.AsyncClient(transport=httpx.MockTransport(deaf_shard_1))
    h.spec["workers"] = {"shards": 2}
    h.generation += 1
    h.run()
    h.run()
    assert _replicas(h) == 3  # shard 1 still runs epoch 1: it does not know what to hand over
    h.reconciler.http = httpx.AsyncClient(transport=httpx.MockTransport(original))
    h.run()  # the push is repeated on every pass while the scale-down waits
    assert _replicas(h) == 2


def test_a_failed_apply_of_another_child_never_skips_the_map_push() -> None:
    shards = FakeShards()
    h = Harness(
        OperatorSettings(worker_status_url="http://{monitor}-workers-{ordinal}:8080/status")
    )
    h.reconciler.http = httpx.AsyncClient(transport=httpx.MockTransport(shards.handler))
    h.spec["workers"] = {"shards": 3}
    h.run()
    h.api.fail_kind = "StatefulSet"
    h.spec["workers"] = {"shards": 5}
    h.generation += 1
    with pytest.raises(RetryLater):
        h.run()
    assert sorted(shards.puts) == [(f"diamonds-workers-{k}", 2) for k in range(5)]


def test_the_credential_secret_is_created_once_mounted_and_signs_map_pushes() -> None:
    from driftwarden.common import auth

    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            tokens.append(request.headers.get("authorization", ""))
            return httpx.Response(200, json={"adopted": True})
        return _status()

    h = Harness(
        OperatorSettings(worker_status_url="http://{monitor}-workers-{ordinal}:8080/status")
    )
    h.reconciler.http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    h.run()
    secrets = [o for k, o in h.api.objects.items() if k[1] == "Secret"]
    assert len(secrets) == 1 and h.api.writes[("create", "Secret")] == 1
    secret = secrets[0]
    assert secret["metadata"]["name"] == "diamonds-driftwarden-credential"
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "DriftMonitor"
    monitor = h.state.credential
    assert monitor is not None and monitor.monitor == "ml/diamonds"
    # A restarted operator reads the same key back instead of making a new one.
    h.state = MonitorState()
    h.spec["workers"] = {"shards": 4}
    h.generation += 1
    h.run()
    assert h.api.writes[("create", "Secret")] == 1
    assert h.state.credential is not None and h.state.credential.key == monitor.key
    # The reshard's pushes carry an operator token the shards verify with that key.
    assert len(tokens) == 4
    verifier = auth.Verifier(monitor)
    for header in tokens:
        assert verifier.verify(header, {auth.ROLE_OPERATOR}).role == auth.ROLE_OPERATOR
    # Pods mount only their own file: the model server never sees the monitor key.
    sts = h.api.objects[("apps/v1", "StatefulSet", "ml", "diamonds-workers")]
    dep = h.api.objects[("apps/v1", "Deployment", "ml", "diamonds-model")]

    def items(obj: dict[str, Any]) -> list[str]:
        vols = obj["spec"]["template"]["spec"]["volumes"]
        (cred,) = [v for v in vols if v["name"] == "credential"]
        assert cred["secret"]["secretName"] == "diamonds-driftwarden-credential"
        return [i["key"] for i in cred["secret"]["items"]]

    assert items(sts) == [auth.WORKER_FILE]
    assert items(dep) == [auth.SENDER_FILE]


def test_a_credential_secret_for_another_monitor_is_reported_not_used() -> None:
    import base64

    from driftwarden.common import auth

    h = Harness()
    wrong = auth.Credential.generate("ml/other")
    key = ("v1", "Secret", "ml", "diamonds-driftwarden-credential")
    h.api.objects[key] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": key[3], "namespace": "ml", "resourceVersion": "1"},
        "data": {auth.WORKER_FILE: base64.b64encode(wrong.to_json().encode()).decode()},
    }
    with pytest.raises(RetryLater, match="ml/other"):
        h.run()
    assert h.state.credential is None
    degraded = [c for c in h.api.status["conditions"] if c["type"] == "Degraded"]
    assert degraded and degraded[0]["status"] == "True"
    assert "ml/other" in degraded[0]["message"]


# ------------------------------------------------------------------ autoscaling hand-over

_MODEL = ("apps/v1", "Deployment", "ml", "diamonds-model")
_HPA = ("autoscaling/v2", "HorizontalPodAutoscaler", "ml", "diamonds-model")


def _model_replicas(h: Harness) -> int:
    return int(h.api.objects[_MODEL]["spec"]["replicas"])


def test_an_autoscaled_model_server_starts_at_min_replicas_and_keeps_what_the_hpa_sets() -> None:
    h = Harness()
    h.spec = {
        "model": {
            "bundle": "builtin://diamonds",
            "autoscaling": {"minReplicas": 3, "maxReplicas": 9},
        }
    }
    h.run()
    assert _HPA in h.api.objects
    assert h.api.objects[_HPA]["spec"]["minReplicas"] == 3
    assert _model_replicas(h) == 3  # the floor, not the API server's default of 1
    h.api.make_ready()
    h.watch()
    h.run()
    assert h.run() == 0  # idle passes write nothing under autoscaling either

    h.api.scale_as_autoscaler(_MODEL, 7)
    h.watch()
    h.run()
    assert _model_replicas(h) == 7
    # A spec change that re-applies the Deployment (and rolls its pods) keeps them too.
    h.spec["model"]["maxInflightRequests"] = 64
    h.generation += 1
    h.run()
    assert h.api.writes[("apply", "Deployment")] >= 3
    assert _model_replicas(h) == 7
    h.api.make_ready()
    h.watch()
    h.run()
    # Ready is measured against what the autoscaler set.
    assert _conditions(h.api.status)["Ready"]["status"] == "True"
    assert h.api.status["modelReplicas"] == 7


def test_turning_autoscaling_on_keeps_the_live_replicas_and_off_restores_the_spec() -> None:
    h = Harness()
    h.spec = {"model": {"bundle": "builtin://diamonds", "replicas": 4}}
    h.run()
    h.watch()
    assert _model_replicas(h) == 4
    h.spec = {"model": {"bundle": "builtin://diamonds", "autoscaling": {"maxReplicas": 8}}}
    h.generation += 1
    h.run()
    # Without the hand-over the operator's dropped field would reset to 1 here.
    assert _model_replicas(h) == 4
    assert (
        "replicas"
        not in h.reconciler._model_deployment(h.reconciler_monitor(), h.state.desired)["spec"]
    )
    h.api.scale_as_autoscaler(_MODEL, 6)
    h.watch()
    h.run()
    assert _model_replicas(h) == 6

    h.spec = {"model": {"bundle": "builtin://diamonds", "replicas": 2}}
    h.generation += 1
    h.run()
    assert _HPA not in h.api.objects  # pruned with the autoscaling it came from
    assert _model_replicas(h) == 2
