"""The drift-worker HTTP service: one ASGI app per shard around a :class:`ShardWorker`.

Endpoints:

- ``POST /v1/ingest``: a batch (binary ``application/x-driftwarden-batch`` or JSON).
  200 after the WAL append (and fsync, by policy); 400 names what is malformed and
  changes nothing; 409 ``not_owner`` with the current shard map (retry elsewhere);
  503 ``handoff_pending`` (retry here, shortly); 503 ``storage_error`` /
  ``storage_failed`` while the WAL cannot be made durable (never 200 for a record
  that is not on disk, duplicates included).
- ``POST /v1/handoff``: a peer pushes a stream's state (docs/workers.md);
  ``GET /v1/handoff``: what is still to move (outgoing, awaiting).
- ``GET|PUT /v1/shardmap``: read, or push a newer map (the operator may do this so
  shards do not wait for the ConfigMap volume to refresh).
- ``GET /v1/evidence``: the latest p-value of every test this shard holds live, which
  its peers poll to apply multiple-testing control over the whole monitor
  (:mod:`driftwarden.drift_worker.evidence`).
- ``GET /metrics``, ``/healthz``, ``/readyz``, ``/status``; ``GET /v1/state`` dumps
  held streams' full state (debugging, tests).

Every call that changes state or reads reference data carries the monitor's
credential (:mod:`driftwarden.common.auth`): ingest admits the ``sender`` role,
handoff and ``/v1/evidence`` ``peer``, the shard-map push ``operator``, ``/v1/state``
``operator`` or ``peer``. Anything else answers 401/403 before its body is read, changes nothing and
is counted in ``driftwarden_auth_refused_requests_total``. Every body is read with
the same byte limit, whether or not the caller declared its length.

Batches are decoded, logged and applied on one dedicated thread, in arrival order;
the event loop stays free for probes and scrapes, and fsyncs run on their own
threads so concurrent batches share them (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from driftwarden.common import auth
from driftwarden.common.backoff import jittered
from driftwarden.common.names import shard_url
from driftwarden.common.sharding import ShardMap, check_pushed_map
from driftwarden.drift_worker.evidence import (
    EVIDENCE_PATH,
    EvidenceBook,
    evidence_document,
    parse_evidence,
)
from driftwarden.drift_worker.metrics import WorkerCollector, collect_rows, status_document
from driftwarden.drift_worker.shard import Refusal, ShardWorker
from driftwarden.ingest import wire

log = logging.getLogger("driftwarden.worker")

HANDOFF_PATH = "/v1/handoff"
# Exit status after a failed fsync (EX_TEMPFAIL): restart me, recovery will sort it out.
EXIT_STORAGE_FAILED = 75
# Handoffs in flight at once: enough to overlap network and the peer's install,
# few enough that big states do not all sit in memory together.
PUSH_CONCURRENCY = 8
# A shard map is a few hundred bytes even with a full history; nothing bigger is one.
SHARD_MAP_MAX_BYTES = 64 * 1024


class WorkerService:
    """Runs one shard: request handling plus the background loops that keep it moving."""

    def __init__(
        self,
        worker: ShardWorker,
        *,
        peer_url_template: str,
        base_port: int = 8080,
        shard_map_path: Any = None,
        map_poll_interval_s: float = 1.0,
        snapshot_interval_s: float = 60.0,
        snapshot_every_values: int = 5_000_000,
        max_body_bytes: int = 256 * 1024 * 1024,
        shutdown_drain_s: float = 45.0,
        storage_failure_exit_s: float = 30.0,
        on_fatal: Callable[[], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        credential: auth.CredentialSource | None = None,
        evidence_poll_interval_s: float = 1.0,
        evidence_stale_s: float = 5.0,
    ) -> None:
        """``credential``: the monitor key; None leaves every endpoint open (in-process tests).

        ``evidence_poll_interval_s``: how often the peers' p-values are fetched (each
        request times out after that long, at most 2 s); ``evidence_stale_s``: a
        peer's last answer older than this counts as missing (its tests p = 1).
        """
        self.worker = worker
        self.peer_url_template = peer_url_template
        self.base_port = base_port
        self.shard_map_path = shard_map_path
        self.map_poll_interval_s = map_poll_interval_s
        self.snapshot_interval_s = snapshot_interval_s
        self.snapshot_every_values = snapshot_every_values
        self.max_body_bytes = max_body_bytes
        self.shutdown_drain_s = shutdown_drain_s
        # After a failed fsync: keep answering 503 (and serving /metrics, so the
        # storage-error count is scraped) this long, then stop so the pod restarts.
        self.storage_failure_exit_s = storage_failure_exit_s
        self.on_fatal = on_fatal
        self.exit_code = 0
        self._failed_at: float | None = None
        self._transport = transport
        self._apply = ThreadPoolExecutor(1, thread_name_prefix="apply")
        self._sync = ThreadPoolExecutor(4, thread_name_prefix="wal-sync")
        self._background = ThreadPoolExecutor(2, thread_name_prefix="background")
        self._tasks: list[asyncio.Task[None]] = []
        self._wake_handoff: asyncio.Event | None = None
        self._push_slots: asyncio.Semaphore | None = None
        self._client: httpx.AsyncClient | None = None
        self._map_mtime: float | None = None
        self._last_snapshot = time.monotonic()
        self._stopping = False
        per_detector: dict[str, int] = {}
        for spec in worker.plan.streams.values():
            for name in worker.plan.factory(spec):
                per_detector[name] = per_detector.get(name, 0) + 1
        self.evidence_poll_interval_s = evidence_poll_interval_s
        self.evidence = EvidenceBook(stale_after_s=evidence_stale_s)
        self.collector = WorkerCollector(worker, per_detector, self.evidence)
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        self.verifier = auth.Verifier(credential) if credential is not None else None
        self._peer_token = (
            auth.TokenSource(credential, auth.ROLE_PEER) if credential is not None else None
        )
        if self.verifier is not None:
            if self.verifier.monitor != worker.plan.monitor:
                raise auth.CredentialError(
                    f"the credential is for monitor {self.verifier.monitor!r} but this shard "
                    f"serves {worker.plan.monitor!r}: another monitor's Secret is mounted"
                )
            self.registry.register(self.verifier)
        else:
            log.warning(
                "shard %d of %s runs WITHOUT authentication: anyone who reaches it can change "
                "its state",
                worker.ordinal,
                worker.plan.monitor,
            )
        ProcessCollector(registry=self.registry)

    # ------------------------------------------------------------------ lifecycle

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self._wake_handoff = asyncio.Event()
        self._client = httpx.AsyncClient(transport=self._transport, timeout=30.0)
        self._tasks = [
            asyncio.create_task(self._loop("map-watch", self._watch_map, self.map_poll_interval_s)),
            asyncio.create_task(self._handoff_loop()),
            asyncio.create_task(self._loop("snapshot", self._maybe_snapshot, 0.5)),
            asyncio.create_task(self._loop("handoff-timeout", self._expire, 1.0)),
            asyncio.create_task(self._loop("storage-watch", self._watch_storage, 0.2)),
            asyncio.create_task(
                self._loop("evidence", self._poll_evidence, self.evidence_poll_interval_s)
            ),
        ]
        log.info(
            "shard %d of monitor %s serving at epoch %d (%d shards), %d live streams",
            self.worker.ordinal,
            self.worker.plan.monitor,
            self.worker.epoch,
            self.worker.map.shards,  # type: ignore[union-attr]
            len(self.worker.streams) - len(self.worker.frozen),
        )
        try:
            yield
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        self._stopping = True
        for task in self._tasks:
            # cancel until done: a cancellation can be swallowed on Python 3.11
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
        loop = asyncio.get_running_loop()
        if self.worker.storage_failed:
            # Neither hand off nor snapshot what may not be durable: recover from disk.
            log.error("shard %d stops after a storage failure", self.worker.ordinal)
        else:
            try:
                await self._drain_handoffs()
            except Exception:
                log.exception(
                    "handing streams off at shutdown failed; they stay in this shard's WAL"
                )
            try:
                await loop.run_in_executor(self._apply, self.worker.take_snapshot)
            except Exception:
                log.exception("final snapshot failed; the WAL still holds everything")
        self.worker.close()
        if self._client is not None:
            await self._client.aclose()
        for pool in (self._apply, self._sync, self._background):
            pool.shutdown(wait=False, cancel_futures=True)

    async def _loop(self, name: str, step: Any, interval: float) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s failed; retrying in %.1fs", name, interval)
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ background steps

    async def _watch_map(self) -> None:
        if self.shard_map_path is None:
            return
        try:
            mtime = self.shard_map_path.stat().st_mtime
        except OSError as exc:
            log.warning("shard map %s unreadable: %s", self.shard_map_path, exc)
            return
        if mtime == self._map_mtime:
            return
        try:
            shard_map = ShardMap.model_validate_json(self.shard_map_path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning(
                "shard map %s is invalid, keeping epoch %d: %s",
                self.shard_map_path,
                self.worker.epoch,
                exc,
            )
            return
        self._map_mtime = mtime
        await self._adopt(shard_map)

    async def _adopt(self, shard_map: ShardMap) -> bool:
        loop = asyncio.get_running_loop()
        moved = await loop.run_in_executor(self._apply, self.worker.adopt_map, shard_map)
        if moved and self._wake_handoff is not None:
            self._wake_handoff.set()
        return moved

    async def _maybe_snapshot(self) -> None:
        due_values = self.worker.counters.values_since_snapshot >= self.snapshot_every_values
        due_time = (
            time.monotonic() - self._last_snapshot >= self.snapshot_interval_s
            and self.worker.counters.values_since_snapshot > 0
        )
        if due_values or due_time:
            self._last_snapshot = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(
                self._background, self.worker.take_snapshot
            )

    async def _watch_storage(self) -> None:
        if not self.worker.storage_failed or self.exit_code:
            return
        now = time.monotonic()
        if self._failed_at is None:
            self._failed_at = now
            log.error(
                "shard %d: the write-ahead log failed; answering 503 and exiting in %.0fs to "
                "recover from what is on disk",
                self.worker.ordinal,
                self.storage_failure_exit_s,
            )
        if now - self._failed_at >= self.storage_failure_exit_s:
            self.exit_code = EXIT_STORAGE_FAILED
            self._stopping = True
            if self.on_fatal is not None:
                self.on_fatal()

    async def _expire(self) -> None:
        if self.worker.awaiting:
            await asyncio.get_running_loop().run_in_executor(
                self._apply, self.worker.expire_awaiting
            )

    async def _drain_handoffs(self) -> None:
        """Before exiting, learn the newest map and push frozen streams to their new owners.

        A scale-down deletes this pod right after the operator publishes the smaller
        map, possibly before the mounted file has caught up; asking the peers closes
        that gap, and pushing now spares the new owners a wait for this volume to be
        mounted again.
        """
        deadline = time.monotonic() + self.shutdown_drain_s
        self._map_mtime = None
        await self._watch_map()
        await self._learn_map_from_peers()
        while self.worker.frozen and time.monotonic() < deadline:
            results = await asyncio.gather(
                *(self._push(s, t, g) for s, t, g in self.worker.outgoing())
            )
            if not all(results):
                await asyncio.sleep(0.2)
        if self.worker.frozen:
            log.warning(
                "shard %d exits with %d streams not handed off (%s); they are safe in this shard's WAL "
                "and move when it starts again with the same volume",
                self.worker.ordinal,
                len(self.worker.frozen),
                sorted(self.worker.frozen)[:10],
            )
        elif self.worker.counters.handoffs_out:
            log.info("shard %d handed off every stream it no longer owns", self.worker.ordinal)

    async def _poll_evidence(self) -> None:
        """Fetch every peer's p-values (bounded timeouts); a failure leaves its last answer to age."""
        if self.worker.plan.multiple_testing == "none":
            return
        peers = self.collector.peers()
        self.evidence.retain(peers)
        if not peers:
            return
        assert self._client is not None
        timeout = min(2.0, max(0.2, self.evidence_poll_interval_s))

        async def fetch(k: int) -> None:
            url = shard_url(self.peer_url_template, k, self.base_port) + EVIDENCE_PATH
            try:
                resp = await self._client.get(  # type: ignore[union-attr]
                    url, headers=self._auth(), timeout=timeout
                )
                if resp.status_code != 200:
                    log.debug("evidence of shard %d: HTTP %d", k, resp.status_code)
                    return
                evidence = parse_evidence(resp.json(), monitor=self.worker.plan.monitor, shard=k)
            except (httpx.HTTPError, ValueError) as exc:
                log.debug("evidence of shard %d unavailable: %s", k, exc)
                return
            self.evidence.record(evidence)

        await asyncio.gather(*(fetch(k) for k in peers))

    async def _learn_map_from_peers(self) -> None:
        assert self._client is not None
        shards = max(self.worker.map.shards, self.worker.ordinal + 1)  # type: ignore[union-attr]

        async def ask(k: int) -> ShardMap | None:
            url = shard_url(self.peer_url_template, k, self.base_port) + "/v1/shardmap"
            try:
                resp = await self._client.get(url, timeout=2.0)  # type: ignore[union-attr]
                return ShardMap.model_validate(resp.json()) if resp.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                return None

        maps = await asyncio.gather(*(ask(k) for k in range(shards) if k != self.worker.ordinal))
        newest = max(
            (m for m in maps if m is not None and not check_pushed_map(self.worker.map, m)),
            key=lambda m: m.epoch,
            default=None,
        )
        if newest is not None and newest.epoch > self.worker.epoch:
            log.info(
                "shard %d learnt epoch %d from a peer at shutdown",
                self.worker.ordinal,
                newest.epoch,
            )
            await self._adopt(newest)

    async def _handoff_loop(self) -> None:
        assert self._wake_handoff is not None
        backoff = 0.05
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff if self.worker.frozen else 1.0):
                    await self._wake_handoff.wait()
            self._wake_handoff.clear()
            try:
                pending = self.worker.outgoing()
                if not pending:
                    backoff = 0.05
                    continue
                results = await asyncio.gather(*(self._push(s, t, g) for s, t, g in pending))
                backoff = 0.05 if all(results) else jittered(min(5.0, backoff * 2))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("handoff round failed")
                backoff = min(5.0, backoff * 2)

    async def _push(self, stream: str, target: int, generation: int) -> bool:
        if self._push_slots is None:
            self._push_slots = asyncio.Semaphore(PUSH_CONCURRENCY)
        async with self._push_slots:
            return await self._push_one(stream, target, generation)

    async def _push_one(self, stream: str, target: int, generation: int) -> bool:
        assert self._client is not None
        loop = asyncio.get_running_loop()
        try:
            doc = await loop.run_in_executor(self._apply, self.worker.handoff_payload, stream)
        except Refusal:
            return True  # no longer frozen (acknowledged meanwhile)
        url = shard_url(self.peer_url_template, target, self.base_port) + HANDOFF_PATH
        try:
            body = await loop.run_in_executor(self._background, lambda: json.dumps(doc).encode())
            resp = await self._client.post(
                url, content=body, headers={"content-type": "application/json", **self._auth()}
            )
        except httpx.HTTPError as exc:
            log.warning(
                "handoff of %s to shard %d (%s) failed: %s; will retry", stream, target, url, exc
            )
            return False
        if resp.status_code == 409 and _error_code(resp) == "handoff_superseded":
            await loop.run_in_executor(
                self._apply, self.worker.handoff_superseded, stream, generation
            )
            return True
        if resp.status_code != 200:
            log.warning(
                "handoff of %s to shard %d refused: HTTP %d %s; will retry",
                stream,
                target,
                resp.status_code,
                resp.text[:300],
            )
            return False
        await loop.run_in_executor(self._apply, self.worker.handoff_acked, stream, generation)
        log.info(
            "handed stream %s (generation %d) to shard %d: %s",
            stream,
            generation,
            target,
            resp.json().get("status"),
        )
        return True

    def _auth(self) -> dict[str, str]:
        return self._peer_token.header() if self._peer_token is not None else {}

    # ------------------------------------------------------------------ handlers

    def _refusal(self, r: Refusal) -> JSONResponse:
        body: dict[str, Any] = {"error": r.code, "detail": r.detail, **r.extra}
        if self.worker.map is not None:
            body["epoch"] = self.worker.map.epoch
            body["shard_map"] = self.worker.map.model_dump(mode="json")
        headers = {"retry-after": "1"} if r.status == 503 else None
        return JSONResponse(body, status_code=r.status, headers=headers)

    async def _body(self, request: Request, limit: int | None = None) -> bytes:
        """Return the body, refusing with 413 once it passes ``limit`` (declared or not)."""
        limit = self.max_body_bytes if limit is None else limit

        def too_large(size: int | str) -> Refusal:
            return Refusal(
                413,
                "too_large",
                f"body of {size} bytes exceeds the {limit}-byte limit "
                "(DRIFTWARDEN_WORKER__MAX_BODY_BYTES); send smaller batches",
            )

        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise Refusal(400, "bad_request", f"content-length {length[:40]!r} is not a number")
            if int(length) > limit:
                raise too_large(length)
        # Chunked bodies (no length, or a length that lies) stop at the same limit.
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(f"more than {limit}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def ingest(self, request: Request) -> Response:
        if self._stopping:
            return JSONResponse(
                {"error": "stopping", "detail": "shard is shutting down; retry"}, status_code=503
            )
        loop = asyncio.get_running_loop()
        try:
            body = await self._body(request)
            ctype = request.headers.get("content-type", wire.CONTENT_TYPE)
            result = await loop.run_in_executor(self._apply, self.worker.ingest, body, ctype)
        except Refusal as r:
            if r.code == "not_owner":
                self._wake_map_check()
            return self._refusal(r)
        wal = self.worker.wal
        if result.lsn is not None and wal is not None and wal.fsync == "always":
            try:
                await loop.run_in_executor(self._sync, wal.sync, result.lsn)
            except OSError as exc:  # never 200 for a record that is not durable
                return self._refusal(self.worker.storage_refusal(exc))
        return JSONResponse(
            {
                "acked_values": result.values,
                "segments": result.segments,
                "duplicates": result.duplicates,
                "epoch": self.worker.epoch,
                "shard_map": self.worker.map.model_dump(mode="json"),  # type: ignore[union-attr]
            }
        )

    def _wake_map_check(self) -> None:
        self._map_mtime = None  # a sender may know a newer map: re-read the file now

    async def handoff(self, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        try:
            body = await self._body(request)
            try:
                doc = await loop.run_in_executor(self._background, json.loads, body)
            except ValueError as exc:
                raise Refusal(400, "bad_handoff", f"handoff body is not JSON: {exc}") from None
            if not isinstance(doc, dict):
                raise Refusal(400, "bad_handoff", "handoff body must be a JSON object")
            carried = doc.get("shard_map")
            if isinstance(carried, dict):
                try:
                    problem = check_pushed_map(self.worker.map, ShardMap.model_validate(carried))
                except ValueError as exc:
                    problem = f"its shard map is invalid: {exc}"
                if problem:
                    raise Refusal(400, "bad_shard_map", f"handoff refused: {problem}")
            status = await loop.run_in_executor(self._apply, self.worker.receive_handoff, doc, body)
        except Refusal as r:
            return self._refusal(r)
        if self._wake_handoff is not None:
            self._wake_handoff.set()  # it may have to go on to the current owner
        return JSONResponse({"status": status, "epoch": self.worker.epoch})

    async def handoff_status(self, _request: Request) -> Response:
        """Pending handoffs only: cheap enough to poll while a reshard settles."""
        w = self.worker
        with w.lock:
            doc = {
                "epoch": w.epoch,
                "outgoing": sorted(w.frozen),
                "awaiting": sorted(w.awaiting),
                "in": w.counters.handoffs_in,
                "out": w.counters.handoffs_out,
                "pause_seconds": dict(w.handoff_pauses),
            }
        return JSONResponse(doc)

    async def get_shardmap(self, _request: Request) -> Response:
        return JSONResponse(self.worker.map.model_dump(mode="json"))  # type: ignore[union-attr]

    async def put_shardmap(self, request: Request) -> Response:
        try:
            body = await self._body(request, SHARD_MAP_MAX_BYTES)
            try:
                shard_map = ShardMap.model_validate_json(body)
            except ValueError as exc:
                raise Refusal(400, "bad_shard_map", str(exc)) from None
            problem = check_pushed_map(self.worker.map, shard_map)
            if problem:
                raise Refusal(400, "bad_shard_map", problem)
            moved = await self._adopt(shard_map)
        except Refusal as r:
            return self._refusal(r)
        return JSONResponse({"adopted": moved, "epoch": self.worker.epoch})

    async def metrics(self, _request: Request) -> Response:
        data = await asyncio.get_running_loop().run_in_executor(
            self._background, generate_latest, self.registry
        )
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    async def status(self, _request: Request) -> Response:
        doc = await asyncio.get_running_loop().run_in_executor(
            self._background, status_document, self.worker, self.collector
        )
        return Response(doc.to_json(), media_type="application/json")

    async def evidence_of_shard(self, _request: Request) -> Response:
        """This shard's own latest p-values (never the merged view, so nothing echoes)."""

        def build() -> dict[str, Any]:
            w = self.worker
            rows = collect_rows(w)
            return evidence_document(
                w.plan.monitor, w.ordinal, w.epoch, ((r.stream, r.detector, r.result) for r in rows)
            )

        doc = await asyncio.get_running_loop().run_in_executor(self._background, build)
        return JSONResponse(doc)

    async def stream_state(self, request: Request) -> Response:
        """The full state of held streams (``?stream=`` repeats; none: all) for debugging and tests."""
        wanted = request.query_params.getlist("stream") or None
        doc = await asyncio.get_running_loop().run_in_executor(
            self._background, self.worker.fingerprint, wanted
        )
        return JSONResponse(doc)

    async def healthz(self, _request: Request) -> Response:
        if self.worker.storage_failed:
            return JSONResponse({"ok": False, "storage_failed": True}, status_code=503)
        return JSONResponse({"ok": True})

    async def readyz(self, _request: Request) -> Response:
        awaiting = sorted(self.worker.awaiting)
        if self._stopping or awaiting:
            return JSONResponse(
                {"ready": False, "awaiting_handoff": awaiting, "stopping": self._stopping},
                status_code=503,
            )
        return JSONResponse({"ready": True, "epoch": self.worker.epoch})


def _error_code(resp: httpx.Response) -> str | None:
    try:
        doc = resp.json()
    except ValueError:
        return None
    return doc.get("error") if isinstance(doc, dict) else None


def create_app(service: WorkerService) -> Starlette:
    """Return the ASGI app of one shard."""

    def only(endpoint: str, *roles: str) -> Any:
        return auth.protect(service.verifier, roles, endpoint)

    routes = [
        Route("/v1/ingest", only("ingest", auth.ROLE_SENDER)(service.ingest), methods=["POST"]),
        Route(HANDOFF_PATH, only("handoff", auth.ROLE_PEER)(service.handoff), methods=["POST"]),
        Route(HANDOFF_PATH, service.handoff_status, methods=["GET"]),
        Route("/v1/shardmap", service.get_shardmap, methods=["GET"]),
        Route(
            "/v1/shardmap",
            only("shardmap", auth.ROLE_OPERATOR)(service.put_shardmap),
            methods=["PUT"],
        ),
        Route("/metrics", service.metrics, methods=["GET"]),
        Route("/status", service.status, methods=["GET"]),
        # The full state includes the reference sample: not for everyone who can reach us.
        Route(
            "/v1/state",
            only("state", auth.ROLE_OPERATOR, auth.ROLE_PEER)(service.stream_state),
            methods=["GET"],
        ),
        Route(
            EVIDENCE_PATH,
            only("evidence", auth.ROLE_PEER)(service.evidence_of_shard),
            methods=["GET"],
        ),
        Route("/healthz", service.healthz, methods=["GET"]),
        Route("/readyz", service.readyz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=service.lifespan)
