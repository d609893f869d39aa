"""The whole pipeline through real Prometheus and Alertmanager, as local processes.

One :class:`~driftwarden.testing.local.LocalStack` (model server, 3 drift-worker shards,
Prometheus, Alertmanager, the local Discord/webhook receiver) configured from the same
builders the operator uses. In order:

1. a long stretch without drift raises no alert;
2. labels posted to /feedback that no longer match the predictions raise the
   concept-drift alert;
3. a shift in two features raises the data-drift alert, which reaches the Discord
   receiver naming those two features; the time from shift to notification is logged
   and written to ``$DRIFTWARDEN_E2E_REPORT`` when set;
4. every query of the generated dashboards returns data from that Prometheus;
5. killing a shard raises the shard-down alert, restarting it resolves it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from driftwarden.alerts.rules import A_CONCEPT_DRIFT, A_DATA_DRIFT, A_SHARD_DOWN
from driftwarden.bundles.scenarios import scenario
from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.dashboards import build_overview_dashboard, panel_queries
from driftwarden.testing.local import LocalStack, Notification, Timing

log = logging.getLogger("e2e.pipeline")

pytestmark = pytest.mark.timeout(900)

NAME, NAMESPACE = "diamonds", "shop"
SHIFTED = ("depth", "table")  # the two features the data-drift phase moves
FOR = "5s"
SPEC = DriftMonitorSpec.model_validate(
    {
        "model": {"bundle": "builtin://diamonds"},
        "workers": {"shards": 3, "window": 500, "evaluateEvery": 50},
        "detectors": {"minSamples": 200},
        "alerts": {
            "for": FOR,
            # 2 of the 9 features drifting confirm data drift.
            "dataDriftShare": 0.2,
            "receivers": [
                {
                    "name": "discord",
                    "discord": {"webhookSecretRef": {"name": "alerting", "key": "discord"}},
                },
                {"name": "hook", "webhook": {"urlSecretRef": {"name": "alerting", "key": "hook"}}},
                {
                    "name": "slack",
                    "slack": {
                        "apiUrlSecretRef": {"name": "alerting", "key": "slack"},
                        "channel": "#ml",
                    },
                },
            ],
        },
    }
)
BATCH = 50
RATE_WINDOW = "10s"


@dataclass
class Traffic:
    """Posts /predict batches (and /feedback labels) from a background thread.

    ``world`` returns ``(features, true labels)`` for the next batch; swapping it is
    how a phase changes what the model sees. ``label_fn`` maps true labels to what is
    posted to /feedback (identity unless the concept changes).
    """

    url: str
    world: Callable[[int], tuple[pd.DataFrame, np.ndarray]]
    label_fn: Callable[[np.ndarray], np.ndarray] = lambda y: y
    sent: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                features, labels = self.world(BATCH)
                records = json.loads(features.to_json(orient="records"))
                response = client.post("/predict", json=records)
                if response.status_code != 200:
                    self.errors.append(f"/predict {response.status_code}: {response.text[:300]}")
                    time.sleep(0.5)
                    continue
                ids = [p["id"] for p in response.json()["predictions"]]
                posted = self.label_fn(np.asarray(labels, dtype=float))
                feedback = [
                    {"prediction_id": i, "label": float(y)}
                    for i, y in zip(ids, posted, strict=False)
                ]
                response = client.post("/feedback", json=feedback)
                if response.status_code != 202:
                    self.errors.append(f"/feedback {response.status_code}: {response.text[:300]}")
                self.sent += len(ids)
                # ~500 rows/s: fast enough to fill windows in seconds, light on 2 cores.
                time.sleep(0.1)


def _reference_world(seed: int) -> Callable[[int], tuple[pd.DataFrame, np.ndarray]]:
    rng = np.random.default_rng(seed)

    def draw(n: int) -> tuple[pd.DataFrame, np.ndarray]:
        return scenario("diamonds:none", n=n, drift_at=n, seed=int(rng.integers(1 << 31)))

    return draw


def _shifted_world(seed: int) -> Callable[[int], tuple[pd.DataFrame, np.ndarray]]:
    """Reference rows with depth and table moved by about two standard deviations."""
    base = _reference_world(seed)

    def draw(n: int) -> tuple[pd.DataFrame, np.ndarray]:
        features, labels = base(n)
        features = features.copy()
        features["depth"] = features["depth"] + 3.0  # sd ~1.4
        features["table"] = features["table"] + 4.5  # sd ~2.2
        return features, labels

    return draw


@dataclass
class Run:
    stack: LocalStack
    traffic: Traffic
    report: dict


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    stack = LocalStack(
        name=NAME,
        namespace=NAMESPACE,
        spec=SPEC,
        run_dir=tmp_path_factory.mktemp("stack"),
        timing=Timing(rate_window=RATE_WINDOW),
        start_timeout=240,
    )
    started = time.monotonic()
    with stack:
        log.info("stack up in %.1f s", time.monotonic() - started)
        traffic = Traffic(stack.model_url, _reference_world(1)).start()
        report: dict = {"stack_start_seconds": round(time.monotonic() - started, 1)}
        try:
            yield Run(stack, traffic, report)
        finally:
            traffic.stop()
            path = os.environ.get("DRIFTWARDEN_E2E_REPORT")
            if path:
                Path(path).write_text(json.dumps(report, indent=2), encoding="utf-8")
            log.info("e2e report: %s", json.dumps(report))
            if os.environ.get("DRIFTWARDEN_E2E_DEBUG"):
                for name, tail in stack.process_logs().items():
                    log.info("--- %s\n%s", name, tail)


def _firing_or_pending(stack: LocalStack, alertname: str) -> list:
    return [a for a in stack.alerts() if a.name == alertname]


def _about(alertname: str) -> Callable[[Notification], bool]:
    return lambda n: alertname in n.text and not n.resolved


def _wait(
    predicate: Callable[[], bool], timeout: float, what: str, describe: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f} s; {describe()}")
        time.sleep(0.5)


def test_no_drift_stretch_raises_no_alert(run: Run) -> None:
    stack, traffic = run.stack, run.traffic
    # Long enough that every feature window fills several times over, and well past
    # minSamples and the alerts' `for:`.
    target = 12 * SPEC.workers.window
    _wait(
        lambda: traffic.sent >= target,
        timeout=240,
        what=f"{target} predictions without drift",
        describe=lambda: f"sent {traffic.sent}, errors {traffic.errors[-3:]}",
    )
    time.sleep(stack.for_seconds() + 3)
    assert not traffic.errors, traffic.errors[-5:]
    values = stack.query('driftwarden:stream_values:max{stream="feature:depth"}')
    assert values and float(values[0]["value"][1]) >= SPEC.detectors.min_samples, values
    # Nothing at all: no drift alert, and no operational alert either.
    assert not stack.alerts(), [(a.name, a.state, dict(a.labels)) for a in stack.alerts()]
    assert not stack.received(), [n.text[:300] for n in stack.received()]
    share = stack.query("driftwarden:monitor_feature_drift:share")
    assert share and float(share[0]["value"][1]) < SPEC.alerts.data_drift_share, share
    run.report["no_drift_predictions"] = traffic.sent


def test_label_relationship_change_raises_concept_drift(run: Run) -> None:
    stack, traffic = run.stack, run.traffic
    # Same features, but the true prices are now 40 % higher than the model learned.
    traffic.label_fn = lambda y: y * 1.4
    changed = time.monotonic()
    alert = stack.wait_for_alert(A_CONCEPT_DRIFT, timeout=240)
    notification = stack.receiver.wait_for(
        _about(A_CONCEPT_DRIFT), timeout=60, what="the concept-drift notification"
    )
    run.report["concept_change_to_notification_seconds"] = round(time.monotonic() - changed, 1)
    assert alert.labels["monitor"] == NAME and alert.labels["namespace"] == NAMESPACE
    assert "builtin://diamonds" in notification.text
    # Features did not move: no data drift.
    assert not _firing_or_pending(stack, A_DATA_DRIFT)


def test_two_shifted_features_raise_data_drift_naming_them(run: Run) -> None:
    stack, traffic = run.stack, run.traffic
    shifted_at = time.time()
    traffic.world = _shifted_world(2)
    notification = stack.receiver.wait_for(
        lambda n: n.kind == "discord" and _about(A_DATA_DRIFT)(n),
        timeout=300,
        what="the data-drift Discord post",
    )
    seconds = notification.received_at - shifted_at
    run.report["shift_to_data_drift_notification_seconds"] = round(seconds, 1)
    log.info("data drift: %.1f s from the shift to the Discord notification", seconds)
    [embed] = notification.payload["embeds"]
    assert A_DATA_DRIFT in embed["title"]
    drifting = embed["description"].split("Drifting features: ", 1)[1].split(".", 1)[0]
    named = {f.strip() for f in drifting.split(",")}
    run.report["drifting_features_named"] = sorted(named)
    assert set(SHIFTED) <= named, embed["description"]
    # The generic webhook and Slack get the same alert; Slack's text carries the description.
    stack.receiver.wait_for(
        lambda n: n.kind == "webhook" and f"alertname={A_DATA_DRIFT}" in n.text,
        timeout=30,
        what="the webhook post",
    )
    slack = stack.receiver.wait_for(
        lambda n: n.kind == "slack" and "Data drift confirmed" in n.text,
        timeout=30,
        what="the Slack post",
    )
    assert slack.payload.get("channel") == "#ml"
    assert all(feature in slack.text for feature in SHIFTED), slack.text


def test_every_dashboard_query_returns_data(run: Run) -> None:
    stack = run.stack
    variables = {
        "stream": f"feature:{SHIFTED[0]}",
        "__rate_interval": RATE_WINDOW,
        "namespace": NAMESPACE,
        "monitor": NAME,
        "datasource": "prometheus",
    }
    queries = panel_queries(stack.dashboard(), variables) + panel_queries(
        build_overview_dashboard(), variables
    )
    empty = []
    for query in queries:
        if not stack.query(query.expr):
            empty.append(f"{query.panel} [{query.ref_id}]: {query.expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
    run.report["dashboard_queries_with_data"] = len(queries)


def test_recorded_series_stay_within_the_documented_budget(run: Run) -> None:
    """docs/alerts.md: recording rules add 4 series per stream, 1 per shard, 11 per monitor."""
    stack = run.stack
    [streams] = stack.query(
        f'count(driftwarden:stream_drift:max{{namespace="{NAMESPACE}",monitor="{NAME}"}})'
    )
    [recorded] = stack.query(
        f'count({{__name__=~"driftwarden:.+",namespace="{NAMESPACE}",monitor="{NAME}"}})'
    )
    s, r = int(streams["value"][1]), int(recorded["value"][1])
    run.report["streams"], run.report["recorded_series"] = s, r
    assert s >= 11  # 9 features, prediction, performance
    assert r <= 4 * s + SPEC.workers.shards + 11, (s, r)


def test_killing_a_shard_alerts_and_restarting_resolves(run: Run) -> None:
    stack = run.stack
    killed = time.time()
    stack.kill_shard(1)
    alert = stack.wait_for_alert(A_SHARD_DOWN, timeout=120)
    assert alert.labels["pod"] == f"{NAME}-workers-1"
    stack.receiver.wait_for(
        lambda n: n.received_at >= killed and _about(A_SHARD_DOWN)(n),
        timeout=60,
        what="the shard-down post",
    )
    run.report["kill_to_shard_down_notification_seconds"] = round(time.time() - killed, 1)
    restarted = time.time()
    stack.restart_shard(1, timeout=240)
    stack.wait_for_no_alert(A_SHARD_DOWN, timeout=120)
    stack.receiver.wait_for(
        lambda n: n.received_at >= restarted and n.resolved and A_SHARD_DOWN in n.text,
        timeout=60,
        what="the shard-down resolved post",
    )
    run.report["restart_to_resolved_seconds"] = round(time.time() - restarted, 1)


def test_scaling_out_and_back_keeps_every_stream_and_raises_no_alert(run: Run) -> None:
    """`kubectl scale driftmonitor --replicas` locally: 3 -> 4 -> 3 shards under traffic."""
    stack = run.stack
    before = {a.name for a in stack.alerts()}
    started = time.monotonic()
    assert stack.scale(4).shards == 4
    run.report["scale_3_to_4_seconds"] = round(time.monotonic() - started, 1)
    owned = stack.query(f'sum(driftwarden_worker_owned_streams{{namespace="{NAMESPACE}"}})')
    assert owned and int(float(owned[0]["value"][1])) == 11, owned
    time.sleep(stack.for_seconds() + 3)
    assert not {a.name for a in stack.alerts()} - before, [
        (a.name, a.state) for a in stack.alerts()
    ]
    started = time.monotonic()
    assert stack.scale(3).epoch == stack.shard_map.epoch
    run.report["scale_4_to_3_seconds"] = round(time.monotonic() - started, 1)
    time.sleep(stack.for_seconds() + 3)
    new = {a.name for a in stack.alerts()} - before
    assert not new, [(a.name, a.state, dict(a.labels)) for a in stack.alerts()]
    up = stack.query(f'count(up{{namespace="{NAMESPACE}",job="{NAME}-workers"}} == 1)')
    assert int(up[0]["value"][1]) == 3
    features = stack.query(f'driftwarden:monitor_features:count{{namespace="{NAMESPACE}"}}')
    assert int(float(features[0]["value"][1])) == 9
