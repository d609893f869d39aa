"""The operator against a real control plane: examples, validation, restores, GC, restart, scaling.

The operator runs in ``kopf.testing.KopfRunner`` as a ServiceAccount that holds exactly
the chart's generated RBAC rules, so every test also proves those rules are enough.
Worker pods are kwok fakes with no process, so the workers' ``/status`` is served by a
local fake and the operator is pointed at it.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from driftwarden.common import auth
from driftwarden.common import names as stream_names
from driftwarden.common.sharding import ShardMap, owner_of
from driftwarden.drift_worker.streams import StreamSpec
from driftwarden.operator import metrics
from driftwarden.operator.builders import credential_name
from driftwarden.operator.examples import examples
from driftwarden.operator.generate import dump_all
from driftwarden.testing.controlplane import ControlPlane
from driftwarden.testing.kube import describe_pods
from driftwarden.testing.localshards import LocalShards
from driftwarden.testing.operator import (
    FAKE_THRESHOLD,
    FakeWorkerStatus,
    install_crd,
    operator_writes,
    reconcile_passes,
    restricted_kubeconfig,
    run_operator,
)
from driftwarden.testing.waiting import wait_until

GROUP, VERSION, PLURAL = "driftwarden.io", "v1alpha1", "driftmonitors"
MONITORING = "monitoring.coreos.com"
TIMEOUT = 180.0


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def crd(control_plane: ControlPlane, k8s_api: client.ApiClient) -> None:
    install_crd(k8s_api)


@pytest.fixture(scope="module")
def worker_status() -> Iterator[FakeWorkerStatus]:
    with FakeWorkerStatus() as fake:
        yield fake


@pytest.fixture(scope="module")
def operator_kubeconfig(
    control_plane: ControlPlane,
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    """A kubeconfig for a ServiceAccount bound to exactly operator_rules()."""
    namespace = f"driftwarden-system-{secrets.token_hex(3)}"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    path = restricted_kubeconfig(
        k8s_api,
        control_plane.kubeconfig,
        tmp_path_factory.mktemp("operator") / "kubeconfig",
        namespace=namespace,
    )
    yield path
    rbac = client.RbacAuthorizationV1Api(k8s_api)
    rbac.delete_cluster_role_binding(f"{namespace}-driftwarden-operator")
    rbac.delete_cluster_role(f"{namespace}-driftwarden-operator")
    core_v1.delete_namespace(namespace)


def _env(worker_status: FakeWorkerStatus) -> dict[str, str]:
    return {
        "DRIFTWARDEN_OPERATOR__WORKER_STATUS_URL": worker_status.url_template,
        "DRIFTWARDEN_OPERATOR__WORKER_STATUS_INTERVAL_SECONDS": "1",
        "DRIFTWARDEN_OPERATOR__WORKER_STATUS_TIMEOUT_SECONDS": "2",
        "DRIFTWARDEN_OPERATOR__RESYNC_SECONDS": "20",
    }


@pytest.fixture
def start_operator(
    crd: None, operator_kubeconfig: Path, worker_status: FakeWorkerStatus
) -> Callable[[], Any]:
    """Return a context-manager factory running the operator; it must exit cleanly."""

    class _Run:
        def __enter__(self) -> Any:
            self._cm = run_operator(_env(worker_status), kubeconfig=operator_kubeconfig)
            self.runner = self._cm.__enter__()
            return self.runner

        def __exit__(self, *exc: object) -> None:
            self._cm.__exit__(*exc)
            assert self.runner.exit_code == 0, self.runner.output[-3000:]
            assert self.runner.exception is None, self.runner.output[-3000:]

    return _Run


@pytest.fixture
def operator(start_operator: Callable[[], Any]) -> Iterator[Any]:
    with start_operator() as runner:
        yield runner


# --------------------------------------------------------------------------- helpers


def _example(file_name: str) -> list[dict[str, Any]]:
    return [dict(o) for o in examples()[file_name][1]]


def _apply(
    plane: ControlPlane, namespace: str, objects: list[dict[str, Any]], *, check: bool = True
) -> Any:
    return plane.kubectl("apply", "-n", namespace, "-f", "-", input=dump_all(objects), check=check)


def _monitor(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def _condition(monitor: dict[str, Any], ctype: str) -> dict[str, Any]:
    for cond in monitor.get("status", {}).get("conditions", []):
        if cond["type"] == ctype:
            return cond
    return {}


def _wait_ready(
    custom: client.CustomObjectsApi,
    core_v1: client.CoreV1Api,
    namespace: str,
    name: str,
    *,
    generation: int | None = None,
) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        mon = _monitor(custom, namespace, name)
        cond = _condition(mon, "Ready")
        want = generation or mon["metadata"]["generation"]
        if cond.get("status") == "True" and mon["status"].get("observedGeneration") == want:
            return mon
        return None

    return wait_until(
        ready,
        timeout=TIMEOUT,
        interval=0.5,
        what=f"DriftMonitor {name} Ready",
        describe=lambda: json.dumps(
            {
                "status": _monitor(custom, namespace, name).get("status"),
                "pods": describe_pods(core_v1, namespace),
            }
        )[:4000],
    )


def _selector(name: str) -> str:
    return f"app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=driftwarden-operator"


def _children(k8s_api: client.ApiClient, namespace: str, name: str) -> dict[str, list[str]]:
    """Return kind -> sorted names of the monitor's children that exist now."""
    core, apps = client.CoreV1Api(k8s_api), client.AppsV1Api(k8s_api)
    custom = client.CustomObjectsApi(k8s_api)
    sel = _selector(name)
    out = {
        "ConfigMap": [
            o.metadata.name
            for o in core.list_namespaced_config_map(namespace, label_selector=sel).items
        ],
        "Service": [
            o.metadata.name
            for o in core.list_namespaced_service(namespace, label_selector=sel).items
        ],
        "Deployment": [
            o.metadata.name
            for o in apps.list_namespaced_deployment(namespace, label_selector=sel).items
        ],
        "StatefulSet": [
            o.metadata.name
            for o in apps.list_namespaced_stateful_set(namespace, label_selector=sel).items
        ],
    }
    networking = client.NetworkingV1Api(k8s_api)
    out["NetworkPolicy"] = [
        o.metadata.name
        for o in networking.list_namespaced_network_policy(namespace, label_selector=sel).items
    ]
    out["PodDisruptionBudget"] = [
        o.metadata.name
        for o in client.PolicyV1Api(k8s_api)
        .list_namespaced_pod_disruption_budget(namespace, label_selector=sel)
        .items
    ]
    out["HorizontalPodAutoscaler"] = [
        o.metadata.name
        for o in client.AutoscalingV2Api(k8s_api)
        .list_namespaced_horizontal_pod_autoscaler(namespace, label_selector=sel)
        .items
    ]
    for version, plural, kind in (
        ("v1", "servicemonitors", "ServiceMonitor"),
        ("v1", "prometheusrules", "PrometheusRule"),
        ("v1alpha1", "alertmanagerconfigs", "AlertmanagerConfig"),
    ):
        items = custom.list_namespaced_custom_object(
            MONITORING, version, namespace, plural, label_selector=sel
        )["items"]
        out[kind] = [o["metadata"]["name"] for o in items]
    return {k: sorted(v) for k, v in out.items() if v}


def _expected_children(name: str, *, receivers: bool) -> dict[str, list[str]]:
    out = {
        "ConfigMap": sorted([f"{name}-driftwarden", f"{name}-dashboard"]),
        "Service": sorted([f"{name}-model", f"{name}-workers"]),
        "Deployment": [f"{name}-model"],
        "StatefulSet": [f"{name}-workers"],
        "NetworkPolicy": sorted([f"{name}-model", f"{name}-workers"]),
        "PodDisruptionBudget": sorted([f"{name}-model", f"{name}-workers"]),
        "ServiceMonitor": sorted([f"{name}-model", f"{name}-workers"]),
        "PrometheusRule": [f"{name}-driftwarden"],
    }
    if receivers:
        out["AlertmanagerConfig"] = [f"{name}-driftwarden"]
    return out


def _shard_map(core_v1: client.CoreV1Api, namespace: str, name: str) -> ShardMap:
    data = core_v1.read_namespaced_config_map(f"{name}-driftwarden", namespace).data
    return ShardMap.model_validate_json(data["shardmap.json"])


def _table(plane: ControlPlane, namespace: str, *extra: str) -> dict[str, dict[str, str]]:
    """Return name -> column -> value from `kubectl get driftmonitors` (server-side table)."""
    lines = plane.kubectl("get", "driftmonitors", "-n", namespace, *extra).stdout.splitlines()
    header = lines[0]
    # Columns are aligned under their headers; an empty cell is blank, so cut by position.
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=False))
    names = [header[a:b].strip() for a, b in bounds]
    rows = {}
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in bounds]
        rows[cells[0]] = dict(zip(names, cells, strict=False))
    return rows


def _versions(k8s_api: client.ApiClient, namespace: str) -> dict[str, str]:
    """Return kind/name -> resourceVersion of every monitor and child in the namespace."""
    core, apps = client.CoreV1Api(k8s_api), client.AppsV1Api(k8s_api)
    custom = client.CustomObjectsApi(k8s_api)
    sel = "app.kubernetes.io/managed-by=driftwarden-operator"
    out = {}
    for kind, items in (
        ("ConfigMap", core.list_namespaced_config_map(namespace, label_selector=sel).items),
        ("Service", core.list_namespaced_service(namespace, label_selector=sel).items),
        ("Deployment", apps.list_namespaced_deployment(namespace, label_selector=sel).items),
        ("StatefulSet", apps.list_namespaced_stateful_set(namespace, label_selector=sel).items),
    ):
        out.update({f"{kind}/{o.metadata.name}": o.metadata.resource_version for o in items})
    for group, version, plural in (
        (MONITORING, "v1", "servicemonitors"),
        (MONITORING, "v1", "prometheusrules"),
        (GROUP, VERSION, PLURAL),
    ):
        for o in custom.list_namespaced_custom_object(group, version, namespace, plural)["items"]:
            out[f"{plural}/{o['metadata']['name']}"] = o["metadata"]["resourceVersion"]
    return out


def _settled_versions(
    k8s_api: client.ApiClient, namespace: str, quiet: float = 4.0
) -> dict[str, str]:
    """Return the versions once nothing has changed for ``quiet`` seconds (pods settled)."""

    def settled() -> dict[str, str] | None:
        first = _versions(k8s_api, namespace)
        time.sleep(quiet)
        return first if _versions(k8s_api, namespace) == first else None

    return wait_until(settled, timeout=120, what=f"namespace {namespace} quiet")


# --------------------------------------------------------------------------- tests


def test_every_example_creates_its_children_and_becomes_ready(
    operator: Any,
    control_plane: ControlPlane,
    namespace: str,
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
    worker_status: FakeWorkerStatus,
) -> None:
    monitors: dict[str, dict[str, Any]] = {}
    for file_name in sorted(examples()):
        objects = _example(file_name)
        for obj in objects:
            if obj["kind"] == "DriftMonitor":
                monitors[obj["metadata"]["name"]] = obj
        _apply(control_plane, namespace, objects)
    for name, obj in monitors.items():
        shards = obj["spec"].get("workers", {}).get("shards", 3)
        # two of diamonds' five feature streams (carat, depth, quiet-0..2): 40% >= the
        # default dataDriftShare 30%, so DataDrift is True as the alert would fire
        drifting = (
            {0: ["feature:carat"], 1: ["feature:depth", "performance"]}
            if name == "diamonds"
            else None
        )
        worker_status.set_streams(namespace, name, shards, drifting)

    for name, obj in monitors.items():
        mon = _wait_ready(custom_objects, core_v1, namespace, name)
        spec = obj["spec"]
        shards = spec.get("workers", {}).get("shards", 3)
        replicas = spec["model"].get("replicas", 2)
        assert _children(k8s_api, namespace, name) == _expected_children(
            name, receivers=bool(spec.get("alerts", {}).get("receivers"))
        )
        pods = core_v1.list_namespaced_pod(
            namespace, label_selector=f"app.kubernetes.io/instance={name}"
        )
        phases = sorted(p.status.phase for p in pods.items)
        assert phases == ["Running"] * (shards + replicas), describe_pods(core_v1, namespace)
        status = mon["status"]
        assert (status["shards"], status["readyShards"], status["shardEpoch"]) == (
            shards,
            shards,
            1,
        )
        assert _shard_map(core_v1, namespace, name).epoch == 1
        for cond in status["conditions"]:
            assert set(cond) == {
                "type",
                "status",
                "reason",
                "message",
                "lastTransitionTime",
                "observedGeneration",
            }

    def drift_seen() -> bool:
        mon = _monitor(custom_objects, namespace, "diamonds")
        return (
            _condition(mon, "DataDrift").get("status") == "True"
            and _condition(mon, "ConceptDrift").get("status") == "True"
        )

    wait_until(drift_seen, timeout=60, what="diamonds DataDrift and ConceptDrift True")
    diamonds = _monitor(custom_objects, namespace, "diamonds")["status"]
    assert diamonds["driftingStreams"] == 3
    assert diamonds["driftingStreamNames"] == ["feature:carat", "feature:depth", "performance"]
    assert diamonds["lastDriftTime"] == "2026-11-23T10:00:00Z"
    # the budget and, per detector name, the thresholds the (fake) shards report
    assert diamonds["detection"] == {
        "valuesPerFalseAlarm": 1_000_000,
        "detectors": [
            {
                "detector": "mixtureCusum",
                "streams": 6,
                "driftingStreams": 3,
                "thresholdMin": FAKE_THRESHOLD,
                "thresholdMax": FAKE_THRESHOLD,
                "valuesPerFalseAlarm": 1e6,
            }
        ],
    }
    iris = _monitor(custom_objects, namespace, "iris")
    wait_until(
        lambda: (
            _condition(_monitor(custom_objects, namespace, "iris"), "DataDrift").get("status")
            == "False"
        ),
        timeout=60,
        what="iris DataDrift False",
    )
    assert iris["status"]["selector"].startswith("app.kubernetes.io/name=driftwarden")

    # The printer columns, as the API server's table format renders them for kubectl.
    table = _table(control_plane, namespace)
    assert list(next(iter(table.values())))[:5] == ["NAME", "READY", "SHARDS", "DRIFTING", "AGE"]
    assert (
        table["diamonds"]["READY"],
        table["diamonds"]["SHARDS"],
        table["diamonds"]["DRIFTING"],
    ) == ("True", "3", "3")
    assert (table["iris"]["READY"], table["iris"]["SHARDS"], table["iris"]["DRIFTING"]) == (
        "True",
        "1",
        "0",
    )
    wide = _table(control_plane, namespace, "-o", "wide")
    assert wide["digits"]["BUNDLE"] == "builtin://digits"
    assert wide["digits"]["EPOCH"] == "1" and wide["digits"]["READY-SHARDS"] == "3"
    assert wide["digits"]["REASON"] == "AllReplicasReady"


INVALID = [
    (
        "threshold above one",
        {"alerts": {"dataDriftShare": 1.5}},
        "spec.alerts.dataDriftShare: Invalid value",
    ),
    ("zero shards", {"workers": {"shards": 0}}, "spec.workers.shards: Invalid value"),
    ("missing bundle", {"model": {"replicas": 1}}, "spec.model.bundle: Required value"),
    (
        "unknown detector",
        {"detectors": {"numeric": [{"type": "magic"}]}},
        'Unsupported value: "magic"',
    ),
    (
        "detector on the wrong stream",
        {"detectors": {"categorical": [{"type": "ks"}]}},
        "categorical detectors must be of type multinomialCusum, chi2, psi, kl, js",
    ),
    (
        "two receiver kinds",
        {
            "alerts": {
                "receivers": [
                    {
                        "name": "x",
                        "discord": {"webhookSecretRef": {"name": "s", "key": "k"}},
                        "slack": {"apiUrlSecretRef": {"name": "s", "key": "k"}},
                    }
                ]
            }
        },
        "a receiver must set exactly one of discord, slack, webhook",
    ),
    (
        "window shorter than evaluation period",
        {"workers": {"window": 100, "evaluateEvery": 500}},
        "workers.evaluateEvery must not exceed workers.window",
    ),
    (
        "label delay too long",
        {"labelJoin": {"maxDelay": "200h"}},
        "labelJoin.maxDelay must be greater than 0s and at most 168h",
    ),
    (
        "autoscaling floor above its ceiling",
        {
            "model": {
                "bundle": "builtin://diamonds",
                "autoscaling": {"minReplicas": 4, "maxReplicas": 3},
            }
        },
        "model.autoscaling.minReplicas must not exceed model.autoscaling.maxReplicas",
    ),
    (
        "replicas next to autoscaling",
        {
            "model": {
                "bundle": "builtin://diamonds",
                "replicas": 2,
                "autoscaling": {"maxReplicas": 3},
            }
        },
        "model.replicas and model.autoscaling are exclusive",
    ),
    (
        "autoscaling on requests per second",
        {
            "model": {
                "bundle": "builtin://diamonds",
                "autoscaling": {"maxReplicas": 3, "targetRequestsPerSecond": 100},
            }
        },
        "targetRequestsPerSecond is not supported: it needs a custom-metrics adapter",
    ),
    (
        "minEffect on a detector without an effect size",
        {"detectors": {"numeric": [{"type": "pageHinkley", "minEffect": 0.1}]}},
        "minEffect applies only to detectors of type ks, iks, chi2, psi, kl, js, relativeMse, "
        "errorRate",
    ),
    (
        "malformed bundle digest",
        {"model": {"bundle": "builtin://diamonds", "digest": "sha256:abc"}},
        "spec.model.digest: Invalid value",
    ),
]


@pytest.mark.parametrize(("case", "patch", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_monitors_are_rejected_with_a_readable_reason(
    crd: None,
    control_plane: ControlPlane,
    namespace: str,
    k8s_api: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    case: str,
    patch: dict[str, Any],
    message: str,
) -> None:
    spec: dict[str, Any] = {"model": {"bundle": "builtin://diamonds"}}
    for key, value in patch.items():
        spec[key] = value if key == "model" else {**spec.get(key, {}), **value}
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DriftMonitor",
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    result = _apply(control_plane, namespace, [body], check=False)
    assert result.returncode != 0, f"{case}: accepted"
    assert message in result.stderr, result.stderr
    assert (
        custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
        == []
    )
    assert _children(k8s_api, namespace, "bad") == {}


def test_a_too_long_name_and_storage_changes_are_rejected(
    crd: None,
    control_plane: ControlPlane,
    namespace: str,
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DriftMonitor",
        "metadata": {"name": "a" * 45},
        "spec": {"model": {"bundle": "builtin://iris"}},
    }
    result = _apply(control_plane, namespace, [body], check=False)
    assert "metadata.name must be a DNS-1035 label of at most 44 characters" in result.stderr
    body["metadata"]["name"] = "ok"
    _apply(control_plane, namespace, [body])
    body["spec"]["workers"] = {"storage": "5Gi"}
    result = _apply(control_plane, namespace, [body], check=False)
    assert result.returncode != 0
    assert "workers.storage is immutable" in result.stderr


def test_a_child_deleted_or_edited_by_hand_is_restored(
    operator: Any,
    control_plane: ControlPlane,
    namespace: str,
    core_v1: client.CoreV1Api,
    apps_v1: client.AppsV1Api,
    custom_objects: client.CustomObjectsApi,
    worker_status: FakeWorkerStatus,
) -> None:
    worker_status.set_streams(namespace, "iris", 1)
    _apply(control_plane, namespace, _example("iris.yaml"))
    _wait_ready(custom_objects, core_v1, namespace, "iris")

    old = apps_v1.read_namespaced_stateful_set("iris-workers", namespace).metadata.uid
    apps_v1.delete_namespaced_stateful_set("iris-workers", namespace)
    wait_until(
        lambda: apps_v1.read_namespaced_stateful_set("iris-workers", namespace).metadata.uid != old,
        timeout=TIMEOUT,
        what="StatefulSet iris-workers recreated",
    )

    apps_v1.patch_namespaced_deployment_scale("iris-model", namespace, {"spec": {"replicas": 4}})
    wait_until(
        lambda: apps_v1.read_namespaced_deployment("iris-model", namespace).spec.replicas == 1,
        timeout=TIMEOUT,
        what="Deployment iris-model back to 1 replica",
    )

    # A JSON patch renumbers the port: server-side apply alone would keep both entries
    # (ports merge by port number), so this exercises the operator's replace fallback.
    core_v1.patch_namespaced_service(
        "iris-model", namespace, [{"op": "replace", "path": "/spec/ports/0/port", "value": 9999}]
    )
    wait_until(
        lambda: (
            [p.port for p in core_v1.read_namespaced_service("iris-model", namespace).spec.ports]
            == [8000]
        ),
        timeout=TIMEOUT,
        what="Service iris-model port restored to 8000",
    )

    # The shard map comes back with a higher epoch: workers never see an epoch go back.
    core_v1.delete_namespaced_config_map("iris-driftwarden", namespace)
    wait_until(
        lambda: _shard_map(core_v1, namespace, "iris").epoch == 2,
        timeout=TIMEOUT,
        what="ConfigMap iris-driftwarden recreated with epoch 2",
    )
    _wait_ready(custom_objects, core_v1, namespace, "iris")


def test_network_policies_are_accepted_owned_and_switched_off_by_the_spec(
    operator: Any,
    control_plane: ControlPlane,
    namespace: str,
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    apps_v1: client.AppsV1Api,
    custom_objects: client.CustomObjectsApi,
    worker_status: FakeWorkerStatus,
) -> None:
    networking = client.NetworkingV1Api(k8s_api)
    worker_status.set_streams(namespace, "iris", 1)
    _apply(control_plane, namespace, _example("iris.yaml"))
    mon = _wait_ready(custom_objects, core_v1, namespace, "iris")

    # The API server accepted both policies; each is owned by the monitor and selects
    # exactly the pods of its component (the pods kwok runs, with their real labels).
    policies = {
        p.metadata.name: p for p in networking.list_namespaced_network_policy(namespace).items
    }
    assert sorted(policies) == ["iris-model", "iris-workers"]
    for name, component, port in (
        ("iris-model", "model-server", 8000),
        ("iris-workers", "drift-worker", 8080),
    ):
        policy = policies[name]
        (owner,) = policy.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid, owner.controller) == (
            "DriftMonitor",
            "iris",
            mon["metadata"]["uid"],
            True,
        )
        selector = ",".join(f"{k}={v}" for k, v in policy.spec.pod_selector.match_labels.items())
        selected = core_v1.list_namespaced_pod(namespace, label_selector=selector).items
        everyone = core_v1.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/instance=iris"
        ).items
        assert selected and {p.metadata.name for p in selected} == {
            p.metadata.name
            for p in everyone
            if p.metadata.labels["app.kubernetes.io/component"] == component
        }
        assert policy.spec.policy_types == ["Ingress"]
        assert {p.port for rule in policy.spec.ingress for p in rule.ports} == {port}
    pods_before = {
        p.metadata.uid
        for p in core_v1.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/instance=iris"
        ).items
    }
    template = apps_v1.read_namespaced_stateful_set("iris-workers", namespace).spec.template

    def policy_names() -> list[str]:
        return sorted(
            p.metadata.name
            for p in networking.list_namespaced_network_policy(
                namespace, label_selector=_selector("iris")
            ).items
        )

    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "iris", {"spec": {"networkPolicy": {"enabled": False}}}
    )
    wait_until(
        lambda: policy_names() == [],
        timeout=TIMEOUT,
        what="NetworkPolicies deleted after spec.networkPolicy.enabled=false",
        describe=lambda: str(policy_names()),
    )
    _wait_ready(custom_objects, core_v1, namespace, "iris")
    # Switching the policies off restarts nothing.
    assert apps_v1.read_namespaced_stateful_set("iris-workers", namespace).spec.template == template
    assert {
        p.metadata.uid
        for p in core_v1.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/instance=iris"
        ).items
    } == pods_before

    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "iris", {"spec": {"networkPolicy": {"enabled": True}}}
    )
    wait_until(
        lambda: policy_names() == ["iris-model", "iris-workers"],
        timeout=TIMEOUT,
        what="NetworkPolicies back after spec.networkPolicy.enabled=true",
        describe=lambda: str(policy_names()),
    )


def _owned_by(obj: Any, monitor: dict[str, Any]) -> bool:
    (owner,) = obj.metadata.owner_references
    return (owner.kind, owner.name, owner.uid, owner.controller) == (
        "DriftMonitor",
        monitor["metadata"]["name"],
        monitor["metadata"]["uid"],
        True,
    )


def _operator_owns_replicas(deployment: Any) -> bool:
    """Return whether the operator's applies set the Deployment's spec.replicas."""
    for entry in deployment.metadata.managed_fields or []:
        if entry.manager == "driftwarden-operator" and entry.operation == "Apply":
            return "f:replicas" in ((entry.fields_v1 or {}).get("f:spec") or {})
    return False


def test_autoscaling_hands_the_replicas_to_the_hpa_and_budgets_cover_both_components(
    operator: Any,
    control_plane: ControlPlane,
    namespace: str,
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    apps_v1: client.AppsV1Api,
    custom_objects: client.CustomObjectsApi,
    worker_status: FakeWorkerStatus,
) -> None:
    autoscaling_v2 = client.AutoscalingV2Api(k8s_api)
    policy_v1 = client.PolicyV1Api(k8s_api)
    worker_status.set_streams(namespace, "iris", 1)
    objects = _example("iris.yaml")
    body = next(o for o in objects if o["kind"] == "DriftMonitor")
    body["spec"]["model"]["replicas"] = 3
    _apply(control_plane, namespace, objects)
    mon = _wait_ready(custom_objects, core_v1, namespace, "iris")

    # Both budgets exist, are owned by the monitor and select exactly their pods.
    for name, component in (("iris-model", "model-server"), ("iris-workers", "drift-worker")):
        pdb = policy_v1.read_namespaced_pod_disruption_budget(name, namespace)
        assert _owned_by(pdb, mon)
        assert pdb.spec.max_unavailable == 1 and pdb.spec.min_available is None
        selector = ",".join(f"{k}={v}" for k, v in pdb.spec.selector.match_labels.items())
        pods = core_v1.list_namespaced_pod(namespace, label_selector=selector).items
        assert pods and {p.metadata.labels["app.kubernetes.io/component"] for p in pods} == {
            component
        }
    assert _operator_owns_replicas(apps_v1.read_namespaced_deployment("iris-model", namespace))

    # Fixed replicas -> autoscaling: the live count is kept (no drop to the default of 1),
    # and the operator's applies stop carrying it.
    custom_objects.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "iris",
        [
            {"op": "remove", "path": "/spec/model/replicas"},
            {
                "op": "add",
                "path": "/spec/model/autoscaling",
                "value": {"minReplicas": 2, "maxReplicas": 6},
            },
        ],
        _content_type="application/json-patch+json",
    )
    mon = _wait_ready(custom_objects, core_v1, namespace, "iris")
    hpa = autoscaling_v2.read_namespaced_horizontal_pod_autoscaler("iris-model", namespace)
    assert _owned_by(hpa, mon)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 6)
    assert hpa.spec.scale_target_ref.kind == "Deployment"
    assert hpa.spec.scale_target_ref.name == "iris-model"
    dep = apps_v1.read_namespaced_deployment("iris-model", namespace)
    assert dep.spec.replicas == 3
    assert not _operator_owns_replicas(dep)

    # The HPA scales through the scale subresource; neither a resync nor a pass that
    # re-applies the Deployment (a spec change that rolls its pods) reverts that.
    apps_v1.patch_namespaced_deployment_scale(
        "iris-model",
        namespace,
        {"spec": {"replicas": 5}},
        field_manager="horizontal-pod-autoscaler-test",
    )
    passes = reconcile_passes()
    custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "iris", {"spec": {"model": {"maxInflightRequests": 64}}}
    )
    _wait_ready(custom_objects, core_v1, namespace, "iris")
    wait_until(
        lambda: reconcile_passes() >= passes + 2,
        timeout=TIMEOUT,
        what="two reconcile passes after the HPA's scale",
    )
    dep = apps_v1.read_namespaced_deployment("iris-model", namespace)
    assert dep.spec.replicas == 5
    env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env}
    assert env["DRIFTWARDEN_SERVER__MAX_INFLIGHT_REQUESTS"] == "64"
    # Readiness is measured against the HPA's count.
    wait_until(
        lambda: _monitor(custom_objects, namespace, "iris")["status"].get("modelReplicas") == 5,
        timeout=TIMEOUT,
        what="status.modelReplicas 5",
    )
    assert _condition(_monitor(custom_objects, namespace, "iris"), "Ready")["status"] == "True"

    # Autoscaling removed: the HPA goes and spec.model.replicas applies again.
    custom_objects.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "iris",
        [
            {"op": "remove", "path": "/spec/model/autoscaling"},
            {"op": "add", "path": "/spec/model/replicas", "value": 1},
        ],
        _content_type="application/json-patch+json",
    )

    def hpas() -> list[str]:
        return [
            h.metadata.name
            for h in autoscaling_v2.list_namespaced_horizontal_pod_autoscaler(namespace).items
        ]

    wait_until(
        lambda: hpas() == [], timeout=TIMEOUT, what="HPA deleted", describe=lambda: str(hpas())
    )
    _wait_ready(custom_objects, core_v1, namespace, "iris")
    dep = apps_v1.read_namespaced_deployment("iris-model", namespace)
    assert dep.spec.replicas == 1 and _operator_owns_replicas(dep)


def test_deleting_the_monitor_removes_every_child(
    operator: Any,
    control_plane: ControlPlane,
    namespace: str,
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
    worker_status: FakeWorkerStatus,
) -> None:
    worker_status.set_streams(namespace, "diamonds-alerting", 3)
    _apply(control_plane, namespace, _example("receivers.yaml"))
    _wait_ready(custom_objects, core_v1, namespace, "diamonds-alerting")
    assert "AlertmanagerConfig" in _children(k8s_api, namespace, "diamonds-alerting")
    custom_objects.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "diamonds-alerting"
    )
    wait_until(
        lambda: _children(k8s_api, namespace, "diamonds-alerting") == {},
        timeout=TIMEOUT,
        what="every child garbage-collected",
        describe=lambda: str(_children(k8s_api, namespace, "diamonds-alerting")),
    )
    wait_until(
        lambda: (
            not core_v1.list_namespaced_pod(
                namespace, label_selector="app.kubernetes.io/instance=diamonds-alerting"
            ).items
        ),
        timeout=TIMEOUT,
        what="every pod gone",
    )

    def gone() -> bool:
        try:
            _monitor(custom_objects, namespace, "diamonds-alerting")
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_until(gone, timeout=60, what="the monitor gone (finalizer released)")


def test_scaling_3_to_5_to_2_updates_the_statefulset_and_the_epoch(
    operator: Any,
    control_plane: ControlPlane,
    namespace: str,
    core_v1: client.CoreV1Api,
    apps_v1: client.AppsV1Api,
    custom_objects: client.CustomObjectsApi,
    worker_status: FakeWorkerStatus,
) -> None:
    worker_status.set_streams(namespace, "diamonds", 5)
    _apply(control_plane, namespace, _example("diamonds.yaml"))
    _wait_ready(custom_objects, core_v1, namespace, "diamonds")
    for shards, epoch, history in ((5, 2, ((1, 3),)), (2, 3, ((1, 3), (2, 5)))):
        control_plane.kubectl(
            "scale", "-n", namespace, "driftmonitor/diamonds", f"--replicas={shards}"
        )
        mon = _wait_ready(custom_objects, core_v1, namespace, "diamonds")
        assert mon["spec"]["workers"]["shards"] == shards
        sts = apps_v1.read_namespaced_stateful_set("diamonds-workers", namespace)
        assert sts.spec.replicas == shards and sts.status.ready_replicas == shards
        shard_map = _shard_map(core_v1, namespace, "diamonds")
        assert (shard_map.epoch, shard_map.shards, shard_map.history) == (epoch, shards, history)
        assert (mon["status"]["shardEpoch"], mon["status"]["shards"]) == (epoch, shards)
        scale = json.loads(
            control_plane.kubectl(
                "get", "-n", namespace, "driftmonitor/diamonds", "--subresource=scale", "-o", "json"
            ).stdout
        )
        assert scale["spec"]["replicas"] == shards and scale["status"]["replicas"] == shards
        assert "app.kubernetes.io/component=drift-worker" in scale["status"]["selector"]
        # Scaling rolls no pods: the pod template (config hash) is unchanged.
        assert sts.status.current_revision == sts.status.update_revision


def test_a_scale_down_waits_until_real_shards_have_handed_their_streams_over(
    crd: None,
    operator_kubeconfig: Path,
    control_plane: ControlPlane,
    namespace: str,
    core_v1: client.CoreV1Api,
    apps_v1: client.AppsV1Api,
    custom_objects: client.CustomObjectsApi,
    tmp_path: Path,
) -> None:
    """3 -> 2 with real worker processes on 127.0.0.1 behind the kwok pods.

    Shards 0 and 1 are down when the scale-down starts, so shard 2 cannot push its
    streams: the operator publishes and pushes the new map but keeps the StatefulSet
    at 3 pass after pass. Once they are back, the streams move and only then does the
    StatefulSet shrink.
    """
    rng = np.random.default_rng(5)
    features = [stream_names.feature_stream(f"f{i}") for i in range(8)]
    key = f"{namespace}/diamonds"
    on_shard_2 = [s for s in features if owner_of(key, s, 3) == 2]
    assert on_shard_2, "no stream on shard 2 to hand over; pick other feature names"
    spec = {"model": {"bundle": "builtin://unused"}, "workers": {"window": 100}}
    streams = [StreamSpec(s, "numeric", rng.normal(size=200)) for s in features]
    local = LocalShards(tmp_path, spec, streams, 3, namespace=namespace, name="diamonds")
    env = {
        "DRIFTWARDEN_OPERATOR__WORKER_STATUS_URL": "http://127.0.0.1:{port}/status",
        "DRIFTWARDEN_OPERATOR__WORKER_BASE_PORT": str(local.base_port),
        "DRIFTWARDEN_OPERATOR__WORKER_STATUS_INTERVAL_SECONDS": "1",
        "DRIFTWARDEN_OPERATOR__WORKER_STATUS_TIMEOUT_SECONDS": "5",
        "DRIFTWARDEN_OPERATOR__SCALE_DOWN_POLL_SECONDS": "1",
        "DRIFTWARDEN_OPERATOR__RESYNC_SECONDS": "20",
    }

    def replicas() -> int:
        return apps_v1.read_namespaced_stateful_set("diamonds-workers", namespace).spec.replicas

    # The shards run outside the cluster with their own credential: put it where the
    # operator looks for the monitor's (it reads an existing Secret, creates none then),
    # so its map pushes and handoff reads authenticate to these shards.
    core_v1.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=credential_name("diamonds")),
            data={auth.WORKER_FILE: base64.b64encode(local.credential.to_json().encode()).decode()},
        ),
    )
    try:
        local.start_all()
        with run_operator(env, kubeconfig=operator_kubeconfig) as runner:
            assert runner is not None
            _apply(control_plane, namespace, _example("diamonds.yaml"))
            _wait_ready(custom_objects, core_v1, namespace, "diamonds")
            assert replicas() == 3 and _shard_map(core_v1, namespace, "diamonds").epoch == 1
            local.kill(0)
            local.kill(1)
            control_plane.kubectl("scale", "-n", namespace, "driftmonitor/diamonds", "--replicas=2")

            def shard_2_handing_off() -> bool:
                doc = local.handoffs(2)
                return doc["epoch"] == 2 and sorted(doc["outgoing"]) == sorted(on_shard_2)

            wait_until(shard_2_handing_off, timeout=TIMEOUT, what="shard 2 at epoch 2, pushing")
            assert _shard_map(core_v1, namespace, "diamonds").shards == 2
            passes = reconcile_passes()
            wait_until(
                lambda: reconcile_passes() >= passes + 3,
                timeout=TIMEOUT,
                what="three more reconcile passes",
            )
            assert replicas() == 3  # shard 2's streams have nowhere to go yet
            progressing = _condition(_monitor(custom_objects, namespace, "diamonds"), "Progressing")
            assert progressing["reason"] == "HandingOff", progressing
            assert local.handoffs(2)["outgoing"], "shard 2 handed off while its peers were down"

            local.start(0)
            local.start(1)
            wait_until(lambda: replicas() == 2, timeout=TIMEOUT, what="StatefulSet shrunk to 2")
            for k in range(3):
                doc = local.handoffs(k)
                assert (doc["epoch"], doc["outgoing"], doc["awaiting"]) == (2, [], []), (k, doc)
            live = {
                s for k in (0, 1) for s, v in local.status(k).streams.items() if v.status == "live"
            }
            assert live == set(features)
            _wait_ready(custom_objects, core_v1, namespace, "diamonds")
        assert runner.exit_code == 0, runner.output[-3000:]
    finally:
        local.stop()


def test_restarting_the_operator_writes_nothing(
    start_operator: Callable[[], Any],
    control_plane: ControlPlane,
    namespace: str,
    k8s_api: client.ApiClient,
    core_v1: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
    worker_status: FakeWorkerStatus,
) -> None:
    names = ["iris", "diabetes"]
    for name, shards in zip(names, (1, 2), strict=False):
        worker_status.set_streams(namespace, name, shards)
    with start_operator():
        for name in names:
            _apply(control_plane, namespace, _example(f"{name}.yaml"))
        for name in names:
            _wait_ready(custom_objects, core_v1, namespace, name)
        # Let the drift conditions settle (the first probe lands after Ready).
        wait_until(
            lambda: all(
                _condition(_monitor(custom_objects, namespace, n), "DataDrift").get("status")
                == "False"
                for n in names
            ),
            timeout=60,
            what="DataDrift False on every monitor",
        )
        before = _settled_versions(k8s_api, namespace)

    passes = reconcile_passes()
    with start_operator():
        wait_until(
            lambda: reconcile_passes() >= passes + len(names),
            timeout=60,
            what="the restarted operator reconciled every monitor",
        )
        time.sleep(3)  # child watch events and a worker probe cycle arrive meanwhile
        writes = operator_writes()
        detail = metrics.api_writes_by_kind()
        after = _versions(k8s_api, namespace)
    changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
    assert writes == 0, (detail, changed)
    assert after == before, changed


def test_a_namespace_enforcing_restricted_pod_security_accepts_every_pod(
    operator: Any,
    control_plane: ControlPlane,
    namespace_factory: Callable[..., str],
    core_v1: client.CoreV1Api,
    custom_objects: client.CustomObjectsApi,
    worker_status: FakeWorkerStatus,
) -> None:
    namespace = namespace_factory(
        labels={
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
    )
    worker_status.set_streams(namespace, "digits", 3)
    _apply(control_plane, namespace, _example("digits.yaml"))
    _wait_ready(custom_objects, core_v1, namespace, "digits")
    pods = core_v1.list_namespaced_pod(namespace).items
    assert len(pods) == 5 and all(p.status.phase == "Running" for p in pods)
    events = core_v1.list_namespaced_event(namespace).items
    assert not [e.message for e in events if e.reason == "FailedCreate"]
    # The admission check is live: a privileged pod is refused in the same namespace.
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    result = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(bad), check=False
    )
    assert result.returncode != 0 and "violates PodSecurity" in result.stderr
