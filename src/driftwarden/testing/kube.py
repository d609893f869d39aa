"""Small Kubernetes helpers for tests: readable summaries for failure messages."""

from __future__ import annotations

from typing import Any

__all__ = ["describe_pods"]


def describe_pods(core_v1: Any, namespace: str) -> list[dict[str, Any]]:
    """Return each pod's name, phase, node and (type, status, reason) conditions in a namespace."""
    summary = []
    for pod in core_v1.list_namespaced_pod(namespace).items:
        status = pod.status
        summary.append(
            {
                "name": pod.metadata.name,
                "phase": status.phase if status else None,
                "node": pod.spec.node_name,
                "conditions": [(c.type, c.status, c.reason) for c in (status.conditions or [])]
                if status
                else [],
            }
        )
    return summary
