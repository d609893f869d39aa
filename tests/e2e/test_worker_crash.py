"""Real shard processes: kill -9 mid-stream and reshards under load lose and double nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from driftwarden.common import names
from driftwarden.common.sharding import ShardMap
from driftwarden.drift_worker.settings import Settings, WorkerOptions, build_plan
from driftwarden.drift_worker.shard import ShardWorker
from driftwarden.drift_worker.streams import StreamSpec
from driftwarden.ingest import wire
from driftwarden.ingest.sender import Sender, SenderSettings
from driftwarden.testing.localshards import LocalShards

SPEC = {
    "model": {"bundle": "builtin://unused"},
    "workers": {"window": 100, "evaluateEvery": 20},
    "detectors": {"numeric": [{"type": "ks"}, {"type": "iks"}]},
}
FEATURES = [f"f{i}" for i in range(6)]


@pytest.fixture
def shards(tmp_path: Path) -> Any:
    rng = np.random.default_rng(0)
    streams = [
        StreamSpec(names.feature_stream(f), "numeric", rng.normal(size=300)) for f in FEATURES
    ]
    local = LocalShards(tmp_path, SPEC, streams, 2, fsync="always", snapshot_every_values=3000)
    try:
        local.start_all()
        yield local
    finally:
        local.stop()


def reference_view(local: LocalShards, emitted: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """What one uninterrupted shard holds after the same per-stream input."""
    settings = Settings(
        monitor_config=local.root / "monitor.json",
        worker=WorkerOptions(streams_file=local.root / "streams.json"),
    )
    plan = build_plan(settings)
    worker = ShardWorker(plan, 0, shard_map=ShardMap(monitor=local.monitor, epoch=1, shards=1))
    for seq, (stream, chunks) in enumerate(emitted.items(), start=1):
        values = np.concatenate(chunks)
        worker.ingest(
            wire.encode(
                wire.Batch("ref", 0, [wire.Segment(stream, seq, "values", 0.0, {"v": values})])
            )
        )
    return view(worker.fingerprint())


def view(fp: dict[str, Any]) -> dict[str, Any]:
    return {s: (v["values_total"], v["detectors"]) for s, v in fp.items()}


def cluster_view(local: LocalShards) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in sorted(local.procs):
        status = local.status(k)
        live = [s for s, v in status.streams.items() if v.status == "live"]
        if live:
            state = httpx.get(
                local.url(k) + "/v1/state",
                params={"stream": live},
                headers=local.headers(),
                timeout=30,
            ).json()
            assert not set(state) & set(out), "a stream is live on two shards"
            out.update(view(state))
    return out


async def drive(
    local: LocalShards, steps: int, events: dict[int, Any]
) -> tuple[Sender, dict[str, list[np.ndarray]]]:
    rng = np.random.default_rng(42)
    emitted: dict[str, list[np.ndarray]] = {names.feature_stream(f): [] for f in FEATURES}
    sender = Sender(
        local.monitor,
        shard_map_path=local.root / "shardmap.json",
        credential=local.sender_credential,
        registry=CollectorRegistry(),
        settings=SenderSettings(
            url_template=local.url_template,
            base_port=local.base_port,
            batch_values=2000,
            flush_interval=0.01,
            backoff_initial=0.01,
            backoff_max=0.5,
            map_poll_interval=0.2,
        ),
    )
    await sender.start()
    loop = asyncio.get_running_loop()
    for step in range(steps):
        cols = {
            f: rng.normal(0.5 if step > steps // 2 else 0.0, 1.0, size=int(rng.integers(5, 60)))
            for f in FEATURES
        }
        sender.emit_features(cols)
        for f, v in cols.items():
            emitted[names.feature_stream(f)].append(v)
        if step in events:
            await loop.run_in_executor(None, events[step])
        await asyncio.sleep(0.01)
    await sender.stop(drain_timeout=120)
    return sender, emitted


def test_kill_9_mid_stream_and_restart_accounts_for_every_acked_value(shards: LocalShards) -> None:
    local = shards
    sender, emitted = asyncio.run(
        drive(local, 160, {50: lambda: local.kill(0), 90: lambda: local.start(0, wait=False)})
    )
    total = sum(v.size for chunks in emitted.values() for v in chunks)
    assert sender.shed_values() == 0, local.log(0)[-2000:]
    assert sender.acked_values == total
    assert sender.retries > 0  # shard 0 was down for a while
    assert "recovered" in local.log(0)  # it came back from snapshot + WAL, not empty
    assert cluster_view(local) == reference_view(local, emitted)


def test_reshard_under_load_2_to_3_to_2_moves_state_exactly(shards: LocalShards) -> None:
    local = shards

    def grow() -> None:
        local.reshard(3)

    def shrink() -> None:
        local.wait_settled()
        local.reshard(2)

    sender, emitted = asyncio.run(drive(local, 150, {40: grow, 100: shrink}))
    local.wait_settled()
    moved = sum(local.status(k).handoff.in_ for k in local.procs)
    assert moved > 0
    local.retire()
    total = sum(v.size for chunks in emitted.values() for v in chunks)
    assert sender.shed_values() == 0 and sender.acked_values == total
    assert sender.shard_map.epoch == 3
    assert cluster_view(local) == reference_view(local, emitted)


def test_scale_down_pod_hands_off_at_sigterm_even_before_it_saw_the_new_map(tmp_path: Path) -> None:
    """The operator shrinks 3 -> 2 and deletes shard 2 before shard 2 has read the new map."""
    rng = np.random.default_rng(3)
    streams = [
        StreamSpec(names.feature_stream(f), "numeric", rng.normal(size=300)) for f in FEATURES
    ]
    local = LocalShards(tmp_path, SPEC, streams, 3, fsync="always")
    try:
        local.start_all()
        emitted: dict[str, list[np.ndarray]] = {s.name: [] for s in streams}
        for seq in range(1, 6):
            segs = []
            for s in streams:
                v = rng.normal(size=40)
                emitted[s.name].append(v)
                segs.append(wire.Segment(s.name, seq, "values", 0.0, {"v": v}))
            for k, part in _route(local.map, segs).items():
                body = wire.encode(wire.Batch("t", local.map.epoch, part))
                httpx.post(
                    local.url(k) + "/v1/ingest",
                    content=body,
                    headers={"content-type": wire.CONTENT_TYPE, **local.headers("sender")},
                    timeout=30,
                ).raise_for_status()
        held_by_2 = [s for s, v in local.status(2).streams.items() if v.status == "live"]
        assert held_by_2
        local.map = local.map.advance(2)
        for k in (0, 1):  # the map reaches the surviving shards only
            httpx.put(
                local.url(k) + "/v1/shardmap",
                content=local.map.model_dump_json(),
                headers=local.headers(),
                timeout=30,
            ).raise_for_status()
        assert all(
            local.status(k).handoff.awaiting
            for k in (0, 1)
            if any(local.map.owner(s) == k for s in held_by_2)
        )
        local.terminate(2)  # SIGTERM, as a StatefulSet scale-down does
        assert "handed off every stream" in local.log(2), local.log(2)[-2000:]
        for k in (0, 1):
            assert not local.status(k).handoff.awaiting
        assert cluster_view(local) == reference_view(local, emitted)
    finally:
        local.stop()


def _route(shard_map: ShardMap, segs: list[wire.Segment]) -> dict[int, list[wire.Segment]]:
    out: dict[int, list[wire.Segment]] = {}
    for seg in segs:
        out.setdefault(shard_map.owner(seg.stream), []).append(seg)
    return out
