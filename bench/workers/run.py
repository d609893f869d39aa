"""Drift-worker benchmark: ingest rate with and without the WAL, reshard pause, recovery.

Measures, in one run on this machine:

1. Ingest values/second into one shard *process* over HTTP (binary batches, several
   in flight), with the WAL on (fsync=always, group commit) and, as the named
   baseline, the same run with the WAL off. The shard runs the monitor's default
   detector for numeric features (windowed KS, window 1000, test every 100 values),
   so the rate includes real detector work. The same two runs in-process (no HTTP)
   and the detectors alone put the overheads in proportion.
2. Resharding pause for 3 -> 5 shards under a steady sender load (100,000 values/s):
   per moved stream, seconds from its freeze at the old owner to its install at the
   new one (while it moves, its batches wait in the sender; streams that do not move
   never pause); the longest is compared with the goal. Also the time from publishing
   the map until every shard reports no handoff pending.
3. Recovery: seconds to restart a shard from its WAL alone, per million values, beside
   a restart from a snapshot of the same state.

Writes bench/results/workers.json and prints a table. ``python -m bench workers``.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client import CollectorRegistry

from driftwarden.common import names
from driftwarden.common.sharding import ShardMap
from driftwarden.drift_worker.plan import MonitorPlan
from driftwarden.drift_worker.settings import Settings, WorkerOptions, build_plan
from driftwarden.drift_worker.shard import ShardWorker
from driftwarden.drift_worker.streams import StreamSpec
from driftwarden.ingest import wire
from driftwarden.ingest.sender import Sender, SenderSettings
from driftwarden.testing.localshards import LocalShards

RESULTS = Path(__file__).resolve().parents[1] / "results" / "workers.json"
SPEC: dict[str, Any] = {
    "model": {"bundle": "builtin://unused"},
    "workers": {"window": 1000, "evaluateEvery": 100},
}
FEATURES = 20
VALUES_PER_SEGMENT = 1000  # a batch = 20 streams x 1000 values = 20,000 values, 160 kB
INGEST_SECONDS = 8.0
IN_FLIGHT = 4
GOAL_VALUES_PER_S = 500_000
GOAL_RESHARD_S = 2.0


def _streams(rng: np.random.Generator) -> list[StreamSpec]:
    return [
        StreamSpec(names.feature_stream(f"f{i}"), "numeric", rng.normal(size=2000))
        for i in range(FEATURES)
    ]


def _batches(rng: np.random.Generator, count: int, sender: str = "bench") -> list[bytes]:
    out = []
    seq = 0
    for _ in range(count):
        segs = []
        for i in range(FEATURES):
            seq += 1
            segs.append(
                wire.Segment(
                    names.feature_stream(f"f{i}"),
                    seq,
                    "values",
                    time.time(),
                    {"v": rng.normal(size=VALUES_PER_SEGMENT)},
                )
            )
        out.append(wire.encode(wire.Batch(sender, 1, segs)))
    return out


def _plan(root: Path) -> MonitorPlan:
    return build_plan(
        Settings(
            monitor_config=root / "monitor.json",
            worker=WorkerOptions(streams_file=root / "streams.json"),
        )
    )


# ---------------------------------------------------------------------------- 1. ingest


async def _post_for(
    url: str, bodies: list[bytes], seconds: float, auth_headers: dict[str, str]
) -> tuple[int, float]:
    """Post batches with IN_FLIGHT concurrent requests for ``seconds``; return (batches, elapsed)."""
    done = 0
    i = 0
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=60.0) as client:

        async def one() -> None:
            nonlocal done, i
            while time.perf_counter() < deadline and i < len(bodies):
                body = bodies[i]
                i += 1
                r = await client.post(
                    url, content=body, headers={"content-type": wire.CONTENT_TYPE, **auth_headers}
                )
                r.raise_for_status()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(IN_FLIGHT)))
        return done, time.perf_counter() - started


def ingest_http(root: Path, bodies: list[bytes], rounds: int = 2) -> dict[str, dict[str, Any]]:
    """WAL on and WAL off shards side by side; alternate measurement windows, keep the best.

    Alternating (off, on, off, on) and taking the best window of each makes the ratio
    robust to the other jobs sharing this machine's two cores.
    """
    rng = np.random.default_rng(0)
    shards = {
        "off": LocalShards(
            root / "off",
            SPEC,
            _streams(rng),
            1,
            fsync="always",
            wal=False,
            snapshot_every_values=10**12,
        ),
        "on": LocalShards(
            root / "on",
            SPEC,
            _streams(rng),
            1,
            fsync="always",
            wal=True,
            snapshot_every_values=10**12,
        ),
    }
    best: dict[str, dict[str, Any]] = {}
    try:
        for local in shards.values():
            local.start_all()
        per_round = (len(bodies) - 8) // (2 * rounds)
        chunk = 0
        for local in shards.values():  # warm-up: JIT, connections, page cache
            asyncio.run(
                _post_for(local.url(0) + "/v1/ingest", bodies[:8], 3.0, local.headers("sender"))
            )
        for _ in range(rounds):
            for mode, local in shards.items():
                part = bodies[8 + chunk * per_round : 8 + (chunk + 1) * per_round]
                chunk += 1
                done, elapsed = asyncio.run(
                    _post_for(
                        local.url(0) + "/v1/ingest",
                        part,
                        INGEST_SECONDS / rounds,
                        local.headers("sender"),
                    )
                )
                rate = done * FEATURES * VALUES_PER_SEGMENT / elapsed
                if rate > best.get(mode, {}).get("values_per_s", 0.0):
                    best[mode] = {
                        "values_per_s": rate,
                        "batches_per_s": done / elapsed,
                        "seconds": elapsed,
                    }
        for mode, local in shards.items():
            best[mode]["wal_bytes"] = (local.status(0)["wal"] or {}).get("bytes", 0)
        return best
    finally:
        for local in shards.values():
            local.stop()


def _best_rate(
    step: Any, items: list[Any], rounds: int = 3, seconds: float = INGEST_SECONDS / 6
) -> float:
    """Return the best values/s of ``rounds`` timed windows applying ``step`` to items in turn.

    Best-of windows: a neighbour's burst on the shared cores only ever slows a window.
    """
    best, i = 0.0, 0
    for _ in range(rounds):
        started, n = time.perf_counter(), 0
        while time.perf_counter() - started < seconds and i < len(items):
            step(items[i])
            i += 1
            n += 1
        elapsed = time.perf_counter() - started
        best = max(best, n * FEATURES * VALUES_PER_SEGMENT / elapsed)
    return best


def ingest_inprocess(
    plan: MonitorPlan, data_dir: Path | None, bodies: list[bytes]
) -> dict[str, Any]:
    worker = ShardWorker(
        plan,
        0,
        shard_map=ShardMap(monitor=plan.monitor, epoch=1, shards=1),
        data_dir=data_dir,
        fsync="always",
    )
    for body in bodies[:4]:
        worker.ingest(body)

    def step(body: bytes) -> None:
        result = worker.ingest(body)
        if worker.wal is not None and result.lsn is not None:
            worker.wal.sync(result.lsn)  # fsync=always, one batch at a time: no group commit here

    rate = _best_rate(step, bodies[4:])
    worker.close()
    return {"values_per_s": rate}


def detectors_only(plan: MonitorPlan, bodies: list[bytes]) -> dict[str, Any]:
    detectors = {name: plan.factory(spec) for name, spec in plan.streams.items()}
    decoded = [wire.decode(b) for b in bodies]

    def step(batch: wire.Batch) -> None:
        for seg in batch.segments:
            for det in detectors[seg.stream].values():
                det.update_many(seg.columns["v"])

    step(decoded[0])
    return {"values_per_s": _best_rate(step, decoded[1:])}


def sender_throughput(root: Path) -> dict[str, Any]:
    """Values/s acknowledged through the Sender into one shard (WAL on), and emit cost."""
    rng = np.random.default_rng(3)
    local = LocalShards(root, SPEC, _streams(rng), 1, fsync="always", snapshot_every_values=10**12)
    cols = {f"f{i}": rng.normal(size=VALUES_PER_SEGMENT) for i in range(FEATURES)}
    row = {f"f{i}": [0.5] for i in range(FEATURES)}
    try:
        local.start_all()

        async def go() -> dict[str, Any]:
            sender = Sender(
                local.monitor,
                shard_map=local.map,
                credential=local.sender_credential,
                registry=CollectorRegistry(),
                settings=SenderSettings(
                    url_template=local.url_template,
                    base_port=local.base_port,
                    max_buffered_values=400_000,
                    batch_values=20_000,
                ),
            )
            await sender.start()
            started = time.perf_counter()
            while time.perf_counter() - started < INGEST_SECONDS:
                if sender.buffered_values < 200_000:  # keep the pipe full, never shed
                    sender.emit_features(cols)
                await asyncio.sleep(0)
            acked = sender.acked_values
            elapsed = time.perf_counter() - started
            await sender.stop(30)
            # the request path: one row of 20 features per call, into a sender's buffer
            idle = Sender(
                local.monitor,
                shard_map=local.map,
                registry=None,
                settings=SenderSettings(max_buffered_values=10**9),
            )
            calls = 20_000
            t0 = time.perf_counter()
            for _ in range(calls):
                idle.emit_features(row)
            emit_us = (time.perf_counter() - t0) / calls * 1e6
            return {
                "values_per_s": acked / elapsed,
                "emit_one_row_us": emit_us,
                "shed": sender.shed_values(),
            }

        return asyncio.run(go())
    finally:
        local.stop()


# ---------------------------------------------------------------------------- 2. reshard


def reshard_pause(root: Path) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    local = LocalShards(root, SPEC, _streams(rng), 3, fsync="always", max_shards=5)
    result: dict[str, Any] = {}
    try:
        local.start_all()
        for k in (
            3,
            4,
        ):  # the new shards' processes start before the map changes, as with a StatefulSet scale-up
            local.start(k, wait=False)
        for k in (3, 4):
            local.wait_healthy(k)

        async def load() -> None:
            sender = Sender(
                local.monitor,
                shard_map_path=local.root / "shardmap.json",
                credential=local.sender_credential,
                registry=CollectorRegistry(),
                settings=SenderSettings(
                    url_template=local.url_template,
                    base_port=local.base_port,
                    flush_interval=0.02,
                    backoff_initial=0.01,
                    backoff_max=0.2,
                    map_poll_interval=0.1,
                ),
            )
            await sender.start()
            loop = asyncio.get_running_loop()
            started = time.perf_counter()
            emitted = 0
            pause_task = None
            while time.perf_counter() - started < 8.0:
                # steady 100,000 values/s over 20 streams
                sender.emit_features({f"f{i}": rng.normal(size=500) for i in range(FEATURES)})
                emitted += FEATURES * 500
                if pause_task is None and time.perf_counter() - started > 3.0:
                    pause_task = loop.run_in_executor(None, _reshard_and_wait, local, result)
                await asyncio.sleep(0.1)
            if pause_task is not None:
                await pause_task
            await sender.stop(drain_timeout=60)
            result["load_values_per_s"] = emitted / (time.perf_counter() - started)
            result["sender_shed"] = sender.shed_values()
            result["acked_all"] = sender.acked_values == emitted

        asyncio.run(load())
        docs = [local.status(k) for k in range(5)]
        pauses = [p for d in docs for p in d["handoff"]["pause_seconds"].values()]
        result["streams_moved"] = sum(d["handoff"]["in"] for d in docs)
        result["pause_s"] = max(pauses) if pauses else float("nan")
        result["pause_median_s"] = float(np.median(pauses)) if pauses else float("nan")
        return result
    finally:
        local.stop()


def _reshard_and_wait(local: LocalShards, result: dict[str, Any]) -> None:
    started = time.perf_counter()
    local.reshard(5)  # writes the map file and pushes it to every shard at once
    local.wait_settled(timeout=60)
    result["settle_s"] = time.perf_counter() - started


# ---------------------------------------------------------------------------- 3. recovery


def recovery(
    plan: MonitorPlan, root: Path, bodies: list[bytes], values_target: int = 1_000_000
) -> dict[str, Any]:
    m = ShardMap(monitor=plan.monitor, epoch=1, shards=1)
    data = root / "recovery"
    worker = ShardWorker(plan, 0, shard_map=m, data_dir=data, fsync="never")
    values = 0
    for body in bodies:
        values += worker.ingest(body).values
        if values >= values_target:
            break
    worker.wal.sync()
    started = time.perf_counter()
    restored = ShardWorker(plan, 0, shard_map=m, data_dir=data, fsync="never")
    wal_s = time.perf_counter() - started
    assert restored.fingerprint() == worker.fingerprint(), "recovery did not reproduce the state"
    restored.take_snapshot()
    restored.close()
    started = time.perf_counter()
    again = ShardWorker(plan, 0, shard_map=m, data_dir=data, fsync="never")
    snap_s = time.perf_counter() - started
    assert again.fingerprint() == worker.fingerprint()
    again.close()
    worker.close()
    return {
        "wal_values": values,
        "wal_replay_s": wal_s,
        "wal_replay_s_per_million": wal_s * 1e6 / values,
        "snapshot_restore_s": snap_s,
    }


# ---------------------------------------------------------------------------- main


def _phase(name: str, fn: Any, *args: Any) -> Any:
    print(f"  {name} ...", flush=True)
    started = time.perf_counter()
    # a phase stuck for minutes prints every thread's stack, so a hang explains itself
    faulthandler.dump_traceback_later(240, exit=False)
    try:
        return fn(*args)
    finally:
        faulthandler.cancel_dump_traceback_later()
        print(f"  {name}: {time.perf_counter() - started:.1f}s", flush=True)


def main() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    bodies = _batches(rng, 900)
    tmp = Path(tempfile.mkdtemp(prefix="dw-bench-workers-"))
    load_before = os.getloadavg()[0]
    try:
        meta = LocalShards(tmp / "meta", SPEC, _streams(np.random.default_rng(0)), 1)
        plan = _plan(meta.root)
        det = _phase("detectors alone", detectors_only, plan, bodies)
        core_off = _phase("in-process, WAL off", ingest_inprocess, plan, None, bodies)
        core_on = _phase("in-process, WAL on", ingest_inprocess, plan, tmp / "core-wal", bodies)
        http = _phase("HTTP, WAL on/off", ingest_http, tmp / "http", bodies)
        http_off, http_on = http["off"], http["on"]
        via_sender = _phase("through the Sender", sender_throughput, tmp / "sender")
        rec = _phase("recovery", recovery, plan, tmp, bodies)
        pause = _phase("reshard 3->5 under load", reshard_pause, tmp / "reshard")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
            "note": "shared cores; other jobs run concurrently, so absolute rates vary run to run",
        },
        "config": {
            "streams": FEATURES,
            "values_per_batch": FEATURES * VALUES_PER_SEGMENT,
            "in_flight": IN_FLIGHT,
            "detector": "ks (window 1000, evaluate every 100)",
            "fsync": "always",
        },
        "ingest": {
            "http_wal_on_values_per_s": http_on["values_per_s"],
            "http_wal_off_values_per_s (baseline)": http_off["values_per_s"],
            "wal_cost_ratio_http": http_on["values_per_s"] / http_off["values_per_s"],
            "inprocess_wal_on_values_per_s": core_on["values_per_s"],
            "inprocess_wal_off_values_per_s": core_off["values_per_s"],
            "wal_cost_ratio_inprocess": core_on["values_per_s"] / core_off["values_per_s"],
            "detectors_only_values_per_s": det["values_per_s"],
            "via_sender_wal_on_values_per_s": via_sender["values_per_s"],
            "sender_emit_one_row_of_20_features_us": via_sender["emit_one_row_us"],
            "http_wal_on_vs_detectors_only": http_on["values_per_s"] / det["values_per_s"],
            "goal_values_per_s": GOAL_VALUES_PER_S,
            "goal_met": http_on["values_per_s"] >= GOAL_VALUES_PER_S,
        },
        "reshard_3_to_5": {
            **pause,
            "goal_s": GOAL_RESHARD_S,
            "goal_met": pause.get("pause_s", 1e9) <= GOAL_RESHARD_S,
        },
        "recovery": rec,
    }
    _table(out)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    return out


def _table(out: dict[str, Any]) -> None:
    ing, rs, rec = out["ingest"], out["reshard_3_to_5"], out["recovery"]
    rows = [
        ("ingest, HTTP, WAL on (fsync=always)", f"{ing['http_wal_on_values_per_s']:,.0f} values/s"),
        (
            "ingest, HTTP, WAL off  [baseline]",
            f"{ing['http_wal_off_values_per_s (baseline)']:,.0f} values/s",
        ),
        ("  WAL on / WAL off", f"{ing['wal_cost_ratio_http']:.2f}x"),
        ("ingest, in-process, WAL on", f"{ing['inprocess_wal_on_values_per_s']:,.0f} values/s"),
        ("ingest, in-process, WAL off", f"{ing['inprocess_wal_off_values_per_s']:,.0f} values/s"),
        ("detectors alone (same data)", f"{ing['detectors_only_values_per_s']:,.0f} values/s"),
        ("through the Sender, WAL on", f"{ing['via_sender_wal_on_values_per_s']:,.0f} values/s"),
        (
            "  Sender emit, 1 row x 20 features",
            f"{ing['sender_emit_one_row_of_20_features_us']:.1f} us per call",
        ),
        ("  HTTP WAL on / detectors alone", f"{ing['http_wal_on_vs_detectors_only']:.2f}x"),
        (
            f"goal >= {GOAL_VALUES_PER_S:,} values/s per shard",
            "met" if ing["goal_met"] else "NOT met",
        ),
        (
            "reshard 3->5: longest stream pause (freeze->install)",
            f"{rs.get('pause_s', float('nan')):.2f} s (median {rs.get('pause_median_s', float('nan')):.2f} s, {rs.get('streams_moved')} streams moved)",
        ),
        (f"  goal <= {GOAL_RESHARD_S} s", "met" if rs["goal_met"] else "NOT met"),
        ("  map publish -> every stream settled", f"{rs.get('settle_s', float('nan')):.2f} s"),
        ("  sender shed / all acked", f"{rs.get('sender_shed')} / {rs.get('acked_all')}"),
        ("recovery from WAL", f"{rec['wal_replay_s_per_million']:.2f} s per million values"),
        ("recovery from snapshot (same state)", f"{rec['snapshot_restore_s']:.2f} s"),
    ]
    width = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"{a:<{width}}  {b}")


if __name__ == "__main__":
    main()
