"""DriftMonitor bodies and pinned renderer stand-ins for the operator's unit tests."""

from __future__ import annotations

from typing import Any

from driftwarden.operator.builders import Renderers
from driftwarden.operator.monitor import Monitor

UID = "0b7f3f6e-7d0e-4e4c-9a55-3f1c9d1f2a10"

# Pinned stand-ins for the alerts/dashboards renderers, so these goldens change only
# when the operator's wrapping changes (their content is tested by their owners).
FAKE = Renderers(
    rule_groups=lambda name, ns, spec: [
        {
            "name": f"driftwarden.{name}",
            "rules": [
                {
                    "alert": "DriftwardenDataDrift",
                    "expr": f"vector(1) * {spec.alerts.data_drift_share}",
                    "for": spec.alerts.for_,
                }
            ],
        }
    ],
    alertmanager_spec=lambda name, ns, spec: {
        "route": {"receiver": spec.alerts.receivers[0].name},
        "receivers": [{"name": r.name} for r in spec.alerts.receivers],
    },
    dashboard=lambda name, ns, spec: {"title": f"Driftwarden {ns}/{name}", "panels": []},
)


def monitor(
    spec: dict[str, Any],
    name: str = "diamonds",
    namespace: str = "ml",
    labels: dict[str, str] | None = None,
    generation: int = 1,
) -> Monitor:
    return Monitor.from_body(
        {
            "apiVersion": "driftwarden.io/v1alpha1",
            "kind": "DriftMonitor",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": UID,
                "generation": generation,
                "labels": labels or {},
            },
            "spec": spec,
        }
    )
