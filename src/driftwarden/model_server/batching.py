"""Adaptive micro-batching: concurrent requests share one model call.

Requests enqueue their validated columns and await a future. One task takes
everything queued (up to ``max_rows``), runs the model once in a dedicated thread,
and hands each request its slice. Batches form by themselves while the model is busy;
the extra wait of up to ``max_wait`` is spent only while fewer requests have arrived
than the last batch held (closed-loop clients answered together return together), so
a lone client never waits and a burst that ends costs at most one ``max_wait``.
A request larger than ``max_rows`` runs alone; requests are never split or reordered.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("driftwarden.model_server")


@dataclass
class BatchOutput:
    """What the model produced for one batch (rows in request order)."""

    ids: list[str]
    predictions: np.ndarray
    embeddings: np.ndarray | None


@dataclass
class _Item:
    columns: dict[str, list[Any]]
    rows: int
    future: asyncio.Future[tuple[list[str], np.ndarray]]
    ids: list[str | None] | None = None  # callers' join ids; None: generate


# (feature frame) -> (predictions, embeddings or None); runs in the model thread.
ModelFn = Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray | None]]
# Called on the event loop after each batch's requests are answered.
BatchHook = Callable[[dict[str, list[Any]], BatchOutput, int], None]


class IdFactory:
    """Prediction ids unique across replicas: a random process prefix and a counter."""

    def __init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:12]
        self._counter = itertools.count(1)

    def take(self, n: int) -> list[str]:
        prefix = self.prefix
        return [f"{prefix}-{next(self._counter):x}" for _ in range(n)]


class MicroBatcher:
    """Gathers concurrent requests into bounded batches for one model thread."""

    def __init__(
        self,
        model: ModelFn,
        feature_names: list[str],
        *,
        max_rows: int = 256,
        max_wait: float = 0.005,
        on_batch: BatchHook | None = None,
        ids: IdFactory | None = None,
    ) -> None:
        self._model = model
        self._features = list(feature_names)
        self.max_rows = max_rows
        self.max_wait = max_wait
        self._on_batch = on_batch
        self.ids = ids or IdFactory()
        self._queue: asyncio.Queue[_Item | None] | None = None  # None: stop marker
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._carry: _Item | None = None
        self._inflight: list[_Item] = []
        self._closing = False
        self._stop_seen = False
        self._last_requests = 0
        self.batches = 0  # model calls made
        self.submitted = 0  # requests accepted into the queue

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftwarden-model")
        self._task = asyncio.create_task(self._run(), name="driftwarden-micro-batcher")

    async def stop(self, timeout: float = 30.0) -> None:
        """Answer every request already queued, then stop the task and the model thread.

        Requests submitted after ``stop`` begins are refused. Requests still unanswered
        after ``timeout`` seconds (a model call that hangs) fail with RuntimeError.
        """
        if self._task is None:
            return
        assert self._queue is not None
        self._closing = True
        self._queue.put_nowait(None)  # behind everything queued: the loop ends there
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            log.error(
                "model calls did not finish within %.0fs of shutdown; failing the rest", timeout
            )
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._fail_pending(RuntimeError("the model server stopped before answering"))
        self._task = None
        if self._executor is not None:
            # A hung model call cannot be interrupted; do not block the loop on it.
            self._executor.shutdown(wait=bool(done), cancel_futures=True)
            self._executor = None

    def _fail_pending(self, exc: Exception) -> None:
        items = [self._carry, *self._inflight]
        assert self._queue is not None
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        for item in items:
            if item is not None and not item.future.done():
                item.future.set_exception(exc)
        self._carry, self._inflight = None, []

    async def submit(
        self, columns: dict[str, list[Any]], rows: int, ids: list[str | None] | None = None
    ) -> tuple[list[str], np.ndarray]:
        """Return ``(prediction ids, predictions)`` for ``rows`` rows of ``columns``.

        ``ids``: per row the caller's id (spec.labelJoin.key), None where the server
        generates it; the returned ids are those, and what the predictions are sent with.
        """
        if ids is not None and len(ids) != rows:
            raise ValueError(f"{len(ids)} ids given for {rows} rows")
        if self._queue is None or not self.running or self._closing:
            raise RuntimeError("the model is not loaded yet (server starting or stopping)")
        future: asyncio.Future[tuple[list[str], np.ndarray]] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.put_nowait(_Item(columns, rows, future, ids))
        self.submitted += 1
        return await future

    async def _next_batch(self) -> list[_Item]:
        """Return the next batch; empty once the stop marker is reached and nothing is left."""
        assert self._queue is not None
        first = self._carry
        self._carry = None
        if first is None:
            if self._stop_seen:
                return []
            first = await self._queue.get()
            if first is None:
                self._stop_seen = True
                return []
        batch, rows = [first], first.rows
        # Closed-loop clients answered together come back together: expect as many
        # requests as the last batch held, and wait (bounded) only for those.
        expected = self._last_requests if self.max_wait > 0 else 1
        deadline = time.monotonic() + self.max_wait
        while rows < self.max_rows:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if len(batch) >= expected or remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if item is None:
                self._stop_seen = True  # nothing was queued after it: finish this batch
                break
            if rows + item.rows > self.max_rows:
                self._carry = item  # first in the next batch: order is kept
                break
            batch.append(item)
            rows += item.rows
        self._last_requests = len(batch)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                return  # stop marker reached: everything queued before it is answered
            live = [item for item in batch if not item.future.done()]  # drop cancelled
            self._inflight = live
            if not live:
                continue
            columns = _concat([item.columns for item in live], self._features)
            rows = sum(item.rows for item in live)
            try:
                predictions, embeddings = await loop.run_in_executor(
                    self._executor, self._call_model, columns
                )
            except Exception as exc:  # every waiting request gets the error
                log.exception("model call failed for a batch of %d rows", rows)
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.batches += 1
            ids = self._ids_for(live, rows)
            start = 0
            for item in live:
                end = start + item.rows
                if not item.future.done():
                    item.future.set_result((ids[start:end], predictions[start:end]))
                start = end
            self._inflight = []
            if self._on_batch is not None:
                # After the answers: monitoring never delays a response.
                try:
                    self._on_batch(columns, BatchOutput(ids, predictions, embeddings), len(live))
                except Exception:  # monitoring must not stop serving
                    log.exception("batch hook failed; serving continues")

    def _ids_for(self, live: list[_Item], rows: int) -> list[str]:
        """Return the batch's ids: each caller's own where given, generated elsewhere."""
        if all(item.ids is None for item in live):
            return self.ids.take(rows)
        out: list[str] = []
        for item in live:
            if item.ids is None:
                out.extend(self.ids.take(item.rows))
                continue
            missing = iter(self.ids.take(sum(1 for i in item.ids if i is None)))
            out.extend(i if i is not None else next(missing) for i in item.ids)
        return out

    def _call_model(self, columns: dict[str, list[Any]]) -> tuple[np.ndarray, np.ndarray | None]:
        frame = pd.DataFrame(columns, columns=self._features)
        return self._model(frame)


def _concat(parts: list[dict[str, list[Any]]], names: list[str]) -> dict[str, list[Any]]:
    if len(parts) == 1:
        return parts[0]
    return {name: list(itertools.chain.from_iterable(p[name] for p in parts)) for name in names}
