"""The model server's Prometheus metrics, one registry per app.

Names come from :mod:`driftwarden.common.names`. Series carry no ``monitor`` label:
the scrape job (``<monitor>-model``) and namespace identify the monitor, and the
recording rules add the label. Every label set is bounded: ``handler`` is a route
template or ``other``, ``reason`` one of :data:`validation.REASONS`, ``class`` one of
the bundle's classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)

from driftwarden.bundles import Bundle
from driftwarden.bundles.limits import in_training_range
from driftwarden.bundles.manifest import FeatureSpec
from driftwarden.common import names
from driftwarden.model_server.validation import REASONS

# Reasons of driftwarden_model_overloaded_total (a bounded label set).
OVERLOAD_INFLIGHT = "inflight_limit"
OVERLOAD_SENDER_FULL = "sender_queue_full"
NOT_READY = "not_ready"  # /v1/records refused while the server starts or stops

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.5, 5.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def _base(name: str, suffix: str) -> str:
    # prometheus_client appends the suffix itself.
    return name.removesuffix(suffix)


def prediction_buckets(bundle: Bundle) -> tuple[float, ...]:
    """Return histogram buckets for predictions: reference deciles, or class indexes."""
    if bundle.task == "classification":
        # Class i is counted in bucket le=i+0.5, so the bucket series is the class mix.
        return tuple(i + 0.5 for i in range(len(bundle.classes or ())))
    values = bundle.reference["prediction"].to_numpy(np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9)))
    # Rounded to 4 significant digits so the `le` labels read well on dashboards.
    return tuple(sorted({float(f"{e:.4g}") for e in edges}))


class ServerMetrics:
    """Every metric the model server exports, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        if process:
            ProcessCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            _base(names.M_REQUESTS, "_total"),
            "HTTP requests answered, by route and status code.",
            ["handler", "code"],
            registry=r,
        )
        self.latency = Histogram(
            names.M_REQUEST_LATENCY,
            "HTTP request latency in seconds, by route.",
            ["handler"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            _base(names.M_REJECTIONS, "_total"),
            "Requests refused before reaching the model, by endpoint and rule.",
            ["handler", "reason"],
            registry=r,
        )
        self.overloaded = Counter(
            _base(names.M_OVERLOADED, "_total"),
            "Requests answered 503 with Retry-After because the server was full, by endpoint "
            "and reason (inflight_limit: too many requests at once; sender_queue_full: the "
            "queue toward the drift workers has no room for the labels).",
            ["handler", "reason"],
            registry=r,
        )
        self.batch_rows = Histogram(
            names.M_BATCH_SIZE,
            "Rows per model call (micro-batches gather concurrent requests).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            names.M_BATCH_REQUESTS,
            "Requests sharing one model call.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(names.M_INFLIGHT, "Prediction requests being served now.", registry=r)
        self.feedback = Counter(
            _base(names.M_FEEDBACK_LABELS, "_total"),
            "Ground-truth labels received on /feedback and handed to the sender.",
            registry=r,
        )
        self.records = Counter(
            _base(names.M_RECORDS, "_total"),
            "Records logged on /v1/records by models served elsewhere: outcome accepted "
            "(reason ok, queued for the drift workers) or refused (reason: the validation rule, "
            "sender_queue_full, inflight_limit or not_ready).",
            ["outcome", "reason"],
            registry=r,
        )
        self.emission = Gauge(
            names.M_EMISSION_ENABLED,
            "1 if features and predictions are sent to drift workers, else 0.",
            registry=r,
        )
        self.out_of_range = Counter(
            _base(names.M_OUT_OF_RANGE, "_total"),
            "Values served although outside the training range seen by the bundle, by "
            "feature (inside the model's input limits: beyond them requests are refused).",
            ["feature"],
            registry=r,
        )
        self.predictions: Histogram | None = None
        self.classes: Counter | None = None
        self._ranged: list[FeatureSpec] = []  # numeric features with a training range
        self._classes: dict[str, int] = {}
        self.records.labels("accepted", "ok")
        for reason in (*REASONS, OVERLOAD_SENDER_FULL, OVERLOAD_INFLIGHT, NOT_READY):
            self.records.labels("refused", reason)
        for handler in ("/predict", "/feedback", "/v1/records"):
            for reason in REASONS:
                self.rejections.labels(handler, reason)  # export zeros: rates need a start
            self.overloaded.labels(handler, OVERLOAD_INFLIGHT)
        self.overloaded.labels("/feedback", OVERLOAD_SENDER_FULL)
        self.overloaded.labels("/v1/records", OVERLOAD_SENDER_FULL)

    def bind_bundle(self, bundle: Bundle) -> None:
        """Create the prediction-distribution metrics for ``bundle``."""
        self._ranged = [
            spec
            for spec in bundle.manifest.features
            if spec.type == "numeric" and (spec.min is not None or spec.max is not None)
        ]
        for spec in self._ranged:
            self.out_of_range.labels(spec.name)  # export zeros: rates need a start
        if not bundle.has_prediction:
            return  # a model-free bundle without a prediction: nothing to observe
        self.predictions = Histogram(
            names.M_PREDICTIONS,
            "Served predictions: values over reference-decile buckets (regression) or "
            "class index i in bucket i+0.5 (classification).",
            buckets=prediction_buckets(bundle),
            registry=self.registry,
        )
        if bundle.task == "classification" and bundle.classes:
            self._classes = {c: i for i, c in enumerate(bundle.classes)}
            self.classes = Counter(
                _base(names.M_PREDICTED_CLASS, "_total"),
                "Served predictions per class.",
                ["class"],
                registry=self.registry,
            )
            for c in bundle.classes:
                self.classes.labels(c)

    def observe_inputs(self, columns: dict[str, list[Any]]) -> None:
        """Count the served values that lie outside their feature's training range."""
        for spec in self._ranged:
            values = np.asarray(columns[spec.name], dtype=np.float64)
            outside = int(values.size - np.count_nonzero(in_training_range(spec, values)))
            if outside:
                self.out_of_range.labels(spec.name).inc(outside)

    def observe_predictions(self, predictions: np.ndarray) -> None:
        if self.predictions is None:
            return
        if self.classes is None:
            for value in np.asarray(predictions, dtype=np.float64):
                self.predictions.observe(float(value))
            return
        labels, counts = np.unique(np.asarray(predictions, dtype=str), return_counts=True)
        for label, count in zip(labels.tolist(), counts.tolist(), strict=False):
            self.classes.labels(label).inc(count)
            index = float(self._classes.get(label, len(self._classes)))
            for _ in range(count):
                self.predictions.observe(index)
