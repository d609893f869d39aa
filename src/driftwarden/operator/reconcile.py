"""Reconciling one DriftMonitor: desired children, apply what differs, publish status.

Level-triggered and idempotent: every pass renders the desired children, compares
each with the last observed copy (fed by kopf's watches, or one GET on a cache
miss), applies only the ones whose input hash or fields differ, prunes children
the spec no longer asks for, and patches status only when it changed. An idle pass
therefore writes nothing.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from driftwarden.common import auth, names
from driftwarden.common.contracts import spec_dump
from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import ConditionStatus
from driftwarden.operator import builders
from driftwarden.operator.kube import (
    CHILD_KINDS,
    HANDOVER_FIELD_MANAGER,
    SECRET_KIND,
    ApiError,
    KubeApi,
    kind_of,
)
from driftwarden.operator.monitor import InvalidMonitor, Monitor
from driftwarden.operator.settings import OperatorSettings
from driftwarden.operator.status import (
    DEGRADED,
    READY,
    DriftObservation,
    Observation,
    compute_status,
    merge_conditions,
    status_patch,
)
from driftwarden.operator.workers import probe_workers, push_shard_map, unsettled_handoffs

ChildKey = tuple[str, str, str, str]  # apiVersion, kind, namespace, name
# A Secret deleted by hand is noticed (and a new key made) within this long.
CREDENTIAL_RECHECK_SECONDS = 300.0

_QUANTITY_KEYS = frozenset({"requests", "limits"})
_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


def child_key(obj: Mapping[str, Any]) -> ChildKey:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def _quantity(text: str) -> Decimal | None:
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            number, factor = text[: -len(suffix)], _SUFFIXES[suffix]
            break
    else:
        number, factor = text, 1
    try:
        return Decimal(number) * Decimal(factor)
    except InvalidOperation:
        return None


def is_subset(desired: Any, actual: Any, *, quantities: bool = False) -> bool:
    """Return True when every field of ``desired`` has the same value in ``actual``.

    Fields the API server defaults (and fields other controllers own) may exist in
    ``actual``; lists must match element by element. Resource quantities compare by
    value because the API server rewrites them canonically (1024Mi -> 1Gi).
    """
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return False
        return all(
            key in actual
            and is_subset(value, actual[key], quantities=key in _QUANTITY_KEYS or quantities)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(
                is_subset(d, a, quantities=quantities)
                for d, a in zip(desired, actual, strict=False)
            )
        )
    if quantities and isinstance(desired, str) and isinstance(actual, str) and desired != actual:
        dq, aq = _quantity(desired), _quantity(actual)
        return dq is not None and dq == aq
    return desired == actual


def newer_or_same(candidate: str | None, held: str | None) -> bool:
    """Return whether resourceVersion ``candidate`` is not older than ``held``.

    resourceVersions are opaque by contract but etcd revisions in practice; when
    either is not an integer, the candidate wins (it arrived later).
    """
    try:
        return int(candidate or 0) >= int(held or 0)
    except ValueError:
        return True


def overlay(actual: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``actual`` with every field of ``desired`` written over it, lists replaced whole.

    Used when server-side apply cannot restore a hand edit: apply merges list entries
    by key, so an entry someone else added under a new key (a Service port renumbered
    by hand) survives next to ours and may make the object invalid. A replace with
    our lists removes it; fields we do not set (clusterIP, defaults) are kept.
    """
    out = dict(actual)
    for key, value in desired.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = overlay(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def strip(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy fit for the cache: managedFields are large and never read."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out


class ChildCache:
    """The last observed copy of every child, fed by watch events and apply results."""

    def __init__(self) -> None:
        self._objects: dict[ChildKey, dict[str, Any]] = {}
        self._by_owner: dict[str, set[ChildKey]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._objects)

    @staticmethod
    def owner_uid(obj: Mapping[str, Any]) -> str | None:
        for ref in obj.get("metadata", {}).get("ownerReferences") or []:
            if ref.get("kind") == names.KIND and ref.get("controller"):
                return ref.get("uid")
        return None

    def get(self, key: ChildKey) -> dict[str, Any] | None:
        return self._objects.get(key)

    def put(self, obj: Mapping[str, Any]) -> bool:
        """Store ``obj``; return False when it is the copy already held (same version)."""
        key = child_key(obj)
        held = self._objects.get(key)
        version = obj.get("metadata", {}).get("resourceVersion")
        if held is not None and version:
            held_version = held["metadata"].get("resourceVersion")
            # A watch event may trail the apply response it echoes; never go back.
            if held_version == version or not newer_or_same(version, held_version):
                return False
        self._objects[key] = strip(obj)
        uid = self.owner_uid(obj)
        if uid:
            self._by_owner[uid].add(key)
        return True

    def remove(self, key: ChildKey) -> None:
        obj = self._objects.pop(key, None)
        uid = self.owner_uid(obj) if obj else None
        if uid and uid in self._by_owner:
            self._by_owner[uid].discard(key)
            if not self._by_owner[uid]:
                del self._by_owner[uid]

    def owned_by(self, uid: str) -> list[ChildKey]:
        return sorted(self._by_owner.get(uid, ()))

    def labelled(self, labels: Mapping[str, str]) -> list[ChildKey]:
        return sorted(
            key
            for key, obj in self._objects.items()
            if all((obj["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
        )


@dataclasses.dataclass
class MonitorState:
    """What one monitor's daemon remembers between passes."""

    desired_key: str = ""
    desired: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    drift: DriftObservation | None = None
    probed_at: float = float("-inf")
    probe_shards: int = 0
    # The status this daemon last wrote, until kopf's live body catches up with it.
    written_version: str | None = None
    written_status: dict[str, Any] | None = None
    # A scale-down waiting for handoffs: why, and how soon the daemon should look again.
    handing_off: str | None = None
    next_pass_in: float | None = None
    # The monitor credential, read once and re-checked every CREDENTIAL_RECHECK_SECONDS.
    credential: auth.Credential | None = None
    credential_checked: float = float("-inf")


class Reconciler:
    """Reconciles monitors against the API with shared client, cache and settings."""

    def __init__(
        self,
        api: KubeApi,
        cache: ChildCache,
        settings: OperatorSettings,
        renderers: builders.Renderers,
        http: httpx.AsyncClient | None,
    ) -> None:
        self.api = api
        self.cache = cache
        self.settings = settings
        self.renderers = renderers
        self.http = http
        self.missing_kinds: dict[str, float] = {}  # kind -> when its CRD was found missing
        self._apply_slots = asyncio.Semaphore(settings.max_concurrent_applies)

    # ------------------------------------------------------------------ children

    async def observed(self, key: ChildKey, *, fresh: bool = False) -> dict[str, Any] | None:
        """Return the cached child, reading it once from the API on a cache miss.

        ``fresh``: the monitor was never reconciled, so a miss means the child does not
        exist yet; skip the read (apply creates it, and apply is idempotent anyway).
        """
        held = self.cache.get(key)
        if held is not None or fresh:
            return held
        api_version, kind, namespace, name = key
        try:
            obj = await self.api.get(CHILD_KINDS[(api_version, kind)].path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        if obj is not None:
            self.cache.put(obj)
        return obj

    def needs_apply(self, desired: Mapping[str, Any], actual: Mapping[str, Any] | None) -> bool:
        if actual is None or not self.settings.input_hash_skip:
            return True
        want = desired["metadata"]["annotations"][builders.INPUT_HASH_ANNOTATION]
        have = (actual["metadata"].get("annotations") or {}).get(builders.INPUT_HASH_ANNOTATION)
        # Same hash but different fields means someone edited the child by hand.
        return want != have or not is_subset(desired, actual)

    def _kind_missing(self, kind: str) -> bool:
        since = self.missing_kinds.get(kind)
        # Re-probe now and then: the CRD may be installed later.
        return since is not None and time.monotonic() - since < 300

    async def _apply_one(
        self, child: dict[str, Any], logger: logging.Logger, fresh: bool = False
    ) -> str | None:
        """Apply ``child`` if it differs; return the kind when its CRD is missing."""
        kind = child["kind"]
        if self._kind_missing(kind):
            return kind
        actual = await self.observed(child_key(child), fresh=fresh)
        if not self.needs_apply(child, actual):
            return None
        async with self._apply_slots:
            try:
                result = await self.api.apply(child)
            except ApiError as exc:
                if exc.status == 422 and actual is not None:
                    logger.warning(
                        "%s %s: server-side apply refused (%s); replacing the hand-edited "
                        "object with the desired fields",
                        kind,
                        child["metadata"]["name"],
                        exc.message,
                    )
                    result = await self.api.replace(overlay(actual, child))
                    self.cache.put(result)
                    return None
                if exc.status == 404 and child["apiVersion"].startswith("monitoring.coreos.com/"):
                    self.missing_kinds[kind] = time.monotonic()
                    logger.warning(
                        "%s not applied: the %s CRD is not installed (install the Prometheus "
                        "Operator CRDs, e.g. kube-prometheus-stack); retrying in 5 minutes",
                        child["metadata"]["name"],
                        kind,
                    )
                    return kind
                raise
        self.missing_kinds.pop(kind, None)
        self.cache.put(result)
        logger.info(
            "applied %s %s/%s", kind, child["metadata"]["namespace"], child["metadata"]["name"]
        )
        return None

    async def apply_children(
        self, children: list[dict[str, Any]], logger: logging.Logger, *, fresh: bool = False
    ) -> list[str]:
        """Apply every child that differs; return the kinds skipped for missing CRDs."""
        # The ConfigMap first: pods must never start without their config.
        first, rest = children[0], children[1:]
        skipped = [await self._apply_one(first, logger, fresh)]
        skipped += await asyncio.gather(*(self._apply_one(c, logger, fresh) for c in rest))
        return sorted({k for k in skipped if k})

    async def _apply_replicas(
        self, deployment: Mapping[str, Any], replicas: int, logger: logging.Logger
    ) -> None:
        """Apply only ``spec.replicas`` to the model Deployment, as the hand-over manager."""
        meta = deployment["metadata"]
        partial = {
            "apiVersion": deployment["apiVersion"],
            "kind": deployment["kind"],
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"replicas": replicas},
        }
        try:
            # Not forced: if someone else (the autoscaler) now owns a different value,
            # the replicas are theirs already and need no keeper.
            result = await self.api.apply(
                partial, force=False, field_manager=HANDOVER_FIELD_MANAGER
            )
        except ApiError as exc:
            if exc.status != 409:
                raise
            logger.info("%s: replicas already owned by another manager", meta["name"])
            return
        self.cache.put(result)

    async def hand_over_replicas(
        self, monitor: Monitor, children: list[dict[str, Any]], logger: logging.Logger, fresh: bool
    ) -> bool:
        """Keep the model server's live replicas when the operator stops applying them.

        Under autoscaling the applied Deployment has no ``spec.replicas``. Server-side
        apply resets a field its only manager stops applying (to 1, the default), so
        before such an apply a second field manager takes shared ownership of the live
        value; the autoscaler's next change of the count takes it from there. Returns
        whether the Deployment does not exist yet (the caller sets the first size after
        creating it).
        """
        if monitor.spec.model.autoscaling is None:
            return False
        desired = self._model_deployment(monitor, children)
        actual = await self.observed(child_key(desired), fresh=fresh)
        if actual is None:
            return True
        if self.needs_apply(desired, actual):
            live = (actual.get("spec") or {}).get("replicas")
            if live is not None:
                await self._apply_replicas(desired, int(live), logger)
        return False

    @staticmethod
    def _model_deployment(monitor: Monitor, children: list[dict[str, Any]]) -> dict[str, Any]:
        key = ("apps/v1", "Deployment", monitor.namespace, names.model_service(monitor.name))
        return next(c for c in children if child_key(c) == key)

    async def prune(
        self, monitor: Monitor, children: list[dict[str, Any]], logger: logging.Logger
    ) -> None:
        """Delete children this monitor owns that the spec no longer asks for."""
        wanted = {child_key(c) for c in children}
        owned = set(self.cache.owned_by(monitor.uid))
        if self.settings.dashboard_namespace:
            owned.update(
                self.cache.labelled(
                    {
                        "app.kubernetes.io/instance": monitor.name,
                        builders.MONITOR_NAMESPACE_LABEL: monitor.namespace,
                        "app.kubernetes.io/managed-by": builders.MANAGED_BY,
                    }
                )
            )
        for key in sorted(owned - wanted):
            api_version, kind, namespace, name = key
            if (api_version, kind) not in CHILD_KINDS:
                continue  # the credential Secret is never rendered, so never "unwanted"
            await self.api.delete(api_version, kind, namespace, name)
            self.cache.remove(key)
            logger.info("deleted %s %s/%s: no longer in the spec", kind, namespace, name)

    async def delete_unowned(self, monitor: Monitor, logger: logging.Logger) -> None:
        """Delete children garbage collection cannot reach (other-namespace dashboards)."""
        if not self.settings.dashboard_namespace:
            return
        for key in self.cache.labelled(
            {
                "app.kubernetes.io/instance": monitor.name,
                builders.MONITOR_NAMESPACE_LABEL: monitor.namespace,
                "app.kubernetes.io/managed-by": builders.MANAGED_BY,
            }
        ):
            api_version, kind, namespace, name = key
            await self.api.delete(api_version, kind, namespace, name)
            self.cache.remove(key)
            logger.info("deleted %s %s/%s with its monitor", kind, namespace, name)

    # ------------------------------------------------------------------ credential

    async def ensure_credential(
        self,
        monitor: Monitor,
        state: MonitorState,
        logger: logging.Logger,
        *,
        fresh: bool = False,
    ) -> auth.Credential:
        """Return the monitor's credential, creating its Secret with a random key if absent.

        Never applied or re-rendered: the key is made once, by ``secrets``, and only read
        back afterwards (a re-render would change it every pass). Its value never
        reaches a log line or the status. ``fresh`` (a monitor never reconciled): create
        without reading first; a 409 means it exists after all.
        """
        now = time.monotonic()
        if (
            state.credential is not None
            and now - state.credential_checked < CREDENTIAL_RECHECK_SECONDS
        ):
            return state.credential
        path = SECRET_KIND.path(monitor.namespace, builders.credential_name(monitor.name))
        secret = None if fresh else await self.api.get(path)
        if secret is None:
            fresh = auth.Credential.generate(monitor.key)
            try:
                secret = await self.api.create(builders.build_credential_secret(monitor, fresh))
                logger.info(
                    "created credential Secret %s/%s",
                    monitor.namespace,
                    builders.credential_name(monitor.name),
                )
            except ApiError as exc:
                if exc.status != 409:
                    raise
                secret = await self.api.get(path)  # another pass created it meanwhile
                if secret is None:
                    raise
        state.credential = builders.read_credential_secret(secret, monitor)
        state.credential_checked = now
        return state.credential

    # ------------------------------------------------------------------ status

    async def _push_shard_map(
        self,
        monitor: Monitor,
        shard_map: ShardMap,
        shards: int,
        logger: Any,
        credential: auth.Credential | None,
    ) -> None:
        """Tell every old and new shard about a new epoch now, not at the kubelet's next sync."""
        if not self.settings.worker_status_url or self.http is None or credential is None:
            return
        errors = await push_shard_map(
            self.http,
            self.settings.worker_status_url,
            shard_map,
            monitor=monitor.name,
            namespace=monitor.namespace,
            shards=shards,
            timeout=self.settings.worker_status_timeout_seconds,
            base_port=self.settings.worker_base_port,
            headers=auth.TokenSource(credential, auth.ROLE_OPERATOR).header(),
        )
        if errors:
            logger.warning(
                "epoch %d of %s reaches %d shard(s) through the ConfigMap only: %s",
                shard_map.epoch,
                monitor.key,
                len(errors),
                "; ".join(errors[:3]),
            )

    async def _finish_scale_down(
        self,
        monitor: Monitor,
        state: MonitorState,
        shard_map: ShardMap,
        running: int,
        logger: Any,
    ) -> None:
        """Shrink the StatefulSet once every running shard has settled at the new epoch.

        Until then the pods being removed keep running (they hold streams on their
        volumes that must move first); the daemon looks again every
        ``scale_down_poll_seconds`` and the status says what it waits for.
        """
        shards = shard_map.shards
        if not self.settings.worker_status_url or self.http is None:
            # Nothing to ask: shrink at once; the shards' SIGTERM drain is all there is.
            logger.warning(
                "scale-down of %s without waiting for handoffs: worker status probing is "
                "disabled (DRIFTWARDEN_OPERATOR__WORKER_STATUS_URL is empty); streams that "
                "cannot move within the pods' shutdown drain wait on their volumes",
                monitor.key,
            )
            pending = []
        else:
            pending = await unsettled_handoffs(
                self.http,
                self.settings.worker_status_url,
                monitor=monitor.name,
                namespace=monitor.namespace,
                shards=running,
                epoch=shard_map.epoch,
                timeout=self.settings.worker_status_timeout_seconds,
                base_port=self.settings.worker_base_port,
            )
        if pending:
            state.handing_off = (
                f"scale-down {running} -> {shards} waits for the handoffs of epoch "
                f"{shard_map.epoch}: " + "; ".join(pending[:3])
            )
            state.next_pass_in = self.settings.scale_down_poll_seconds
            logger.info("%s", state.handing_off)
            return
        children = self.desired_children(monitor, state, shard_map)
        sts = next(c for c in children if c["kind"] == "StatefulSet")
        await self._apply_one(sts, logger)
        logger.info(
            "scale-down of %s: every shard settled at epoch %d; StatefulSet %d -> %d",
            monitor.key,
            shard_map.epoch,
            running,
            shards,
        )

    async def _probe(self, monitor: Monitor, state: MonitorState, shards: int) -> None:
        if not self.settings.worker_status_url or self.http is None:
            state.drift = DriftObservation(
                shards_asked=shards,
                shards_answered=0,
                errors=(
                    (
                        "worker status probing is disabled "
                        "(DRIFTWARDEN_OPERATOR__WORKER_STATUS_URL is empty)"
                    ),
                ),
            )
            return
        due = time.monotonic() - state.probed_at >= self.settings.worker_status_interval_seconds
        if not due and state.probe_shards == shards:
            return
        state.drift = await probe_workers(
            self.http,
            self.settings.worker_status_url,
            monitor=monitor.name,
            namespace=monitor.namespace,
            shards=shards,
            timeout=self.settings.worker_status_timeout_seconds,
            base_port=self.settings.worker_base_port,
        )
        state.probed_at, state.probe_shards = time.monotonic(), shards

    async def publish_status(
        self,
        namespace: str,
        name: str,
        previous: Mapping[str, Any],
        new: Mapping[str, Any],
        state: MonitorState | None = None,
    ) -> bool:
        """Patch status when it changed; return whether a write happened."""
        patch = status_patch(previous, new)
        if not patch:
            return False
        logging.getLogger(__name__).debug(
            "status of %s/%s changes: %s", namespace, name, sorted(patch)
        )
        result = await self.api.patch_status(
            f"{names.API_GROUP}/{names.API_VERSION}", names.PLURAL, namespace, name, patch
        )
        if state is not None and result is not None:
            state.written_version = result["metadata"].get("resourceVersion")
            state.written_status = dict(result.get("status") or {})
        return True

    @staticmethod
    def _previous_status(body: Mapping[str, Any], state: MonitorState) -> dict[str, Any]:
        version = body["metadata"].get("resourceVersion")
        if state.written_status is not None and not newer_or_same(version, state.written_version):
            return dict(state.written_status)  # our own write is newer than the body
        return dict(body.get("status") or {})

    # ------------------------------------------------------------------ one pass

    def desired_children(
        self,
        monitor: Monitor,
        state: MonitorState,
        shard_map: ShardMap,
        worker_replicas: int | None = None,
    ) -> list[dict[str, Any]]:
        """Return the rendered children, re-rendering only when an input changed."""
        key = builders.digest(
            [
                monitor.uid,
                monitor.generation,
                dict(monitor.labels),
                spec_dump(monitor.spec),
                shard_map.model_dump(mode="json"),
                worker_replicas,
            ]
        )
        if key != state.desired_key:
            state.desired = builders.build_children(
                monitor,
                self.settings,
                shard_map=shard_map,
                renderers=self.renderers,
                worker_replicas=worker_replicas,
            )
            state.desired_key = key
        return state.desired

    async def reconcile(
        self, body: Mapping[str, Any], state: MonitorState, logger: logging.Logger
    ) -> None:
        """Bring one monitor's children and status in line with its spec."""
        meta = body["metadata"]
        previous = self._previous_status(body, state)
        if meta.get("deletionTimestamp"):
            return  # garbage collection removes the children
        try:
            monitor = Monitor.from_body(body)
        except InvalidMonitor as exc:
            logger.error("%s", exc)
            conditions = merge_conditions(
                previous.get("conditions") or [],
                [
                    (READY, ConditionStatus.FALSE, "InvalidSpec", str(exc)),
                    (DEGRADED, ConditionStatus.TRUE, "InvalidSpec", str(exc)),
                ],
                generation=int(meta.get("generation") or 0),
                now=_now_text(),
            )
            await self.publish_status(
                meta["namespace"],
                meta["name"],
                previous,
                {**previous, "conditions": conditions},
                state,
            )
            return

        shards = monitor.spec.workers.shards
        # Never reconciled (no status yet): a brand-new monitor has no children to read.
        fresh = not previous.get("observedGeneration") and not previous.get("shardEpoch")
        config_key = ("v1", "ConfigMap", monitor.namespace, builders.config_name(monitor.name))
        published = builders.read_shard_map(await self.observed(config_key, fresh=fresh))
        shard_map = builders.next_shard_map(published, previous.get("shardEpoch"), monitor)
        epoch = shard_map.epoch
        if published is not None and published.epoch != epoch:
            logger.info(
                "resharding %s: %d -> %d shards, epoch %d -> %d",
                monitor.key,
                published.shards,
                shards,
                published.epoch,
                epoch,
            )

        # A scale-down keeps the StatefulSet at its size until every shard has handed
        # its streams over under the new map (docs/operator.md, "Scaling").
        sts_key = ("apps/v1", "StatefulSet", monitor.namespace, names.workers_service(monitor.name))
        running_sts = await self.observed(sts_key, fresh=fresh)
        running = int((running_sts or {}).get("spec", {}).get("replicas") or 0)
        draining = running > shards
        children = self.desired_children(
            monitor, state, shard_map, worker_replicas=running if draining else None
        )
        apply_error: str | None = None
        skipped: list[str] = []
        map_published = False
        credential: auth.Credential | None = None
        try:
            # Before the pods: they mount it and do not start without it.
            credential = await self.ensure_credential(monitor, state, logger, fresh=fresh)
            # The ConfigMap (with the shard map) alone first: pods never start without
            # it, and once it is written the new epoch is the published one.
            skipped = await self.apply_children(children[:1], logger, fresh=fresh)
            map_published = True
            creating_model = await self.hand_over_replicas(monitor, children, logger, fresh)
            skipped += await self.apply_children(children[1:], logger, fresh=fresh)
            if creating_model and monitor.spec.model.autoscaling is not None:
                # Start at the autoscaler's floor, not at the API server's default of 1.
                await self._apply_replicas(
                    self._model_deployment(monitor, children),
                    monitor.spec.model.autoscaling.min_replicas,
                    logger,
                )
            await self.prune(monitor, children, logger)
        except auth.CredentialError as exc:
            apply_error = f"monitor credential: {exc}"
            logger.error("%s; will retry", apply_error)
        except (ApiError, httpx.HTTPError) as exc:
            apply_error = f"applying children failed: {exc}"
            logger.error("%s; will retry", apply_error)

        epoch_changed = published is not None and published.epoch != epoch
        if map_published and (epoch_changed or draining):
            # Also when another child failed to apply: the shards must learn the epoch
            # the ConfigMap now publishes, or a scale-down could never settle.
            await self._push_shard_map(
                monitor,
                shard_map,
                max(published.shards if published else 0, shards, running),
                logger,
                credential,
            )
        state.handing_off, state.next_pass_in = None, None
        if draining and map_published:
            await self._finish_scale_down(monitor, state, shard_map, running, logger)
        await self._probe(monitor, state, shards)
        dep = self.cache.get(
            ("apps/v1", "Deployment", monitor.namespace, names.model_service(monitor.name))
        )
        sts = self.cache.get(
            ("apps/v1", "StatefulSet", monitor.namespace, names.workers_service(monitor.name))
        )
        obs = Observation(
            shards=shards,
            epoch=epoch,
            handing_off=state.handing_off,
            apply_error=apply_error,
            deployment=dep,
            statefulset=sts,
            drift=state.drift,
            skipped_kinds=tuple(skipped),
        )
        new = compute_status(monitor, previous, obs, dt.datetime.now(dt.UTC))
        await self.publish_status(monitor.namespace, monitor.name, previous, new, state)
        if apply_error:
            raise RetryLater(apply_error)


class RetryLater(RuntimeError):
    """The pass failed in a way the next pass may fix (the daemon backs off)."""


def _now_text() -> str:
    from driftwarden.operator.status import format_time

    return format_time(dt.datetime.now(dt.UTC))


__all__ = ["ChildCache", "MonitorState", "Reconciler", "RetryLater", "is_subset", "kind_of"]
