"""Pure builders: every child of a DriftMonitor, checked field by field and against golden YAML.

Golden files live in tests/unit/golden/operator/. They are never rewritten silently:
regenerate them on purpose with

    DRIFTWARDEN_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_operator_builders.py

and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftwarden.common.sharding import ShardMap
from driftwarden.operator import builders
from driftwarden.operator.examples import examples
from driftwarden.operator.generate import dump_all
from driftwarden.operator.monitor import InvalidMonitor, Monitor
from driftwarden.operator.settings import OperatorSettings
from support.operator import FAKE, UID
from support.operator import monitor as _monitor

GOLDEN = Path(__file__).parent / "golden" / "operator"
UPDATE = os.environ.get("DRIFTWARDEN_UPDATE_GOLDEN") == "1"


def _children(
    monitor: Monitor, settings: OperatorSettings | None = None, epoch: int = 1
) -> list[dict[str, Any]]:
    shard_map = ShardMap(monitor=monitor.key, epoch=epoch, shards=monitor.spec.workers.shards)
    return builders.build_children(
        monitor, settings or OperatorSettings(), shard_map=shard_map, renderers=FAKE
    )


def _by_kind(children: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["kind"], c["metadata"]["name"]): c for c in children}


EXAMPLE_MONITORS = {
    file_name.removesuffix(".yaml"): next(o for o in objs if o["kind"] == "DriftMonitor")
    for file_name, (_, objs) in examples().items()
}


@pytest.mark.parametrize("example", sorted(EXAMPLE_MONITORS))
def test_children_match_golden_yaml(example: str) -> None:
    body = EXAMPLE_MONITORS[example]
    monitor = _monitor(body["spec"], name=body["metadata"]["name"])
    text = dump_all(_children(monitor))
    path = GOLDEN / f"{example}.yaml"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing; create it with DRIFTWARDEN_UPDATE_GOLDEN=1"
    assert text == path.read_text(), (
        f"children of {example} differ from {path}; if the change is intended, regenerate "
        "with DRIFTWARDEN_UPDATE_GOLDEN=1 and review the diff"
    )


def test_every_child_is_owned_labelled_and_hashed() -> None:
    monitor = _monitor({"model": {"bundle": "builtin://diamonds"}}, labels={"team": "pricing"})
    children = _children(monitor)
    kinds = sorted(c["kind"] for c in children)
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
        ]
    )
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["ownerReferences"] == [
            {
                "controller": True,
                "blockOwnerDeletion": True,
                "apiVersion": "driftwarden.io/v1alpha1",
                "kind": "DriftMonitor",
                "name": "diamonds",
                "uid": UID,
            }
        ]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "driftwarden"
        assert labels["app.kubernetes.io/instance"] == "diamonds"
        assert labels["app.kubernetes.io/part-of"] == "driftwarden"
        assert labels["app.kubernetes.io/managed-by"] == "driftwarden-operator"
        assert labels["app.kubernetes.io/component"]
        assert labels["team"] == "pricing"  # the monitor's labels travel to its children
        assert len(meta["annotations"][builders.INPUT_HASH_ANNOTATION]) == 32


def _pods(children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c["spec"]["template"]["spec"]
        for c in children
        if c["kind"] in ("Deployment", "StatefulSet")
    ]


def test_pods_satisfy_pod_security_restricted() -> None:
    pods = _pods(_children(_monitor({"model": {"bundle": "builtin://diamonds"}})))
    assert len(pods) == 2
    allowed_volumes = {
        "configMap",
        "emptyDir",
        "persistentVolumeClaim",
        "secret",
        "projected",
        "downwardAPI",
        "csi",
        "ephemeral",
    }
    for pod in pods:
        sec = pod["securityContext"]
        assert sec["runAsNonRoot"] is True and sec["runAsUser"] > 0
        assert sec["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for vol in pod["volumes"]:
            assert set(vol) - {"name"} <= allowed_volumes
        for container in pod["containers"]:
            csec = container["securityContext"]
            assert csec["allowPrivilegeEscalation"] is False
            assert csec["capabilities"] == {"drop": ["ALL"]}
            assert csec["readOnlyRootFilesystem"] is True
            assert csec.get("privileged") is not True
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts  # writable scratch space on a read-only root


def test_workers_statefulset_and_services_follow_the_contracts() -> None:
    monitor = _monitor(
        {
            "model": {"bundle": "builtin://diamonds"},
            "workers": {"shards": 5, "storage": "2Gi", "storageClassName": "fast"},
        }
    )
    children = _by_kind(_children(monitor, epoch=4))
    sts = children[("StatefulSet", "diamonds-workers")]
    assert sts["spec"]["replicas"] == 5
    assert sts["spec"]["serviceName"] == "diamonds-workers"
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["DRIFTWARDEN_MONITOR_CONFIG"]["value"] == "/etc/driftwarden/monitor.json"
    assert env["DRIFTWARDEN_SHARD_MAP"]["value"] == "/etc/driftwarden/shardmap.json"
    assert "pod-index" in env["DRIFTWARDEN_WORKER__ORDINAL"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    headless = children[("Service", "diamonds-workers")]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    model = children[("Deployment", "diamonds-model")]
    model_env = {
        e["name"]: e.get("value") for e in model["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert model_env["DRIFTWARDEN_SENDER__URL_TEMPLATE"] == (
        "http://diamonds-workers-{ordinal}.diamonds-workers.ml.svc:8080"
    )
    assert children[("Service", "diamonds-model")]["spec"]["ports"][0]["port"] == 8000

    config = children[("ConfigMap", "diamonds-driftwarden")]
    shard_map = ShardMap.model_validate_json(config["data"]["shardmap.json"])
    assert (shard_map.monitor, shard_map.epoch, shard_map.shards) == ("ml/diamonds", 4, 5)
    monitor_json = json.loads(config["data"]["monitor.json"])
    assert monitor_json["name"] == "diamonds" and monitor_json["namespace"] == "ml"
    assert monitor_json["spec"]["workers"]["window"] == 1000  # defaults filled


def test_service_monitors_select_their_services_and_carry_monitoring_labels() -> None:
    settings = OperatorSettings(monitoring_labels={"release": "kps"})
    children = _by_kind(_children(_monitor({"model": {"bundle": "builtin://iris"}}), settings))
    for name in ("diamonds-model", "diamonds-workers"):
        smon = children[("ServiceMonitor", name)]
        svc = children[("Service", name)]
        assert smon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        assert smon["spec"]["endpoints"][0]["port"] == "http"
        assert smon["metadata"]["labels"]["release"] == "kps"
    assert (
        children[("PrometheusRule", "diamonds-driftwarden")]["metadata"]["labels"]["release"]
        == "kps"
    )


def test_alertmanager_config_only_with_receivers_and_dashboard_toggle() -> None:
    plain = _by_kind(
        _children(
            _monitor({"model": {"bundle": "builtin://iris"}, "dashboard": {"enabled": False}})
        )
    )
    assert not any(kind == "AlertmanagerConfig" for kind, _ in plain)
    assert ("ConfigMap", "diamonds-dashboard") not in plain
    ref = {"name": "hook", "key": "url"}
    alerting = _by_kind(
        _children(
            _monitor(
                {
                    "model": {"bundle": "builtin://iris"},
                    "alerts": {"receivers": [{"name": "oncall", "webhook": {"urlSecretRef": ref}}]},
                }
            )
        )
    )
    amc = alerting[("AlertmanagerConfig", "diamonds-driftwarden")]
    assert amc["apiVersion"] == "monitoring.coreos.com/v1alpha1"
    assert amc["spec"]["route"]["receiver"] == "oncall"
    dash = alerting[("ConfigMap", "diamonds-dashboard")]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(next(iter(dash["data"].values())))["title"] == "Driftwarden ml/diamonds"
    off = _by_kind(
        _children(
            _monitor({"model": {"bundle": "builtin://iris"}}),
            OperatorSettings(dashboards_enabled=False),
        )
    )
    assert ("ConfigMap", "diamonds-dashboard") not in off


def test_dashboards_in_a_shared_namespace_carry_no_owner_reference() -> None:
    settings = OperatorSettings(dashboard_namespace="grafana")
    dash = _by_kind(_children(_monitor({"model": {"bundle": "builtin://iris"}}), settings))[
        ("ConfigMap", "ml-diamonds-dashboard")
    ]
    assert dash["metadata"]["namespace"] == "grafana"
    assert "ownerReferences" not in dash["metadata"]
    assert dash["metadata"]["labels"][builders.MONITOR_NAMESPACE_LABEL] == "ml"


def test_hashes_are_deterministic_and_track_inputs() -> None:
    spec = {"model": {"bundle": "builtin://diamonds"}}
    first = _children(_monitor(spec))
    assert first == _children(_monitor(spec))
    changed = _children(_monitor({**spec, "workers": {"window": 2000}}))
    h = builders.INPUT_HASH_ANNOTATION
    assert {c["metadata"]["annotations"][h] for c in first} != {
        c["metadata"]["annotations"][h] for c in changed
    }


def test_scaling_rolls_no_pods_but_a_spec_change_does() -> None:
    base = _monitor({"model": {"bundle": "builtin://diamonds"}})
    scaled = _monitor(
        {"model": {"bundle": "builtin://diamonds", "replicas": 7}, "workers": {"shards": 9}}
    )
    tuned = _monitor(
        {"model": {"bundle": "builtin://diamonds"}, "detectors": {"numeric": [{"type": "iks"}]}}
    )
    assert builders.config_hash(base) == builders.config_hash(scaled)
    assert builders.config_hash(base) != builders.config_hash(tuned)


_AUTOSCALED = {
    "bundle": "builtin://diamonds",
    "autoscaling": {"minReplicas": 3, "maxReplicas": 12, "targetCPUUtilizationPercentage": 65},
}


def test_autoscaling_renders_an_hpa_and_leaves_replicas_out_of_the_deployment() -> None:
    children = _by_kind(_children(_monitor({"model": _AUTOSCALED})))
    hpa = children[("HorizontalPodAutoscaler", "diamonds-model")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "diamonds-model"},
        "minReplicas": 3,
        "maxReplicas": 12,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 65},
                },
            }
        ],
    }
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == UID
    assert "replicas" not in children[("Deployment", "diamonds-model")]["spec"]
    # The CPU target is relative to a request, which the default resources make.
    pod = children[("Deployment", "diamonds-model")]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["requests"]["cpu"]


def test_without_autoscaling_there_is_no_hpa_and_the_deployment_has_replicas() -> None:
    for model, replicas in (
        ({"bundle": "builtin://diamonds"}, 2),
        ({"bundle": "builtin://d", "replicas": 5}, 5),
    ):
        children = _by_kind(_children(_monitor({"model": model})))
        assert not [k for k in children if k[0] == "HorizontalPodAutoscaler"]
        assert children[("Deployment", "diamonds-model")]["spec"]["replicas"] == replicas


def test_autoscaling_changes_roll_no_pods() -> None:
    fixed = _monitor({"model": {"bundle": "builtin://diamonds"}})
    scaled = _monitor({"model": _AUTOSCALED})
    assert builders.config_hash(fixed) == builders.config_hash(scaled)


def test_disruption_budgets_allow_one_pod_down_per_component() -> None:
    children = _children(_monitor({"model": {"bundle": "builtin://diamonds"}}))
    budgets = {c["metadata"]["name"]: c for c in children if c["kind"] == "PodDisruptionBudget"}
    assert sorted(budgets) == ["diamonds-model", "diamonds-workers"]
    for name, kind in (("diamonds-model", "Deployment"), ("diamonds-workers", "StatefulSet")):
        pdb = budgets[name]
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in pdb["spec"]
        assert _matches(pdb["spec"]["selector"], _pod_labels(children, kind))
        other = "StatefulSet" if kind == "Deployment" else "Deployment"
        assert not _matches(pdb["spec"]["selector"], _pod_labels(children, other))
        assert pdb["metadata"]["ownerReferences"][0]["uid"] == UID


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, selector  # only what this helper understands
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def _pod_labels(children: list[dict[str, Any]], kind: str) -> dict[str, str]:
    workload = next(c for c in children if c["kind"] == kind)
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def test_network_policies_select_the_monitors_pods_and_admit_only_its_peers() -> None:
    settings = OperatorSettings(
        namespace="driftwarden-system",
        operator_pod_labels={"app.kubernetes.io/name": "driftwarden", "op": "yes"},
    )
    children = _children(_monitor({"model": {"bundle": "builtin://d"}}), settings)
    policies = _by_kind(children)
    model_pods = _pod_labels(children, "Deployment")
    worker_pods = _pod_labels(children, "StatefulSet")
    other_monitor = {**worker_pods, "app.kubernetes.io/instance": "other"}

    workers = policies[("NetworkPolicy", "diamonds-workers")]["spec"]
    assert workers["policyTypes"] == ["Ingress"], "egress stays open"
    assert _matches(workers["podSelector"], worker_pods)
    assert not _matches(workers["podSelector"], model_pods)
    assert not _matches(workers["podSelector"], other_monitor)
    for rule in workers["ingress"]:
        assert rule["ports"] == [{"protocol": "TCP", "port": builders.WORKER_PORT}]
    peers, scrapers = (rule["from"] for rule in workers["ingress"])
    same_namespace = [p for p in peers if set(p) == {"podSelector"}]
    assert [_matches(p["podSelector"], model_pods) for p in same_namespace] == [True, False]
    assert [_matches(p["podSelector"], worker_pods) for p in same_namespace] == [False, True]
    assert not any(_matches(p["podSelector"], other_monitor) for p in same_namespace)
    assert [p for p in peers if p not in same_namespace] == [
        {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "driftwarden-system"}
            },
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "driftwarden", "op": "yes"}},
        }
    ]
    assert scrapers == [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]

    # The model endpoint is for every client: its port from anywhere, no other port.
    model = policies[("NetworkPolicy", "diamonds-model")]["spec"]
    assert _matches(model["podSelector"], model_pods)
    assert not _matches(model["podSelector"], worker_pods)
    assert model["policyTypes"] == ["Ingress"]
    assert model["ingress"] == [{"ports": [{"protocol": "TCP", "port": builders.MODEL_PORT}]}]
    container_ports = {
        c["kind"]: c["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        for c in children
        if c["kind"] in ("Deployment", "StatefulSet")
    }
    assert container_ports == {
        "Deployment": builders.MODEL_PORT,
        "StatefulSet": builders.WORKER_PORT,
    }


def test_the_operator_is_admitted_from_any_namespace_when_its_own_is_unknown() -> None:
    monitor = _monitor({"model": {"bundle": "builtin://d"}})
    policy = builders.build_worker_network_policy(monitor, OperatorSettings())
    assert policy is not None
    peers = policy["spec"]["ingress"][0]["from"]
    assert peers[-1] == {
        "namespaceSelector": {},
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "driftwarden",
                "app.kubernetes.io/component": "operator",
            }
        },
    }


def test_the_prometheus_peer_is_configurable_and_must_be_a_peer() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    monitor = _monitor({"model": {"bundle": "builtin://d"}})
    policy = builders.build_worker_network_policy(monitor, OperatorSettings(prometheus_peer=peer))
    assert policy is not None and policy["spec"]["ingress"][1]["from"] == [peer]
    for bad in ({}, {"podselector": {}}):
        with pytest.raises(ValueError, match="NetworkPolicyPeer"):
            OperatorSettings(prometheus_peer=bad)


def test_network_policies_switch_off_without_restarting_pods() -> None:
    on = _monitor({"model": {"bundle": "builtin://d"}})
    off = _monitor({"model": {"bundle": "builtin://d"}, "networkPolicy": {"enabled": False}})
    assert "NetworkPolicy" in {c["kind"] for c in _children(on)}
    assert "NetworkPolicy" not in {c["kind"] for c in _children(off)}
    assert builders.config_hash(on) == builders.config_hash(off)


def test_next_shard_map_bumps_the_epoch_only_on_a_reshard() -> None:
    three = _monitor({"model": {"bundle": "builtin://d"}, "workers": {"shards": 3}})
    five = _monitor({"model": {"bundle": "builtin://d"}, "workers": {"shards": 5}})
    first = builders.next_shard_map(None, None, three)
    assert (first.epoch, first.shards, first.history) == (1, 3, ())
    assert builders.next_shard_map(first, 1, three) == first
    second = builders.next_shard_map(first, 1, five)
    assert (second.epoch, second.shards, second.history) == (2, 5, ((1, 3),))
    back = builders.next_shard_map(second, 2, three)
    assert (back.epoch, back.shards, back.history) == (3, 3, ((1, 3), (2, 5)))
    # The ConfigMap was deleted: the status remembers epoch 3, so the epoch moves on.
    recreated = builders.next_shard_map(None, 3, three)
    assert recreated.epoch == 4
    # A stale ConfigMap behind the status also never moves the epoch backwards.
    assert builders.next_shard_map(first, 6, three).epoch == 7


def test_shard_map_round_trips_through_the_config_map() -> None:
    monitor = _monitor({"model": {"bundle": "builtin://d"}})
    shard_map = ShardMap(monitor=monitor.key, epoch=3, shards=3, history=((1, 2), (2, 4)))
    config = builders.build_config_map(monitor, OperatorSettings(), shard_map)
    assert builders.read_shard_map(config) == shard_map
    assert builders.read_shard_map(None) is None
    assert builders.read_shard_map({"data": {"shardmap.json": "{not json"}}) is None


def test_settings_reach_the_pods() -> None:
    settings = OperatorSettings(
        model_server_image="registry.local/ms:1",
        drift_worker_image="registry.local/dw:1",
        image_pull_policy="Always",
        image_pull_secrets=[{"name": "regcred"}],
        node_selector={"pool": "ml"},
        tolerations=[{"key": "ml", "operator": "Exists"}],
    )
    children = _by_kind(_children(_monitor({"model": {"bundle": "builtin://d"}}), settings))
    dep = children[("Deployment", "diamonds-model")]["spec"]["template"]["spec"]
    sts = children[("StatefulSet", "diamonds-workers")]["spec"]["template"]["spec"]
    assert dep["containers"][0]["image"] == "registry.local/ms:1"
    assert sts["containers"][0]["image"] == "registry.local/dw:1"
    for pod in (dep, sts):
        assert pod["containers"][0]["imagePullPolicy"] == "Always"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["nodeSelector"] == {"pool": "ml"}
        assert pod["tolerations"] == [{"key": "ml", "operator": "Exists"}]


def test_real_renderers_produce_objects_the_operator_can_wrap() -> None:
    monitor = _monitor(EXAMPLE_MONITORS["receivers"]["spec"])
    shard_map = ShardMap(monitor=monitor.key, epoch=1, shards=3)
    children = _by_kind(
        builders.build_children(
            monitor, OperatorSettings(), shard_map=shard_map, renderers=builders.default_renderers()
        )
    )
    rule = children[("PrometheusRule", "diamonds-driftwarden")]
    assert rule["spec"]["groups"] and all(g["rules"] for g in rule["spec"]["groups"])
    amc = children[("AlertmanagerConfig", "diamonds-driftwarden")]
    assert amc["spec"]["receivers"]
    dashboard = json.loads(
        next(iter(children[("ConfigMap", "diamonds-dashboard")]["data"].values()))
    )
    assert dashboard["panels"]
    yaml.safe_dump(list(children.values()))  # plain data all the way down


def test_invalid_body_names_the_field() -> None:
    with pytest.raises(InvalidMonitor, match=r"spec\.workers\.shards"):
        _monitor({"model": {"bundle": "builtin://d"}, "workers": {"shards": 0}})


_DIGEST_SCRIPT = """
import json
from driftwarden.common.sharding import ShardMap
from driftwarden.operator import builders
from driftwarden.operator.examples import examples
from driftwarden.operator.monitor import Monitor
from driftwarden.operator.settings import OperatorSettings
out = {}
for name, (_, objs) in sorted(examples().items()):
    body = next(o for o in objs if o["kind"] == "DriftMonitor")
    body = {**body, "metadata": {**body["metadata"], "namespace": "ml", "uid": "u"}}
    monitor = Monitor.from_body(body)
    shard_map = ShardMap(monitor=monitor.key, epoch=1, shards=monitor.spec.workers.shards)
    children = builders.build_children(monitor, OperatorSettings(), shard_map=shard_map,
                                       renderers=builders.default_renderers())
    out[name] = [c["metadata"]["annotations"][builders.INPUT_HASH_ANNOTATION] for c in children]
print(json.dumps(out))
"""


def test_input_hashes_are_stable_across_processes() -> None:
    """A restarted operator computes the same hashes, so it rewrites nothing."""
    import contextlib
    import io
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _DIGEST_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        timeout=120,
    )
    here = io.StringIO()
    with contextlib.redirect_stdout(here):
        exec(_DIGEST_SCRIPT, {})
    assert json.loads(result.stdout) == json.loads(here.getvalue())
