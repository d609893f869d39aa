"""The shard's HTTP API: status codes, refusals with the shard map, metrics and probes."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

with warnings.catch_warnings():  # starlette 1.x nudges towards httpx2; the client works the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from driftwarden.common import names
from driftwarden.common.contracts import parse_worker_status
from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import DetectorConfig, DetectorType
from driftwarden.detectors.factory import make_detector
from driftwarden.drift_worker.app import WorkerService, create_app
from driftwarden.drift_worker.plan import MonitorPlan
from driftwarden.drift_worker.shard import ShardWorker
from driftwarden.drift_worker.streams import StreamSpec
from driftwarden.ingest import wire
from driftwarden.operator.status import summarise_detectors

MONITOR = "ns/app"
BIN = {"content-type": wire.CONTENT_TYPE}


def factory(stream: StreamSpec) -> dict[str, Any]:
    config = DetectorConfig(type=DetectorType.KS, alpha=0.01)
    return {
        "ks": make_detector(
            config, reference=stream.reference, kind="numeric", window=50, evaluate_every=10
        )
    }


def make_plan() -> MonitorPlan:
    rng = np.random.default_rng(0)
    streams = {
        f"feature:f{i}": StreamSpec(f"feature:f{i}", "numeric", rng.normal(size=200))
        for i in range(6)
    }
    return MonitorPlan(MONITOR, streams, factory, min_samples=50)


@pytest.fixture
def shard(tmp_path: Path) -> Iterator[tuple[TestClient, ShardWorker, ShardMap]]:
    m = ShardMap(monitor=MONITOR, epoch=1, shards=2)
    worker = ShardWorker(make_plan(), 0, shard_map=m, data_dir=tmp_path)
    # no peers run here: do not spend the shutdown trying to hand streams to them
    service = WorkerService(
        worker, peer_url_template="http://127.0.0.1:{port}", base_port=1, shutdown_drain_s=0.2
    )
    with TestClient(create_app(service)) as client:
        yield client, worker, m


def owned(m: ShardMap, ordinal: int) -> list[str]:
    return [s for s in make_plan().streams if m.owner(s) == ordinal]


def batch(stream: str, seq: int, values: np.ndarray, sender: str = "t") -> bytes:
    return wire.encode(
        wire.Batch(sender, 1, [wire.Segment(stream, seq, "values", 1.7e9, {"v": values})], MONITOR)
    )


def test_ingest_binary_and_json_then_metrics_and_status(
    shard: tuple[TestClient, ShardWorker, ShardMap],
) -> None:
    client, _worker, m = shard
    stream = owned(m, 0)[0]
    shifted = np.random.default_rng(1).normal(3.0, 1.0, size=120)
    r = client.post("/v1/ingest", content=batch(stream, 1, shifted), headers=BIN)
    assert r.status_code == 200 and r.json()["acked_values"] == 120 and r.json()["epoch"] == 1
    doc = {
        "sender": "curl",
        "epoch": 1,
        "segments": [
            {"stream": stream, "seq": 1, "kind": "values", "ts": 1, "columns": {"v": [0.1, 0.2]}}
        ],
    }
    assert client.post("/v1/ingest", json=doc).json()["acked_values"] == 2
    again = client.post("/v1/ingest", content=batch(stream, 1, shifted), headers=BIN).json()
    assert again["acked_values"] == 0 and again["duplicates"] == 1

    text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    labels = {"monitor": names.monitor_name(MONITOR), "stream": stream, "shard": "0"}
    values = [
        s
        for s in families["driftwarden_stream_values"].samples
        if s.labels == labels and s.name.endswith("_total")
    ]
    assert values[0].value == 122
    drift = [s for s in families[names.M_STREAM_DRIFT].samples if s.labels["stream"] == stream]
    assert drift[0].value == 1.0  # 3 sigma shift, past the 50-value gate, survives BH
    assert families[names.M_WORKER_EPOCH].samples[0].value == 1
    assert {s.labels["stream"] for s in families[names.M_STREAM_DRIFT].samples} == set(owned(m, 0))
    # statistics exist only once a detector has evaluated
    assert {s.labels["stream"] for s in families[names.M_STREAM_STATISTIC].samples} == {stream}

    # The operator reads this very document into the DriftMonitor status.
    status = parse_worker_status(client.get("/status").content)
    assert status.epoch == 1 and status.shard == 0
    assert status.streams[stream].values == 122 and status.streams[stream].status == "live"
    assert status.streams[stream].detectors["ks"].drift is True
    assert stream in status.drifting() and status.last_drift_time() is not None
    assert set(status.drifting()) == {s for s, v in status.streams.items() if v.drift}
    assert status.batches.accepted == 2 and status.batches.duplicate == 1
    # ... and the thresholds the DriftMonitor status reports, per detector
    [ks] = summarise_detectors([status])
    assert (ks.detector, ks.threshold_min, ks.drifting_streams) == ("ks", 0.01, 1)
    state = client.get("/v1/state", params={"stream": stream}).json()
    assert state[stream]["values_total"] == 122


@pytest.mark.parametrize(
    ("body", "ctype", "needle"),
    [
        (b"\x00\x01", wire.CONTENT_TYPE, "shorter than"),
        (b"{oops", "application/json", "not valid JSON"),
        (
            json.dumps(
                {
                    "sender": "x",
                    "epoch": 1,
                    "segments": [
                        {
                            "stream": "feature:nope",
                            "seq": 1,
                            "kind": "values",
                            "ts": 0,
                            "columns": {"v": [1]},
                        }
                    ],
                }
            ).encode(),
            "application/json",
            "no stream 'feature:nope'",
        ),
    ],
)
def test_malformed_batches_get_400_naming_the_problem(
    shard: tuple[TestClient, ShardWorker, ShardMap], body: bytes, ctype: str, needle: str
) -> None:
    client, worker, _ = shard
    before = worker.fingerprint()
    r = client.post("/v1/ingest", content=body, headers={"content-type": ctype})
    assert r.status_code == 400 and needle in r.json()["detail"]
    assert worker.fingerprint() == before


def test_not_owner_gets_409_with_the_current_map(
    shard: tuple[TestClient, ShardWorker, ShardMap],
) -> None:
    client, worker, m = shard
    r = client.post("/v1/ingest", content=batch(owned(m, 1)[0], 1, np.ones(3)), headers=BIN)
    assert r.status_code == 409 and r.json()["error"] == "not_owner"
    assert ShardMap.model_validate(r.json()["shard_map"]) == m
    assert worker.counters.batches_refused == 1


def test_shard_map_push_and_readiness(shard: tuple[TestClient, ShardWorker, ShardMap]) -> None:
    client, _worker, m = shard
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    bad = client.put(
        "/v1/shardmap", content=ShardMap(monitor="x/y", epoch=9, shards=1).model_dump_json()
    )
    assert bad.status_code == 400 and "x/y" in bad.json()["detail"]
    assert client.put("/v1/shardmap", content=b"{}").status_code == 400
    # shrink to one shard: shard 0 now owns everything, and waits for shard 1's streams
    m2 = m.advance(1)
    assert client.put("/v1/shardmap", content=m2.model_dump_json()).json() == {
        "adopted": True,
        "epoch": 2,
    }
    assert client.put("/v1/shardmap", content=m.model_dump_json()).json()["adopted"] is False
    ready = client.get("/readyz")
    assert ready.status_code == 503 and sorted(ready.json()["awaiting_handoff"]) == sorted(
        owned(m, 1)
    )
    r = client.post("/v1/ingest", content=batch(owned(m, 1)[0], 1, np.ones(3)), headers=BIN)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert client.get("/v1/shardmap").json()["epoch"] == 2


def test_bad_handoff_documents_get_400(shard: tuple[TestClient, ShardWorker, ShardMap]) -> None:
    client, _, _ = shard
    r = client.post("/v1/handoff", content=b"[1]", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = client.post("/v1/handoff", json={"monitor": MONITOR, "stream": "feature:f0"})
    assert r.status_code == 400 and "incomplete" in r.json()["detail"]


def test_live_and_reference_histograms_share_reference_decile_buckets(
    shard: tuple[TestClient, ShardWorker, ShardMap],
) -> None:
    client, worker, m = shard
    stream = owned(m, 0)[0]
    ref = np.asarray(worker.plan.streams[stream].reference)
    live = np.random.default_rng(5).normal(1.0, 1.0, size=400)
    client.post("/v1/ingest", content=batch(stream, 1, live), headers=BIN)
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}

    def buckets(name: str) -> dict[str, float]:
        return {
            s.labels["le"]: s.value
            for s in families[name].samples
            if s.name.endswith("_bucket") and s.labels["stream"] == stream
        }

    live_b, ref_b = buckets(names.M_FEATURE_LIVE), buckets(names.M_FEATURE_REFERENCE)
    assert live_b.keys() == ref_b.keys() and len(live_b) == 10
    assert live_b["+Inf"] == 400 and ref_b["+Inf"] == ref.size
    edges = np.quantile(ref, np.arange(1, 10) / 10)
    first = min((k for k in live_b if k != "+Inf"), key=float)
    assert live_b[first] == np.sum(live <= edges[0])
    assert ref_b[first] == np.sum(ref <= edges[0])


def test_handoff_summary_lists_what_is_still_to_move(
    shard: tuple[TestClient, ShardWorker, ShardMap],
) -> None:
    client, _, m = shard
    assert client.get("/v1/handoff").json()["outgoing"] == []
    client.put("/v1/shardmap", content=m.advance(6).model_dump_json())
    doc = client.get("/v1/handoff").json()
    moved = [s for s in owned(m, 0) if m.advance(6).owner(s) != 0]
    assert moved and doc["epoch"] == 2 and doc["outgoing"] == sorted(moved)
