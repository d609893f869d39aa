"""kopf handlers: thin wiring from watch events to ``driftwarden.operator.reconcile``.

One daemon per DriftMonitor runs reconcile passes: at start (create or operator
restart), whenever the monitor's spec or labels change, whenever one of its
children changes (deleted or edited by hand, or pods becoming ready), and every
``resync_seconds`` as a safety net. One daemon per object means passes for one
monitor never overlap. Importing this module registers the handlers with kopf's
default registry (``kopf run -m driftwarden.operator.handlers`` or
``driftwarden operator``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import httpx
import kopf

from driftwarden.common import names
from driftwarden.common.backoff import Backoff
from driftwarden.operator import builders, metrics
from driftwarden.operator.kube import (
    CHILD_KINDS,
    KubeApi,
    authorization_header,
    load_configuration,
)
from driftwarden.operator.reconcile import ChildCache, MonitorState, Reconciler, child_key
from driftwarden.operator.settings import load_settings

PREFIX = "driftwarden.io"
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={builders.MANAGED_BY}"
DEBOUNCE_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 60.0


class Wakers:
    """One asyncio.Event per monitor uid: set it and that monitor's daemon runs a pass."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._seen: dict[str, tuple[Any, ...]] = {}

    def register(self, uid: str) -> asyncio.Event:
        return self._events.setdefault(uid, asyncio.Event())

    def unregister(self, uid: str) -> None:
        self._events.pop(uid, None)
        self._seen.pop(uid, None)

    def wake(self, uid: str | None) -> None:
        if uid and uid in self._events:
            self._events[uid].set()

    def changed(self, uid: str, fingerprint: tuple[Any, ...]) -> bool:
        """Return whether ``fingerprint`` differs from the last one seen for ``uid``."""
        before = self._seen.get(uid)
        self._seen[uid] = fingerprint
        return before is not None and before != fingerprint


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Return the credentials kopf and our client share (in-cluster, else $KUBECONFIG)."""
    cfg = load_configuration()
    scheme, _, value = (authorization_header(cfg) or "").partition(" ")
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        scheme=scheme or None,
        token=value or None,
    )


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any
) -> None:
    """Set kopf's settings once and create the shared clients."""
    ours = load_settings()
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # Only problems become Kubernetes Events: an Event per pass would be a write per pass.
    settings.posting.level = logging.WARNING
    if ours.peering_name:
        settings.peering.name = ours.peering_name
        settings.peering.mandatory = True
        settings.peering.clusterwide = True
        settings.peering.priority = ours.peering_priority
    else:
        settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = ours.api_timeout_seconds
    settings.process.ultimate_exiting_timeout = ours.shutdown_timeout_seconds
    # Watch only our children, filtered by the API server, not every ConfigMap in the
    # cluster.
    for (api_version, _kind), k in CHILD_KINDS.items():
        group, _, version = api_version.rpartition("/")
        settings.watching.label_selectors[group, version, k.plural] = MANAGED_SELECTOR

    api = KubeApi(timeout=ours.api_timeout_seconds)
    http = httpx.AsyncClient(follow_redirects=False) if ours.worker_status_url else None
    memo.settings = ours
    memo.api = api
    memo.http = http
    memo.cache = ChildCache()
    memo.wakers = Wakers()
    memo.reconciler = Reconciler(api, memo.cache, ours, builders.default_renderers(), http)
    metrics.bind(api, memo.cache)
    if ours.metrics_port:
        metrics.serve(ours.metrics_port)
    logger.info(
        "driftwarden operator configured: resync %.0fs, peering %s",
        ours.resync_seconds,
        ours.peering_name or "standalone",
    )


@kopf.on.cleanup()
async def close_clients(memo: kopf.Memo, **_: Any) -> None:
    """Close the shared HTTP clients."""
    await memo.api.close()
    if memo.http is not None:
        await memo.http.aclose()


# The daemon exits by itself when stopped (see _sleep); cancellation is the fallback
# for a pass stuck in I/O.
@kopf.daemon(
    names.API_GROUP,
    names.API_VERSION,
    names.PLURAL,
    id="reconcile",
    cancellation_backoff=5.0,
    cancellation_timeout=10.0,
)
async def run_monitor(
    body: kopf.Body,
    meta: kopf.Meta,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """Reconcile one monitor until it is deleted or the operator stops."""
    uid = meta["uid"]
    wake = memo.wakers.register(uid)
    state = MonitorState()
    backoff = Backoff(1.0, MAX_BACKOFF_SECONDS)
    try:
        while not stopped:
            wake.clear()
            with metrics.RECONCILE_SECONDS.time():
                try:
                    await memo.reconciler.reconcile(body, state, logger)
                    metrics.RECONCILES.labels(result="ok").inc()
                    # sooner while a scale-down waits for the shards' handoffs
                    delay = state.next_pass_in or memo.settings.resync_seconds
                    backoff.reset()
                except Exception as exc:
                    metrics.RECONCILES.labels(result="error").inc()
                    delay = backoff.next()
                    logger.warning("reconcile failed, retrying in %.0fs: %s", delay, exc)
            if await _sleep(wake, stopped, delay):
                await asyncio.sleep(DEBOUNCE_SECONDS)  # coalesce bursts of child events
    finally:
        memo.wakers.unregister(uid)
        if body.get("metadata", {}).get("deletionTimestamp"):
            await _delete_unowned(body, memo, logger)


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> bool:
    """Wait for a wake-up, the daemon's stop, or the timeout; return whether woken."""

    async def until_stopped() -> None:
        await stopped.wait()

    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(until_stopped())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return wake.is_set() and not stopped


async def _delete_unowned(body: Mapping[str, Any], memo: kopf.Memo, logger: logging.Logger) -> None:
    from driftwarden.operator.monitor import InvalidMonitor, Monitor

    try:
        monitor = Monitor.from_body(body)
    except InvalidMonitor:
        return
    await memo.reconciler.delete_unowned(monitor, logger)


@kopf.on.event(names.API_GROUP, names.API_VERSION, names.PLURAL, id="monitor-changed")
def on_monitor_event(body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    """Wake the monitor's daemon when its spec or labels change (not its status)."""
    uid = meta.get("uid")
    if uid:
        fingerprint = (meta.get("generation"), tuple(sorted((meta.get("labels") or {}).items())))
        if memo.wakers.changed(uid, fingerprint):
            memo.wakers.wake(uid)


def _register_child_watch(api_version: str, plural: str) -> None:
    group, _, version = api_version.rpartition("/")

    @kopf.on.event(
        group,
        version,
        plural,
        id=f"child-{plural}",
        labels={"app.kubernetes.io/managed-by": builders.MANAGED_BY},
    )
    def on_child_event(
        event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo, **_: Any
    ) -> None:
        """Keep the child cache current and wake the owner when its child changed."""
        obj = event.get("object") or dict(body)
        if event.get("type") == "DELETED":
            memo.cache.remove(child_key(obj))
            fresh = True
        else:
            fresh = memo.cache.put(obj)
        if fresh:
            # Dashboards in a shared namespace carry no owner reference: the periodic
            # resync restores those.
            memo.wakers.wake(ChildCache.owner_uid(obj))


for (_api_version, _kind), _k in CHILD_KINDS.items():
    _register_child_watch(_api_version, _k.plural)
