"""What one demo run does: the bundle, the drift scenario, how much traffic and how fast.

The DriftMonitor spec is built the way a user writes it (camelCase, validated by the
same pydantic models as the CRD), so the local pipeline runs exactly what
``kubectl apply`` of that monitor would run in a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from driftwarden.common.spec import DriftMonitorSpec

MONITOR_NAME = "diamonds"
DEFAULT_SCENARIO = "diamonds:carat-shift"
WEBHOOK_SECRET = "demo-webhook"


@dataclass(frozen=True)
class DemoPlan:
    """Sizes and timings of one run; :func:`full_plan` and :func:`short_plan` are the presets."""

    bundle: str = "diamonds"
    scenario: str = DEFAULT_SCENARIO
    rows: int = 16_000
    drift_at: int = 8_000  # the row where the traffic switches to the shifted world
    batch_rows: int = 50  # rows per /predict request
    rows_per_second: float = 250.0
    shards: int = 3
    window: int = 1_000
    evaluate_every: int = 100
    min_samples: int = 300
    alert_for: str = "10s"
    alert_timeout_seconds: float = 90.0  # after the traffic ends
    seed: int = 7

    def __post_init__(self) -> None:
        if not 0 < self.drift_at < self.rows:
            raise ValueError(
                f"drift_at={self.drift_at} must lie strictly inside the traffic (rows={self.rows}) "
                "so that both halves exist"
            )
        if self.batch_rows < 1 or self.rows_per_second <= 0:
            raise ValueError("batch_rows must be >= 1 and rows_per_second > 0")

    @property
    def traffic_seconds(self) -> float:
        return self.rows / self.rows_per_second

    def monitor_spec(self) -> DriftMonitorSpec:
        """Return the DriftMonitor spec this plan monitors (alerts go to the local webhook)."""
        return DriftMonitorSpec.model_validate(self.monitor_spec_dict())

    def monitor_spec_dict(self) -> dict[str, Any]:
        """Return the spec as a user would write it in a DriftMonitor manifest."""
        return {
            "model": {"bundle": f"builtin://{self.bundle}", "replicas": 1},
            "workers": {
                "shards": self.shards,
                "window": self.window,
                "evaluateEvery": self.evaluate_every,
            },
            "detectors": {"minSamples": self.min_samples},
            "alerts": {
                "dataDriftShare": 0.3,
                "for": self.alert_for,
                "receivers": [
                    {
                        "name": "demo",
                        "webhook": {"urlSecretRef": {"name": WEBHOOK_SECRET, "key": "url"}},
                    }
                ],
            },
        }


def full_plan(**overrides: Any) -> DemoPlan:
    """Return the plan of ``make demo``: about a minute of traffic, drift halfway."""
    return replace(DemoPlan(), **overrides)


def short_plan(**overrides: Any) -> DemoPlan:
    """Return the plan of ``driftwarden demo --short`` (the e2e test): ~12 s of traffic."""
    return replace(
        DemoPlan(
            rows=4_000,
            drift_at=2_000,
            batch_rows=50,
            rows_per_second=400.0,
            window=500,
            evaluate_every=100,
            min_samples=200,
            alert_for="3s",
            alert_timeout_seconds=60.0,
        ),
        **overrides,
    )
