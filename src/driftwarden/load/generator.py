"""An async HTTP/1.1 load generator, bounded in requests and time.

Two shapes: N closed-loop clients (each sends its next request when the last one is
answered), or an open loop at a fixed rate (requests start on a schedule whatever the
server does; latency is measured from the scheduled start, so a server that falls
behind shows its queueing instead of hiding it). Each connection is one keep-alive
connection (asyncio streams) sending pre-encoded ``POST`` requests, reading each
response's status line, headers and ``Content-Length`` body. It is written for low per-request CPU: on a 2-core machine
the generator shares the CPUs with the servers under test, and a general-purpose
client (httpx costs about 1 ms of CPU per request here) would measure itself.
Responses are counted by status; only 200s count as served. ``python -m bench serving``
and ``driftwarden load`` both use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np


@dataclass
class LoadResult:
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray
    warmup_requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # status code or error kind
    rate: float | None = None  # the open loop's target, requests/s

    def summary(self) -> dict[str, float]:
        lat = self.latencies_ms
        return {
            "clients": self.clients,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "throughput_rps": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else float("nan"),
            "p90_ms": round(float(np.percentile(lat, 90)), 3) if len(lat) else float("nan"),
            "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else float("nan"),
            "max_ms": round(float(lat.max()), 3) if len(lat) else float("nan"),
            "warmup_requests": self.warmup_requests,
        }


class _Connection:
    """One keep-alive HTTP/1.1 connection that posts pre-encoded requests."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, raw: bytes) -> int:
        """Send one request; return the response status (reconnects after a close)."""
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def _encode(host: str, port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _run(
    url: str,
    bodies: list[bytes],
    clients: int,
    duration: float,
    max_requests: int,
    warmup: float,
    rate: float | None,
) -> LoadResult:
    parsed = urlparse(url)
    host, port, path = parsed.hostname or "127.0.0.1", parsed.port or 80, parsed.path or "/"
    raw = [_encode(host, port, path, b) for b in bodies]
    payloads = itertools.cycle(raw)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    issued = 0
    conns = [_Connection(host, port) for _ in range(clients)]
    try:
        warm_until = time.perf_counter() + warmup
        warm = 0
        while time.perf_counter() < warm_until:  # connections open, caches warm
            await asyncio.gather(*(c.request(next(payloads)) for c in conns))
            warm += len(conns)
        started = time.perf_counter()
        deadline = started + duration

        # Open loop: request k starts at started + k / rate, on whichever connection is free.
        interval = 1.0 / rate if rate else 0.0

        async def worker(conn: _Connection) -> None:
            nonlocal errors, issued
            while issued < max_requests and time.perf_counter() < deadline:
                k = issued
                issued += 1
                t0 = time.perf_counter()
                if interval:
                    scheduled = started + k * interval
                    if scheduled >= deadline:
                        return
                    if scheduled > t0:
                        await asyncio.sleep(scheduled - t0)
                    t0 = scheduled
                try:
                    status = await conn.request(next(payloads))
                    kind = str(status)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    status, kind = 0, type(exc).__name__
                    await conn.close()
                statuses[kind] = statuses.get(kind, 0) + 1
                if status == 200:
                    latencies.append((time.perf_counter() - t0) * 1000.0)
                else:
                    errors += 1

        await asyncio.gather(*(worker(c) for c in conns))
        seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    return LoadResult(
        clients, len(latencies), errors, seconds, np.asarray(latencies), warm, statuses, rate
    )


def run_load(
    url: str,
    records: list[dict[str, Any]],
    clients: int,
    *,
    duration: float = 6.0,
    max_requests: int = 100_000,
    warmup: float = 1.0,
    rate: float | None = None,
) -> LoadResult:
    """Return throughput and latencies of ``clients`` connections posting ``records`` in turn.

    Closed loop by default; with ``rate`` (requests/s) an open loop over ``clients``
    connections (enough of them to keep the rate while responses are slow).
    """
    if urlparse(url).scheme != "http":
        raise ValueError(f"{url!r}: the load generator speaks plain http:// only")
    bodies = [json.dumps(r).encode() for r in records]
    return asyncio.run(_run(url, bodies, clients, duration, max_requests, warmup, rate))
