"""The per-monitor Grafana dashboard and the cluster-wide overview.

Both read mostly the recording rules of :mod:`driftwarden.alerts.rules`, so opening a
dashboard costs Prometheus a few cheap lookups, not re-aggregations of every
per-detector series. Queries are pinned to one monitor (namespace + name) in the
per-monitor dashboard; the overview filters by ``namespace``/``monitor`` variables.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard

from driftwarden.alerts import rules as r
from driftwarden.alerts.promql import (
    feature_streams,
    model_job,
    monitor_matcher,
    quote,
    selector,
    workers_job,
)
from driftwarden.common import names
from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.dashboards.panels import (
    Query,
    datasource_variable,
    distribution,
    query_variable,
    row,
    stat_panel,
    state_timeline,
    time_series,
)

TAGS = ["driftwarden"]
OVERVIEW_UID = "driftwarden-overview"
# Grafana's own rate window: at least four scrape intervals, whatever the scrape interval.
RATE = "$__rate_interval"
STREAM_VARIABLE = "stream"
DRIFT_STATES = {"0": ("ok", "green"), "1": ("drift", "red")}
UP_STATES = {"0": ("down", "red"), "1": ("up", "green")}


def dashboard_uid(name: str, namespace: str) -> str:
    """Return the stable dashboard uid of a monitor (Grafana caps uids at 40 characters)."""
    uid = f"dw-{namespace}-{name}"
    if len(uid) <= 40:
        return uid
    import hashlib

    digest = hashlib.blake2b(f"{namespace}/{name}".encode(), digest_size=6).hexdigest()
    return f"{uid[:27]}-{digest}"


def to_json(builder: dash_b.Dashboard) -> dict[str, Any]:
    """Return a built dashboard as plain JSON-compatible data (what Grafana imports).

    Panels get ids 1..n in layout order: Grafana needs unique ids for panel links,
    repeats and "view panel", and stable ids keep the JSON diff-friendly.
    """
    data = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    next_id = 1
    for panel in data.get("panels", []):
        for item in [panel, *panel.get("panels", [])]:
            item["id"] = next_id
            next_id += 1
    return data


def build_dashboard(name: str, namespace: str, spec: DriftMonitorSpec) -> dict[str, Any]:
    """Return the Grafana dashboard JSON of one monitor.

    Sections: drift summary, drifting features over time, per-feature scores and
    p-values, drift state timeline, reference vs live distributions, prediction
    distribution, concept drift, serving (rate, latency, errors, sender) and shard
    health (up, ingest lag, ownership, epoch).
    """
    mon = {"namespace": namespace, names.LABEL_MONITOR: name}  # recorded series

    def raw(metric: str, *matchers: str) -> str:
        """Selector of a worker-exported series (monitor label: name or namespace/name)."""
        return selector(metric, monitor_matcher(name, namespace), *matchers, namespace=namespace)

    model = {"namespace": namespace, "job": model_job(name)}
    share = spec.alerts.data_drift_share
    feature = feature_streams()
    stream_var = f"{names.LABEL_STREAM}=~{quote('$' + STREAM_VARIABLE)}"
    perf = f"{names.LABEL_STREAM}={quote(names.STREAM_PERFORMANCE)}"
    pred = f"{names.LABEL_STREAM}={quote(names.STREAM_PREDICTION)}"

    def hist_share(metric: str, *matchers: str, rate: bool) -> str:
        bucket = raw(f"{metric}_bucket", *matchers)
        count = raw(f"{metric}_count", *matchers)
        if rate:
            bucket, count = f"rate({bucket}[{RATE}])", f"rate({count}[{RATE}])"
        return (
            f"sum by (le) ({bucket}) / ignoring (le) group_left () clamp_min(sum ({count}), 1e-9)"
        )

    builder = (
        dash_b.Dashboard(f"Driftwarden / {namespace} / {name}")
        .uid(dashboard_uid(name, namespace))
        .description(
            f"Drift and serving health of DriftMonitor {namespace}/{name} (model {spec.model.bundle})."
        )
        .tags(TAGS)
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .editable()
        .with_variable(datasource_variable())
        .with_variable(
            query_variable(
                STREAM_VARIABLE,
                "Feature",
                f"label_values({raw(names.M_FEATURE_LIVE + '_bucket')}, {names.LABEL_STREAM})",
                multi=True,
                include_all=True,
            )
        )
        .link(
            dash_b.DashboardLink("Overview")
            .type(dashboard.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
        )
        # Summary
        .with_row(row("Drift summary"))
        .with_panel(
            stat_panel(
                "Feature drift share",
                f"Share of input features drifting after minSamples and false-discovery control; the data-drift alert fires at {share:g}.",
                Query(selector(r.R_FEATURE_DRIFT_SHARE, **mon)),
                unit="percentunit",
                warn_at=share,
            )
        )
        .with_panel(
            stat_panel(
                "Drifting streams",
                "Streams (features, prediction, performance, embeddings) whose detectors flag drift now.",
                Query(selector(r.R_DRIFTING_STREAMS, **mon)),
                warn_at=1,
            )
        )
        .with_panel(
            stat_panel(
                "Last drift",
                "When any stream of this monitor last flagged drift.",
                Query(f"max({raw(names.M_STREAM_LAST_DRIFT)}) * 1000"),
                unit="dateTimeFromNow",
            )
        )
        .with_panel(
            stat_panel(
                "Shards up",
                f"Drift-worker shards scraped successfully, of {spec.workers.shards} wanted.",
                Query(selector(r.R_SHARDS_UP, **mon)),
                red_below=spec.workers.shards,
            )
        )
        .with_panel(
            time_series(
                "Drifting features over time",
                "Features drifting (after minSamples) against all monitored features.",
                [
                    Query(selector(r.R_FEATURES_DRIFTING, **mon), "drifting"),
                    Query(selector(r.R_FEATURES_TOTAL, **mon), "features"),
                ],
                width=12,
                min_=0,
            )
        )
        .with_panel(
            time_series(
                "Feature drift share",
                "Share of drifting features; the dashed line is spec.alerts.dataDriftShare.",
                [Query(selector(r.R_FEATURE_DRIFT_SHARE, **mon), "share")],
                unit="percentunit",
                min_=0,
                max_=1,
                threshold=share,
            )
        )
        .with_panel(
            state_timeline(
                "Drift state per stream",
                "0 = no drift, 1 = drift, per stream (max over its detectors).",
                Query(selector(r.R_STREAM_DRIFT, **mon), "{{stream}}"),
                states=DRIFT_STATES,
            )
        )
        # Per-feature detail
        .with_row(row("Features"))
        .with_panel(
            time_series(
                "Per-feature drift scores",
                "Detector statistic per feature (KS D, PSI, chi-square, ...).",
                [Query(raw(names.M_STREAM_STATISTIC, feature), "{{stream}} {{detector}}")],
            )
        )
        .with_panel(
            time_series(
                "Per-feature alarm level",
                "Each feature's evidence against its detectors' thresholds (max over them; log "
                "scale): 1 is the alarm level. ln p / ln alpha for tests with a p-value, "
                "statistic / threshold for the others.",
                [Query(selector(r.R_STREAM_ALARM_LEVEL, feature, **mon), "{{stream}}")],
                log_scale=True,
                unit="none",
                threshold=1,
            )
        )
        .with_panel(
            time_series(
                "Detector alarms",
                "Alarms per stream and detector in each interval (driftwarden_stream_alarms_total, "
                "the detectors' own rule before minSamples and multiple testing). Resetting "
                "detectors (Page-Hinkley, the DDM family, the e-detectors) alarm once and hold "
                "the stream's drift state for spec.detectors.alarmHold.",
                [
                    Query(
                        f"max by ({names.LABEL_STREAM}, {names.LABEL_DETECTOR}) "
                        f"(increase({raw(names.M_STREAM_ALARMS)}[{RATE}]))",
                        "{{stream}} {{detector}}",
                    )
                ],
                min_=0,
            )
        )
        .with_panel(
            distribution(
                "Reference vs live: $stream",
                "Share of values per reference-quantile bucket: reference sample against live traffic.",
                [
                    Query(
                        hist_share(names.M_FEATURE_REFERENCE, stream_var, rate=False),
                        "reference {{le}}",
                        instant=True,
                        heatmap=True,
                    ),
                    Query(
                        hist_share(names.M_FEATURE_LIVE, stream_var, rate=True),
                        "live {{le}}",
                        instant=True,
                        heatmap=True,
                    ),
                ],
                repeat=STREAM_VARIABLE,
                width=8,
            )
        )
        # Predictions and concept drift
        .with_row(row("Predictions and concept drift"))
        .with_panel(
            distribution(
                "Prediction distribution",
                "Share of served predictions per bucket, over the dashboard's rate window.",
                [
                    Query(
                        f"sum by (le) (rate({selector(names.M_PREDICTIONS + '_bucket', **model)}[{RATE}]))"
                        f" / ignoring (le) group_left () clamp_min(sum (rate({selector(names.M_PREDICTIONS + '_count', **model)}[{RATE}])), 1e-9)",
                        "{{le}}",
                        instant=True,
                        heatmap=True,
                    )
                ],
            )
        )
        .with_panel(
            time_series(
                "Prediction drift",
                "Detector statistic on the prediction stream.",
                [Query(raw(names.M_STREAM_STATISTIC, pred), "{{detector}}")],
            )
        )
        .with_panel(
            time_series(
                "Concept drift (error stream)",
                "Detector statistic on the performance stream: labels from /feedback joined to predictions.",
                [Query(raw(names.M_STREAM_STATISTIC, perf), "{{detector}}")],
            )
        )
        .with_panel(
            time_series(
                "Concept drift p-value and labelled values",
                "Smallest p-value on the performance stream and the labelled predictions it has seen.",
                [
                    Query(selector(r.R_STREAM_P_VALUE, perf, **mon), "p-value"),
                    Query(selector(r.R_STREAM_VALUES, perf, **mon), "labelled values"),
                ],
            )
        )
        # Serving
        .with_row(row("Serving"))
        .with_panel(
            time_series(
                "Requests by status",
                "Model-server requests per second by route and HTTP status code.",
                [
                    Query(
                        f"sum by ({r.LABEL_HANDLER}, {r.LABEL_CODE}) (rate({selector(names.M_REQUESTS, **model)}[{RATE}]))",
                        "{{" + r.LABEL_HANDLER + "}} {{" + r.LABEL_CODE + "}}",
                    )
                ],
                unit="reqps",
                width=8,
                stacked=True,
            )
        )
        .with_panel(
            time_series(
                "Latency",
                "Model-server request latency quantiles.",
                [Query(selector(r.R_LATENCY_QUANTILE, **mon), "p{{quantile}}")],
                unit="s",
                width=8,
            )
        )
        .with_panel(
            time_series(
                "Error ratio",
                f"Share of requests answered with 5xx; alert above {r.MODEL_ERROR_RATIO:g}.",
                [Query(selector(r.R_ERROR_RATIO, **mon), "5xx ratio")],
                unit="percentunit",
                min_=0,
                threshold=r.MODEL_ERROR_RATIO,
                width=8,
            )
        )
        .with_panel(
            time_series(
                "Sender to drift workers",
                "Values queued for the drift workers, acknowledged and shed per second.",
                [
                    Query(f"sum ({selector(names.M_SENDER_QUEUE, **model)})", "queued"),
                    Query(
                        f"sum (rate({selector(names.M_SENDER_ACKED, **model)}[{RATE}]))", "acked/s"
                    ),
                    Query(selector(r.R_SHED_RATE, **mon), "shed/s"),
                ],
                width=24,
            )
        )
        # Shards
        .with_row(row("Drift-worker shards"))
        .with_panel(
            state_timeline(
                "Shard up",
                "Whether Prometheus scrapes each drift-worker shard.",
                Query(selector("up", namespace=namespace, job=workers_job(name)), "{{instance}}"),
                states=UP_STATES,
                width=12,
            )
        )
        .with_panel(
            time_series(
                "Ingest lag",
                f"Seconds since each shard last ingested a batch; alert above {r.INGEST_LAG_SECONDS:g}s while serving.",
                [Query(selector(r.R_SHARD_INGEST_LAG, **mon), "shard {{shard}}")],
                unit="s",
                threshold=r.INGEST_LAG_SECONDS,
            )
        )
        .with_panel(
            time_series(
                "Owned streams and shard-map epoch",
                "Streams each shard owns, and the shard-map epoch it runs.",
                [
                    Query(raw(names.M_WORKER_OWNED), "owned, shard {{shard}}"),
                    Query(raw(names.M_WORKER_EPOCH), "epoch, shard {{shard}}"),
                ],
            )
        )
        .with_panel(
            time_series(
                "Batches ingested",
                "Batches per second accepted by each shard.",
                [
                    Query(
                        f"sum by ({names.LABEL_SHARD}) (rate({raw(names.M_WORKER_BATCHES)}[{RATE}]))",
                        "shard {{shard}}",
                    )
                ],
                unit="ops",
            )
        )
    )
    return to_json(builder)


def build_overview_dashboard() -> dict[str, Any]:
    """Return the overview dashboard JSON: every monitor in every namespace, side by side."""
    alerts = selector(
        "ALERTS",
        f"alertname=~{quote('Driftwarden.*')}",
        'namespace=~"$namespace"',
        'monitor=~"$monitor"',
        alertstate="firing",
    )
    ns_var = f"namespace=~{quote('$namespace')}"
    mon_var = f"{names.LABEL_MONITOR}=~{quote('$monitor')}"
    by = "{{namespace}}/{{monitor}}"

    def per_monitor(metric: str) -> str:
        return selector(metric, ns_var, mon_var)

    builder = (
        dash_b.Dashboard("Driftwarden / Overview")
        .uid(OVERVIEW_UID)
        .description("Every DriftMonitor: drift, alerts, serving and shard health.")
        .tags(TAGS)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .editable()
        .with_variable(datasource_variable())
        .with_variable(
            query_variable(
                "namespace",
                "Namespace",
                f"label_values({r.R_FEATURES_TOTAL}, namespace)",
                multi=True,
                include_all=True,
            )
        )
        .with_variable(
            query_variable(
                "monitor",
                "Monitor",
                f"label_values({selector(r.R_FEATURES_TOTAL, ns_var)}, {names.LABEL_MONITOR})",
                multi=True,
                include_all=True,
            )
        )
        .link(
            dash_b.DashboardLink("Monitors")
            .type(dashboard.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
        )
        .with_row(row("Drift"))
        .with_panel(
            stat_panel(
                "Monitors drifting",
                "Monitors with at least one drifting stream.",
                Query(f"count ({per_monitor(r.R_DRIFTING_STREAMS)} > 0) or vector(0)"),
                warn_at=1,
            )
        )
        .with_panel(
            stat_panel(
                "Firing Driftwarden alerts",
                "Alerts named Driftwarden* that are firing now.",
                Query(f"count ({alerts}) or vector(0)"),
                warn_at=1,
            )
        )
        .with_panel(
            stat_panel(
                "Shards up",
                "Drift-worker shards scraped successfully, all monitors.",
                Query(f"sum ({per_monitor(r.R_SHARDS_UP)})"),
            )
        )
        .with_panel(
            stat_panel(
                "Requests/s",
                "Model-server requests per second, all monitors.",
                Query(f"sum ({per_monitor(r.R_REQUEST_RATE)})"),
                unit="reqps",
            )
        )
        .with_panel(
            time_series(
                "Feature drift share by monitor",
                "Share of each monitor's features drifting.",
                [Query(per_monitor(r.R_FEATURE_DRIFT_SHARE), by)],
                unit="percentunit",
                min_=0,
                max_=1,
            )
        )
        .with_panel(
            time_series(
                "Drifting streams by monitor",
                "Streams flagging drift per monitor.",
                [Query(per_monitor(r.R_DRIFTING_STREAMS), by)],
                min_=0,
            )
        )
        .with_row(row("Health"))
        .with_panel(
            time_series(
                "Shards up by monitor",
                "Drift-worker shards scraped successfully per monitor.",
                [Query(per_monitor(r.R_SHARDS_UP), by)],
                min_=0,
                width=8,
            )
        )
        .with_panel(
            time_series(
                "Error ratio by monitor",
                "Share of model-server requests answered with 5xx.",
                [Query(per_monitor(r.R_ERROR_RATIO), by)],
                unit="percentunit",
                min_=0,
                width=8,
            )
        )
        .with_panel(
            time_series(
                "p95 latency by monitor",
                "Model-server p95 request latency.",
                [Query(selector(r.R_LATENCY_QUANTILE, ns_var, mon_var, quantile="0.95"), by)],
                unit="s",
                width=8,
            )
        )
    )
    return to_json(builder)
