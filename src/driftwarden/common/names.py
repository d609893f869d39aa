"""Single source of truth for names shared across components.

Metric names, label keys and stream names are used by the drift worker, the
model server, the alert rules and the dashboards; define them here only.
"""

from __future__ import annotations

API_GROUP = "driftwarden.io"
API_VERSION = "v1alpha1"
KIND = "DriftMonitor"
PLURAL = "driftmonitors"

# Metric label keys. Kubernetes namespace comes from the scrape target
# (ServiceMonitor / static config), never from an exported label.
LABEL_MONITOR = "monitor"
LABEL_STREAM = "stream"
LABEL_DETECTOR = "detector"
LABEL_SHARD = "shard"

# Stream names: one monitored sequence each.
STREAM_PREDICTION = "prediction"
STREAM_PERFORMANCE = "performance"


def feature_stream(feature: str) -> str:
    return f"feature:{feature}"


def embedding_stream(group: str) -> str:
    return f"embedding:{group}"


def monitor_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def monitor_name(key: str) -> str:
    """Return the name part of a monitor key ``<namespace>/<name>``: the ``monitor`` label.

    Metrics carry the monitor's name only; the namespace comes from the scrape target.
    """
    return key.rsplit("/", 1)[-1]


# A monitor's children and how they are reached. The operator names them; the alert
# rules and dashboards select their scrape jobs by these names; senders and the
# operator reach each shard through a URL template.


def model_service(monitor: str) -> str:
    """Return the name of the monitor's model-server Deployment and Service."""
    return f"{monitor}-model"


def workers_service(monitor: str) -> str:
    """Return the name of the monitor's worker StatefulSet and headless Service."""
    return f"{monitor}-workers"


def worker_url_template(monitor: str, namespace: str, port: int) -> str:
    """Return the in-cluster base URL of a shard, ``{ordinal}`` left to fill.

    Each pod of the StatefulSet resolves as ``<set>-<ordinal>.<headless service>.<ns>.svc``.
    """
    svc = workers_service(monitor)
    return f"http://{svc}-{{ordinal}}.{svc}.{namespace}.svc:{port}"


def shard_url(template: str, ordinal: int, base_port: int = 8080, **fields: str) -> str:
    """Fill a worker URL template; no trailing slash.

    ``{ordinal}``; ``{port}`` is ``base_port + ordinal``, for shards that share one host
    (local runs and tests); ``fields`` fill others (the operator's ``{monitor}`` and
    ``{namespace}``).
    """
    return template.format(ordinal=ordinal, port=base_port + ordinal, **fields).rstrip("/")


# Metric names (prefix driftwarden_). Owners may add metrics; add the name here.
# drift worker
M_STREAM_STATISTIC = "driftwarden_stream_statistic"
M_STREAM_P_VALUE = "driftwarden_stream_p_value"
M_STREAM_THRESHOLD = "driftwarden_stream_threshold"  # what the statistic (or p) is compared with
M_STREAM_BUDGET = "driftwarden_stream_false_alarm_budget"  # values between false alarms (ARL0)
M_STREAM_DRIFT = "driftwarden_stream_drift"  # 0/1 after gates and multiple-testing control
M_STREAM_VALUES = "driftwarden_stream_values_total"
M_STREAM_WINDOW_FILL = "driftwarden_stream_window_fill"
M_STREAM_LAST_DRIFT = "driftwarden_stream_last_drift_timestamp_seconds"
# alarming evaluations per stream and detector (raw alarms, before multiple testing)
M_STREAM_ALARMS = "driftwarden_stream_alarms_total"
M_MONITOR_STREAMS = "driftwarden_monitor_streams"
M_MONITOR_DRIFTING = "driftwarden_monitor_drifting_streams"
M_WORKER_EPOCH = "driftwarden_worker_shard_epoch"
M_WORKER_OWNED = "driftwarden_worker_owned_streams"
M_WORKER_BATCHES = "driftwarden_worker_batches_total"
M_WORKER_LAST_INGEST = "driftwarden_worker_last_ingest_timestamp_seconds"
M_FEATURE_LIVE = "driftwarden_feature_live"  # histogram over reference-quantile buckets
M_FEATURE_REFERENCE = "driftwarden_feature_reference"
# label direction: in|out|timeout|superseded (a late copy refused here)|dropped (ours, refused)
M_WORKER_HANDOFFS = "driftwarden_worker_handoffs_total"
# values in copies dropped because their successor started the stream empty (handoff timeout)
M_WORKER_LOST_VALUES = "driftwarden_worker_lost_values_total"
# failed storage operations; label op: wal_write|wal_fsync|snapshot
M_WORKER_STORAGE_ERRORS = "driftwarden_worker_storage_errors_total"
M_WORKER_PENDING_HANDOFFS = "driftwarden_worker_pending_handoffs"  # direction: outgoing|awaiting
M_WORKER_WAL_BYTES = "driftwarden_worker_wal_bytes"
M_WORKER_RECOVERY_SECONDS = "driftwarden_worker_recovery_seconds"
M_WORKER_REJECTED_VALUES = "driftwarden_worker_rejected_values_total"
# labels stream, detector, change: changed|added|removed (a config or reference change)
M_WORKER_REBASELINES = "driftwarden_worker_detector_rebaselines_total"
# peers of the current map whose p-values (GET /v1/evidence) are missing or stale
M_WORKER_PEER_EVIDENCE_MISSING = "driftwarden_worker_peer_evidence_missing"
M_LABEL_JOIN = "driftwarden_label_join_total"  # outcome: joined|expired_prediction|unmatched_label|evicted_prediction|evicted_label|replaced_prediction
M_LABEL_JOIN_PENDING = "driftwarden_label_join_pending"  # kind: predictions|labels
# every component that verifies the monitor credential (docs/security.md)
M_AUTH_REFUSALS = "driftwarden_auth_refused_requests_total"  # labels endpoint, reason
# model server
M_REQUESTS = "driftwarden_model_requests_total"
M_REQUEST_LATENCY = "driftwarden_model_request_duration_seconds"
M_BATCH_SIZE = "driftwarden_model_batch_size"
M_REJECTIONS = "driftwarden_model_rejected_total"
M_PREDICTIONS = "driftwarden_model_predictions"  # histogram; classification: class i in le=i+0.5
M_PREDICTED_CLASS = "driftwarden_model_predicted_class_total"  # label "class"
M_BATCH_REQUESTS = "driftwarden_model_batch_requests"  # requests sharing one model call
M_INFLIGHT = "driftwarden_model_inflight_requests"
# 503 + Retry-After because the server was full; labels handler, reason
M_OVERLOADED = "driftwarden_model_overloaded_total"
M_FEEDBACK_LABELS = "driftwarden_model_feedback_labels_total"
M_RECORDS = "driftwarden_model_logged_records_total"  # /v1/records; outcome, reason
M_EMISSION_ENABLED = "driftwarden_model_emission_enabled"  # 1 when a sender is configured
# values served although outside the training range (label "feature")
M_OUT_OF_RANGE = "driftwarden_model_out_of_range_values_total"
# sender (inside the model server)
M_SENDER_QUEUE = "driftwarden_sender_queue_values"
M_SENDER_SHED = "driftwarden_sender_shed_values_total"
M_SENDER_RETRIES = "driftwarden_sender_retries_total"
M_SENDER_ACKED = "driftwarden_sender_acked_values_total"
