"""Resetting detectors raise alerts through real Prometheus and Alertmanager (issue 13, item 1).

Page-Hinkley and DDM restart on the value after an alarm, so their own verdict lasts
one value; the worker holds it for ``detectors.alarmHold`` and counts it
(``driftwarden_stream_alarms_total``). One :class:`~driftwarden.testing.local.LocalStack`
(iris, one shard, second-scale scrape and evaluation) with ``numeric: [pageHinkley]`` and
``concept: [ddm]``:

1. swapping two classes' labels makes DDM on the error stream fire DriftwardenConceptDrift;
2. shifting the petal features makes Page-Hinkley fire DriftwardenDataDrift, and the
   alert reaches the webhook receiver through Alertmanager.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pandas as pd
import pytest

from driftwarden.alerts.rules import A_CONCEPT_DRIFT, A_DATA_DRIFT
from driftwarden.bundles.scenarios import scenario
from driftwarden.common import names
from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.dashboards import panel_queries
from driftwarden.testing.local import LocalStack, Timing

pytestmark = pytest.mark.timeout(600)

NAME, NAMESPACE = "petals", "seq"
SHIFTED = ("petal_length", "petal_width")
SPEC = DriftMonitorSpec.model_validate(
    {
        "model": {"bundle": "builtin://iris"},
        "workers": {"shards": 1, "window": 200, "evaluateEvery": 50},
        "detectors": {
            "numeric": [{"type": "pageHinkley"}],
            "concept": [{"type": "ddm"}],
            "minSamples": 100,
        },
        "alerts": {
            "for": "3s",
            "receivers": [
                {"name": "hook", "webhook": {"urlSecretRef": {"name": "alerting", "key": "hook"}}}
            ],
        },
    }
)
World = Callable[[int], tuple[pd.DataFrame, np.ndarray]]


def _world(name: str, seed: int, severity: float = 1.0) -> World:
    rng = np.random.default_rng(seed)

    def draw(n: int) -> tuple[pd.DataFrame, np.ndarray]:
        return scenario(name, n=n, drift_at=0, seed=int(rng.integers(1 << 31)), severity=severity)

    return draw


@dataclass
class Traffic:
    """Posts /predict batches and their true labels to /feedback from a thread."""

    url: str
    world: World
    sent: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Traffic:
        threading.Thread(target=self._run, name="traffic", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                features, labels = self.world(50)
                records = json.loads(features.to_json(orient="records"))
                response = client.post("/predict", json=records)
                if response.status_code != 200:
                    self.errors.append(f"/predict {response.status_code}: {response.text[:300]}")
                    time.sleep(0.5)
                    continue
                ids = [p["id"] for p in response.json()["predictions"]]
                feedback = [
                    {"prediction_id": i, "label": str(y)} for i, y in zip(ids, labels, strict=True)
                ]
                response = client.post("/feedback", json=feedback)
                if response.status_code != 202:
                    self.errors.append(f"/feedback {response.status_code}: {response.text[:300]}")
                self.sent += len(ids)
                time.sleep(0.05)


@dataclass
class Run:
    stack: LocalStack
    traffic: Traffic


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    stack = LocalStack(
        name=NAME,
        namespace=NAMESPACE,
        spec=SPEC,
        run_dir=tmp_path_factory.mktemp("stack"),
        timing=Timing(),
        start_timeout=240,
    )
    with stack:
        traffic = Traffic(stack.model_url, _world("iris:none", 1)).start()
        try:
            # in-control values first: both detectors learn the stream's level from it
            deadline = time.monotonic() + 120
            while traffic.sent < 1000:
                assert time.monotonic() < deadline, f"sent {traffic.sent}: {traffic.errors[-3:]}"
                time.sleep(0.5)
            assert not traffic.errors, traffic.errors[-3:]
            yield Run(stack, traffic)
        finally:
            traffic.stop()


def _alarms(stack: LocalStack, stream: str, detector: str) -> float:
    found = stack.query(
        f'max({names.M_STREAM_ALARMS}{{namespace="{NAMESPACE}",monitor="{NAME}",'
        f'stream="{stream}",detector="{detector}"}})'
    )
    return float(found[0]["value"][1]) if found else 0.0


def test_ddm_on_the_error_stream_fires_concept_drift(run: Run) -> None:
    stack = run.stack
    assert not [a for a in stack.alerts() if a.name in (A_CONCEPT_DRIFT, A_DATA_DRIFT)]
    # every versicolor is labelled virginica and back: the error rate jumps
    run.traffic.world = _world("iris:label-swap", 2)
    alert = stack.wait_for_alert(A_CONCEPT_DRIFT, timeout=120)
    assert alert.labels["namespace"] == NAMESPACE
    assert _alarms(stack, names.STREAM_PERFORMANCE, "ddm") >= 1
    assert not [a for a in stack.alerts() if a.name == A_DATA_DRIFT]


def test_page_hinkley_on_features_fires_data_drift(run: Run) -> None:
    stack = run.stack
    shifted_at = time.time()
    run.traffic.world = _world("iris:petal-shift", 3, severity=2.0)
    stack.wait_for_alert(A_DATA_DRIFT, timeout=120)
    for feature in SHIFTED:
        assert _alarms(stack, names.feature_stream(feature), "pageHinkley") >= 1, feature
    # the dashboard's alarms panel shows them
    variables = {"__rate_interval": "1m", "namespace": NAMESPACE, "monitor": NAME}
    [panel] = [
        q for q in panel_queries(stack.dashboard(), variables) if q.panel == "Detector alarms"
    ]
    shown = {
        (s["metric"]["stream"], s["metric"]["detector"]): float(s["value"][1])
        for s in stack.query(panel.expr)
    }
    assert shown[(names.feature_stream(SHIFTED[0]), "pageHinkley")] >= 1, shown
    stack.receiver.wait_for(
        lambda n: (
            n.kind == "webhook"
            and n.received_at >= shifted_at
            and f"alertname={A_DATA_DRIFT}" in n.text
        ),
        timeout=30,
        what="the data-drift webhook post",
    )
    assert not run.traffic.errors, run.traffic.errors[-3:]
