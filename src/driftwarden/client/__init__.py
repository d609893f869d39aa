"""Log records and labels of a model served elsewhere to a Driftwarden monitor.

    from driftwarden.client import Client

    with Client("http://diamonds-model.ml.svc:8080", token=...) as dw:
        dw.log({"carat": 0.3, "cut": "Ideal", ...}, prediction=512.0, id="order-42")
        ...
        dw.log_label("order-42", 498.0)

``log`` and ``log_label`` never block on the network and never raise for the
server's sake: they append to a bounded buffer that a background thread sends in
batches to ``POST /v1/records`` and ``POST /feedback`` of the monitor's model
server (the ingest gateway). The thread retries a batch answered 503 or not
answered at all (connection refused or reset, timeout), waiting the server's
``Retry-After`` or a capped exponential backoff, until the server acknowledges it.

When the buffer is full the **oldest** buffered item is dropped (``log`` never
blocks the caller's serving path) and counted in :attr:`Client.stats` ``dropped``;
a batch the server refuses for good (4xx other than 408/429) is counted in
``rejected`` with the server's reason logged. Delivery is at least once: a batch
whose acknowledgement is lost (the server queued it, then the connection broke)
is sent again.

The module imports nothing of the server: it needs only ``httpx``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("driftwarden.client")

RECORDS_PATH = "/v1/records"
FEEDBACK_PATH = "/feedback"
_RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})


@dataclass
class ClientStats:
    """Counts of items since the client was created."""

    logged: int = 0  # records passed to log()
    labels: int = 0  # labels passed to log_label()
    acknowledged: int = 0  # records the server answered 202 for
    labels_acknowledged: int = 0
    dropped: int = 0  # records and labels dropped: buffer full, or left at close()
    rejected: int = 0  # records and labels the server refused for good (4xx)
    retries: int = 0  # batch sends that were retried


class Client:
    """Batches records and labels to a Driftwarden ingest gateway off the caller's thread."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.25,
        max_buffered: int = 100_000,
        timeout: float = 10.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``url``: the model server's base URL; ``token``: sent as ``Authorization: Bearer``.

        ``batch_size`` records per request (at most the server's ``MAX_RECORDS``),
        ``flush_interval`` seconds between sends of a partial batch, ``max_buffered``
        records plus labels held before the oldest is dropped.
        """
        if batch_size < 1 or max_buffered < 1:
            raise ValueError("batch_size and max_buffered must be at least 1")
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        headers = {"user-agent": "driftwarden-client"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )
        self._records: deque[dict[str, Any]] = deque()
        self._labels: deque[dict[str, Any]] = deque()
        self._lock = threading.Condition()
        self._busy = 0  # items taken from the buffers, not yet acknowledged or given up
        self._closing = False
        self._stop_now = False
        self._flushers = 0  # callers waiting in flush(): partial batches are due now
        self._stats = ClientStats()
        self._thread = threading.Thread(target=self._run, name="driftwarden-client", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API

    def log(
        self,
        features: Mapping[str, Any],
        prediction: Any = None,
        id: str | None = None,
        timestamp: float | None = None,
    ) -> None:
        """Buffer one record: its features, and optionally your prediction, id and time.

        Give an ``id`` (and a prediction) to join a label sent later with
        :meth:`log_label`. Never blocks; when the buffer is full the oldest item goes.
        """
        record: dict[str, Any] = {"features": dict(features)}
        if prediction is not None:
            record["prediction"] = prediction
        if id is not None:
            record["id"] = str(id)
        if timestamp is not None:
            record["timestamp"] = float(timestamp)
        with self._lock:
            self._check_open()
            self._stats.logged += 1
            self._append(self._records, record)

    def log_label(self, id: str, label: Any) -> None:
        """Buffer the true label of the record logged with ``id``; never blocks."""
        with self._lock:
            self._check_open()
            self._stats.labels += 1
            self._append(self._labels, {"prediction_id": str(id), "label": label})

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything buffered is acknowledged or given up; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._flushers += 1
            self._lock.notify_all()
            try:
                while self._records or self._labels or self._busy:
                    if not self._thread.is_alive():
                        return False
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._lock.wait(0.05 if left is None else min(left, 0.05))
                return True
            finally:
                self._flushers -= 1

    def close(self, timeout: float = 10.0) -> None:
        """Flush for up to ``timeout`` seconds, then stop; what is left counts as dropped."""
        if not self._thread.is_alive():
            self._http.close()
            return
        flushed = self.flush(timeout)
        with self._lock:
            self._closing = True
            self._stop_now = True
            self._lock.notify_all()
        self._thread.join(timeout=max(1.0, self._http.timeout.read or 1.0) + 1.0)
        with self._lock:
            # A batch in hand was counted by the thread, unless the thread is stuck in it.
            left = len(self._records) + len(self._labels)
            left += self._busy if self._thread.is_alive() else 0
            self._records.clear()
            self._labels.clear()
            self._stats.dropped += left
        if not flushed and left:
            log.warning(
                "driftwarden client closed with %d records/labels unacknowledged after %.1fs; "
                "they are dropped",
                left,
                timeout,
            )
        self._http.close()

    @property
    def stats(self) -> ClientStats:
        """A copy of the counters."""
        with self._lock:
            return ClientStats(**vars(self._stats))

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._records) + len(self._labels)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closing:
            raise RuntimeError("the driftwarden client is closed")

    def _append(self, queue: deque[dict[str, Any]], item: dict[str, Any]) -> None:
        if len(self._records) + len(self._labels) >= self.max_buffered:
            # Drop the oldest item of either kind: the newest data is the most useful
            # for drift, and log() must not block the caller's serving path.
            (self._records if self._records else self._labels).popleft()
            self._stats.dropped += 1
            if self._stats.dropped == 1 or self._stats.dropped % 10_000 == 0:
                log.warning(
                    "driftwarden client buffer full (%d items): dropping the oldest "
                    "(%d dropped so far); the server is slow or unreachable",
                    self.max_buffered,
                    self._stats.dropped,
                )
        queue.append(item)
        if len(queue) >= self.batch_size:
            self._lock.notify_all()

    def _take(self) -> tuple[str, list[dict[str, Any]]] | None:
        """Wait for a batch (records first) and take it out of its buffer."""
        with self._lock:
            deadline = time.monotonic() + self.flush_interval
            while not self._stop_now:
                full = len(self._records) >= self.batch_size or len(self._labels) >= self.batch_size
                due = time.monotonic() >= deadline or self._closing or self._flushers > 0
                if full or (due and (self._records or self._labels)):
                    break
                if due:
                    deadline = time.monotonic() + self.flush_interval
                self._lock.wait(max(0.0, deadline - time.monotonic()))
            if self._stop_now:
                return None
            # Records before labels: a label's prediction is then already on its way.
            queue, path = (
                (self._records, RECORDS_PATH) if self._records else (self._labels, FEEDBACK_PATH)
            )
            items = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
            self._busy = len(items)
            return path, items

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            path, items = taken
            try:
                self._deliver(path, items)
            except Exception:  # never let the thread die with items in hand
                log.exception("driftwarden client: unexpected error; %d items dropped", len(items))
                with self._lock:
                    self._stats.dropped += len(items)
            finally:
                with self._lock:
                    self._busy = 0
                    self._lock.notify_all()

    def _deliver(self, path: str, items: list[dict[str, Any]]) -> None:
        body: Any = {"records": items} if path == RECORDS_PATH else items
        delay = self.backoff_initial
        while True:
            wait: float | None
            try:
                resp = self._http.post(path, json=body)
            except httpx.TransportError as exc:
                wait, why = None, f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code in (200, 202):
                    with self._lock:
                        if path == RECORDS_PATH:
                            self._stats.acknowledged += len(items)
                        else:
                            self._stats.labels_acknowledged += len(items)
                    return
                if resp.status_code not in _RETRY_STATUSES and resp.status_code < 500:
                    log.warning(
                        "driftwarden client: %s refused %d items (%d): %s",
                        path,
                        len(items),
                        resp.status_code,
                        resp.text[:500],
                    )
                    with self._lock:
                        self._stats.rejected += len(items)
                    return
                wait, why = _retry_after(resp), f"HTTP {resp.status_code}"
            with self._lock:
                if self._stop_now:
                    self._stats.dropped += len(items)
                    return
                self._stats.retries += 1
            pause = wait if wait is not None else delay * (0.5 + random.random() / 2)
            delay = min(self.backoff_max, delay * 2)
            log.debug("driftwarden client: %s (%s); retrying in %.2fs", path, why, pause)
            with self._lock:
                # Woken early only to stop.
                self._lock.wait_for(lambda: self._stop_now, timeout=pause)


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), 60.0))
    except ValueError:
        return None
