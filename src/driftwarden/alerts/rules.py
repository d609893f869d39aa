"""PrometheusRule groups for one DriftMonitor: recording rules, then alerts.

Mixin style (node-mixin, kubernetes-mixin): every alert is named ``Driftwarden*``,
carries ``severity`` plus the ``namespace``/``monitor`` labels Alertmanager routes on,
and has ``summary``, ``description`` (naming the model and its streams) and a
``runbook_url`` into docs/alerts.md.

Recording rules keep the dashboards and alerts cheap: every expensive expression
(aggregating per-detector series, rates over histograms) is evaluated once per
interval. Series budget per monitor, with S streams and D detectors per stream:
the raw worker export is about S x (D x 2 + 4) series; the recording rules add
4 x S per-stream series, N per-shard series and 11 monitor-level ones (docs/alerts.md).

Scoping: worker series are selected by the ``namespace`` target label and the
exported ``monitor`` label; model-server series by ``namespace`` and the scrape job
``<monitor>-model`` (a ServiceMonitor names the job after the Service); worker
liveness by ``up{job="<monitor>-workers"}``.
"""

from __future__ import annotations

from typing import Any

from driftwarden.alerts.promql import (
    feature_streams,
    model_job,
    monitor_matcher,
    quote,
    selector,
    workers_job,
)
from driftwarden.common import names
from driftwarden.common.durations import parse_duration
from driftwarden.common.spec import DriftMonitorSpec

# Where runbook_url points: the anchors of docs/alerts.md (one section per alert).
RUNBOOK_BASE_URL = "https://github.com/driftwarden/driftwarden/blob/main/docs/alerts.md"

# Recording rules (level:metric:operations). Dashboards import these names.
R_STREAM_DRIFT = "driftwarden:stream_drift:max"
R_STREAM_P_VALUE = "driftwarden:stream_p_value:min"
R_STREAM_ALARM_LEVEL = "driftwarden:stream_alarm_level:max"
R_STREAM_VALUES = "driftwarden:stream_values:max"
R_FEATURES_TOTAL = "driftwarden:monitor_features:count"
R_FEATURES_DRIFTING = "driftwarden:monitor_features_drifting:count"
R_FEATURE_DRIFT_SHARE = "driftwarden:monitor_feature_drift:share"
R_DRIFTING_STREAMS = "driftwarden:monitor_drifting_streams:sum"
R_SHARDS_UP = "driftwarden:monitor_shards_up:count"
R_SHARD_INGEST_LAG = "driftwarden:worker_ingest_lag:seconds"
R_REQUEST_RATE = "driftwarden:model_requests:rate"
R_ERROR_RATIO = "driftwarden:model_request_errors:ratio"
R_LATENCY_QUANTILE = "driftwarden:model_request_duration_seconds:quantile"
R_SHED_RATE = "driftwarden:sender_shed_values:rate"

# Alert names: the shared prefix makes them easy to route and silence together.
A_DATA_DRIFT = "DriftwardenDataDrift"
A_CONCEPT_DRIFT = "DriftwardenConceptDrift"
A_PREDICTION_DRIFT = "DriftwardenPredictionDrift"
A_EMBEDDING_DRIFT = "DriftwardenEmbeddingDrift"
A_SHARD_DOWN = "DriftwardenWorkerShardDown"
A_SHARDS_MISSING = "DriftwardenWorkerShardsMissing"
A_SHARD_LAGGING = "DriftwardenWorkerShardLagging"
A_SHARD_EPOCH_STALE = "DriftwardenWorkerShardEpochStale"
A_STORAGE_ERRORS = "DriftwardenWorkerStorageErrors"
A_SENDER_SHEDDING = "DriftwardenSenderSheddingLoad"
A_MODEL_ERRORS = "DriftwardenModelServerErrors"
ALERT_NAMES = (
    A_DATA_DRIFT,
    A_CONCEPT_DRIFT,
    A_PREDICTION_DRIFT,
    A_EMBEDDING_DRIFT,
    A_SHARD_DOWN,
    A_SHARDS_MISSING,
    A_SHARD_LAGGING,
    A_SHARD_EPOCH_STALE,
    A_STORAGE_ERRORS,
    A_SENDER_SHEDDING,
    A_MODEL_ERRORS,
)

# Model-server metric labels: HTTP status code, and the route that served the request.
LABEL_CODE = "code"
LABEL_HANDLER = "handler"
# Routes that serve model traffic (not scrapes or probes), for rates, errors and latency.
SERVING_HANDLERS = "/predict|/feedback"
# Defaults for the operational alerts; drift alerts take theirs from the spec.
MODEL_ERROR_RATIO = 0.05
INGEST_LAG_SECONDS = 120.0
LATENCY_QUANTILES = ("0.5", "0.95", "0.99")


def group_name(name: str, namespace: str) -> str:
    """Return the rule-group name of one monitor (unique across the cluster)."""
    return f"driftwarden.{namespace}.{name}"


def runbook_url(alert: str, base: str = RUNBOOK_BASE_URL) -> str:
    """Return the runbook link of ``alert`` (a heading anchor in docs/alerts.md)."""
    return f"{base}#{alert.lower()}"


def _features_template(query: str) -> str:
    """Return a Go template listing the feature names of ``query``'s series, sorted."""
    return (
        f"{{{{ range $i, $s := query `{query}` | sortByLabel `{names.LABEL_STREAM}` }}}}"
        "{{ if $i }}, {{ end }}"
        f'{{{{ reReplaceAll "^feature:" "" $s.Labels.{names.LABEL_STREAM} }}}}'
        "{{ end }}"
    )


def build_rule_groups(
    name: str,
    namespace: str,
    spec: DriftMonitorSpec,
    *,
    rate_window: str = "5m",
    interval: str | None = None,
    runbook_base: str = RUNBOOK_BASE_URL,
) -> list[dict[str, Any]]:
    """Return the PrometheusRule ``spec.groups`` of a monitor: one group, recording rules then alerts.

    ``rate_window`` is the range of every ``rate()`` (at least 4 scrape intervals);
    ``interval`` sets the groups' evaluation interval (``None``: Prometheus' global).
    Both exist so the e2e tier and the demo can run with second-scale scrapes.
    """
    parse_duration(rate_window)  # fail early, with the message, on a bad value
    if interval is not None:
        parse_duration(interval)
    # One group, recording rules first: rules of a group run in order, so each alert
    # reads the recorded series of the same evaluation (separate groups would run in
    # no fixed order and could lag an alert by one interval).
    rules = _recording_rules(name, namespace, spec, rate_window)
    rules += _alert_rules(name, namespace, spec, rate_window, runbook_base)
    return [_group(group_name(name, namespace), rules, interval)]


def _group(group: str, rules: list[dict[str, Any]], interval: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": group}
    if interval is not None:
        out["interval"] = interval
    out["rules"] = rules
    return out


def _recording_rules(
    name: str, namespace: str, spec: DriftMonitorSpec, window: str
) -> list[dict[str, Any]]:
    by_stream = f"by (namespace, {names.LABEL_MONITOR}, {names.LABEL_STREAM})"
    by_monitor = f"by (namespace, {names.LABEL_MONITOR})"

    def raw(metric: str, *matchers: str) -> str:
        return selector(metric, monitor_matcher(name, namespace), *matchers, namespace=namespace)

    # Model-server series carry no monitor label of their own: the rule adds it, so
    # every recorded series of this monitor shares the same (namespace, monitor) pair.
    monitor_label = {names.LABEL_MONITOR: name}
    model = {"namespace": namespace, "job": model_job(name)}
    recorded = {"namespace": namespace, names.LABEL_MONITOR: name}
    min_samples = spec.detectors.min_samples
    serving = f"{LABEL_HANDLER}=~{quote(SERVING_HANDLERS)}"
    requests = selector(names.M_REQUESTS, serving, **model)
    errors = selector(names.M_REQUESTS, serving, f"{LABEL_CODE}=~{quote('5..')}", **model)

    rules: list[dict[str, Any]] = [
        # One 0/1 state per stream, whatever the number of detectors on it; the worker
        # has applied its gates and multiple-testing control before exporting.
        _record(
            R_STREAM_DRIFT,
            f"max {by_stream} ({raw(names.M_STREAM_DRIFT)})",
        ),
        _record(
            R_STREAM_P_VALUE,
            f"min {by_stream} ({raw(names.M_STREAM_P_VALUE)})",
        ),
        # Evidence against each detector's own threshold, on one scale for every kind
        # of detector: 1 is the alarm level. Tests with a p-value: ln p / ln alpha (p at
        # alpha gives 1, smaller p more); the others: statistic / threshold (Page-Hinkley,
        # the e-detectors, divergences). The p-value form is taken where both exist.
        _record(
            R_STREAM_ALARM_LEVEL,
            (
                f"max {by_stream} ("
                f"ln(clamp_min({raw(names.M_STREAM_P_VALUE)}, 1e-300))"
                f" / ln({raw(names.M_STREAM_THRESHOLD)})"
                f" or {raw(names.M_STREAM_STATISTIC)} / {raw(names.M_STREAM_THRESHOLD)})"
            ),
        ),
        # max, not sum: after a reshard the old and the new owner may both still export
        # the stream's counter for a scrape or two.
        _record(
            R_STREAM_VALUES,
            f"max {by_stream} ({raw(names.M_STREAM_VALUES)})",
        ),
        _record(
            R_FEATURES_TOTAL,
            f"count {by_monitor} ({selector(R_STREAM_DRIFT, feature_streams(), **recorded)})",
        ),
        # A feature counts as drifting only once it has seen minSamples values, so a
        # fresh (or freshly restored) stream cannot confirm drift on a handful of values.
        _record(
            R_FEATURES_DRIFTING,
            f"sum {by_monitor} ("
            f"{selector(R_STREAM_DRIFT, feature_streams(), **recorded)}"
            f" * on (namespace, {names.LABEL_MONITOR}, {names.LABEL_STREAM}) "
            f"({selector(R_STREAM_VALUES, feature_streams(), **recorded)} >= bool {min_samples}))",
        ),
        _record(
            R_FEATURE_DRIFT_SHARE,
            f"{selector(R_FEATURES_DRIFTING, **recorded)} / on (namespace, {names.LABEL_MONITOR}) "
            f"{selector(R_FEATURES_TOTAL, **recorded)}",
        ),
        _record(R_DRIFTING_STREAMS, f"sum {by_monitor} ({selector(R_STREAM_DRIFT, **recorded)})"),
        _record(
            R_SHARDS_UP,
            f"sum by (namespace) ({selector('up', namespace=namespace, job=workers_job(name))})",
            monitor_label,
        ),
        _record(
            R_SHARD_INGEST_LAG,
            (
                f"time() - max by (namespace, {names.LABEL_MONITOR}, {names.LABEL_SHARD}) "
                f"({raw(names.M_WORKER_LAST_INGEST)})"
            ),
        ),
        _record(
            R_REQUEST_RATE,
            f"sum by (namespace) (rate({requests}[{window}]))",
            monitor_label,
        ),
        # The "or ... * 0" arms keep these series at 0 (not absent) while the server has
        # seen no error or shed nothing yet, so dashboards and alerts always have data.
        _record(
            R_ERROR_RATIO,
            f"(sum by (namespace) (rate({errors}[{window}]))"
            f" or sum by (namespace) (rate({requests}[{window}])) * 0)"
            f" / clamp_min(sum by (namespace) (rate({requests}[{window}])), 1e-9)",
            monitor_label,
        ),
        _record(
            R_SHED_RATE,
            f"sum by (namespace) (rate({selector(names.M_SENDER_SHED, **model)}[{window}]))"
            f" or sum by (namespace) ({selector('up', **model)}) * 0",
            monitor_label,
        ),
    ]
    for q in LATENCY_QUANTILES:
        rules.append(
            _record(
                R_LATENCY_QUANTILE,
                f"histogram_quantile({q}, sum by (namespace, le) "
                f"(rate({selector(names.M_REQUEST_LATENCY + '_bucket', serving, **model)}[{window}])))",
                {**monitor_label, "quantile": q},
            )
        )
    return rules


def _record(record: str, expr: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": record, "expr": expr}
    if labels:
        rule["labels"] = dict(labels)
    return rule


def _alert_rules(
    name: str, namespace: str, spec: DriftMonitorSpec, window: str, runbook_base: str
) -> list[dict[str, Any]]:
    recorded = {"namespace": namespace, names.LABEL_MONITOR: name}

    def worker(metric: str) -> str:
        return selector(metric, monitor_matcher(name, namespace), namespace=namespace)

    hold = spec.alerts.for_
    # str() of a str-Enum member is its value only via .value; accept plain strings too.
    severity = str(getattr(spec.alerts.severity, "value", spec.alerts.severity))
    model = spec.model.bundle
    who = f"monitor {namespace}/{name} (model {model})"
    share = spec.alerts.data_drift_share
    drifting_features = _features_template(
        f"{selector(R_STREAM_DRIFT, feature_streams(), **recorded)} == 1"
    )

    def alert(
        alertname: str, expr: str, summary: str, description: str, sev: str, for_: str | None = hold
    ) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": alertname, "expr": expr}
        if for_:
            rule["for"] = for_
        rule["labels"] = {"severity": sev, names.LABEL_MONITOR: name, "namespace": namespace}
        rule["annotations"] = {
            "summary": summary,
            "description": description,
            "runbook_url": runbook_url(alertname, runbook_base),
        }
        return rule

    def stream_drift(alertname: str, streams: str, what: str, hint: str) -> dict[str, Any]:
        sel = selector(R_STREAM_DRIFT, streams, **recorded)
        gated = (
            f"max by (namespace, {names.LABEL_MONITOR}) ({sel} * on (namespace, {names.LABEL_MONITOR}, "
            f"{names.LABEL_STREAM}) ({selector(R_STREAM_VALUES, streams, **recorded)} >= bool "
            f"{spec.detectors.min_samples})) == 1"
        )
        return alert(
            alertname,
            gated,
            f"{what} drift on {namespace}/{name}.",
            f"The {what.lower()} stream of {who} has drifted from its reference for "
            f"more than {hold}: {hint}",
            severity,
        )

    return [
        alert(
            A_DATA_DRIFT,
            f"{selector(R_FEATURE_DRIFT_SHARE, **recorded)} >= {share:g}",
            f"Data drift confirmed on {namespace}/{name}.",
            f"{{{{ $value | humanizePercentage }}}} of the input features of {who} have "
            f"drifted (threshold {share:g}, held {hold}, after at least "
            f"{spec.detectors.min_samples} values per feature, false-discovery control: "
            f"{spec.detectors.multiple_testing.value}). Drifting features: {drifting_features}.",
            severity,
        ),
        stream_drift(
            A_CONCEPT_DRIFT,
            f"{names.LABEL_STREAM}={quote(names.STREAM_PERFORMANCE)}",
            "Concept",
            "the relation between features and labels (from /feedback) has changed; "
            "the model's error has moved away from its training error.",
        ),
        stream_drift(
            A_PREDICTION_DRIFT,
            f"{names.LABEL_STREAM}={quote(names.STREAM_PREDICTION)}",
            "Prediction",
            "the distribution of the model's outputs has changed.",
        ),
        stream_drift(
            A_EMBEDDING_DRIFT,
            f"{names.LABEL_STREAM}=~{quote(names.embedding_stream('.+'))}",
            "Embedding",
            "the model's embeddings have moved away from the reference sample.",
        ),
        alert(
            A_SHARD_DOWN,
            f"{selector('up', namespace=namespace, job=workers_job(name))} == 0",
            f"Drift-worker shard {{{{ $labels.instance }}}} of {namespace}/{name} is down.",
            f"Prometheus cannot scrape drift-worker {{{{ $labels.instance }}}} of {who}. "
            "Its streams are not being evaluated and senders are buffering their values.",
            "critical",
        ),
        alert(
            A_SHARDS_MISSING,
            f"(({selector(R_SHARDS_UP, **recorded)}) or on () vector(0)) < {spec.workers.shards}",
            f"{namespace}/{name} has fewer drift-worker shards up than {spec.workers.shards}.",
            f"Only {{{{ $value }}}} of {spec.workers.shards} drift-worker shards of {who} are "
            "up and scraped; the streams of the missing shards are not evaluated.",
            "critical",
        ),
        alert(
            A_SHARD_LAGGING,
            f"{selector(R_SHARD_INGEST_LAG, **recorded)} > {INGEST_LAG_SECONDS:g}"
            f" and on (namespace, {names.LABEL_SHARD}) {worker(names.M_WORKER_OWNED)} > 0"
            f" and on (namespace) {selector(R_REQUEST_RATE, **recorded)} > 0",
            f"Drift-worker shard {{{{ $labels.{names.LABEL_SHARD} }}}} of {namespace}/{name} is lagging.",
            f"Shard {{{{ $labels.{names.LABEL_SHARD} }}}} of {who} owns streams and the model "
            f"server is serving, yet it has ingested nothing for {{{{ $value | humanizeDuration }}}}.",
            "warning",
        ),
        alert(
            A_SHARD_EPOCH_STALE,
            f"{worker(names.M_WORKER_EPOCH)} < on (namespace) group_left () "
            f"max by (namespace) ({worker(names.M_WORKER_EPOCH)})",
            f"Drift-worker shard {{{{ $labels.{names.LABEL_SHARD} }}}} of {namespace}/{name} runs an old shard map.",
            f"Shard {{{{ $labels.{names.LABEL_SHARD} }}}} of {who} is at shard-map epoch "
            f"{{{{ $value }}}} while other shards are newer; a reshard has not completed.",
            "warning",
        ),
        # No hold: one failed write or fsync means acknowledgements stopped (503) or the
        # shard is about to restart; waiting `for` would only hide a short outage.
        alert(
            A_STORAGE_ERRORS,
            (
                f"sum by (namespace, {names.LABEL_MONITOR}, {names.LABEL_SHARD}) "
                f"(increase({worker(names.M_WORKER_STORAGE_ERRORS)}[{window}])) > 0"
            ),
            f"Drift-worker shard {{{{ $labels.{names.LABEL_SHARD} }}}} of {namespace}/{name} "
            "cannot write its volume.",
            f"Shard {{{{ $labels.{names.LABEL_SHARD} }}}} of {who} failed {{{{ $value | humanize }}}} "
            f"write-ahead-log or snapshot writes in the last {window}. It answers 503 to every "
            "batch it cannot make durable (senders buffer and retry); after a failed fsync it "
            "restarts to recover from disk. Check the volume: full, read-only or I/O errors.",
            "critical",
            for_=None,
        ),
        alert(
            A_SENDER_SHEDDING,
            f"{selector(R_SHED_RATE, **recorded)} > 0",
            f"The model server of {namespace}/{name} is shedding drift data.",
            f"The model server of {who} drops {{{{ $value | humanize }}}} values/s that "
            "could not be delivered to the drift workers; drift statistics are incomplete.",
            "warning",
        ),
        alert(
            A_MODEL_ERRORS,
            f"{selector(R_ERROR_RATIO, **recorded)} > {MODEL_ERROR_RATIO:g}",
            f"The model server of {namespace}/{name} is failing requests.",
            f"{{{{ $value | humanizePercentage }}}} of the requests to the model server of "
            f"{who} failed with a 5xx status over the last {window}.",
            "critical",
        ),
    ]
