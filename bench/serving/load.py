"""An async HTTP/1.1 load generator: N closed-loop clients, bounded in requests and time.

Each virtual client holds one keep-alive connection (asyncio streams) and sends
pre-encoded ``POST`` requests, reading each response's status line, headers and
``Content-Length`` body. It is written for low per-request CPU: on a 2-core machine
the generator shares the CPUs with the servers under test, and a general-purpose
client (httpx costs about 1 ms of CPU per request here) would measure itself.
Responses are checked for status 200; the benchmark checks their content with httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass
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

    def summary(self) -> dict[str, float]:
        lat = self.latencies_ms
        return {
            "clients": self.clients,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "throughput_rps": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else float("nan"),
            "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else float("nan"),
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
    url: str, bodies: list[bytes], clients: int, duration: float, max_requests: int, warmup: float
) -> LoadResult:
    parsed = urlparse(url)
    host, port, path = parsed.hostname or "127.0.0.1", parsed.port or 80, parsed.path or "/"
    raw = [_encode(host, port, path, b) for b in bodies]
    payloads = itertools.cycle(raw)
    latencies: list[float] = []
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

        async def worker(conn: _Connection) -> None:
            nonlocal errors, issued
            while issued < max_requests and time.perf_counter() < deadline:
                issued += 1
                t0 = time.perf_counter()
                try:
                    ok = await conn.request(next(payloads)) == 200
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
                    await conn.close()
                if ok:
                    latencies.append((time.perf_counter() - t0) * 1000.0)
                else:
                    errors += 1

        await asyncio.gather(*(worker(c) for c in conns))
        seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    return LoadResult(clients, len(latencies), errors, seconds, np.asarray(latencies), warm)


def run_load(
    url: str,
    records: list[dict],
    clients: int,
    *,
    duration: float = 6.0,
    max_requests: int = 100_000,
    warmup: float = 1.0,
) -> LoadResult:
    """Return throughput and latencies of ``clients`` closed-loop clients posting ``records``."""
    bodies = [json.dumps(r).encode() for r in records]
    return asyncio.run(_run(url, bodies, clients, duration, max_requests, warmup))
