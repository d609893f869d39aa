"""Real drift-worker processes under test: traffic, the exactly-once oracle, a lossy proxy.

The oracle: after the run, the live streams of all shards together hold exactly the
detector state of one uninterrupted shard fed the same per-stream input
(:func:`reference_view` vs :func:`cluster_view`), i.e. every acknowledged value is
counted exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client import CollectorRegistry

from driftwarden.bundles import Bundle, load_bundle
from driftwarden.common import names
from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.drift_worker.plan import plan_from_bundle
from driftwarden.drift_worker.settings import Settings, WorkerOptions, build_plan
from driftwarden.drift_worker.shard import ShardWorker
from driftwarden.ingest import wire
from driftwarden.ingest.sender import Sender, SenderSettings
from driftwarden.testing.localshards import LocalShards

Emitted = dict[str, list[np.ndarray]]


def reference_view(local: LocalShards, emitted: Emitted) -> dict[str, Any]:
    """What one uninterrupted shard holds after the same per-stream input."""
    settings = Settings(
        monitor_config=local.root / "monitor.json",
        worker=WorkerOptions(streams_file=local.root / "streams.json"),
    )
    plan = build_plan(settings)
    worker = ShardWorker(plan, 0, shard_map=ShardMap(monitor=local.monitor, epoch=1, shards=1))
    for seq, (stream, chunks) in enumerate(emitted.items(), start=1):
        if not chunks:
            continue
        values = np.concatenate(chunks)
        worker.ingest(
            wire.encode(
                wire.Batch("ref", 0, [wire.Segment(stream, seq, "values", 0.0, {"v": values})])
            )
        )
    return view(worker.fingerprint([s for s, chunks in emitted.items() if chunks]))


def view(fp: dict[str, Any]) -> dict[str, Any]:
    return {s: (v["values_total"], v["detectors"]) for s, v in fp.items()}


def cluster_view(local: LocalShards) -> dict[str, Any]:
    """The live streams of every running shard (a stream live on two shards fails)."""
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


def make_sender(local: LocalShards, **overrides: Any) -> Sender:
    settings = {
        "url_template": local.url_template,
        "base_port": local.base_port,
        "batch_values": 2000,
        "flush_interval": 0.01,
        "backoff_initial": 0.01,
        "backoff_max": 0.5,
        "map_poll_interval": 0.2,
        **overrides,
    }
    return Sender(
        local.monitor,
        shard_map_path=local.root / "shardmap.json",
        credential=local.sender_credential,
        registry=CollectorRegistry(),
        settings=SenderSettings(**settings),
    )


async def drive(
    local: LocalShards,
    features: list[str],
    steps: int,
    events: dict[int, Callable[[], Any]],
    *,
    seed: int = 42,
    emitted: Emitted | None = None,
    drain_timeout: float = 180.0,
    **sender_settings: Any,
) -> tuple[Sender, Emitted]:
    """Emit ``steps`` rows of every feature through a real Sender; run ``events[step]`` on the way.

    Events run in a thread (they may block on processes); the sender is drained at the end.
    """
    rng = np.random.default_rng(seed)
    emitted = emitted if emitted is not None else {names.feature_stream(f): [] for f in features}
    sender = make_sender(local, **sender_settings)
    await sender.start()
    loop = asyncio.get_running_loop()
    for step in range(steps):
        cols = {f: rng.normal(0.0, 1.0, size=int(rng.integers(5, 40))) for f in features}
        sender.emit_features(cols)
        for f, v in cols.items():
            emitted[names.feature_stream(f)].append(v)
        if step in events:
            await loop.run_in_executor(None, events[step])
        await asyncio.sleep(0.01)
    await sender.stop(drain_timeout=drain_timeout)
    return sender, emitted


def post_batch(local: LocalShards, ordinal: int, segments: list[wire.Segment]) -> httpx.Response:
    body = wire.encode(wire.Batch("direct", local.map.epoch, segments))
    return httpx.post(
        local.url(ordinal) + "/v1/ingest",
        content=body,
        headers={"content-type": wire.CONTENT_TYPE, **local.headers("sender")},
        timeout=30,
    )


def metric(local: LocalShards, ordinal: int, name: str, **labels: str) -> float:
    """Return the sum of a metric's samples on one shard whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(local.url(ordinal) + "/metrics", timeout=30).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


class HandoffReplyDropper:
    """An HTTP/1.1 proxy on 127.0.0.1 in front of every shard that swallows handoff replies.

    Each listener ``base_port + k`` forwards to shard ``k``. Requests are framed by
    Content-Length (all the shards' traffic is); a ``POST /v1/handoff`` is forwarded
    and answered by the shard, but while :attr:`drop` is above zero its reply is thrown
    away and the connection closed, as a network that loses the answer would.
    """

    def __init__(self, upstream: LocalShards, count: int, drop: int) -> None:
        from driftwarden.testing.localshards import free_port_range

        self.upstream = upstream
        self.base_port = free_port_range(count)
        self.count = count
        self.drop = drop
        self.dropped = 0
        self.forwarded_handoffs = 0
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.AbstractServer] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> HandoffReplyDropper:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *_exc: object) -> None:
        async def close() -> None:
            for server in self._servers:
                server.close()
                await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        for k in range(self.count):
            server = await asyncio.start_server(
                lambda r, w, k=k: self._serve(k, r, w), "127.0.0.1", self.base_port + k
            )
            self._servers.append(server)

    async def _serve(
        self, k: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        up_reader = up_writer = None
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream.base_port + k
            )
            while True:
                request = await _read_message(reader)
                if request is None:
                    return
                up_writer.write(request)
                await up_writer.drain()
                response = await _read_message(up_reader)
                if response is None:
                    return
                if request.startswith(b"POST /v1/handoff"):
                    self.forwarded_handoffs += 1
                    if self.drop > 0:
                        self.drop -= 1
                        self.dropped += 1
                        return  # the shard answered; the sender never hears it
                writer.write(response)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()


async def _read_message(reader: asyncio.StreamReader) -> bytes | None:
    """Read one HTTP/1.1 message framed by Content-Length (None at a clean end of stream)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head + body


@contextlib.contextmanager
def bundle_shards(
    root: Path, spec: dict[str, Any], bundle_uri: str, shards: int = 2
) -> Iterator[tuple[LocalShards, Bundle]]:
    """Run ``shards`` local worker processes for ``spec`` on the streams of a bundle."""
    bundle = load_bundle(bundle_uri)
    plan = plan_from_bundle("default/local", DriftMonitorSpec.model_validate(spec), bundle)
    local = LocalShards(root, spec, list(plan.streams.values()), shards, fsync="never")
    try:
        local.start_all()
        yield local, bundle
    finally:
        local.stop()
