"""The sender: ships features, predictions, labels and embeddings to their owner shards.

Used inside the model server. ``emit_*`` calls are thread-safe, never block on the
network and never raise: they copy the values into a per-stream buffer and return.
A background task on the event loop (``await start()``) seals buffered values into
segments, groups them by owner shard (rendezvous hashing over the current shard map)
and posts one batch per shard at a time, retrying with capped exponential backoff
until the shard acknowledges.

Delivery guarantees (see docs/workers.md):

- Every sealed segment keeps its ``(sender, seq)`` for its whole life, whatever shard
  it is finally sent to; workers keep a per-stream high-water mark of ``seq`` per
  sender, and hand it over with the stream's state on a reshard, so a retry of a
  segment that was applied before its acknowledgement was lost is recognised as a
  duplicate everywhere: at-least-once delivery, exactly-once effect.
- A stream has at most one batch in flight, and its segments are sent in ``seq``
  order, so every shard sees each stream's values in the order they were emitted.
- Memory is bounded by ``max_buffered_values``; beyond it new values are shed, counted
  in ``driftwarden_sender_shed_values_total{reason}`` and reported by one WARNING log
  line (repeated at most once a minute while shedding continues).

Values still buffered when the process dies are lost (the sender is not durable);
``await stop(drain_timeout)`` flushes what it can first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field

from driftwarden.common import auth, names
from driftwarden.common.backoff import Backoff, jittered
from driftwarden.common.sharding import ShardMap
from driftwarden.ingest import wire

log = logging.getLogger("driftwarden.sender")

INGEST_PATH = "/v1/ingest"
SHED_BUFFER_FULL = "buffer_full"
SHED_STOPPED = "stopped"
SHED_REJECTED = "rejected"  # the worker answered 4xx: the batch can never succeed
SHED_INVALID = "invalid"  # the caller passed values the sender cannot encode
SHED_UNKNOWN_STREAM = "unknown_stream"
SHED_DRAIN_TIMEOUT = "drain_timeout"


class SenderSettings(BaseModel):
    """Sender configuration; the model server nests it as ``DRIFTWARDEN_SENDER__*``."""

    model_config = ConfigDict(extra="forbid")

    url_template: str = Field(
        "http://127.0.0.1:{port}",
        description="Worker URL with '{ordinal}' (e.g. http://<monitor>-workers-{ordinal}."
        "<monitor>-workers.<ns>.svc:8080); '{port}' is base_port + ordinal, for local runs.",
    )
    base_port: int = Field(8080, ge=1, le=65535)
    max_buffered_values: int = Field(2_000_000, ge=1)
    batch_values: int = Field(20_000, ge=1, description="Values per batch before it is sent early.")
    # 250 ms: at low traffic one HTTP post per 50 ms of one-record batches cost the model
    # server more CPU than its predictions; a quarter second of extra detection delay
    # is invisible next to window sizes of hundreds of values.
    flush_interval: float = Field(0.25, gt=0, description="Seconds between flushes when idle.")
    request_timeout: float = Field(10.0, gt=0)
    backoff_initial: float = Field(0.05, gt=0)
    backoff_max: float = Field(5.0, gt=0)
    map_poll_interval: float = Field(
        1.0, gt=0, description="Seconds between shard-map file checks."
    )


@dataclass
class _Chunk:
    kind: str
    ts: float
    columns: dict[str, wire.Column]
    n: int


@dataclass
class _StreamQueue:
    pending: deque[_Chunk] = field(default_factory=deque)  # emitted, not yet sealed
    sealed: deque[wire.Segment] = field(default_factory=deque)  # sealed, unacknowledged
    in_flight: bool = False
    values: int = 0  # scalar values held (pending + sealed)


@functools.lru_cache(maxsize=4096)
def _feature_stream(name: str) -> str:
    return names.feature_stream(name)


def _concat(columns: list[wire.Column]) -> wire.Column:
    if isinstance(columns[0], np.ndarray):
        return columns[0] if len(columns) == 1 else np.concatenate(columns)
    out: list[str] = []
    for c in columns:
        out.extend(c)
    return out


class Sender:
    """Batches values per owner shard off the caller's path and retries until acknowledged."""

    def __init__(
        self,
        monitor: str,
        *,
        shard_map: ShardMap | None = None,
        shard_map_path: str | Path | None = None,
        settings: SenderSettings | None = None,
        streams: Collection[str] | None = None,
        sender_id: str | None = None,
        registry: CollectorRegistry | None = REGISTRY,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Any = time.time,
        credential: auth.CredentialSource | None = None,
    ) -> None:
        """``credential``: the monitor's sender credential; workers refuse batches without it."""
        if shard_map is None and shard_map_path is None:
            raise ValueError("Sender needs a shard_map or a shard_map_path to route by")
        self.monitor = monitor
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self.settings = settings or SenderSettings()
        self.sender_id = sender_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._streams = frozenset(streams) if streams is not None else None
        self._map_path = Path(shard_map_path) if shard_map_path is not None else None
        self._map_mtime = 0.0
        self._map_checked = 0.0
        self._map: ShardMap | None = shard_map
        if self._map is None:
            self._reload_map_file(force=True)
        self._owner_cache: dict[str, int] = {}
        self._owner_cache_key: tuple[int, int] = (-1, -1)
        self._transport = transport
        self._clock = clock
        self._token = (
            auth.TokenSource(credential, auth.ROLE_SENDER) if credential is not None else None
        )
        self._last_auth_log = float("-inf")

        self._lock = threading.Lock()
        self._queues: dict[str, _StreamQueue] = {}
        self._buffered = 0
        self._seq = 0
        self._started = False
        self._stopped = False
        self._closing = False

        self._acked = 0
        self._retries = 0
        self._shed: dict[str, int] = {}
        self._shed_since_log: dict[str, int] = {}
        self._last_shed_log = float("-inf")
        self._last_error = ""

        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._backoff: dict[int, Backoff] = {}
        self._not_before: dict[int, float] = {}

        self._registry = registry
        self._collector = _SenderCollector(self)
        if registry is not None:
            registry.register(self._collector)

    # ------------------------------------------------------------------ public API

    def emit_features(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> None:
        """Queue one value per row for each ``feature:<name>`` stream; never raises."""
        try:
            ts = self._clock()
            items = [
                (_feature_stream(name), wire.KIND_VALUES, {"v": wire.values_column(values)})
                for name, values in columns.items()
            ]
            self._enqueue_many(items, ts)
        except Exception as exc:
            self._shed_invalid("features", exc)

    def emit_predictions(self, ids: Sequence[Any], values: Sequence[Any] | np.ndarray) -> None:
        """Queue predictions: the ``prediction`` stream and, with their ids, the label join."""
        try:
            ts = self._clock()
            v = wire.values_column(values)
            id_col = [str(i) for i in ids]
            if len(id_col) != len(v):
                raise ValueError(f"{len(id_col)} ids for {len(v)} predictions")
            items = [(names.STREAM_PREDICTION, wire.KIND_VALUES, {"v": v})]
            # A monitor without labels (a model-free bundle with a prediction only) has no
            # performance stream: its predictions wait for no label, and are not shed.
            if self._streams is None or names.STREAM_PERFORMANCE in self._streams:
                items.append(
                    (names.STREAM_PERFORMANCE, wire.KIND_PREDICTIONS, {"id": id_col, "v": v})
                )
            self._enqueue_many(items, ts)
        except Exception as exc:
            self._shed_invalid("predictions", exc)

    def emit_labels(self, ids: Sequence[Any], labels: Sequence[Any] | np.ndarray) -> None:
        """Queue ground-truth labels for the ``performance`` stream's join; never raises."""
        try:
            ts = self._clock()
            v = wire.values_column(labels)
            id_col = [str(i) for i in ids]
            if len(id_col) != len(v):
                raise ValueError(f"{len(id_col)} ids for {len(v)} labels")
            self._enqueue(names.STREAM_PERFORMANCE, wire.KIND_LABELS, ts, {"id": id_col, "v": v})
        except Exception as exc:
            self._shed_invalid("labels", exc)

    def emit_embeddings(self, group: str, matrix: Sequence[Sequence[float]] | np.ndarray) -> None:
        """Queue rows of an embedding matrix for the ``embedding:<group>`` stream; never raises."""
        try:
            arr = np.asarray(matrix)
            if arr.ndim != 2 or arr.dtype.kind not in "fiu":
                raise ValueError(
                    f"embedding must be a numeric (rows, dim) matrix, got shape {arr.shape}"
                )
            arr = np.array(arr, dtype="<f4" if arr.dtype == np.float32 else "<f8", copy=True)
            self._enqueue(
                names.embedding_stream(group), wire.KIND_EMBEDDING, self._clock(), {"v": arr}
            )
        except Exception as exc:
            self._shed_invalid("embeddings", exc)

    async def start(self) -> None:
        """Start the background flush task on the running event loop."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(
            transport=self._transport,
            timeout=self.settings.request_timeout,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        self._started = True
        self._task = asyncio.create_task(self._run(), name=f"driftwarden-sender-{self.monitor}")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Flush buffered values for up to ``drain_timeout`` seconds, then stop; never raises."""
        self._stopped = True
        deadline = time.monotonic() + drain_timeout
        try:
            while self._task is not None and self.buffered_values and time.monotonic() < deadline:
                self._poke()
                await asyncio.sleep(min(0.02, self.settings.flush_interval))
        finally:
            if self._task is not None:
                # Ask the loop to end rather than rely on cancelling it alone: on Python
                # 3.11 a cancellation can be swallowed by a wait that completes at the
                # same moment, which would leave stop() waiting for ever.
                self._closing = True
                self._poke()
                await _finish(self._task, timeout=2.0)
                self._task = None
            for task in list(self._inflight.values()):
                await _finish(task, timeout=0.0)
            self._inflight.clear()
            if self._client is not None:
                await self._client.aclose()
                self._client = None
            left = self.buffered_values
            if left:
                with self._lock:
                    self._shed[SHED_DRAIN_TIMEOUT] = self._shed.get(SHED_DRAIN_TIMEOUT, 0) + left
                    self._queues.clear()
                    self._buffered = 0
                log.warning(
                    "driftwarden sender for monitor %s stopped with %d values unacknowledged after "
                    "a %.1fs drain; they are dropped (last error: %s)",
                    self.monitor,
                    left,
                    drain_timeout,
                    self._last_error or "none",
                )
            if self._registry is not None:
                with contextlib.suppress(KeyError):
                    self._registry.unregister(self._collector)
                self._registry = None

    # ------------------------------------------------------------------ introspection

    @property
    def shard_map(self) -> ShardMap | None:
        return self._map

    @property
    def buffered_values(self) -> int:
        return self._buffered

    @property
    def acked_values(self) -> int:
        return self._acked

    @property
    def retries(self) -> int:
        return self._retries

    def has_room(self, values: int) -> bool:
        """Return whether ``values`` more values would be buffered now rather than shed.

        The model server asks before accepting labels, so a client told 503 can retry
        instead of having its labels shed; a value racing in between is still shed.
        """
        return not self._stopped and self._buffered + values <= self.settings.max_buffered_values

    def shed_values(self, reason: str | None = None) -> int:
        """Return the values shed so far, for one reason or all."""
        with self._lock:
            return sum(self._shed.values()) if reason is None else self._shed.get(reason, 0)

    def set_shard_map(self, shard_map: ShardMap) -> None:
        """Adopt ``shard_map`` if it is newer than the current one."""
        if self._map is None or shard_map.epoch > self._map.epoch:
            log.info(
                "driftwarden sender for monitor %s: routing by shard map epoch %d (%d shards)",
                self.monitor,
                shard_map.epoch,
                shard_map.shards,
            )
            self._map = shard_map
            self._poke()

    # ------------------------------------------------------------------ buffering

    def _enqueue(self, stream: str, kind: str, ts: float, columns: dict[str, wire.Column]) -> None:
        self._enqueue_many([(stream, kind, columns)], ts)

    def _enqueue_many(
        self, items: list[tuple[str, str, dict[str, wire.Column]]], ts: float
    ) -> None:
        """Buffer several streams' chunks under one lock acquisition (the request path)."""
        shed: list[tuple[str, int, str]] = []
        wake = False
        step = self.settings.batch_values
        with self._lock:
            for stream, kind, columns in items:
                v = columns["v"]
                n = len(v)
                if n == 0:
                    continue
                size = int(v.size) if isinstance(v, np.ndarray) else n
                if self._streams is not None and stream not in self._streams:
                    shed.append((SHED_UNKNOWN_STREAM, size, stream))
                elif self._stopped:
                    shed.append((SHED_STOPPED, size, stream))
                elif self._buffered + size > self.settings.max_buffered_values:
                    shed.append((SHED_BUFFER_FULL, size, stream))
                else:
                    q = self._queues.get(stream)
                    if q is None:
                        q = self._queues[stream] = _StreamQueue()
                    q.pending.append(_Chunk(kind, ts, columns, n))
                    q.values += size
                    before = self._buffered
                    self._buffered += size
                    # Wake the flusher each time another batch's worth has piled up, not
                    # on every call (while workers are down the buffer stays above it).
                    wake = wake or before // step != self._buffered // step
        for reason, size, stream in shed:
            self._count_shed(reason, size, stream)
        if wake:
            self._poke()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            if _running_loop() is loop:
                wake.set()
            else:
                loop.call_soon_threadsafe(wake.set)
        except RuntimeError:
            pass  # loop shutting down

    def _count_shed(self, reason: str, count: int, stream: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._shed[reason] = self._shed.get(reason, 0) + count
            self._shed_since_log[reason] = self._shed_since_log.get(reason, 0) + count
            if now - self._last_shed_log < 60.0:
                return
            self._last_shed_log = now
            summary = ", ".join(f"{k}={v}" for k, v in sorted(self._shed_since_log.items()))
            self._shed_since_log.clear()
            buffered = self._buffered
        hint = {
            SHED_BUFFER_FULL: (
                f"{buffered} values are waiting for acknowledgement (limit "
                f"{self.settings.max_buffered_values}); the drift workers are down or too slow "
                "- check their /readyz and logs, add shards, or raise "
                "DRIFTWARDEN_SENDER__MAX_BUFFERED_VALUES"
            ),
            SHED_STOPPED: "the sender was stopped; values emitted after stop() are dropped",
            SHED_UNKNOWN_STREAM: f"stream {stream!r} is not one of the monitor's streams",
            SHED_REJECTED: f"a drift worker rejected a batch as malformed ({self._last_error})",
            SHED_INVALID: f"the values could not be encoded ({self._last_error})",
        }.get(reason, "")
        log.warning(
            "driftwarden sender for monitor %s is shedding load: dropped values (%s) since the "
            "last report; %s. Metric %s counts them.",
            self.monitor,
            summary,
            hint,
            names.M_SENDER_SHED,
        )

    def _shed_invalid(self, what: str, exc: Exception) -> None:
        self._last_error = f"{what}: {exc}"
        self._count_shed(SHED_INVALID, 1, what)

    # ------------------------------------------------------------------ routing

    def _reload_map_file(self, force: bool = False) -> None:
        if self._map_path is None:
            return
        now = time.monotonic()
        if not force and now - self._map_checked < self.settings.map_poll_interval:
            return
        self._map_checked = now
        try:
            mtime = self._map_path.stat().st_mtime
            if not force and mtime == self._map_mtime:
                return
            shard_map = ShardMap.model_validate_json(self._map_path.read_bytes())
            self._map_mtime = mtime
        except (OSError, ValueError) as exc:
            if force and self._map is None:
                raise ValueError(f"cannot read the shard map {self._map_path}: {exc}") from exc
            log.warning("driftwarden sender: cannot read shard map %s: %s", self._map_path, exc)
            return
        self.set_shard_map(shard_map)

    def _owner(self, stream: str) -> int:
        m = self._map
        assert m is not None
        key = (m.epoch, m.shards)
        if key != self._owner_cache_key:
            self._owner_cache = {}
            self._owner_cache_key = key
        owner = self._owner_cache.get(stream)
        if owner is None:
            owner = self._owner_cache[stream] = m.owner(stream)
        return owner

    def _form_batch(self, shard: int) -> tuple[wire.Batch, list[str]] | None:
        """Seal pending values of ``shard``'s idle streams into one batch (under the lock)."""
        assert self._map is not None
        limit = self.settings.batch_values
        segments: list[wire.Segment] = []
        streams: list[str] = []
        total = 0
        with self._lock:
            for stream, q in self._queues.items():
                if q.in_flight or (not q.pending and not q.sealed) or self._owner(stream) != shard:
                    continue
                while q.pending and sum(s.values_count() for s in q.sealed) < limit:
                    q.sealed.append(self._seal(stream, q))
                q.in_flight = True
                streams.append(stream)
                segments.extend(q.sealed)
                total += sum(s.values_count() for s in q.sealed)
                if total >= limit:
                    break
            for stream in streams:  # round robin: the next batch starts with the others
                self._queues[stream] = self._queues.pop(stream)
        if not segments:
            return None
        return wire.Batch(self.sender_id, self._map.epoch, segments, self.monitor), streams

    def _seal(self, stream: str, q: _StreamQueue) -> wire.Segment:
        first = q.pending.popleft()
        chunks = [first]
        n = first.n
        while q.pending and q.pending[0].kind == first.kind and n < self.settings.batch_values:
            chunk = q.pending.popleft()
            chunks.append(chunk)
            n += chunk.n
        self._seq += 1
        columns = {k: _concat([c.columns[k] for c in chunks]) for k in first.columns}
        return wire.Segment(stream, self._seq, first.kind, chunks[-1].ts, columns)

    # ------------------------------------------------------------------ background task

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._closing:
            try:
                async with asyncio.timeout(self.settings.flush_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._closing:
                return
            try:
                self._reload_map_file()
                self._dispatch()
            except Exception:  # keep the loop alive whatever happens
                log.exception("driftwarden sender: unexpected error while dispatching batches")

    def _dispatch(self) -> None:
        if self._map is None or not self._buffered:
            return
        now = time.monotonic()
        for shard in range(self._map.shards):
            if shard in self._inflight or self._not_before.get(shard, 0.0) > now:
                continue
            formed = self._form_batch(shard)
            if formed is None:
                continue
            batch, streams = formed
            self._inflight[shard] = asyncio.create_task(self._send(shard, batch, streams))

    async def _send(self, shard: int, batch: wire.Batch, streams: list[str]) -> None:
        assert self._client is not None
        url = (
            names.shard_url(self.settings.url_template, shard, self.settings.base_port)
            + INGEST_PATH
        )
        outcome: str | int = "retry"
        try:
            body = wire.encode(batch)
            headers = {"content-type": wire.CONTENT_TYPE}
            if self._token is not None:
                headers.update(self._token.header())
            resp = await self._client.post(url, content=body, headers=headers)
            outcome = self._handle_response(shard, resp, len(batch.segments))
        except (httpx.HTTPError, OSError) as exc:
            self._last_error = f"shard {shard} ({url}): {type(exc).__name__}: {exc}"
        except asyncio.CancelledError:
            self._release(streams, batch, acked=False)
            raise
        except Exception as exc:
            self._last_error = f"shard {shard}: {type(exc).__name__}: {exc}"
            log.exception("driftwarden sender: unexpected error sending to shard %d", shard)
        self._inflight.pop(shard, None)
        if outcome == "acked":
            self._release(streams, batch, acked=True)
            self._backoff.pop(shard, None)
            self._not_before.pop(shard, None)
        elif outcome == "rejected":
            self._release(streams, batch, acked=True, shed=True)
        elif isinstance(outcome, int):
            # One segment does not fit its stream: drop it alone, send the rest again.
            self._drop_segment(batch.segments[outcome])
            self._release(streams, batch, acked=False)
        else:
            self._release(streams, batch, acked=False)
            with self._lock:
                self._retries += 1
            backoff = self._backoff.get(shard)
            if backoff is None:
                backoff = self._backoff[shard] = Backoff(
                    self.settings.backoff_initial, self.settings.backoff_max
                )
            delay = backoff.next()
            if outcome != "rerouted":
                self._not_before[shard] = time.monotonic() + jittered(delay)
        self._poke()

    def _drop_segment(self, seg: wire.Segment) -> None:
        with self._lock:
            q = self._queues.get(seg.stream)
            if q is None:
                return
            kept = deque(s for s in q.sealed if s is not seg)
            if len(kept) == len(q.sealed):
                return
            q.sealed = kept
            size = seg.values_count()
            q.values -= size
            self._buffered -= size
        log.error(
            "driftwarden sender: a drift worker rejected %d values of stream %s and they are dropped: %s",
            size,
            seg.stream,
            self._last_error,
        )
        self._count_shed(SHED_REJECTED, size, seg.stream)

    def _handle_response(self, shard: int, resp: httpx.Response, segments: int) -> str | int:
        body: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            body = resp.json()
        shard_map = body.get("shard_map") if isinstance(body, dict) else None
        epoch_before = self._map.epoch if self._map is not None else -1
        if isinstance(shard_map, dict):
            with contextlib.suppress(ValueError):
                self.set_shard_map(ShardMap.model_validate(shard_map))
        newer_map = self._map is not None and self._map.epoch > epoch_before
        if resp.status_code == 200:
            return "acked"
        detail = body.get("detail") if isinstance(body, dict) else None
        self._last_error = f"shard {shard}: HTTP {resp.status_code}: {detail or resp.text[:200]}"
        if resp.status_code in (401, 403):
            # A credential problem (a Secret rotated, a wrong mount) is not the batch's fault:
            # keep the values and retry, and say loudly what to fix.
            now = time.monotonic()
            if now - self._last_auth_log >= 60.0:
                self._last_auth_log = now
                log.error(
                    "driftwarden sender for monitor %s: shard %d refused our credential (%s); "
                    "values stay buffered and are retried. Check that the model server mounts "
                    "this monitor's <monitor>-driftwarden-credential Secret.",
                    self.monitor,
                    shard,
                    self._last_error,
                )
            return "retry"
        if resp.status_code == 409:
            # Not the owner. With a newer map the retry goes straight to the new owner;
            # otherwise the worker lags behind our map and we back off until it catches up.
            return "rerouted" if newer_map else "retry"
        if 400 <= resp.status_code < 500 and resp.status_code not in (408, 425, 429):
            bad = body.get("segment") if isinstance(body, dict) else None
            if isinstance(bad, int) and not isinstance(bad, bool) and 0 <= bad < segments:
                return bad
            log.error(
                "driftwarden sender: shard %d rejected a batch as malformed and it is dropped: %s",
                shard,
                self._last_error,
            )
            return "rejected"
        return "retry"

    def _release(
        self, streams: list[str], batch: wire.Batch, *, acked: bool, shed: bool = False
    ) -> None:
        sent = {id(s) for s in batch.segments}
        dropped = 0
        with self._lock:
            for stream in streams:
                q = self._queues.get(stream)
                if q is None:
                    continue
                q.in_flight = False
                if not acked:
                    continue
                while q.sealed and id(q.sealed[0]) in sent:
                    seg = q.sealed.popleft()
                    size = seg.values_count()
                    q.values -= size
                    self._buffered -= size
                    dropped += size
                if not q.pending and not q.sealed:
                    del self._queues[stream]
            if acked and not shed:
                self._acked += dropped
        if shed and dropped:
            self._count_shed(SHED_REJECTED, dropped, streams[0] if streams else "")


async def _finish(task: asyncio.Task[Any], timeout: float) -> None:
    """Let ``task`` end within ``timeout`` seconds, else cancel it until it does."""
    if timeout > 0:
        await asyncio.wait({task}, timeout=timeout)
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _SenderCollector:
    """Exposes a sender's counters at scrape time (one instance per sender)."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        s = self._sender
        labels = [names.LABEL_MONITOR]
        monitor = names.monitor_name(s.monitor)  # the name: namespace is the target's
        queue = GaugeMetricFamily(
            names.M_SENDER_QUEUE,
            "Values buffered in the sender, not yet acknowledged.",
            labels=labels,
        )
        queue.add_metric([monitor], s.buffered_values)
        acked = CounterMetricFamily(
            names.M_SENDER_ACKED, "Values acknowledged by drift workers.", labels=labels
        )
        acked.add_metric([monitor], s.acked_values)
        retries = CounterMetricFamily(
            names.M_SENDER_RETRIES, "Batches retried (refusal, error or timeout).", labels=labels
        )
        retries.add_metric([monitor], s.retries)
        shed = CounterMetricFamily(
            names.M_SENDER_SHED,
            "Values dropped by the sender, by reason.",
            labels=[*labels, "reason"],
        )
        with s._lock:
            counts = dict(s._shed)
        for reason in (
            SHED_BUFFER_FULL,
            SHED_STOPPED,
            SHED_REJECTED,
            SHED_INVALID,
            SHED_UNKNOWN_STREAM,
            SHED_DRAIN_TIMEOUT,
        ):
            shed.add_metric([monitor, reason], counts.get(reason, 0))
        return [queue, acked, retries, shed]
