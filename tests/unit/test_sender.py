"""The sender against in-process shards: refusals, reshards, lost acks and restarts lose nothing."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from driftwarden.common import names
from driftwarden.common.spec import DetectorConfig, DetectorType
from driftwarden.detectors.factory import make_detector
from driftwarden.drift_worker.plan import MonitorPlan
from driftwarden.drift_worker.shard import Refusal, ShardWorker
from driftwarden.drift_worker.streams import JoinConfig, StreamSpec
from driftwarden.ingest import wire
from driftwarden.ingest.sender import SHED_BUFFER_FULL, SHED_INVALID, Sender, SenderSettings
from driftwarden.testing.inprocess import InProcessCluster

MONITOR = "ns/sender"
BASE_PORT = 7000


def factory(stream: StreamSpec) -> dict[str, Any]:
    config = DetectorConfig(type=DetectorType.KS)
    return {
        "ks": make_detector(
            config, reference=stream.reference, kind="numeric", window=50, evaluate_every=10
        )
    }


def make_plan(features: int) -> MonitorPlan:
    rng = np.random.default_rng(0)
    streams = {
        names.feature_stream(f"f{i}"): StreamSpec(
            names.feature_stream(f"f{i}"), "numeric", rng.normal(size=80)
        )
        for i in range(features)
    }
    streams[names.STREAM_PREDICTION] = StreamSpec(
        names.STREAM_PREDICTION, "numeric", rng.normal(size=80)
    )
    streams[names.STREAM_PERFORMANCE] = StreamSpec(
        names.STREAM_PERFORMANCE, "performance", rng.random(80), task="regression"
    )
    return MonitorPlan(MONITOR, streams, factory, join=JoinConfig(max_delay_s=1e9))


class ChaosShards:
    """Routes sender requests to in-process shards and misbehaves on purpose."""

    def __init__(
        self, cluster: InProcessCluster, seed: int, *, lost_ack: float, down: float
    ) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.lost_ack = lost_ack
        self.down = down
        self.dead: set[int] = set()
        self.requests = 0
        self.statuses: dict[int, int] = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        ordinal = request.url.port - BASE_PORT
        if (
            ordinal in self.dead
            or ordinal not in self.cluster.workers
            or self.rng.random() < self.down
        ):
            raise httpx.ConnectError("connection refused", request=request)
        if self.rng.random() < 0.3:
            self.cluster.pump_handoffs()
        worker = self.cluster.workers[ordinal]
        try:
            result = worker.ingest(request.content, request.headers["content-type"])
        except Refusal as r:
            self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
            body = {
                "error": r.code,
                "detail": r.detail,
                **r.extra,
                "shard_map": worker.map.model_dump(mode="json"),
            }
            return httpx.Response(r.status, json=body)
        if self.rng.random() < self.lost_ack:
            raise httpx.ReadTimeout(
                "ack lost", request=request
            )  # applied, but the sender never hears it
        self.statuses[200] = self.statuses.get(200, 0) + 1
        return httpx.Response(
            200,
            json={"acked_values": result.values, "shard_map": worker.map.model_dump(mode="json")},
        )


def reference_state(plan: MonitorPlan, emitted: dict[str, list[Any]]) -> dict[str, Any]:
    """One shard fed each stream's emitted values in emission order, in one segment."""
    worker = ShardWorker(plan, 0, shard_map=InProcessCluster(plan, 1).map)
    seq = 0
    for stream, chunks in emitted.items():
        for kind, ids, values in chunks:
            seq += 1
            cols = {"v": values} if ids is None else {"id": ids, "v": values}
            worker.ingest(
                wire.encode(wire.Batch("ref", 1, [wire.Segment(stream, seq, kind, 1000.0, cols)]))
            )
    return worker.fingerprint()


def detector_view(fp: dict[str, Any]) -> dict[str, Any]:
    """What must match: detector states, value counts and join results (not seq bookkeeping)."""
    return {
        s: (
            v["values_total"],
            v["detectors"],
            v["join"] and {k: v["join"][k] for k in ("joined", "expired_predictions")},
        )
        for s, v in fp.items()
    }


@pytest.mark.parametrize("seed", [1, 2])
def test_sender_delivers_exactly_once_through_refusals_reshards_lost_acks_and_restarts(
    tmp_path: Path, seed: int
) -> None:
    plan = make_plan(5)
    cluster = InProcessCluster(plan, 2, data_root=tmp_path)
    chaos = ChaosShards(cluster, seed, lost_ack=0.15, down=0.05)
    rng = np.random.default_rng(seed)
    emitted: dict[str, list[Any]] = {s: [] for s in plan.streams}

    async def scenario() -> Sender:
        sender = Sender(
            MONITOR,
            shard_map=cluster.map,
            registry=CollectorRegistry(),
            settings=SenderSettings(
                url_template="http://shard:{port}",
                base_port=BASE_PORT,
                batch_values=300,
                flush_interval=0.005,
                backoff_initial=0.002,
                backoff_max=0.02,
            ),
            transport=httpx.MockTransport(chaos.handler),
            clock=lambda: 1000.0,
        )
        await sender.start()
        for step in range(60):
            cols = {f"f{i}": rng.normal(size=int(rng.integers(1, 20))) for i in range(5)}
            sender.emit_features(cols)
            for name, v in cols.items():
                emitted[names.feature_stream(name)].append(("values", None, v))
            ids = [f"{step}-{j}" for j in range(4)]
            preds = rng.normal(size=4)
            sender.emit_predictions(ids, preds)
            emitted[names.STREAM_PREDICTION].append(("values", None, preds))
            emitted[names.STREAM_PERFORMANCE].append(("predictions", ids, preds))
            if step >= 2:
                lids = [f"{step - 2}-{j}" for j in range(3)]
                labels = rng.normal(size=3)
                sender.emit_labels(lids, labels)
                emitted[names.STREAM_PERFORMANCE].append(("labels", lids, labels))
            if step == 15:
                cluster.reshard(3, pump=False)  # the sender learns it from 409 answers
            if step == 30:
                chaos.dead.add(1)  # shard 1 dies (kill -9: no close, no snapshot) ...
            if step == 35:
                cluster.workers[1] = ShardWorker(
                    plan, 1, shard_map=cluster.map, data_dir=tmp_path / "shard-1"
                )
                chaos.dead.discard(1)  # ... and comes back from its WAL
            if step == 45:
                cluster.reshard(2, pump=False)
            await asyncio.sleep(0.003)
        await sender.stop(drain_timeout=30)
        return sender

    sender = asyncio.run(scenario())
    cluster.pump_handoffs()
    total = sum(len(v) for chunks in emitted.values() for _, _, v in chunks)
    assert sender.shed_values() == 0
    assert sender.acked_values == total
    assert sender.shard_map.epoch == cluster.map.epoch  # followed both reshards
    assert chaos.statuses.get(409, 0) > 0 and sender.retries > 0
    assert detector_view(cluster.fingerprint()) == detector_view(reference_state(plan, emitted))
    cluster.close()


def test_shedding_is_bounded_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    plan = make_plan(1)
    sender = Sender(
        MONITOR,
        shard_map=InProcessCluster(plan, 1).map,
        registry=registry,
        settings=SenderSettings(max_buffered_values=100),
    )
    with caplog.at_level(logging.WARNING, logger="driftwarden.sender"):
        for _ in range(50):
            sender.emit_features({"f0": np.ones(10)})  # never started: nothing drains
    assert sender.buffered_values == 100
    assert sender.shed_values(SHED_BUFFER_FULL) == 400
    lines = [r for r in caplog.records if "shedding" in r.getMessage()]
    assert len(lines) == 1 and "DRIFTWARDEN_SENDER__MAX_BUFFERED_VALUES" in lines[0].getMessage()
    assert (
        registry.get_sample_value(
            names.M_SENDER_SHED,
            {"monitor": names.monitor_name(MONITOR), "reason": SHED_BUFFER_FULL},
        )
        == 400
    )
    assert (
        registry.get_sample_value(names.M_SENDER_QUEUE, {"monitor": names.monitor_name(MONITOR)})
        == 100
    )


def test_emit_never_raises_on_bad_input() -> None:
    plan = make_plan(1)
    sender = Sender(MONITOR, shard_map=InProcessCluster(plan, 1).map, registry=None)
    sender.emit_features({"f0": np.ones((2, 2))})
    sender.emit_features(None)  # type: ignore[arg-type]
    sender.emit_predictions(["a", "b"], [1.0])
    sender.emit_labels(["a"], [1.0, 2.0])
    sender.emit_embeddings("g", [1.0, 2.0])
    assert sender.shed_values(SHED_INVALID) == 5
    assert sender.buffered_values == 0


def test_emit_copies_caller_buffers() -> None:
    plan = make_plan(1)
    sender = Sender(MONITOR, shard_map=InProcessCluster(plan, 1).map, registry=None)
    buf = np.zeros(4)
    sender.emit_features({"f0": buf})
    buf[:] = 7.0
    chunk = sender._queues["feature:f0"].pending[0]
    assert np.array_equal(chunk.columns["v"], np.zeros(4))


def test_malformed_answer_drops_batch_without_retry_loop(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, json={"error": "malformed_batch", "detail": "segments[0]: nope"})

    plan = make_plan(1)

    async def go() -> Sender:
        sender = Sender(
            MONITOR,
            shard_map=InProcessCluster(plan, 1).map,
            registry=None,
            settings=SenderSettings(flush_interval=0.005),
            transport=httpx.MockTransport(handler),
        )
        await sender.start()
        sender.emit_features({"f0": np.ones(3)})
        await asyncio.sleep(0.1)
        await sender.stop(1)
        return sender

    with caplog.at_level(logging.ERROR, logger="driftwarden.sender"):
        sender = asyncio.run(go())
    assert len(calls) == 1 and sender.shed_values("rejected") == 3
    assert any("segments[0]: nope" in r.getMessage() for r in caplog.records)


def test_a_segment_the_worker_rejects_is_dropped_alone(tmp_path: Path) -> None:
    """Strings sent to a numeric stream: that segment is shed, the rest of the batch delivered."""
    plan = make_plan(2)
    cluster = InProcessCluster(plan, 1)
    chaos = ChaosShards(cluster, 0, lost_ack=0.0, down=0.0)

    async def go() -> Sender:
        sender = Sender(
            MONITOR,
            shard_map=cluster.map,
            registry=None,
            transport=httpx.MockTransport(chaos.handler),
            settings=SenderSettings(
                url_template="http://shard:{port}", base_port=BASE_PORT, flush_interval=0.005
            ),
        )
        sender.emit_features({"f0": ["a", "b"], "f1": np.ones(3)})
        await sender.start()
        await sender.stop(5)
        return sender

    sender = asyncio.run(go())
    assert sender.shed_values("rejected") == 2 and sender.acked_values == 3
    assert cluster.workers[0].streams["feature:f1"].values_total == 3
    assert cluster.workers[0].streams["feature:f0"].values_total == 0


def test_map_file_is_read_at_start_and_followed(tmp_path: Path) -> None:
    plan = make_plan(1)
    path = tmp_path / "shardmap.json"
    first = InProcessCluster(plan, 1).map
    path.write_text(first.model_dump_json())
    sender = Sender(
        MONITOR, shard_map_path=path, registry=None, settings=SenderSettings(map_poll_interval=0.01)
    )
    assert sender.shard_map == first
    path.write_text(first.advance(4).model_dump_json())
    import time

    time.sleep(0.02)
    sender._reload_map_file()
    assert sender.shard_map.epoch == 2 and sender.shard_map.shards == 4
    with pytest.raises(ValueError, match="cannot read the shard map"):
        Sender(MONITOR, shard_map_path=tmp_path / "missing.json", registry=None)


def test_a_busy_stream_does_not_starve_the_others() -> None:
    plan = make_plan(3)
    sender = Sender(
        MONITOR,
        shard_map=InProcessCluster(plan, 1).map,
        registry=None,
        settings=SenderSettings(batch_values=100),
    )
    sender.emit_features({"f0": np.ones(500)})
    sender.emit_features({"f1": np.ones(5), "f2": np.ones(5)})
    first = sender._form_batch(0)
    assert first is not None and first[1] == ["feature:f0"]  # f0 alone fills a batch
    sender._release(first[1], first[0], acked=True)
    sender.emit_features({"f0": np.ones(500)})
    second = sender._form_batch(0)
    assert second is not None and second[1][:2] == ["feature:f1", "feature:f2"]


def test_predictions_without_a_performance_stream_are_not_shed() -> None:
    # A model-free bundle with a prediction but no labels: no label join to feed.
    plan = make_plan(1)
    streams = {"feature:f0", names.STREAM_PREDICTION}
    sender = Sender(
        MONITOR, shard_map=InProcessCluster(plan, 1).map, registry=None, streams=streams
    )
    sender.emit_predictions(["a", "b"], [1.0, 2.0])
    assert sender.shed_values() == 0 and sender.buffered_values == 2
    assert set(sender._queues) == {names.STREAM_PREDICTION}
