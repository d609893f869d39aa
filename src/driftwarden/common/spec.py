"""The DriftMonitor spec as pydantic models: the single source of the CRD schema.

Draft contract shared by every component. The operator owns its evolution
(validation rules, CRD generation); the worker and model server read the same
models from the rendered monitor config. Field names are camelCase on the wire.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


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


class DetectorConfig(_Model):
    type: DetectorType
    alpha: float | None = Field(None, gt=0, lt=1, description="alpha: per-test significance level.")
    threshold: float | None = Field(None, gt=0, description="threshold: alarm threshold (PSI, KL, JS, lambda for Page-Hinkley).")
    delta: float | None = Field(None, ge=0, description="delta: Page-Hinkley tolerance, in reference standard deviations.")
    min_effect: float | None = Field(None, ge=0, description="minEffect: smallest effect size that may alarm (KS D, PSI, Wasserstein in reference sigma).")
    bins: int | None = Field(None, ge=2, le=100, description="bins: histogram bins for numeric divergences.")
    permutations: int | None = Field(None, ge=10, le=10000, description="permutations: permutation-test draws (MMD).")


class MultipleTesting(str, Enum):
    BH = "benjaminiHochberg"
    BONFERRONI = "bonferroni"
    NONE = "none"


class DetectorsSpec(_Model):
    numeric: list[DetectorConfig] = Field(default_factory=lambda: [DetectorConfig(type=DetectorType.KS)])
    categorical: list[DetectorConfig] = Field(
        default_factory=lambda: [DetectorConfig(type=DetectorType.CHI2), DetectorConfig(type=DetectorType.PSI)]
    )
    prediction: list[DetectorConfig] | None = Field(None, description="prediction: defaults by the prediction's type.")
    concept: list[DetectorConfig] | None = Field(None, description="concept: defaults to relativeMse (regression) or errorRate (classification).")
    embedding: list[DetectorConfig] = Field(default_factory=lambda: [DetectorConfig(type=DetectorType.MMD)])
    multiple_testing: MultipleTesting = MultipleTesting.BH
    fdr: float = Field(0.05, gt=0, lt=1, description="fdr: false-discovery rate (or family-wise alpha for bonferroni).")
    min_samples: int = Field(200, ge=1, description="minSamples: values a stream needs before it may alarm.")


class ModelSpec(_Model):
    bundle: str = Field(min_length=1, description="bundle: model bundle URI, builtin://<name> or file:///<path>.")
    replicas: int = Field(2, ge=1, le=100)


class WorkersSpec(_Model):
    shards: int = Field(3, ge=1, le=64, description="shards: drift-worker StatefulSet replicas (scale subresource).")
    window: int = Field(1000, ge=50, le=1_000_000, description="window: sliding window length per stream.")
    evaluate_every: int = Field(100, ge=1, description="evaluateEvery: values between windowed tests.")
    storage: str = Field("1Gi", description="storage: PVC size per shard for WAL and snapshots.")
    storage_class_name: str | None = None


class SecretKeyRef(_Model):
    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class DiscordReceiver(_Model):
    webhook_secret_ref: SecretKeyRef


class SlackReceiver(_Model):
    api_url_secret_ref: SecretKeyRef
    channel: str | None = None


class WebhookReceiver(_Model):
    url_secret_ref: SecretKeyRef


class Receiver(_Model):
    name: str = Field(min_length=1, max_length=63)
    discord: DiscordReceiver | None = None
    slack: SlackReceiver | None = None
    webhook: WebhookReceiver | None = None


class AlertsSpec(_Model):
    data_drift_share: float = Field(0.3, gt=0, le=1, description="dataDriftShare: share of features drifting that confirms data drift.")
    for_: str = Field("5m", alias="for", pattern=r"^([0-9]+(ms|s|m|h))+$")
    severity: str = "warning"
    receivers: list[Receiver] = Field(default_factory=list)


class DashboardSpec(_Model):
    enabled: bool = True


class LabelJoinSpec(_Model):
    key: str = Field("prediction_id", min_length=1)
    max_delay: str = Field("1h", pattern=r"^([0-9]+(ms|s|m|h))+$")


class DriftMonitorSpec(_Model):
    model: ModelSpec
    workers: WorkersSpec = Field(default_factory=WorkersSpec)
    detectors: DetectorsSpec = Field(default_factory=DetectorsSpec)
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    dashboard: DashboardSpec = Field(default_factory=DashboardSpec)
    label_join: LabelJoinSpec = Field(default_factory=LabelJoinSpec)
