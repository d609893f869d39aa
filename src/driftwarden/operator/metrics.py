"""The operator's own Prometheus metrics (reconcile passes, API writes, cache size)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILES = Counter("driftwarden_operator_reconciles", "Reconcile passes by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "driftwarden_operator_reconcile_duration_seconds",
    "Duration of one reconcile pass.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class _ApiCollector(Collector):
    """Reads the API client's write counters and the cache size at scrape time."""

    def __init__(self) -> None:
        self.api: Any = None
        self.cache: Any = None

    def collect(self) -> Iterator[Any]:
        writes = CounterMetricFamily(
            "driftwarden_operator_api_writes",
            "API writes by verb and kind.",
            labels=["verb", "kind"],
        )
        if self.api is not None:
            for (verb, kind), count in sorted(self.api.writes.items()):
                writes.add_metric([verb, kind], count)
        yield writes
        cached = GaugeMetricFamily(
            "driftwarden_operator_cached_children", "Children held in the operator's cache."
        )
        cached.add_metric([], len(self.cache) if self.cache is not None else 0)
        yield cached


_COLLECTOR = _ApiCollector()
REGISTRY.register(_COLLECTOR)
_served: set[int] = set()


def bind(api: Any, cache: Any) -> None:
    """Point the scrape-time collector at the running operator's client and cache."""
    _COLLECTOR.api, _COLLECTOR.cache = api, cache


def api_writes() -> int:
    """Return the API writes of the operator bound last (0 before it started)."""
    return _COLLECTOR.api.total_writes() if _COLLECTOR.api is not None else 0


def api_writes_by_kind() -> dict[str, int]:
    """Return the bound operator's API writes as {"verb/kind": count}."""
    if _COLLECTOR.api is None:
        return {}
    return {f"{verb}/{kind}": n for (verb, kind), n in sorted(_COLLECTOR.api.writes.items())}


def serve(port: int) -> None:
    """Serve /metrics on ``port`` (once per process)."""
    if port not in _served:
        start_http_server(port)
        _served.add(port)
