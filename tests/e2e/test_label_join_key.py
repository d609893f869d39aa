"""spec.labelJoin.key end to end: a real model server and real drift-worker shards.

The monitor declares ``labelJoin: {key: request_id}``. Clients send their own
``request_id`` with each /predict record and later POST /feedback with that value;
the worker that owns the performance stream joins every label to its prediction
(``driftwarden_label_join_total{outcome="joined"}``) and nothing is left waiting.
Records without the field still get server-generated ids, which join as before.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftwarden.common import names
from driftwarden.testing.local.processes import ManagedProcess, free_port
from driftwarden.testing.localshards import LocalShards
from support.model_server import serve_process
from support.workers import bundle_shards

KEY = "request_id"
SPEC: dict[str, Any] = {
    "model": {"bundle": "builtin://iris"},
    "workers": {"window": 100, "evaluateEvery": 50},
    "labelJoin": {"key": KEY, "maxDelay": "1h"},
}
KEYED = 240
UNKEYED = 60


def model_server(local: LocalShards, port: int, log_dir: Path) -> ManagedProcess:
    # the bundle and labelJoin.key both come from the monitor config
    return serve_process(
        "model server (iris, labelJoin.key)", port, log_dir / "serve.log", env=local.sender_env()
    )


def join_counts(local: LocalShards) -> dict[str, float]:
    """Return label-join outcomes and pending entries summed over every shard."""
    out: dict[str, float] = {}
    for k in sorted(local.procs):
        text = httpx.get(local.url(k) + "/metrics", timeout=30.0).text
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == names.M_LABEL_JOIN:
                    key = s.labels["outcome"]
                elif s.name == names.M_LABEL_JOIN_PENDING:
                    key = "pending_" + s.labels["kind"]
                else:
                    continue
                out[key] = out.get(key, 0.0) + s.value
    return out


@pytest.fixture
def shards(tmp_path: Path) -> Any:
    with bundle_shards(tmp_path / "shards", SPEC, "builtin://iris") as running:
        yield running


def test_labels_join_on_the_declared_key(shards, tmp_path):
    local, bundle = shards
    port = free_port()
    server = model_server(local, port, tmp_path)
    server.start()
    frame = bundle.reference[bundle.feature_names]
    rows = [{k: float(v) for k, v in frame.iloc[i % len(frame)].items()} for i in range(KEYED)]
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_healthy(timeout=300)
        with httpx.Client(base_url=base, timeout=30.0) as http:
            bad = http.post("/predict", json={**rows[0], KEY: "no spaces allowed"})
            assert bad.status_code == 422
            assert [(e["field"], e["rule"]) for e in bad.json()["errors"]] == [(KEY, "invalid_id")]
            predicted: dict[str, Any] = {}
            for start in range(0, KEYED, 40):
                body = [{**rows[i], KEY: f"req-{i}"} for i in range(start, start + 40)]
                served = http.post("/predict", json=body).json()["predictions"]
                assert [p["id"] for p in served] == [f"req-{i}" for i in range(start, start + 40)]
                predicted.update({p["id"]: p["prediction"] for p in served})
            plain = http.post("/predict", json=rows[:UNKEYED]).json()["predictions"]
            assert not any(p["id"].startswith("req-") for p in plain)  # server ids
            predicted.update({p["id"]: p["prediction"] for p in plain})
            classes = bundle.classes
            # labels by the caller's ids: every other one wrong, so errors are 0 and 1
            labels = [
                {
                    "prediction_id": pid,
                    "label": value if n % 2 else classes[(classes.index(value) + 1) % 3],
                }
                for n, (pid, value) in enumerate(predicted.items())
            ]
            for start in range(0, len(labels), 50):
                fb = http.post("/feedback", json=labels[start : start + 50])
                assert fb.status_code == 202 and fb.json()["forwarded"], fb.text
        server.stop(timeout=30)  # SIGTERM drains the sender
    finally:
        server.stop()
    total = KEYED + UNKEYED
    deadline = time.monotonic() + 60
    while True:
        counts = join_counts(local)
        if counts.get("joined") == total or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert counts.get("joined") == total, counts
    for outcome in ("unmatched_label", "expired_prediction", "evicted_prediction", "evicted_label"):
        assert counts.get(outcome) == 0, counts  # exported, and nothing lost
    assert counts.get("pending_predictions", 0) == counts.get("pending_labels", 0) == 0, counts
    owner = local.map.owner(names.STREAM_PERFORMANCE)
    perf = local.status(owner).streams[names.STREAM_PERFORMANCE]
    assert perf.values == 2 * total  # every prediction and every label applied once
