"""Pure builders: a parsed DriftMonitor in, the manifests of its children out.

No API calls and no clock: the same monitor, settings and epoch always give the
same manifests, byte for byte, which is what makes the input hash meaningful and
the golden tests possible. Rule groups, Grafana JSON and the AlertmanagerConfig
spec come from the alerts/dashboards package through ``Renderers`` so tests can
pin them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

import kopf

from driftwarden.common import auth, names
from driftwarden.common.contracts import MonitorConfig, spec_dump
from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.operator.monitor import Monitor
from driftwarden.operator.settings import OperatorSettings

INPUT_HASH_ANNOTATION = "driftwarden.io/input-hash"
CONFIG_HASH_ANNOTATION = "driftwarden.io/config-hash"
MONITOR_NAMESPACE_LABEL = "driftwarden.io/monitor-namespace"
MANAGED_BY = "driftwarden-operator"

MODEL_PORT = 8000
WORKER_PORT = 8080
CONFIG_MOUNT = "/etc/driftwarden"
DATA_MOUNT = "/var/lib/driftwarden"
MONITOR_FILE = "monitor.json"
SHARDMAP_FILE = "shardmap.json"
# Outside CONFIG_MOUNT: a Secret volume inside a ConfigMap volume would be a nested mount.
CREDENTIAL_MOUNT = "/etc/driftwarden-credential"

COMPONENT_MODEL = "model-server"
COMPONENT_WORKER = "drift-worker"
COMPONENT_CONFIG = "config"
COMPONENT_ALERTS = "alerts"
COMPONENT_DASHBOARD = "dashboard"
COMPONENT_CREDENTIAL = "credential"

RenderFn = Callable[[str, str, DriftMonitorSpec], Any]


@dataclasses.dataclass(frozen=True)
class Renderers:
    """The alerts/dashboards functions whose output the operator wraps into objects."""

    rule_groups: RenderFn
    alertmanager_spec: RenderFn
    dashboard: RenderFn


def default_renderers() -> Renderers:
    """Return the production renderers from driftwarden.alerts and driftwarden.dashboards."""
    from driftwarden.alerts.alertmanager import build_config_spec
    from driftwarden.alerts.rules import build_rule_groups
    from driftwarden.dashboards import build_dashboard

    return Renderers(build_rule_groups, build_config_spec, build_dashboard)


# ----------------------------------------------------------------------------- names


def config_name(monitor: str) -> str:
    return f"{monitor}-driftwarden"


def credential_name(monitor: str) -> str:
    return f"{monitor}-driftwarden-credential"


def dashboard_name(monitor: Monitor, settings: OperatorSettings) -> str:
    # In a shared dashboard namespace two monitors of one name must not collide.
    if settings.dashboard_namespace:
        return f"{monitor.namespace}-{monitor.name}-dashboard"
    return f"{monitor.name}-dashboard"


def worker_url_template(monitor: Monitor) -> str:
    """Return the sender's per-shard URL template (``{ordinal}`` left for the sender)."""
    return names.worker_url_template(monitor.name, monitor.namespace, WORKER_PORT)


# ---------------------------------------------------------------------------- labels


def selector_labels(monitor: str, component: str) -> dict[str, str]:
    """Return the labels that select one component's pods (stable for a monitor's life)."""
    return {
        "app.kubernetes.io/name": "driftwarden",
        "app.kubernetes.io/instance": monitor,
        "app.kubernetes.io/component": component,
    }


def standard_labels(monitor: str, component: str) -> dict[str, str]:
    """Return the app.kubernetes.io labels every child carries."""
    return {
        **selector_labels(monitor, component),
        "app.kubernetes.io/part-of": "driftwarden",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def worker_selector(monitor: str) -> str:
    """Return the worker pods' label selector as a string (status.selector for scale)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(monitor, COMPONENT_WORKER).items())


# ---------------------------------------------------------------------------- hashing


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:32]


def config_hash(monitor: Monitor) -> str:
    """Return the hash that rolls pods when the spec changes, scaling excluded.

    Shards and model replicas change without restarting anything: workers follow the
    shard map's epoch, and replicas only add or remove pods; NetworkPolicies are
    separate objects.
    """
    dumped = spec_dump(monitor.spec)
    dumped["workers"].pop("shards", None)
    dumped["model"].pop("replicas", None)
    # Its own object (the HorizontalPodAutoscaler); the pods never read it.
    dumped["model"].pop("autoscaling", None)
    # The pods never read it: a policy switch must not restart them.
    dumped.pop("networkPolicy", None)
    # Reaches the model server as an env var, whose change rolls its Deployment alone.
    dumped["model"].pop("maxInflightRequests", None)
    return digest(dumped)


# ---------------------------------------------------------------------------- pods


def _pod_security(settings: OperatorSettings) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_user,
        "fsGroup": settings.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}


def _config_env() -> list[dict[str, Any]]:
    return [
        {"name": "DRIFTWARDEN_MONITOR_CONFIG", "value": f"{CONFIG_MOUNT}/{MONITOR_FILE}"},
        {"name": "DRIFTWARDEN_SHARD_MAP", "value": f"{CONFIG_MOUNT}/{SHARDMAP_FILE}"},
    ]


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _pod_spec(
    settings: OperatorSettings,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    *,
    grace_seconds: int,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        # The pods never call the Kubernetes API.
        "automountServiceAccountToken": False,
        # Hundreds of monitors mean hundreds of Services; their env vars are noise.
        "enableServiceLinks": False,
        "securityContext": _pod_security(settings),
        "terminationGracePeriodSeconds": grace_seconds,
        "containers": [container],
        "volumes": volumes,
    }
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [dict(s) for s in settings.image_pull_secrets]
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        spec["tolerations"] = [dict(t) for t in settings.tolerations]
    return spec


def _volumes() -> list[dict[str, Any]]:
    return [
        {"name": "config", "configMap": {"name": "", "defaultMode": 0o444}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]


def _credential(
    monitor: Monitor, file: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Return (volume, mount, env) that give a pod one file of the monitor's credential.

    Only the named key is projected: model servers see the sender key, never the
    monitor key the workers verify with (docs/security.md).
    """
    volume = {
        "name": "credential",
        "secret": {
            "secretName": credential_name(monitor.name),
            "items": [{"key": file, "path": file}],
            "defaultMode": 0o440,
        },
    }
    mount = {"name": "credential", "mountPath": CREDENTIAL_MOUNT, "readOnly": True}
    env = {"name": "DRIFTWARDEN_CREDENTIAL_FILE", "value": f"{CREDENTIAL_MOUNT}/{file}"}
    return volume, mount, env


def _meta(monitor: Monitor, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": monitor.namespace,
        "labels": standard_labels(monitor.name, component),
    }


def build_model_deployment(monitor: Monitor, settings: OperatorSettings) -> dict[str, Any]:
    """Return the model-server Deployment."""
    name = names.model_service(monitor.name)
    volumes = _volumes()
    volumes[0]["configMap"]["name"] = config_name(monitor.name)
    cred_volume, cred_mount, cred_env = _credential(monitor, auth.SENDER_FILE)
    volumes.append(cred_volume)
    container = {
        "name": COMPONENT_MODEL,
        "image": settings.model_server_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["driftwarden", "serve"],
        "env": [
            *_config_env(),
            {"name": "DRIFTWARDEN_SENDER__URL_TEMPLATE", "value": worker_url_template(monitor)},
            {
                "name": "DRIFTWARDEN_SERVER__MAX_INFLIGHT_REQUESTS",
                "value": str(monitor.spec.model.max_inflight_requests),
            },
            cred_env,
        ],
        "ports": [{"name": "http", "containerPort": MODEL_PORT, "protocol": "TCP"}],
        "readinessProbe": _probe("/readyz", 5, 3),
        "livenessProbe": _probe("/healthz", 10, 6),
        "resources": settings.model_server_resources.as_manifest(),
        "securityContext": dict(_CONTAINER_SECURITY),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            cred_mount,
        ],
    }
    spec: dict[str, Any] = {}
    replicas = monitor.spec.model.fixed_replicas
    if replicas is not None:
        # Left out under autoscaling: an applied replicas would undo the HPA's every pass.
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(monitor, name, COMPONENT_MODEL),
        "spec": {
            **spec,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector_labels(monitor.name, COMPONENT_MODEL)},
            "template": {
                "metadata": {
                    "labels": standard_labels(monitor.name, COMPONENT_MODEL),
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash(monitor)},
                },
                "spec": _pod_spec(settings, container, volumes, grace_seconds=30),
            },
        },
    }


def build_model_service(monitor: Monitor, settings: OperatorSettings) -> dict[str, Any]:
    """Return the model-server ClusterIP Service (port 8000, ``http``)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(monitor, names.model_service(monitor.name), COMPONENT_MODEL),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(monitor.name, COMPONENT_MODEL),
            "ports": [
                {"name": "http", "port": MODEL_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def build_worker_statefulset(
    monitor: Monitor, settings: OperatorSettings, *, replicas: int | None = None
) -> dict[str, Any]:
    """Return the drift-worker StatefulSet: one shard per pod, one volume per shard."""
    name = names.workers_service(monitor.name)
    volumes = _volumes()
    volumes[0]["configMap"]["name"] = config_name(monitor.name)
    cred_volume, cred_mount, cred_env = _credential(monitor, auth.WORKER_FILE)
    volumes.append(cred_volume)
    container = {
        "name": COMPONENT_WORKER,
        "image": settings.drift_worker_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["driftwarden", "worker"],
        "env": [
            *_config_env(),
            # The StatefulSet controller labels every pod with its ordinal.
            {
                "name": "DRIFTWARDEN_WORKER__ORDINAL",
                "valueFrom": {
                    "fieldRef": {
                        "apiVersion": "v1",
                        "fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']",
                    }
                },
            },
            {"name": "DRIFTWARDEN_WORKER__DATA_DIR", "value": DATA_MOUNT},
            cred_env,
        ],
        "ports": [{"name": "http", "containerPort": WORKER_PORT, "protocol": "TCP"}],
        "readinessProbe": _probe("/readyz", 5, 3),
        "livenessProbe": _probe("/healthz", 10, 6),
        "resources": settings.drift_worker_resources.as_manifest(),
        "securityContext": dict(_CONTAINER_SECURITY),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "data", "mountPath": DATA_MOUNT},
            cred_mount,
        ],
    }
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "labels": selector_labels(monitor.name, COMPONENT_WORKER)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": monitor.spec.workers.storage}},
            "volumeMode": "Filesystem",
        },
    }
    if monitor.spec.workers.storage_class_name:
        claim["spec"]["storageClassName"] = monitor.spec.workers.storage_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(monitor, name, COMPONENT_WORKER),
        "spec": {
            # spec.workers.shards, except while a scale-down waits for the handoffs:
            # the pods being removed keep running until their streams have moved
            "replicas": monitor.spec.workers.shards if replicas is None else replicas,
            "serviceName": name,
            # Shards are peers, not a chain: start and stop them together so a reshard
            # does not wait for ordinals one by one (the handoff orders the state).
            "podManagementPolicy": "Parallel",
            "revisionHistoryLimit": 3,
            "updateStrategy": {"type": "RollingUpdate"},
            # Scale-down keeps a shard's volume so scaling back up finds it; deleting
            # the monitor deletes them.
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Delete",
                "whenScaled": "Retain",
            },
            "selector": {"matchLabels": selector_labels(monitor.name, COMPONENT_WORKER)},
            "template": {
                "metadata": {
                    "labels": standard_labels(monitor.name, COMPONENT_WORKER),
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash(monitor)},
                },
                # Grace for the shard to flush its WAL and hand streams off.
                "spec": _pod_spec(settings, container, volumes, grace_seconds=60),
            },
            "volumeClaimTemplates": [claim],
        },
    }


def build_worker_service(monitor: Monitor, settings: OperatorSettings) -> dict[str, Any]:
    """Return the workers' headless Service (stable per-shard DNS names)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(monitor, names.workers_service(monitor.name), COMPONENT_WORKER),
        "spec": {
            "clusterIP": "None",
            # Shards reach each other for handoff before they are Ready.
            "publishNotReadyAddresses": True,
            "selector": selector_labels(monitor.name, COMPONENT_WORKER),
            "ports": [
                {"name": "http", "port": WORKER_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


# ---------------------------------------------------------------------- availability


def build_model_autoscaler(monitor: Monitor, settings: OperatorSettings) -> dict[str, Any] | None:
    """Return the model server's HorizontalPodAutoscaler, or None without spec.model.autoscaling.

    CPU utilization is measured against the container's CPU request
    (settings.model_server_resources), so the resources must request CPU.
    """
    autoscaling = monitor.spec.model.autoscaling
    if autoscaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(monitor, names.model_service(monitor.name), COMPONENT_MODEL),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": names.model_service(monitor.name),
            },
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": autoscaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }


def _disruption_budget(monitor: Monitor, name: str, component: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(monitor, name, component),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(monitor.name, component)},
        },
    }


def build_model_disruption_budget(monitor: Monitor, settings: OperatorSettings) -> dict[str, Any]:
    """Return the model server's PodDisruptionBudget: at most one pod evicted at a time.

    maxUnavailable rather than minAvailable: it lets a drain proceed at one replica
    (minAvailable 1 would block it for good) and needs no update when replicas or the
    autoscaler change the count.
    """
    return _disruption_budget(monitor, names.model_service(monitor.name), COMPONENT_MODEL)


def build_worker_disruption_budget(monitor: Monitor, settings: OperatorSettings) -> dict[str, Any]:
    """Return the drift workers' PodDisruptionBudget: a drain never takes two shards at once."""
    return _disruption_budget(monitor, names.workers_service(monitor.name), COMPONENT_WORKER)


# ---------------------------------------------------------------------- network policies


def _operator_peer(settings: OperatorSettings) -> dict[str, Any]:
    """Return the NetworkPolicy peer that matches the operator's pods."""
    namespaces: dict[str, Any] = (
        {"matchLabels": {"kubernetes.io/metadata.name": settings.namespace}}
        if settings.namespace
        else {}
    )
    return {
        "namespaceSelector": namespaces,
        "podSelector": {"matchLabels": dict(settings.operator_pod_labels)},
    }


def _tcp(port: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}]


def build_worker_network_policy(
    monitor: Monitor, settings: OperatorSettings
) -> dict[str, Any] | None:
    """Return the drift workers' NetworkPolicy, or None when the monitor turns policies off.

    The worker port serves ingest, handoff, the shard map, /status and /metrics: only
    this monitor's model servers (ingest, labels), its own shards (handoff), the
    operator (map pushes, status) and Prometheus (scrapes) may connect. Egress is not
    restricted.
    """
    if not monitor.spec.network_policy.enabled:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(monitor, names.workers_service(monitor.name), COMPONENT_WORKER),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(monitor.name, COMPONENT_WORKER)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": selector_labels(monitor.name, c)}}
                        for c in (COMPONENT_MODEL, COMPONENT_WORKER)
                    ]
                    + [_operator_peer(settings)],
                    "ports": _tcp(WORKER_PORT),
                },
                # Prometheus shares the port with the API (metrics have no listener of
                # their own); every write and state read there is authenticated.
                {"from": [dict(settings.prometheus_peer)], "ports": _tcp(WORKER_PORT)},
            ],
        },
    }


def build_model_network_policy(
    monitor: Monitor, settings: OperatorSettings
) -> dict[str, Any] | None:
    """Return the model servers' NetworkPolicy, or None when the monitor turns policies off.

    The serving port is the model's endpoint (/predict, /feedback, /metrics), so it is
    open to every client, as its Service is; the policy closes every other port.
    """
    if not monitor.spec.network_policy.enabled:
        return None
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(monitor, names.model_service(monitor.name), COMPONENT_MODEL),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(monitor.name, COMPONENT_MODEL)},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": _tcp(MODEL_PORT)}],
        },
    }


# ---------------------------------------------------------------------------- config


def build_config_map(
    monitor: Monitor, settings: OperatorSettings, shard_map: ShardMap
) -> dict[str, Any]:
    """Return the monitor ConfigMap: monitor.json and shardmap.json (contracts.md)."""
    config = MonitorConfig(name=monitor.name, namespace=monitor.namespace, spec=monitor.spec)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(monitor, config_name(monitor.name), COMPONENT_CONFIG),
        "data": {
            MONITOR_FILE: config.to_json(),
            SHARDMAP_FILE: json.dumps(shard_map.model_dump(mode="json"), sort_keys=True, indent=2)
            + "\n",
        },
    }


def build_credential_secret(monitor: Monitor, credential: auth.Credential) -> dict[str, Any]:
    """Return the monitor's credential Secret, owned by the monitor (created once, never applied).

    ``worker.json`` holds the monitor key (workers verify every role with it);
    ``sender.json`` the sender role's derived key (model servers can ingest, no more).
    """

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(monitor, credential_name(monitor.name), COMPONENT_CREDENTIAL),
        # Immutable: a new key is a new Secret (delete it and the operator makes another).
        "immutable": True,
        "data": {
            auth.WORKER_FILE: b64(credential.to_json()),
            auth.SENDER_FILE: b64(credential.for_role(auth.ROLE_SENDER).to_json()),
        },
    }
    kopf.adopt(secret, owner=monitor.owner_body())
    return secret


def read_credential_secret(secret: dict[str, Any], monitor: Monitor) -> auth.Credential:
    """Return the monitor key held in a credential Secret; CredentialError says what is wrong."""
    raw = (secret.get("data") or {}).get(auth.WORKER_FILE)
    if not raw:
        raise auth.CredentialError(
            f"Secret {monitor.namespace}/{credential_name(monitor.name)} has no {auth.WORKER_FILE}; "
            "delete it and the operator creates a new credential"
        )
    try:
        text = base64.b64decode(raw)
    except (binascii.Error, ValueError):
        raise auth.CredentialError(
            f"Secret {credential_name(monitor.name)}: {auth.WORKER_FILE} is not base64"
        ) from None
    cred = auth.Credential.from_json(text, source=f"Secret {credential_name(monitor.name)}")
    if cred.monitor != monitor.key or cred.role != auth.ALL_ROLES:
        raise auth.CredentialError(
            f"Secret {monitor.namespace}/{credential_name(monitor.name)} holds a credential for "
            f"{cred.monitor!r} ({cred.role}), not monitor {monitor.key!r}; delete it and the "
            "operator creates a new one"
        )
    return cred


def read_shard_map(config_map: dict[str, Any] | None) -> ShardMap | None:
    """Return the shard map published in a monitor ConfigMap, or None if absent/garbled."""
    if not config_map:
        return None
    raw = (config_map.get("data") or {}).get(SHARDMAP_FILE)
    if not raw:
        return None
    try:
        return ShardMap.model_validate_json(raw)
    except ValueError:
        return None


def next_shard_map(
    previous: ShardMap | None, status_epoch: int | None, monitor: Monitor
) -> ShardMap:
    """Return the shard map to publish: the same one, or the next epoch on a reshard.

    The ConfigMap is what workers read; the status remembers the epoch in case
    someone deletes the ConfigMap, so an epoch never goes backwards. The first map
    has epoch 1.
    """
    shards = monitor.spec.workers.shards
    last = max(previous.epoch if previous else 0, status_epoch or 0)
    if previous is not None and previous.monitor == monitor.key:
        if previous.shards == shards and previous.epoch >= last:
            return previous
        advanced = previous.advance(shards)
        if advanced.epoch > last:
            return advanced
        return ShardMap(
            monitor=monitor.key, epoch=last + 1, shards=shards, history=advanced.history
        )
    return ShardMap(monitor=monitor.key, epoch=last + 1, shards=shards)


def _service_monitor(
    monitor: Monitor, settings: OperatorSettings, name: str, component: str
) -> dict[str, Any]:
    meta = _meta(monitor, name, component)
    meta["labels"] = {**settings.monitoring_labels, **meta["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector_labels(monitor.name, component)},
            "endpoints": [
                {"port": "http", "path": "/metrics", "interval": settings.scrape_interval}
            ],
        },
    }


def build_model_service_monitor(monitor: Monitor, settings: OperatorSettings) -> dict[str, Any]:
    """Return the ServiceMonitor that scrapes the model server."""
    return _service_monitor(monitor, settings, names.model_service(monitor.name), COMPONENT_MODEL)


def build_worker_service_monitor(monitor: Monitor, settings: OperatorSettings) -> dict[str, Any]:
    """Return the ServiceMonitor that scrapes every drift-worker shard."""
    return _service_monitor(
        monitor, settings, names.workers_service(monitor.name), COMPONENT_WORKER
    )


def build_prometheus_rule(
    monitor: Monitor, settings: OperatorSettings, renderers: Renderers
) -> dict[str, Any]:
    """Return the PrometheusRule with this monitor's recording and alerting groups."""
    meta = _meta(monitor, config_name(monitor.name), COMPONENT_ALERTS)
    meta["labels"] = {**settings.monitoring_labels, **meta["labels"]}
    groups = renderers.rule_groups(monitor.name, monitor.namespace, monitor.spec)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": meta,
        "spec": {"groups": groups},
    }


def build_alertmanager_config(
    monitor: Monitor, settings: OperatorSettings, renderers: Renderers
) -> dict[str, Any] | None:
    """Return the AlertmanagerConfig routing this monitor's alerts, or None without receivers."""
    if not monitor.spec.alerts.receivers:
        return None
    meta = _meta(monitor, config_name(monitor.name), COMPONENT_ALERTS)
    meta["labels"] = {**settings.monitoring_labels, **meta["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1alpha1",
        "kind": "AlertmanagerConfig",
        "metadata": meta,
        "spec": renderers.alertmanager_spec(monitor.name, monitor.namespace, monitor.spec),
    }


def build_dashboard_config_map(
    monitor: Monitor, settings: OperatorSettings, renderers: Renderers
) -> dict[str, Any] | None:
    """Return the Grafana dashboard ConfigMap, or None when dashboards are off."""
    if not (settings.dashboards_enabled and monitor.spec.dashboard.enabled):
        return None
    meta = _meta(monitor, dashboard_name(monitor, settings), COMPONENT_DASHBOARD)
    meta["labels"] = {**settings.dashboard_labels, **meta["labels"]}
    if settings.dashboard_namespace:
        meta["namespace"] = settings.dashboard_namespace
        meta["labels"][MONITOR_NAMESPACE_LABEL] = monitor.namespace
    if settings.dashboard_annotations:
        meta["annotations"] = dict(settings.dashboard_annotations)
    dashboard = renderers.dashboard(monitor.name, monitor.namespace, monitor.spec)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        # Compact: with indent, json uses its pure-Python encoder, which made this one
        # call most of the operator's CPU per monitor (Grafana does not care).
        "data": {
            f"driftwarden-{monitor.namespace}-{monitor.name}.json": json.dumps(
                dashboard, sort_keys=True, separators=(",", ":")
            )
            + "\n"
        },
    }


# ---------------------------------------------------------------------------- all


def finalize(child: dict[str, Any], monitor: Monitor) -> dict[str, Any]:
    """Adopt ``child`` (owner reference, namespace) and stamp its input hash.

    A child in another namespace (a shared dashboard namespace) cannot carry an
    owner reference; the operator's finalizer deletes it instead.
    """
    if child["metadata"].get("namespace", monitor.namespace) == monitor.namespace:
        kopf.adopt(child, owner=monitor.owner_body())
    else:
        # Parent labels still travel, as kopf.adopt would copy them.
        for key, value in monitor.labels.items():
            child["metadata"]["labels"].setdefault(key, value)
    annotations = child["metadata"].setdefault("annotations", {})
    annotations.pop(INPUT_HASH_ANNOTATION, None)
    annotations[INPUT_HASH_ANNOTATION] = digest(child)
    return child


def build_children(
    monitor: Monitor,
    settings: OperatorSettings,
    *,
    shard_map: ShardMap,
    renderers: Renderers,
    worker_replicas: int | None = None,
) -> list[dict[str, Any]]:
    """Return every child of ``monitor``, adopted and hashed, in apply order.

    The ConfigMap comes first so pods never start without their config.
    ``worker_replicas``: the StatefulSet's size when it must differ from the spec's
    shard count (a scale-down waiting for handoffs).
    """
    children: list[dict[str, Any] | None] = [
        build_config_map(monitor, settings, shard_map),
        build_model_service(monitor, settings),
        build_worker_service(monitor, settings),
        build_model_deployment(monitor, settings),
        build_worker_statefulset(monitor, settings, replicas=worker_replicas),
        build_model_autoscaler(monitor, settings),
        build_model_disruption_budget(monitor, settings),
        build_worker_disruption_budget(monitor, settings),
        build_model_network_policy(monitor, settings),
        build_worker_network_policy(monitor, settings),
        build_model_service_monitor(monitor, settings),
        build_worker_service_monitor(monitor, settings),
        build_prometheus_rule(monitor, settings, renderers),
        build_alertmanager_config(monitor, settings, renderers),
        build_dashboard_config_map(monitor, settings, renderers),
    ]
    return [finalize(c, monitor) for c in children if c is not None]
