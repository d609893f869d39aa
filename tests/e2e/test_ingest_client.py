"""``driftwarden.client`` through a real model server to real drift-worker shards.

A model served elsewhere logs records with the Python client to the monitor's
model server (the ingest gateway, ``/v1/records``), which is restarted half-way
(SIGTERM: it drains its sender, then a new process takes the port). The client
retries across the gap; at the end each shard's stream counts add up to exactly
the records the server acknowledged, and the labels sent by record id are joined.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from driftwarden.client import Client
from driftwarden.common import names
from driftwarden.testing.local.processes import ManagedProcess, free_port
from driftwarden.testing.localshards import LocalShards
from support.model_server import serve_process
from support.workers import bundle_shards

SPEC: dict[str, Any] = {
    "model": {"bundle": "builtin://iris"},
    "workers": {"window": 200, "evaluateEvery": 50},
}
RECORDS = 3000


def model_server(local: LocalShards, port: int, log_dir: Path) -> ManagedProcess:
    return serve_process(
        "model server (iris, ingest)",
        port,
        log_dir / "serve.log",
        bundle="builtin://iris",
        env=local.sender_env(),
    )


def stream_values(local: LocalShards) -> dict[str, int]:
    totals: dict[str, int] = {}
    for k in sorted(local.procs):
        for stream, status in local.status(k).streams.items():
            if status.status in (None, "live"):
                totals[stream] = totals.get(stream, 0) + status.values
    return totals


@pytest.fixture
def shards(tmp_path: Path) -> Any:
    with bundle_shards(tmp_path / "shards", SPEC, "builtin://iris") as running:
        yield running


def test_client_records_survive_a_model_server_restart(shards, tmp_path):
    local, bundle = shards
    port = free_port()
    server = model_server(local, port, tmp_path)
    server.start()
    frame = bundle.reference[bundle.feature_names]
    rows = [{k: float(v) for k, v in frame.iloc[i % len(frame)].items()} for i in range(RECORDS)]
    classes = bundle.classes
    client = Client(f"http://127.0.0.1:{port}", batch_size=100, flush_interval=0.05)
    try:
        server.wait_healthy(timeout=300)
        for i, row in enumerate(rows):
            client.log(row, prediction=classes[i % len(classes)], id=f"rec-{i}")
            if i % 100 == 99:
                time.sleep(0.01)  # a serving loop, not one burst
            if i == RECORDS // 2:
                client.flush(timeout=30)
                acked_before = client.stats.acknowledged
                server.stop(timeout=30)  # SIGTERM: the server drains its sender first
                # Logged while no server listens: the client holds and retries them.
                for j in range(200):
                    client.log(rows[j], prediction=classes[j % len(classes)], id=f"gap-{j}")
                time.sleep(0.5)
                assert client.stats.acknowledged == acked_before
                assert client.stats.retries > 0
                server = model_server(local, port, tmp_path)
                server.start()
                server.wait_healthy(timeout=300)
        for i in range(0, RECORDS, 10):
            client.log_label(f"rec-{i}", classes[(i + 1) % len(classes)])
        assert client.flush(timeout=60), client.stats
        stats = client.stats
        server.stop(timeout=30)  # drain what the second server still holds
    finally:
        client.close(timeout=5)
        server.stop()
    logged = RECORDS + 200
    assert stats.acknowledged == logged and stats.labels_acknowledged == RECORDS // 10, stats
    assert stats.dropped == stats.rejected == 0, stats
    deadline = time.monotonic() + 60
    # Every acknowledged record reached every stream exactly once: none lost, none twice.
    expected = {names.feature_stream(n): stats.acknowledged for n in bundle.feature_names}
    expected[names.STREAM_PREDICTION] = stats.acknowledged
    while True:
        totals = stream_values(local)
        if all(totals.get(s) == n for s, n in expected.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {s: totals.get(s) for s in expected} == expected
