"""Helpers of the pods tier: readable failures (events and container logs) and small pod specs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernetes import client

from driftwarden.testing.node import RealNode, busybox_image
from driftwarden.testing.waiting import wait_until

__all__ = ["busybox_container", "explain", "wait_for_ready_pods"]


def busybox_container(
    name: str, script: str, *, ports: Sequence[int] = (), **extra: Any
) -> dict[str, Any]:
    """A container of the tier's busybox image running `sh -c script` (never pulled)."""
    return {
        "name": name,
        "image": busybox_image(),
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
        "ports": [{"containerPort": p} for p in ports],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        **extra,
    }


def explain(core_v1: client.CoreV1Api, node: RealNode, namespace: str) -> Callable[[], str]:
    """Return a describe() callback: each pod's phase and conditions, the namespace's events, container logs."""

    def describe() -> str:
        lines = []
        for pod in core_v1.list_namespaced_pod(namespace).items:
            status = pod.status
            conditions = [(c.type, c.status, c.reason) for c in (status.conditions or [])]
            waiting = [
                (s.name, s.state.waiting.reason, s.state.waiting.message)
                for s in (status.container_statuses or [])
                if s.state and s.state.waiting
            ]
            lines.append(
                f"pod {pod.metadata.name}: phase={status.phase} node={pod.spec.node_name} "
                f"conditions={conditions} waiting={waiting}"
            )
            lines.append(node.pod_logs(namespace, pod.metadata.name))
        for event in core_v1.list_namespaced_event(namespace).items:
            lines.append(
                f"event {event.involved_object.kind}/{event.involved_object.name}: "
                f"{event.type} {event.reason}: {event.message}"
            )
        return "\n".join(lines)

    return describe


def wait_for_ready_pods(
    core_v1: client.CoreV1Api,
    node: RealNode,
    namespace: str,
    selector: Mapping[str, str],
    count: int,
    *,
    timeout: float = 120.0,
) -> list[client.V1Pod]:
    """Wait until `count` pods matching selector are Ready (their kubelet probes pass); return them."""
    label_selector = ",".join(f"{k}={v}" for k, v in selector.items())

    def ready() -> list[client.V1Pod] | None:
        pods = core_v1.list_namespaced_pod(namespace, label_selector=label_selector).items
        good = [
            p
            for p in pods
            if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
        ]
        return good if len(good) == count else None

    return wait_until(
        ready,
        timeout=timeout,
        what=f"{count} Ready pods {label_selector} in {namespace}",
        describe=explain(core_v1, node, namespace),
    )
