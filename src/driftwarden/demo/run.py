"""One demo run: train, start the local pipeline, stream drifting traffic, watch, report.

Everything the demo starts lives inside :class:`~driftwarden.testing.local.stack.LocalStack`,
a context manager that stops every process (by process group) on normal exit, on an
exception, on Ctrl-C (KeyboardInterrupt) and on SIGTERM, so the demo never leaves
anything running.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from driftwarden.alerts.promql import monitor_matcher, selector
from driftwarden.alerts.rules import A_DATA_DRIFT, R_FEATURE_DRIFT_SHARE, R_STREAM_DRIFT
from driftwarden.bundles.bundle import Bundle, bundles_dir, load_bundle
from driftwarden.bundles.scenarios import SCENARIOS, scenario
from driftwarden.common import names
from driftwarden.demo.plan import MONITOR_NAME, DemoPlan
from driftwarden.demo.report import FeatureVerdict, ReportInput, Timeline, write_report
from driftwarden.testing.local.stack import LocalStack

log = logging.getLogger("driftwarden.demo")
FEATURE_PREFIX = names.feature_stream("")
POLL_SECONDS = 0.5
RETRIES = 5


@dataclass
class StreamEvent:
    """The first time Prometheus saw a stream flagged as drifting."""

    stream: str
    at: float  # unix seconds
    rows_sent: int
    seconds_after_drift: float | None


@dataclass
class AlertEvent:
    """When the data-drift alert went pending, fired, and reached the webhook."""

    name: str = A_DATA_DRIFT
    pending_at: float | None = None
    firing_at: float | None = None
    received_at: float | None = None
    receiver: str = ""
    text: str = ""


@dataclass
class DemoSummary:
    """What the demo found; printed as a table and written as summary.json."""

    scenario: str
    scenario_description: str
    rows_sent: int
    drift_at_row: int
    traffic_started_at: float
    drift_started_at: float | None
    traffic_ended_at: float | None
    drifted_features: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    stream_events: list[StreamEvent] = field(default_factory=list)
    alert: AlertEvent = field(default_factory=AlertEvent)
    prometheus_url: str = ""
    alertmanager_url: str = ""
    model_url: str = ""
    report_path: str = ""
    logs_dir: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


class ModelClient:
    """The demo's client of the model server: /predict batches and /feedback labels."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: Any) -> httpx.Response:
        # A busy server (503 while it starts or sheds, a dropped connection) gets a few
        # retries; anything else is the demo's or the server's bug and surfaces at once.
        for attempt in range(RETRIES):
            try:
                response = self._http.post(path, json=body)
            except httpx.TransportError as exc:
                if attempt == RETRIES - 1:
                    raise RuntimeError(f"model server {path} unreachable: {exc}") from exc
            else:
                if response.status_code not in (429, 503) or attempt == RETRIES - 1:
                    return response
            time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def predict(self, frame: pd.DataFrame) -> list[str]:
        """Send ``frame`` as one batch (a JSON array of records); return the prediction ids."""
        response = self._post("/predict", _records(frame))
        if response.status_code != 200:
            raise RuntimeError(
                f"model server /predict answered HTTP {response.status_code}: {response.text[:500]}"
            )
        return [str(p["id"]) for p in response.json()["predictions"]]

    def feedback(self, ids: list[str], labels: np.ndarray) -> None:
        """Send the true labels of earlier predictions (feeds the concept-drift stream)."""
        body = [{"prediction_id": i, "label": _plain(v)} for i, v in zip(ids, labels, strict=True)]
        response = self._post("/feedback", body)
        if response.status_code not in (200, 202):
            raise RuntimeError(
                f"model server /feedback answered HTTP {response.status_code}: {response.text[:500]}"
            )


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def _timestamp(rfc3339: str) -> float | None:
    """Return unix seconds of a Prometheus RFC 3339 time (nanosecond fractions allowed)."""
    match = _RFC3339.fullmatch(rfc3339)
    if match is None:
        return None
    seconds, fraction, zone = match.groups()
    # datetime takes at most microseconds; Prometheus writes nanoseconds.
    text = seconds + (f".{fraction[:6]}" if fraction else "") + zone
    return datetime.fromisoformat(text).timestamp()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def prepare_bundle(name: str, on_status: Callable[[str], None]) -> Bundle:
    """Return the built-in bundle ``name``, training it first if missing (or stale)."""
    directory = bundles_dir() / name
    if (directory / "bundle.json").is_file():
        on_status(f"bundle {name}: {directory}")
    else:
        on_status(f"bundle {name}: training into {directory} (first run only, seconds)")
    # The path the model server takes for builtin:// too (it retrains a bundle that an
    # older recipe produced), so both see the same bundle.
    return load_bundle(f"builtin://{name}")


class PipelineWatch:
    """Polls the local Prometheus and webhook receiver and records what happened when."""

    def __init__(self, stack: LocalStack, plan: DemoPlan) -> None:
        self.stack = stack
        self.plan = plan
        self.events: dict[str, StreamEvent] = {}
        self.alert = AlertEvent()
        self.drift_started_at: float | None = None
        self.rows_sent = 0
        self.last_error = ""

    def poll(self) -> None:
        """Record streams newly flagged, the alert's state and any notification received."""
        now = time.time()
        try:
            flagged = self.stack.query(
                f'{R_STREAM_DRIFT}{{{names.LABEL_MONITOR}="{MONITOR_NAME}"}} == 1'
            )
            for series in flagged:
                stream = series["metric"].get(names.LABEL_STREAM, "")
                if stream and stream not in self.events:
                    after = None if self.drift_started_at is None else now - self.drift_started_at
                    self.events[stream] = StreamEvent(stream, now, self.rows_sent, after)
            for alert in self.stack.alerts():
                if alert.name != self.alert.name:
                    continue
                # Prometheus' own clock, not our polling: activeAt is when the alert
                # went pending; it fires once it has held for `for:` (to within one
                # rule evaluation), which is before Alertmanager can hear of it.
                active_at = _timestamp(alert.active_at) or now
                if self.alert.pending_at is None:
                    self.alert.pending_at = active_at
                if alert.state == "firing" and self.alert.firing_at is None:
                    self.alert.firing_at = active_at + self.stack.for_seconds()
            self.last_error = ""
        except (httpx.HTTPError, RuntimeError) as exc:
            # Prometheus may be between scrapes or restarting its rule evaluation; the
            # next poll retries. Shown on the progress line so a stuck run is visible.
            self.last_error = str(exc)[:120]
        if self.alert.received_at is None:
            for note in self.stack.received():
                if not note.resolved and self.alert.name in note.text:
                    self.alert.received_at = note.received_at
                    self.alert.receiver = f"{note.kind}/{note.receiver}"
                    self.alert.text = note.text[:2000]
                    break

    def drifting_features(self) -> list[str]:
        return sorted(
            s.removeprefix(FEATURE_PREFIX) for s in self.events if s.startswith(FEATURE_PREFIX)
        )

    def status_line(self) -> str:
        features = ", ".join(self.drifting_features()) or "none yet"
        if self.alert.received_at is not None:
            alert = f"{self.alert.name} received by the webhook"
        elif self.alert.firing_at is not None:
            alert = f"{self.alert.name} firing"
        elif self.alert.pending_at is not None:
            alert = f"{self.alert.name} pending (for: {self.plan.alert_for})"
        else:
            alert = "none"
        error = f" | waiting for Prometheus: {self.last_error}" if self.last_error else ""
        return f"drifting features: {features} | alert: {alert}{error}"


@dataclass
class Traffic:
    """The rows a run sent, their true labels, and when it started and crossed the drift point."""

    features: pd.DataFrame
    labels: np.ndarray
    started_at: float
    drift_started_at: float | None = None
    rows_sent: int = 0


def stream_traffic(
    model_url: str,
    plan: DemoPlan,
    on_batch: Callable[[Traffic], None],
    on_wait: Callable[[Traffic], None] = lambda traffic: None,
) -> Traffic:
    """Send the scenario's rows to ``model_url`` at the plan's pace; return what was sent.

    ``on_batch`` runs after every batch; ``on_wait`` at most every POLL_SECONDS while
    pacing (the local demo polls Prometheus there).
    """
    features, labels = scenario(plan.scenario, n=plan.rows, drift_at=plan.drift_at, seed=plan.seed)
    traffic = Traffic(features, labels, started_at=time.time())
    client = ModelClient(model_url)
    next_wait = traffic.started_at
    try:
        for start in range(0, plan.rows, plan.batch_rows):
            stop = min(start + plan.batch_rows, plan.rows)
            if start <= plan.drift_at < stop:
                traffic.drift_started_at = time.time()
            ids = client.predict(features.iloc[start:stop])
            client.feedback(ids, labels[start:stop])
            traffic.rows_sent = stop
            on_batch(traffic)
            due = traffic.started_at + stop / plan.rows_per_second
            while (now := time.time()) < due:
                if now >= next_wait:
                    on_wait(traffic)
                    next_wait = time.time() + POLL_SECONDS
                time.sleep(max(0.01, min(due, next_wait) - time.time()))
    finally:
        client.close()
    return traffic


def wait_for_alert(
    watch: PipelineWatch, timeout: float, on_progress: Callable[[str], None]
) -> bool:
    """Poll until the data-drift alert reached the webhook; return whether it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watch.poll()
        on_progress(watch.status_line())
        if watch.alert.received_at is not None:
            return True
        time.sleep(POLL_SECONDS)
    return False


def verdicts(stack: LocalStack, bundle: Bundle, watch: PipelineWatch) -> list[FeatureVerdict]:
    """Return each feature's verdict: drift flag, first time seen, lowest p-value and detector."""
    p_values: dict[str, tuple[float, str]] = {}
    try:
        # The workers' raw series: the recorded min p-value drops the detector label.
        raw = selector(
            names.M_STREAM_P_VALUE,
            monitor_matcher(MONITOR_NAME, stack.namespace),
            namespace=stack.namespace,
        )
        for series in stack.query(raw):
            stream = series["metric"].get(names.LABEL_STREAM, "")
            value = float(series["value"][1])
            detector = series["metric"].get(names.LABEL_DETECTOR, "")
            if stream and (stream not in p_values or value < p_values[stream][0]):
                p_values[stream] = (value, detector)
    except (httpx.HTTPError, RuntimeError) as exc:
        log.warning(
            "could not read p-values from Prometheus (%s); the report shows flags only", exc
        )
    out = []
    for spec in bundle.manifest.features:
        stream = names.feature_stream(spec.name)
        event = watch.events.get(stream)
        p_value, detector = p_values.get(stream, (math.nan, ""))
        out.append(
            FeatureVerdict(
                feature=spec.name,
                kind=str(spec.type),
                drifted=event is not None,
                detector=detector,
                p_value=None if math.isnan(p_value) else p_value,
                first_drift_row=None if event is None else event.rows_sent,
                first_drift_seconds=None if event is None else event.seconds_after_drift,
            )
        )
    return out


def drift_share_timeline(
    stack: LocalStack, start: float, end: float
) -> tuple[list[float], list[float]]:
    """Return (times, drift share) recorded by Prometheus between ``start`` and ``end``."""
    try:
        result = stack.query_range(
            f'{R_FEATURE_DRIFT_SHARE}{{{names.LABEL_MONITOR}="{MONITOR_NAME}"}}', start, end, 1.0
        )
    except (httpx.HTTPError, RuntimeError) as exc:
        log.warning("could not read the drift-share history (%s); the report has no timeline", exc)
        return [], []
    if not result:
        return [], []
    points = result[0]["values"]
    return [float(t) for t, _ in points], [float(v) for _, v in points]


def build_report(
    stack: LocalStack,
    bundle: Bundle,
    plan: DemoPlan,
    watch: PipelineWatch,
    sent: pd.DataFrame,
    traffic_started_at: float,
    out_dir: Path,
) -> Path:
    """Write the drift report page into ``out_dir``; return its path."""
    times, share = drift_share_timeline(stack, traffic_started_at, time.time())
    timeline = Timeline(
        times=times,
        drift_share=share,
        drift_started_at=watch.drift_started_at,
        alert_fired_at=watch.alert.firing_at,
        alert_received_at=watch.alert.received_at,
        threshold=stack.spec.alerts.data_drift_share,
    )
    window = plan.window
    data = ReportInput(
        title=f"Driftwarden demo: {bundle.name} monitor",
        scenario=plan.scenario,
        scenario_description=SCENARIOS[plan.scenario].description,
        reference=bundle.reference_features,
        # The last window of each half: what the detectors compared with the reference.
        before=sent.iloc[max(0, plan.drift_at - window) : plan.drift_at],
        after=sent.iloc[max(plan.drift_at, len(sent) - window) :],
        verdicts=verdicts(stack, bundle, watch),
        timeline=timeline,
        links=[("Prometheus", stack.prometheus_url), ("Alertmanager", stack.alertmanager_url)],
    )
    return write_report(data, out_dir)
