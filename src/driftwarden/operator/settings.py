"""Operator settings from the environment (``DRIFTWARDEN_OPERATOR__*``).

The Helm chart sets these (charts/driftwarden/templates/_helpers.tpl,
``driftwarden.operatorEnv``); every default is documented in docs/operator.md.
Dict and list settings are JSON, e.g. ``DRIFTWARDEN_OPERATOR__MONITORING_LABELS='{"release": "kps"}'``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftwarden import __version__
from driftwarden.common import names

DEFAULT_MODEL_SERVER_IMAGE = f"driftwarden/driftwarden-model-server:{__version__}"
DEFAULT_DRIFT_WORKER_IMAGE = f"driftwarden/driftwarden-drift-worker:{__version__}"


_PEER_KEYS = frozenset({"namespaceSelector", "podSelector", "ipBlock"})


class Resources(BaseModel):
    """Container resources in canonical Kubernetes quantities (so applies compare equal)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)

    def as_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.requests:
            out["requests"] = dict(self.requests)
        if self.limits:
            out["limits"] = dict(self.limits)
        return out


class OperatorSettings(BaseModel):
    """Everything the operator reads from its environment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(
        "",
        description=(
            "Namespace the operator runs in; the monitors' NetworkPolicies admit the operator "
            "from this namespace only (empty: from any namespace)."
        ),
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "text"
    peering_name: str = Field(
        "", description="kopf ClusterKopfPeering name; empty runs standalone (no standby)."
    )
    peering_priority: int = Field(0, description="kopf peering priority of this replica.")
    shutdown_timeout_seconds: float = Field(20.0, gt=0)
    health_port: int = Field(0, ge=0, le=65535, description="/healthz listener; 0 disables.")
    metrics_port: int = Field(0, ge=0, le=65535, description="/metrics listener; 0 disables.")

    model_server_image: str = DEFAULT_MODEL_SERVER_IMAGE
    drift_worker_image: str = DEFAULT_DRIFT_WORKER_IMAGE
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[dict[str, str]] = Field(default_factory=list)
    model_server_resources: Resources = Field(
        default_factory=lambda: Resources(
            requests={"cpu": "100m", "memory": "256Mi"}, limits={"memory": "1Gi"}
        )
    )
    drift_worker_resources: Resources = Field(
        default_factory=lambda: Resources(
            requests={"cpu": "100m", "memory": "256Mi"}, limits={"memory": "1Gi"}
        )
    )
    run_as_user: int = Field(10001, ge=1, description="UID of model-server and worker pods.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)

    monitoring_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra labels on ServiceMonitors, PrometheusRules, AlertmanagerConfigs.",
    )
    scrape_interval: str = "30s"
    dashboards_enabled: bool = True
    dashboard_labels: dict[str, str] = Field(default_factory=lambda: {"grafana_dashboard": "1"})
    dashboard_annotations: dict[str, str] = Field(default_factory=dict)
    dashboard_namespace: str = Field(
        "", description="Namespace of dashboard ConfigMaps; empty: beside each monitor."
    )

    operator_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {
            "app.kubernetes.io/name": "driftwarden",
            "app.kubernetes.io/component": "operator",
        },
        min_length=1,
        description="Labels of the operator's pods, which the workers' NetworkPolicy admits.",
    )
    prometheus_peer: dict[str, Any] = Field(
        default_factory=lambda: {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        },
        description=(
            "The NetworkPolicy peer (namespaceSelector, podSelector, ipBlock) that may scrape "
            "the drift workers; the default matches kube-prometheus-stack's Prometheus pods "
            "in any namespace."
        ),
    )

    resync_seconds: float = Field(
        60.0, gt=0, description="Idle resync period per monitor (restores edited children)."
    )
    worker_status_url: str = Field(
        names.worker_url_template("{monitor}", "{namespace}", 8080) + "/status",
        description="Where the operator reads each shard's /status; empty disables.",
    )
    worker_status_timeout_seconds: float = Field(1.0, gt=0)
    worker_status_interval_seconds: float = Field(30.0, gt=0)
    worker_base_port: int = Field(
        0,
        ge=0,
        le=65535,
        description=(
            "Base of {port} (= base + ordinal) in worker_status_url, for shards that share "
            "one host (local runs and tests); unused in a cluster."
        ),
    )
    scale_down_poll_seconds: float = Field(
        2.0,
        gt=0,
        description=("While a scale-down waits for the shards' handoffs, how often to check them."),
    )
    input_hash_skip: bool = Field(
        True,
        description=(
            "Skip applying children whose input hash and fields already match (off only "
            "for benchmarks: every resync then re-applies every child)."
        ),
    )
    api_timeout_seconds: float = Field(30.0, gt=0)
    max_concurrent_applies: int = Field(16, ge=1, le=256)

    @field_validator("prometheus_peer")
    @classmethod
    def _is_a_peer(cls, peer: dict[str, Any]) -> dict[str, Any]:
        # An empty peer would admit nobody; a misspelt key would be refused by the API
        # server on every monitor's policy, far from the setting that caused it.
        unknown = set(peer) - _PEER_KEYS
        if not peer or unknown:
            raise ValueError(
                f"prometheus_peer must be a NetworkPolicyPeer with some of {sorted(_PEER_KEYS)}"
                + (f"; unknown: {sorted(unknown)}" if unknown else "")
            )
        return peer


class _EnvSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DRIFTWARDEN_", env_nested_delimiter="__", extra="ignore"
    )

    operator: OperatorSettings = Field(default_factory=OperatorSettings)


def load_settings() -> OperatorSettings:
    """Return the operator settings read from ``DRIFTWARDEN_OPERATOR__*`` variables."""
    return _EnvSettings().operator
