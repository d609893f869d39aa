"""The DriftMonitor spec and status as pydantic models: the single source of the CRD.

Every component reads the same models: the operator parses the custom resource
into them once, at the edge; the worker and the model server parse the rendered
monitor config (``monitor.json``) with them. ``driftwarden generate`` turns them
into the CRD's structural OpenAPI schema, so a rule lives here twice at most: as a
pydantic constraint (for Python readers) and as the matching CEL rule in
``x-kubernetes-validations`` (for the API server). Field names are camelCase on the
wire; every field description starts with the field's wire name.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel, to_snake

from driftwarden.common.durations import parse_duration

# Go-style durations without days, so CEL's duration() and our parsers agree.
DURATION_PATTERN = r"^([0-9]+(ms|s|m|h))+$"
# Children are named <monitor>-workers-<ordinal>; a StatefulSet name must leave room
# for the 11-character controller-revision-hash suffix in a 63-character label.
MAX_MONITOR_NAME = 44


def _cel(rule: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"rule": rule, "message": message, **extra}


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class DetectorType(str, Enum):
    """Every detector a monitor can name."""

    KS = "ks"  # windowed two-sample KS vs reference (numeric)
    IKS = "iks"  # incremental KS, exact statistic after every value (numeric)
    PAGE_HINKLEY = "pageHinkley"  # numeric mean shift (standardised by reference)
    NM_DDM = "nmDdm"  # calibrated multivariate KDE/MMD test on summaries (embeddings)
    CHI2 = "chi2"  # categorical
    KL = "kl"
    JS = "js"
    PSI = "psi"
    RELATIVE_MSE = "relativeMse"  # concept drift, regression
    ERROR_RATE = "errorRate"  # concept drift, classification
    DDM = "ddm"
    EDDM = "eddm"
    HDDM_A = "hddmA"
    HDDM_W = "hddmW"
    ADWIN = "adwin"
    MMD = "mmd"  # embeddings
    MIXTURE_CUSUM = "mixtureCusum"  # numeric mean/variance shifts, threshold from the budget
    MULTINOMIAL_CUSUM = "multinomialCusum"  # any distribution change (categories or bins)


_D = DetectorType
# Which detectors make sense on which stream type; the CRD enforces the same sets.
NUMERIC_DETECTORS: tuple[DetectorType, ...] = (
    _D.MIXTURE_CUSUM,
    _D.MULTINOMIAL_CUSUM,
    _D.KS,
    _D.IKS,
    _D.PAGE_HINKLEY,
    _D.PSI,
    _D.KL,
    _D.JS,
)
CATEGORICAL_DETECTORS: tuple[DetectorType, ...] = (
    _D.MULTINOMIAL_CUSUM,
    _D.CHI2,
    _D.PSI,
    _D.KL,
    _D.JS,
)
PREDICTION_DETECTORS: tuple[DetectorType, ...] = tuple(
    dict.fromkeys(NUMERIC_DETECTORS + CATEGORICAL_DETECTORS)
)
CONCEPT_DETECTORS: tuple[DetectorType, ...] = (
    _D.RELATIVE_MSE,
    _D.ERROR_RATE,
    _D.DDM,
    _D.EDDM,
    _D.HDDM_A,
    _D.HDDM_W,
    _D.ADWIN,
    _D.PAGE_HINKLEY,
)
EMBEDDING_DETECTORS: tuple[DetectorType, ...] = (_D.MMD, _D.NM_DDM)
# Detectors that report an effect size (DetectorResult.effect_size), so minEffect can gate
# them: KS D, Cramer's V for chi2, the divergence itself, the relative MSE or error-rate
# increase.
MIN_EFFECT_DETECTORS: tuple[DetectorType, ...] = (
    _D.KS,
    _D.IKS,
    _D.CHI2,
    _D.PSI,
    _D.KL,
    _D.JS,
    _D.RELATIVE_MSE,
    _D.ERROR_RATE,
)
# Parameters (wire names) that only some detectors read; setting one elsewhere is a mistake.
_PARAMETER_DETECTORS: dict[str, tuple[DetectorType, ...]] = {
    "delta": (_D.PAGE_HINKLEY, _D.ADWIN),
    "bins": (_D.PSI, _D.KL, _D.JS, _D.MULTINOMIAL_CUSUM),
    "permutations": (_D.MMD, _D.NM_DDM),
    "minEffect": MIN_EFFECT_DETECTORS,
}


def _names(types: tuple[DetectorType, ...]) -> list[str]:
    return [t.value for t in types]


def _cel_list(values: list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _detector_list_rule(stream: str, allowed: tuple[DetectorType, ...]) -> dict[str, Any]:
    names = _names(allowed)
    return _cel(
        f"self.all(d, d.type in {_cel_list(names)})",
        f"{stream} detectors must be of type {', '.join(names)}",
    )


def _parameter_rules() -> list[dict[str, Any]]:
    return [
        _cel(
            f"!has(self.{param}) || self.type in {_cel_list(_names(types))}",
            f"{param} applies only to detectors of type {', '.join(_names(types))}",
        )
        for param, types in _PARAMETER_DETECTORS.items()
    ]


class DetectorConfig(_Model):
    """One detector on a stream, with optional overrides of its defaults."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _parameter_rules()})

    type: DetectorType = Field(description="type: detector name.")
    alpha: float | None = Field(
        None,
        gt=0,
        lt=1,
        description=(
            "alpha: per-test significance level, in (0, 1). Under benjaminiHochberg or "
            "bonferroni a test with alpha set alarms only when its p-value is below alpha and "
            "the correction rejects it; unset, the correction alone decides (the level derived "
            "from the budget applies with multipleTesting none)."
        ),
    )
    threshold: float | None = Field(
        None,
        gt=0,
        description="threshold: alarm threshold (PSI, KL, JS, lambda for Page-Hinkley); > 0.",
    )
    delta: float | None = Field(
        None,
        ge=0,
        description="delta: Page-Hinkley/ADWIN tolerance, in reference standard deviations.",
    )
    min_effect: float | None = Field(
        None,
        ge=0,
        description=(
            "minEffect: smallest effect size that may alarm, >= 0: KS D (ks, iks), Cramer's V "
            "(chi2), the divergence (psi, kl, js), the relative MSE increase (relativeMse) or "
            "the error-rate increase (errorRate). Refused on detectors without an effect size."
        ),
    )
    bins: int | None = Field(
        None, ge=2, le=100, description="bins: histogram bins for numeric divergences."
    )
    permutations: int | None = Field(
        None, ge=10, le=10000, description="permutations: permutation-test draws (MMD)."
    )

    @model_validator(mode="after")
    def _parameters_fit_type(self) -> DetectorConfig:
        for param, types in _PARAMETER_DETECTORS.items():
            if getattr(self, to_snake(param)) is not None and self.type not in types:
                raise ValueError(
                    f"{param} applies only to detectors of type {', '.join(_names(types))}"
                )
        return self


class MultipleTesting(str, Enum):
    """How per-feature tests are combined so many features do not alarm by chance."""

    BH = "benjaminiHochberg"
    BONFERRONI = "bonferroni"
    NONE = "none"


_MAX_DETECTORS = 8


def _detector_list(description: str, allowed: tuple[DetectorType, ...], default: Any) -> Any:
    extra = {"x-kubernetes-validations": [_detector_list_rule(description.split(":")[0], allowed)]}
    if default is None:
        return Field(
            None, max_length=_MAX_DETECTORS, description=description, json_schema_extra=extra
        )
    return Field(
        default_factory=default,
        max_length=_MAX_DETECTORS,
        description=description,
        json_schema_extra=extra,
    )


class DetectorsSpec(_Model):
    """Detectors per stream type; defaults follow the bundle's feature schema."""

    numeric: list[DetectorConfig] = _detector_list(
        "numeric: detectors on every numeric feature stream.",
        NUMERIC_DETECTORS,
        lambda: [DetectorConfig(type=DetectorType.MIXTURE_CUSUM)],
    )
    categorical: list[DetectorConfig] = _detector_list(
        "categorical: detectors on every categorical feature stream.",
        CATEGORICAL_DETECTORS,
        lambda: [DetectorConfig(type=DetectorType.MULTINOMIAL_CUSUM)],
    )
    prediction: list[DetectorConfig] | None = _detector_list(
        "prediction: detectors on the prediction stream; defaults by the prediction's type "
        "(numeric detectors for regression, categorical for classification).",
        PREDICTION_DETECTORS,
        None,
    )
    concept: list[DetectorConfig] | None = _detector_list(
        "concept: concept-drift detectors on the performance stream; defaults to relativeMse "
        "(regression) or errorRate (classification).",
        CONCEPT_DETECTORS,
        None,
    )
    embedding: list[DetectorConfig] = _detector_list(
        "embedding: detectors on every embedding group (bundles that expose embeddings).",
        EMBEDDING_DETECTORS,
        lambda: [DetectorConfig(type=DetectorType.MMD)],
    )
    multiple_testing: MultipleTesting = Field(
        MultipleTesting.BH,
        description="multipleTesting: correction across feature streams of one monitor.",
    )
    fdr: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="fdr: false-discovery rate (or family-wise alpha for bonferroni), in (0, 1).",
    )
    values_per_false_alarm: int = Field(
        1_000_000,
        ge=1_000,
        le=1_000_000_000_000,
        description=(
            "valuesPerFalseAlarm: the monitor's false-alarm budget, in values per stream: with "
            "no change, the monitor as a whole raises on average at most one false alarm per "
            "this many values of each stream (ARL0). Split evenly over the monitor's budgeted "
            "tests; each detector's threshold follows from its share. In [1000, 1e12]."
        ),
    )
    min_samples: int = Field(
        200,
        ge=1,
        le=10_000_000,
        description="minSamples: values a stream needs before it may alarm.",
    )
    alarm_hold: str | None = Field(
        None,
        max_length=32,
        pattern=DURATION_PATTERN,
        description=(
            "alarmHold: how long a stream stays drifting after an alarm of a detector without "
            "a p-value (mixtureCusum, multinomialCusum, pageHinkley, the DDM family, ADWIN, "
            "divergences). These restart their evidence when they alarm, so their verdict "
            "would last one value; the hold lets the alert see it. Longer than alerts.for, so "
            "every alarm can fire its alert; at most 24h. Default: the larger of 15m and twice "
            "alerts.for."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "duration(self) <= duration('24h')", "detectors.alarmHold must be at most 24h"
                ),
            ]
        },
    )

    @model_validator(mode="after")
    def _detectors_fit_streams(self) -> DetectorsSpec:
        for stream, allowed in (
            ("numeric", NUMERIC_DETECTORS),
            ("categorical", CATEGORICAL_DETECTORS),
            ("prediction", PREDICTION_DETECTORS),
            ("concept", CONCEPT_DETECTORS),
            ("embedding", EMBEDDING_DETECTORS),
        ):
            for det in getattr(self, stream) or []:
                if det.type not in allowed:
                    raise ValueError(
                        f"{stream} detectors must be of type {', '.join(_names(allowed))}"
                    )
        return self


_REQUESTS_PER_SECOND_REFUSED = (
    "model.autoscaling.targetRequestsPerSecond is not supported: it needs a custom-metrics "
    "adapter (prometheus-adapter) serving the model server's request rate, which "
    "Driftwarden does not install; use targetCPUUtilizationPercentage"
)
_REPLICAS_WITH_AUTOSCALING = (
    "model.replicas and model.autoscaling are exclusive: with autoscaling the "
    "HorizontalPodAutoscaler sets the replicas (between minReplicas and maxReplicas); "
    "remove replicas"
)

# A bundle digest (driftwarden.bundles.integrity, which checks it with the same pattern).
BUNDLE_DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
# The model server's default bound on concurrent requests (docs/model-server.md).
DEFAULT_MAX_INFLIGHT_REQUESTS = 256


# The model-server replicas when neither spec.model.replicas nor autoscaling is set.
DEFAULT_MODEL_REPLICAS = 2
_MAX_MODEL_REPLICAS = 100


class AutoscalingSpec(_Model):
    """A HorizontalPodAutoscaler for the model server (docs/model-server.md, "Autoscaling")."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.minReplicas <= self.maxReplicas",
                    "model.autoscaling.minReplicas must not exceed model.autoscaling.maxReplicas",
                ),
            ]
        }
    )

    min_replicas: int = Field(
        DEFAULT_MODEL_REPLICAS,
        ge=1,
        le=_MAX_MODEL_REPLICAS,
        description="minReplicas: fewest model-server replicas the autoscaler keeps.",
    )
    max_replicas: int = Field(
        ge=1,
        le=_MAX_MODEL_REPLICAS,
        description="maxReplicas: most model-server replicas the autoscaler may run.",
    )
    target_cpu_utilization_percentage: int = Field(
        80,
        ge=1,
        le=100,
        description=(
            "targetCPUUtilizationPercentage: mean CPU use across the model-server pods, in "
            "percent of their CPU request, that the autoscaler aims for."
        ),
        alias="targetCPUUtilizationPercentage",
    )
    target_requests_per_second: int | None = Field(
        None,
        description=(
            "targetRequestsPerSecond: not supported; refused. Scaling on request rate needs "
            "a custom-metrics adapter (prometheus-adapter) serving the model server's request "
            "rate as a pods metric, which Driftwarden neither installs nor can check for."
        ),
        json_schema_extra={
            "x-kubernetes-validations": [_cel("false", _REQUESTS_PER_SECOND_REFUSED)]
        },
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                "model.autoscaling.minReplicas must not exceed model.autoscaling.maxReplicas"
            )
        if self.target_requests_per_second is not None:
            raise ValueError(_REQUESTS_PER_SECOND_REFUSED)
        return self


class ModelSpec(_Model):
    """The model under watch and its serving replicas."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # On the object: a field rule cannot see its sibling.
                _cel("!has(self.replicas) || !has(self.autoscaling)", _REPLICAS_WITH_AUTOSCALING)
            ]
        }
    )

    bundle: str = Field(
        min_length=1,
        max_length=512,
        pattern=r"^(builtin://[a-z0-9]([-a-z0-9_]*[a-z0-9])?|file:///.+)$",
        description=(
            "bundle: model bundle URI, builtin://<name> (a bundle shipped in the image) or "
            "file:///<path> (a directory inside the container's bundles directory, "
            "$DRIFTWARDEN_BUNDLES_DIR: /opt/driftwarden-bundles in the shipped images)."
        ),
    )
    digest: str | None = Field(
        None,
        pattern=BUNDLE_DIGEST_PATTERN,
        max_length=71,
        description=(
            "digest: pins the bundle, sha256:<64 lowercase hex>; the model server and the "
            "drift workers refuse to load a bundle with another digest "
            "(`driftwarden bundle digest <uri>` prints it; docs/bundles.md defines it)."
        ),
    )
    replicas: int | None = Field(
        None,
        ge=1,
        le=_MAX_MODEL_REPLICAS,
        description=(
            f"replicas: model-server Deployment replicas ({DEFAULT_MODEL_REPLICAS} when unset); "
            "not with autoscaling, which sets them."
        ),
    )
    autoscaling: AutoscalingSpec | None = Field(
        None,
        description=(
            "autoscaling: a HorizontalPodAutoscaler sizes the model server instead of "
            "replicas; the operator then never writes the Deployment's replicas."
        ),
    )
    max_inflight_requests: int = Field(
        DEFAULT_MAX_INFLIGHT_REQUESTS,
        ge=1,
        le=100_000,
        description=(
            "maxInflightRequests: most /predict and /feedback requests one model-server "
            "replica serves at once; beyond it the replica answers 503 with Retry-After."
        ),
    )

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> ModelSpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError(_REPLICAS_WITH_AUTOSCALING)
        return self

    @property
    def fixed_replicas(self) -> int | None:
        """Return the replicas the operator sets, or None while an autoscaler sets them."""
        if self.autoscaling is not None:
            return None
        return DEFAULT_MODEL_REPLICAS if self.replicas is None else self.replicas


_STORAGE_IMMUTABLE = _cel(
    "self == oldSelf",
    "workers.storage is immutable: a StatefulSet cannot change its volume claims; "
    "create a new monitor",
)


# The most shards a monitor may have; the workers refuse shard maps beyond it too.
MAX_SHARDS = 64


class WorkersSpec(_Model):
    """The drift-worker StatefulSet: one shard per replica, one volume per shard."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.evaluateEvery <= self.window",
                    "workers.evaluateEvery must not exceed workers.window",
                ),
                # On the object, not the field: a field rule with oldSelf misses adding or
                # removing an optional field.
                _cel(
                    "(has(self.storageClassName) ? self.storageClassName : '') == "
                    "(has(oldSelf.storageClassName) ? oldSelf.storageClassName : '')",
                    "workers.storageClassName is immutable: a StatefulSet cannot change its volume "
                    "claims; create a new monitor",
                ),
            ]
        }
    )

    shards: int = Field(
        3,
        ge=1,
        le=MAX_SHARDS,
        description=(
            "shards: drift-worker StatefulSet replicas; the scale subresource "
            "(kubectl scale driftmonitor/<name> --replicas=N) sets it."
        ),
    )
    window: int = Field(
        1000, ge=50, le=1_000_000, description="window: sliding window length per stream."
    )
    evaluate_every: int = Field(
        100,
        ge=1,
        le=1_000_000,
        description="evaluateEvery: values between windowed tests (at most window).",
    )
    storage: str = Field(
        "1Gi",
        max_length=32,
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$",
        description="storage: PVC size per shard for the WAL and snapshots (immutable).",
        json_schema_extra={"x-kubernetes-validations": [_STORAGE_IMMUTABLE]},
    )
    storage_class_name: str | None = Field(
        None,
        max_length=253,
        description=(
            "storageClassName: StorageClass of the shard volumes; the cluster default when "
            "unset (immutable)."
        ),
    )

    @model_validator(mode="after")
    def _evaluate_within_window(self) -> WorkersSpec:
        if self.evaluate_every > self.window:
            raise ValueError("workers.evaluateEvery must not exceed workers.window")
        return self


class SecretKeyRef(_Model):
    """A key of a Secret in the monitor's namespace."""

    name: str = Field(min_length=1, max_length=253, description="name: Secret name.")
    key: str = Field(min_length=1, max_length=253, description="key: key inside the Secret.")


class DiscordReceiver(_Model):
    """Discord: Alertmanager discord_configs."""

    webhook_secret_ref: SecretKeyRef = Field(
        description="webhookSecretRef: Secret key holding the Discord webhook URL."
    )


class SlackReceiver(_Model):
    """Slack: Alertmanager slack_configs."""

    api_url_secret_ref: SecretKeyRef = Field(
        description="apiUrlSecretRef: Secret key holding the Slack incoming-webhook URL."
    )
    channel: str | None = Field(
        None, max_length=80, description="channel: Slack channel, e.g. #ml-alerts."
    )


class WebhookReceiver(_Model):
    """Generic webhook: Alertmanager webhook_configs."""

    url_secret_ref: SecretKeyRef = Field(
        description="urlSecretRef: Secret key holding the webhook URL."
    )


_RECEIVER_KINDS = ("discord", "slack", "webhook")


class Receiver(_Model):
    """Where this monitor's alerts go: exactly one of discord, slack, webhook."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "[" + ", ".join(f"has(self.{k})" for k in _RECEIVER_KINDS) + "]"
                    ".filter(x, x).size() == 1",
                    "a receiver must set exactly one of discord, slack, webhook",
                ),
            ]
        }
    )

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="name: receiver name, unique within the monitor (DNS label).",
    )
    discord: DiscordReceiver | None = Field(None, description="discord: a Discord webhook.")
    slack: SlackReceiver | None = Field(None, description="slack: a Slack incoming webhook.")
    webhook: WebhookReceiver | None = Field(None, description="webhook: a generic webhook.")

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Receiver:
        if sum(getattr(self, k) is not None for k in _RECEIVER_KINDS) != 1:
            raise ValueError("a receiver must set exactly one of discord, slack, webhook")
        return self


class Severity(str, Enum):
    """Alert severity label."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertsSpec(_Model):
    """Alert thresholds and receivers."""

    data_drift_share: float = Field(
        0.3,
        gt=0,
        le=1,
        description=(
            "dataDriftShare: share of feature streams drifting that confirms data drift, in (0, 1]."
        ),
    )
    for_: str = Field(
        "5m",
        alias="for",
        max_length=32,
        pattern=DURATION_PATTERN,
        description="for: how long a condition must hold before an alert fires (e.g. 5m).",
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel("duration(self) <= duration('24h')", "alerts.for must be at most 24h"),
            ]
        },
    )
    severity: Severity = Field(Severity.WARNING, description="severity: alert severity label.")
    receivers: list[Receiver] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "receivers: where alerts go (an AlertmanagerConfig is rendered when set); "
            "names are unique."
        ),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @model_validator(mode="after")
    def _unique_receivers(self) -> AlertsSpec:
        names = [r.name for r in self.receivers]
        if len(names) != len(set(names)):
            raise ValueError(f"alerts.receivers names must be unique, got {names}")
        return self


class DashboardSpec(_Model):
    """The Grafana dashboard ConfigMap."""

    enabled: bool = Field(
        True, description="enabled: render a Grafana dashboard ConfigMap for this monitor."
    )


class NetworkPolicySpec(_Model):
    """The monitor's NetworkPolicies (docs/security.md)."""

    enabled: bool = Field(
        True,
        description=(
            "enabled: render NetworkPolicies that admit traffic to the drift-worker port only "
            "from this monitor's model-server and drift-worker pods, the operator and "
            "Prometheus, and to the model-server pods only on their serving port. Turn off "
            "when other senders must reach the workers, or to manage policies yourself."
        ),
    )


class LabelJoinSpec(_Model):
    """How late labels meet their predictions for concept drift."""

    key: str = Field(
        "prediction_id",
        min_length=1,
        max_length=63,
        description=(
            "key: the /predict request field (top level of each record, beside the features) "
            "whose value is the prediction's join id, the prediction_id that POST /feedback "
            "later sends with its label. The default prediction_id means no such field: the "
            "server generates every id and /predict answers it. A record without the field "
            "gets a server id; a malformed value (not 1 to 128 letters, digits and "
            "._:/@+-) is refused with 422 naming the field. Must not name a feature."
        ),
    )
    max_delay: str = Field(
        "1h",
        max_length=32,
        pattern=DURATION_PATTERN,
        description="maxDelay: how long a prediction waits for its label (at most 168h).",
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "duration(self) > duration('0s') && duration(self) <= duration('168h')",
                    "labelJoin.maxDelay must be greater than 0s and at most 168h",
                ),
            ]
        },
    )


DEFAULT_ALARM_HOLD_S = 15 * 60.0
_ALARM_HOLD_TOO_SHORT = (
    "detectors.alarmHold must be longer than alerts.for: an alarm holds its stream's drift "
    "state for alarmHold, and the alert fires only once the state has held for alerts.for"
)


class DriftMonitorSpec(_Model):
    """DriftMonitor spec: what to watch and how."""

    model: ModelSpec = Field(description="model: the model bundle and its serving replicas.")
    workers: WorkersSpec = Field(
        default_factory=WorkersSpec, description="workers: drift-worker shards and windows."
    )
    detectors: DetectorsSpec = Field(
        default_factory=DetectorsSpec, description="detectors: detectors per stream type."
    )
    alerts: AlertsSpec = Field(
        default_factory=AlertsSpec, description="alerts: thresholds, severity and receivers."
    )
    dashboard: DashboardSpec = Field(
        default_factory=DashboardSpec, description="dashboard: the Grafana dashboard toggle."
    )
    label_join: LabelJoinSpec = Field(
        default_factory=LabelJoinSpec, description="labelJoin: joining late labels."
    )
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec,
        description="networkPolicy: who may reach the monitor's pods.",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.detectors) || !has(self.detectors.alarmHold) || "
                    "duration(self.detectors.alarmHold) > duration(has(self.alerts) && "
                    "has(self.alerts.for) ? self.alerts.for : '5m')",
                    _ALARM_HOLD_TOO_SHORT,
                )
            ]
        }
    )

    @model_validator(mode="after")
    def _alarm_hold_outlasts_for(self) -> DriftMonitorSpec:
        hold = self.detectors.alarm_hold
        if hold is not None and parse_duration(hold) <= parse_duration(self.alerts.for_):
            raise ValueError(_ALARM_HOLD_TOO_SHORT)
        return self

    def alarm_hold_seconds(self) -> float:
        """Return detectors.alarmHold in seconds (default: max(15m, 2 x alerts.for))."""
        if self.detectors.alarm_hold is not None:
            return parse_duration(self.detectors.alarm_hold)
        return max(DEFAULT_ALARM_HOLD_S, 2 * parse_duration(self.alerts.for_))


# ---------------------------------------------------------------------------- status


class ConditionStatus(str, Enum):
    """A condition's status, as in every Kubernetes API."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Model):
    """One observation about the monitor (shape of metav1.Condition)."""

    type: str = Field(
        max_length=316,
        description="type: Ready, Progressing, Degraded, DataDrift or ConceptDrift.",
    )
    status: ConditionStatus = Field(description="status: True, False or Unknown.")
    reason: str = Field(
        max_length=1024, description="reason: CamelCase reason for the last transition."
    )
    message: str = Field("", max_length=32768, description="message: human-readable details.")
    last_transition_time: str = Field(
        json_schema_extra={"format": "date-time"},
        description="lastTransitionTime: when status last changed (RFC 3339).",
    )
    observed_generation: int = Field(
        ge=0, description="observedGeneration: the spec generation this condition describes."
    )


# Detector names a monitor can run: five stream kinds, at most _MAX_DETECTORS each.
MAX_DETECTION_ENTRIES = 5 * _MAX_DETECTORS


class DetectorThresholds(_Model):
    """The thresholds one detector uses over the monitor's streams (from the workers)."""

    detector: str = Field(
        max_length=64,
        description=(
            "detector: the detector's name, as in the metrics' detector label (its type, "
            "or type#2 for a repeat)."
        ),
    )
    streams: int = Field(ge=0, description="streams: live streams running it.")
    drifting_streams: int = Field(
        ge=0, description="driftingStreams: of those, the streams where it reports drift."
    )
    threshold_min: float | None = Field(
        None,
        description=(
            "thresholdMin: the smallest threshold in use (alpha for tests with a p-value, "
            "else the statistic's alarm threshold); absent while none is finite."
        ),
    )
    threshold_max: float | None = Field(
        None, description="thresholdMax: the largest threshold in use."
    )
    values_per_false_alarm: float | None = Field(
        None,
        description=(
            "valuesPerFalseAlarm: the share of the monitor's budget its thresholds were set "
            "for, in values between false alarms on one stream (ARL0; the smallest over its "
            "streams); absent for detectors with a per-test level instead of a budget."
        ),
    )


class DetectionStatus(_Model):
    """The monitor's false-alarm budget and the thresholds its detectors use."""

    values_per_false_alarm: int = Field(
        description="valuesPerFalseAlarm: the monitor's budget (spec.detectors.valuesPerFalseAlarm)."
    )
    detectors: list[DetectorThresholds] = Field(
        default_factory=list,
        max_length=MAX_DETECTION_ENTRIES,
        description=(
            "detectors: one entry per detector name over every shard that answered (at most "
            f"{MAX_DETECTION_ENTRIES}, however many streams), sorted by name; empty until a "
            "shard answers."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["detector"],
        },
    )


class DriftMonitorStatus(_Model):
    """DriftMonitor status, written only by the operator."""

    observed_generation: int | None = Field(
        None, description="observedGeneration: the spec generation last reconciled."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="conditions: Ready, Progressing, Degraded, DataDrift, ConceptDrift.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    shards: int | None = Field(
        None, description="shards: shards in the published shard map (scale status replicas)."
    )
    ready_shards: int | None = Field(None, description="readyShards: drift-worker pods ready.")
    shard_epoch: int | None = Field(
        None, description="shardEpoch: epoch of the published shard map; grows on every reshard."
    )
    selector: str | None = Field(
        None, description="selector: label selector of the worker pods (scale subresource)."
    )
    model_replicas: int | None = Field(
        None, description="modelReplicas: model-server replicas available."
    )
    drifting_streams: int | None = Field(
        None, description="driftingStreams: streams whose detectors currently report drift."
    )
    drifting_stream_names: list[str] | None = Field(
        None,
        max_length=50,
        description="driftingStreamNames: the drifting streams (at most 50 listed).",
    )
    last_drift_time: str | None = Field(
        None,
        json_schema_extra={"format": "date-time"},
        description=(
            "lastDriftTime: event time of the latest alarm behind a drifting verdict (after "
            "minSamples and multiple-testing control; raw alarms set aside by them do not "
            "count), RFC 3339; kept after the drift ends."
        ),
    )
    detection: DetectionStatus | None = Field(
        None,
        description=(
            "detection: the false-alarm budget and, per detector, the thresholds in use "
            "(also exported as driftwarden_stream_threshold and "
            "driftwarden_stream_false_alarm_budget, per stream)."
        ),
    )
