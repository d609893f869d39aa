"""Reading drift state from the workers' ``/status`` endpoints.

Every shard is asked concurrently with a short timeout; an unreachable shard
(a crashed pod, or a fake kwok pod with no process behind it) is an error string
in the observation, never an exception, so status stays Unknown instead of the
reconciler looping on errors.

The document is :class:`driftwarden.common.contracts.WorkerStatus`, validated on
arrival; a malformed answer is an error naming the bad field, like an unreachable
shard.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx

from driftwarden.common import names
from driftwarden.common.contracts import WorkerStatus, parse_worker_status
from driftwarden.common.names import shard_url
from driftwarden.common.sharding import ShardMap
from driftwarden.operator.status import DriftObservation, format_time, summarise_detectors


async def probe_workers(
    client: httpx.AsyncClient,
    url_template: str,
    *,
    monitor: str,
    namespace: str,
    shards: int,
    timeout: float,
    base_port: int = 0,
) -> DriftObservation:
    """Return the drift state merged over every shard that answered."""

    async def one(ordinal: int) -> WorkerStatus | str:
        url = shard_url(
            url_template, monitor=monitor, namespace=namespace, ordinal=ordinal, base_port=base_port
        )
        try:
            resp = await client.get(url, timeout=timeout)
            resp.raise_for_status()
            return parse_worker_status(resp.content)
        except (httpx.HTTPError, ValueError) as exc:
            return f"shard {ordinal} ({url}): {type(exc).__name__}: {exc}"[:300]

    results = await asyncio.gather(*(one(k) for k in range(shards)))
    drifting: set[str] = set()
    features: set[str] = set()
    latest: float | None = None
    errors: list[str] = []
    docs: list[WorkerStatus] = []
    for result in results:
        if isinstance(result, str):
            errors.append(result)
            continue
        docs.append(result)
        drifting.update(result.drifting())
        features.update(
            name
            for name, s in result.streams.items()
            if s.status == "live" and name.startswith(names.feature_stream(""))
        )
        stamp = result.last_drift_time()
        if stamp is not None and (latest is None or stamp > latest):
            latest = stamp
    return DriftObservation(
        shards_asked=shards,
        shards_answered=len(docs),
        drifting=tuple(sorted(drifting)),
        last_drift_time=None
        if latest is None
        else format_time(dt.datetime.fromtimestamp(latest, tz=dt.UTC)),
        errors=tuple(errors),
        detectors=summarise_detectors(docs),
        feature_streams=len(features),
    )


def shard_map_url(status_url_template: str) -> str:
    """Return the ``PUT /v1/shardmap`` URL template beside a shard's ``/status`` URL."""
    base = status_url_template.removesuffix("/status")
    return f"{base}/v1/shardmap"


def handoff_url(status_url_template: str) -> str:
    """Return the ``GET /v1/handoff`` URL template beside a shard's ``/status`` URL."""
    base = status_url_template.removesuffix("/status")
    return f"{base}/v1/handoff"


async def unsettled_handoffs(
    client: httpx.AsyncClient,
    status_url_template: str,
    *,
    monitor: str,
    namespace: str,
    shards: int,
    epoch: int,
    timeout: float,
    base_port: int = 0,
) -> list[str]:
    """Return why shards ``0..shards-1`` may not lose pods yet; empty when all settled.

    A shard is settled when it answers ``GET /v1/handoff`` at ``epoch`` or later with
    no outgoing and no awaited streams. One that does not answer, or still runs an
    older epoch (it has not seen the new map, so it does not know what to hand over),
    is not settled: removing a pod before then could strand streams on its volume.
    """
    template = handoff_url(status_url_template)

    async def one(ordinal: int) -> str | None:
        url = shard_url(
            template, monitor=monitor, namespace=namespace, ordinal=ordinal, base_port=base_port
        )
        try:
            resp = await client.get(url, timeout=timeout)
            resp.raise_for_status()
            doc = resp.json()
            at, outgoing, awaiting = int(doc["epoch"]), doc["outgoing"], doc["awaiting"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            return f"shard {ordinal} ({url}): {type(exc).__name__}: {exc}"[:300]
        if at < epoch:
            return f"shard {ordinal} is still at epoch {at} (< {epoch})"
        if outgoing or awaiting:
            return (
                f"shard {ordinal} has {len(outgoing)} outgoing and {len(awaiting)} awaited "
                f"stream(s) at epoch {at}"
            )
        return None

    results = await asyncio.gather(*(one(k) for k in range(shards)))
    return [r for r in results if r is not None]


async def push_shard_map(
    client: httpx.AsyncClient,
    status_url_template: str,
    shard_map: ShardMap,
    *,
    monitor: str,
    namespace: str,
    shards: int,
    timeout: float,
    base_port: int = 0,
    headers: dict[str, str] | None = None,
) -> list[str]:
    """PUT the new shard map to shards ``0..shards-1``; return one error line per failure.

    Best effort: the mounted ConfigMap carries the same map to every shard, only
    later (the kubelet's sync period), so a shard that misses the push still
    converges. Pushing makes a reshard start at once instead of a minute later.
    """
    template = shard_map_url(status_url_template)
    body = shard_map.model_dump_json()

    async def one(ordinal: int) -> str | None:
        url = shard_url(
            template, monitor=monitor, namespace=namespace, ordinal=ordinal, base_port=base_port
        )
        try:
            resp = await client.put(
                url,
                content=body,
                timeout=timeout,
                # the operator's token: shards refuse maps from anyone else
                headers={"content-type": "application/json", **(headers or {})},
            )
            resp.raise_for_status()
            return None
        except httpx.HTTPError as exc:
            return f"shard {ordinal} ({url}): {type(exc).__name__}: {exc}"[:300]

    results = await asyncio.gather(*(one(k) for k in range(shards)))
    return [r for r in results if r is not None]
