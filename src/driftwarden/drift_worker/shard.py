"""One drift-worker shard: owned streams, ingest, handoff and recovery (no networking).

:class:`ShardWorker` is the whole state machine of a shard; the HTTP service
(:mod:`driftwarden.drift_worker.app`) only moves bytes to and from it, and the
tests drive several in one process. Every change of state is a write-ahead-log
record first and is then applied by the same code that replays the log, so a
restart from snapshot + log reaches the identical state.

Stream status on a shard (docs/workers.md has the full protocol):

- ``live``: owned in the current epoch and held; batches are applied.
- ``frozen``: held but owned elsewhere; no batches are applied; the state is being
  pushed to its successor (the owner at the epoch it was frozen for).
- ``awaiting``: owned in the current epoch but not held yet; batches get a
  retryable refusal until the previous owner's handoff arrives.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftwarden.common.sharding import ShardMap, owner_of
from driftwarden.drift_worker import datadir, snapshot
from driftwarden.drift_worker.fileio import REAL, FileIO
from driftwarden.drift_worker.plan import MonitorPlan
from driftwarden.drift_worker.streams import (
    Rebaseline,
    SegmentError,
    StreamState,
)
from driftwarden.drift_worker.wal import FsyncPolicy, WalError, WalFailed, WriteAheadLog
from driftwarden.ingest import wire

log = logging.getLogger("driftwarden.worker")

REC_BATCH = 1
REC_MAP = 2
REC_HANDOFF_IN = 3
REC_HANDOFF_DONE = 4
REC_FRESH = 5
REC_PLAN = 6
REC_CONFIG = 7

# A storage error is logged at most this often (each refused batch is counted).
STORAGE_LOG_INTERVAL_S = 10.0

LIVE = "live"
FROZEN = "frozen"
AWAITING = "awaiting"


class Refusal(Exception):
    """A batch or handoff the shard will not take; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra


@dataclass
class IngestResult:
    """What an accepted batch did: the WAL record to wait for and the value counts.

    ``lsn`` is the record that must be durable before the batch is acknowledged: the
    batch's own, or for a batch of duplicates only, everything written so far (the
    originals may still be on their way to disk).
    """

    lsn: int | None
    values: int
    segments: int
    duplicates: int


@dataclass
class Counters:
    batches_accepted: int = 0
    batches_duplicate: int = 0
    batches_refused: int = 0
    batches_malformed: int = 0
    handoffs_in: int = 0
    handoffs_out: int = 0
    handoff_timeouts: int = 0
    handoffs_superseded: int = 0  # late copies refused here (this stream was started anew)
    handoffs_dropped: int = 0  # copies of ours refused as superseded, dropped
    lost_values: int = 0  # values in those dropped copies: lost to the handoff timeout
    snapshot_errors: int = 0
    last_ingest: float = 0.0
    values_since_snapshot: int = 0
    recovered_records: int = 0
    recovery_seconds: float = 0.0
    snapshots: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    # (stream, detector, change) -> re-baselines written by this process
    rebaselines: dict[tuple[str, str, str], int] = field(default_factory=dict)


class ShardWorker:
    """The state of one shard, mutated only through logged operations."""

    def __init__(
        self,
        plan: MonitorPlan,
        ordinal: int,
        *,
        shard_map: ShardMap | None = None,
        data_dir: str | Path | None = None,
        fsync: FsyncPolicy = "always",
        fsync_interval: float = 0.05,
        wal_segment_bytes: int = 64 * 1024 * 1024,
        handoff_timeout_s: float = 600.0,
        clock: Any = time.monotonic,
        io: FileIO = REAL,
    ) -> None:
        if ordinal < 0:
            raise ValueError(f"ordinal must be >= 0, got {ordinal}")
        self.plan = plan
        self.ordinal = ordinal
        self.handoff_timeout_s = handoff_timeout_s
        self._clock = clock
        self.lock = threading.RLock()
        self._snapshot_lock = threading.Lock()
        self.counters = Counters()
        self.map: ShardMap | None = None
        self.history: dict[int, int] = {}
        self.streams: dict[str, StreamState] = {}
        self.frozen: dict[str, int] = {}  # stream -> epoch it was frozen for
        self.awaiting: dict[str, float] = {}  # stream -> since (monotonic; not durable)
        self.frozen_at: dict[str, float] = {}  # stream -> wall time it froze here (not durable)
        self.handoff_pauses: dict[str, float] = {}  # stream -> seconds from freeze to install here
        # streams of the monitor when this shard last started (None: a brand-new shard)
        self.known_streams: frozenset[str] | None = None
        # per stream: reference digest and detector identities in effect (REC_CONFIG)
        self.identities: dict[str, dict[str, Any]] | None = None
        # stream -> newest epoch at which this shard started it empty after the handoff
        # timeout: a copy frozen for that epoch or earlier is older than its live data
        self.superseded: dict[str, int] = {}
        self._storage_logged_at = float("-inf")
        self._refused_since_log = 0
        self.io = io
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.wal: WriteAheadLog | None = None
        self._dir_lock: datadir.DataDirLock | None = None
        if self.data_dir is not None:
            self._dir_lock = datadir.DataDirLock(self.data_dir)
            try:
                self._open_data_dir(fsync, fsync_interval, wal_segment_bytes)
            except BaseException:
                self.close()
                raise
        else:
            self._recover()
        if shard_map is not None:
            try:
                self.adopt_map(shard_map)
            except Refusal as r:
                raise OSError(r.detail) from None
        if self.map is None:
            raise ValueError("no shard map: pass shard_map or start from a data_dir that has one")
        current = sorted(self.plan.streams)
        with self.lock:
            if self.known_streams != frozenset(current):
                self._log(REC_PLAN, json.dumps(current).encode())
                self._apply_plan(current)
            identities = self.plan.detector_identities()
            if self.identities != identities:
                self._log(REC_CONFIG, json.dumps({"detectors": identities}).encode())
                self._apply_config(identities, live=True)

    # ------------------------------------------------------------------ recovery

    def _open_data_dir(self, fsync: FsyncPolicy, fsync_interval: float, segment_bytes: int) -> None:
        assert self.data_dir is not None
        recorded = datadir.check_identity(self.data_dir, self.plan.monitor, self.ordinal)
        self.wal = WriteAheadLog(
            self.data_dir / "wal",
            fsync=fsync,
            fsync_interval=fsync_interval,
            segment_bytes=segment_bytes,
            io=self.io,
        )
        self._recover()
        if self.map is not None:  # a directory from before shard.json was recorded
            datadir.check_owner(
                self.data_dir, self.plan.monitor, self.ordinal, self.map.monitor, None
            )
        if not recorded:
            datadir.record_identity(self.data_dir, self.plan.monitor, self.ordinal)

    def _recover(self) -> None:
        if self.data_dir is None or self.wal is None:
            return
        started = time.perf_counter()
        loaded = snapshot.load_latest(self.data_dir / "snapshots")
        after = loaded.lsn
        if loaded.state is not None:
            datadir.check_owner(
                self.data_dir,
                self.plan.monitor,
                self.ordinal,
                (loaded.state.get("map") or {}).get("monitor"),
                loaded.state.get("ordinal"),
            )
            self._restore(loaded.state)
        if self.wal.written_lsn < after:
            if self.wal.fsync != "never":
                raise WalError(
                    f"the write-ahead log in {self.wal.directory} ends at lsn {self.wal.written_lsn}, "
                    f"behind the snapshot of lsn {after}: fsynced records are missing, so records "
                    "acknowledged after the snapshot may be lost. Restore the volume from a backup."
                )
            log.warning(
                "WAL ends at lsn %d, behind snapshot lsn %d (fsync=never and a node crash); "
                "going on after the snapshot",
                self.wal.written_lsn,
                after,
            )
            self.wal.continue_after(after)
        count = 0
        try:
            for _lsn, rtype, payload in self.wal.replay(after):
                self._apply_record(rtype, payload)
                count += 1
        except WalError as exc:
            if loaded.damaged:
                raise WalError(f"{exc} (damaged snapshots: {'; '.join(loaded.damaged)})") from None
            raise
        self.counters.recovered_records = count
        self.counters.recovery_seconds = time.perf_counter() - started
        if loaded.state is not None or count:
            log.info(
                "shard %d recovered %d streams from snapshot lsn %d + %d WAL records in %.2fs (epoch %s)",
                self.ordinal,
                len(self.streams),
                after,
                count,
                self.counters.recovery_seconds,
                self.map.epoch if self.map else None,
            )

    def _restore(self, state: dict[str, Any]) -> None:
        self.map = ShardMap.model_validate(state["map"]) if state["map"] else None
        self.history = {int(k): int(v) for k, v in state["history"].items()}
        self.streams = {}
        self.frozen = {}
        for name, entry in state["streams"].items():
            spec = self.plan.spec(name)
            if spec is None:
                log.error(
                    "snapshot holds stream %r that the monitor no longer has; dropping it", name
                )
                continue
            self.streams[name] = StreamState.from_state(
                spec, entry["state"], self.plan.factory, self.plan.join
            )
            if entry["frozen_epoch"] is not None:
                self.frozen[name] = int(entry["frozen_epoch"])
        now = self._clock()
        self.awaiting = {
            name: now for name in state["awaiting"] if self.plan.spec(name) is not None
        }
        known = state.get("known_streams")
        self.known_streams = None if known is None else frozenset(known)
        self.identities = state.get("detector_identities")
        self.superseded = {k: int(v) for k, v in state.get("superseded", {}).items()}

    def _apply_record(self, rtype: int, payload: bytes) -> None:
        if rtype == REC_BATCH:
            self._apply_batch(wire.decode(payload))
        elif rtype == REC_MAP:
            self._transition(ShardMap.model_validate_json(payload))
        elif rtype == REC_HANDOFF_IN:
            self._install(json.loads(payload))
        elif rtype == REC_HANDOFF_DONE:  # also a copy dropped as superseded
            doc = json.loads(payload)
            self._drop_frozen(doc["stream"])
        elif rtype == REC_FRESH:
            self._start_fresh(json.loads(payload)["stream"])
        elif rtype == REC_PLAN:
            self._apply_plan(json.loads(payload))
        elif rtype == REC_CONFIG:
            self._apply_config(json.loads(payload)["detectors"], live=False)
        else:
            raise ValueError(f"unknown WAL record type {rtype}")

    def _apply_plan(self, streams: list[str]) -> None:
        """Adopt the monitor's stream list: streams new to the monitor start empty here.

        A stream the monitor did not have when this shard last ran cannot be held by
        any shard, so its owner starts it at once instead of awaiting a handoff.
        """
        now = frozenset(streams)
        previous = self.known_streams
        self.known_streams = now
        if previous is None or self.map is None:
            return
        added = sorted((now - previous) & set(self.plan.streams))
        for name in added:
            if self.map.owner(name) == self.ordinal and name not in self.streams:
                self.awaiting.pop(name, None)
                self.streams[name] = StreamState.fresh(
                    self.plan.streams[name], self.plan.factory, self.plan.join
                )
        removed = sorted(previous - now)
        if added or removed:
            log.info(
                "shard %d: monitor streams changed: added %s, removed %s",
                self.ordinal,
                added,
                removed,
            )

    def _apply_config(self, identities: dict[str, dict[str, Any]], *, live: bool) -> None:
        """Adopt the detector identities of a configuration; re-baseline what they change.

        Logged at start-up whenever the monitor's detectors or references differ from
        those in effect in the log (a new bundle, new ``alpha``/``window``/...), so a
        replay re-baselines at the same place: records before it were applied under
        the old configuration, records after it under the new one. A detector of a
        stream that existed before is re-baselined when its identity changes, even if
        the replay rebuilt it from today's configuration (docs/workers.md).
        """
        previous = self.identities
        self.identities = identities
        for name in sorted(self.streams):
            before = None if previous is None else previous.get(name)
            now = identities.get(name) or {"reference": None, "detectors": {}}
            change = self.streams[name].rebaseline(
                self.plan.factory,
                now["detectors"],
                None if before is None else before["detectors"],
                new_reference=before is not None and before["reference"] != now["reference"],
            )
            if live:
                self._count_rebaseline(name, change)

    def _count_rebaseline(self, name: str, change: Rebaseline) -> None:
        if not change:
            return
        for detector, kind in change.items():
            key = (name, detector, kind)
            self.counters.rebaselines[key] = self.counters.rebaselines.get(key, 0) + 1
        log.info(
            "shard %d: stream %s re-baselined to the monitor's configuration: "
            "changed %s, added %s, removed %s (its other detectors keep their state)",
            self.ordinal,
            name,
            list(change.changed),
            list(change.added),
            list(change.removed),
        )

    def _log(self, rtype: int, payload: bytes) -> int | None:
        return self.wal.append(rtype, payload) if self.wal is not None else None

    def storage_refusal(self, exc: OSError) -> Refusal:
        """The answer while the WAL cannot be written: retry later, nothing was taken."""
        if isinstance(exc, WalFailed):
            return Refusal(
                503,
                "storage_failed",
                f"shard {self.ordinal}: {exc}; retry (this shard restarts to recover)",
            )
        now = time.monotonic()
        self._refused_since_log += 1
        if now - self._storage_logged_at >= STORAGE_LOG_INTERVAL_S:
            # once per interval: a full volume refuses every batch, and the log may be on it
            log.error(
                "shard %d cannot append to its WAL: %s; refusing batches until it can "
                "(%d refused since the last such line)",
                self.ordinal,
                exc,
                self._refused_since_log,
            )
            self._storage_logged_at, self._refused_since_log = now, 0
        return Refusal(
            503,
            "storage_error",
            f"shard {self.ordinal} cannot write its WAL in {self.data_dir}: {exc}; "
            "check the volume (full? read-only?)",
        )

    @property
    def storage_failed(self) -> bool:
        """True once an fsync failed: the process must restart to recover from disk."""
        return self.wal is not None and self.wal.failed is not None

    def storage_errors(self) -> dict[str, int]:
        """Return failed storage operations by kind, since this process started."""
        if self.wal is None:
            return {}
        return {
            "wal_write": self.wal.write_errors,
            "wal_fsync": self.wal.fsync_errors,
            "snapshot": self.counters.snapshot_errors,
        }

    # ------------------------------------------------------------------ shard map

    @property
    def epoch(self) -> int:
        assert self.map is not None
        return self.map.epoch

    def adopt_map(self, shard_map: ShardMap) -> bool:
        """Move to ``shard_map`` if it is newer than the current map; return True if moved."""
        if shard_map.monitor != self.plan.monitor:
            raise Refusal(
                400,
                "wrong_monitor",
                f"shard map is for monitor {shard_map.monitor!r}, this worker serves {self.plan.monitor!r}",
            )
        with self.lock:
            if self.map is not None and shard_map.epoch <= self.map.epoch:
                return False
            if self.map is not None and shard_map.epoch > self.map.epoch + 1:
                log.info(
                    "shard %d: epoch jumps from %d to %d",
                    self.ordinal,
                    self.map.epoch,
                    shard_map.epoch,
                )
            # No fsync needed: every later record that matters (handoffs) is fsynced,
            # and the log is sequential, so this one is durable by then.
            try:
                self._log(REC_MAP, shard_map.model_dump_json().encode())
            except OSError as exc:
                raise self.storage_refusal(exc) from None
            self._transition(shard_map)
            return True

    def _previous_owner(self, stream: str, epoch: int) -> int | None:
        shards = self.history.get(epoch - 1)
        return None if shards is None else owner_of(self.plan.monitor, stream, shards)

    def _transition(self, new: ShardMap) -> None:
        old = self.map
        if old is not None:
            self.history[old.epoch] = old.shards
        for e, n in new.history:
            self.history.setdefault(e, n)
        self.map = new
        now = self._clock()
        moved_out, waiting = [], []
        for name in self.plan.streams:
            owner = new.owner(name)
            if name in self.streams:
                if name not in self.frozen and owner != self.ordinal:
                    self.frozen[name] = new.epoch
                    self.frozen_at[name] = time.time()
                    moved_out.append(name)
            elif owner == self.ordinal:
                if name in self.awaiting:
                    continue
                prev = self._previous_owner(name, new.epoch)
                if prev == self.ordinal or (prev is None and new.epoch <= 1 and old is None):
                    self.streams[name] = StreamState.fresh(
                        self.plan.streams[name], self.plan.factory, self.plan.join
                    )
                else:
                    self.awaiting[name] = now
                    waiting.append(name)
            else:
                self.awaiting.pop(name, None)
        if moved_out or waiting:
            log.info(
                "shard %d at epoch %d (%d shards): handing off %d streams, awaiting %d",
                self.ordinal,
                new.epoch,
                new.shards,
                len(moved_out),
                len(waiting),
            )

    def status_of(self, stream: str) -> str | None:
        """Return ``live``, ``frozen``, ``awaiting`` or None (not this shard's business)."""
        if stream in self.awaiting:
            return AWAITING
        if stream in self.streams:
            return FROZEN if stream in self.frozen else LIVE
        return None

    # ------------------------------------------------------------------ ingest

    def ingest(self, body: bytes, content_type: str = wire.CONTENT_TYPE) -> IngestResult:
        """Validate, log and apply one batch; raise :class:`Refusal` if it is not taken."""
        try:
            if content_type.startswith(wire.JSON_CONTENT_TYPE):
                try:
                    doc = json.loads(body)
                except ValueError as exc:
                    raise wire.WireError(f"body is not valid JSON: {exc}") from None
                batch, raw = wire.from_json(doc), None
            else:
                batch, raw = wire.decode(body), body
        except wire.WireError as exc:
            with self.lock:
                self.counters.batches_malformed += 1
            raise Refusal(400, "malformed_batch", str(exc)) from None
        with self.lock:
            try:
                fresh = self._admit(batch)
            except Refusal as refusal:
                if refusal.status == 400:
                    self.counters.batches_malformed += 1
                else:
                    self.counters.batches_refused += 1
                    self.counters.by_reason[refusal.code] = (
                        self.counters.by_reason.get(refusal.code, 0) + 1
                    )
                raise
            duplicates = len(batch.segments) - len(fresh)
            if not fresh:
                self.counters.batches_duplicate += 1
                if self.wal is not None and self.wal.failed is not None:
                    raise self.storage_refusal(self.wal.failed)
                # The originals were logged, but maybe not yet fsynced: the caller waits
                # for everything written so far before acknowledging.
                wait = self.wal.written_lsn if self.wal is not None else None
                return IngestResult(lsn=wait, values=0, segments=0, duplicates=duplicates)
            if raw is None or duplicates:
                raw = wire.encode(wire.Batch(batch.sender, batch.epoch, fresh, batch.monitor))
            try:
                lsn = self._log(REC_BATCH, raw)
            except OSError as exc:
                self.counters.batches_refused += 1
                self.counters.by_reason["storage_error"] = (
                    self.counters.by_reason.get("storage_error", 0) + 1
                )
                raise self.storage_refusal(exc) from None
            values = self._apply_batch(wire.Batch(batch.sender, batch.epoch, fresh, batch.monitor))
            self.counters.batches_accepted += 1
            self.counters.last_ingest = time.time()
            self.counters.values_since_snapshot += values
            return IngestResult(lsn=lsn, values=values, segments=len(fresh), duplicates=duplicates)

    def _admit(self, batch: wire.Batch) -> list[wire.Segment]:
        """Check a batch against streams and ownership; return its not-yet-applied segments."""
        if batch.monitor and batch.monitor != self.plan.monitor:
            raise Refusal(
                400,
                "wrong_monitor",
                f"batch is for monitor {batch.monitor!r}, this worker serves {self.plan.monitor!r}",
            )
        not_owned, awaiting = [], []
        last_seq: dict[str, int] = {}
        for i, seg in enumerate(batch.segments):
            spec = self.plan.spec(seg.stream)
            if spec is None:
                raise Refusal(
                    400,
                    "unknown_stream",
                    f"segments[{i}]: monitor {self.plan.monitor!r} has no stream {seg.stream!r}",
                    segment=i,
                )
            if seg.seq <= last_seq.get(seg.stream, -1):
                raise Refusal(
                    400,
                    "seq_order",
                    f"segments[{i}]: stream {seg.stream!r} repeats or lowers seq {seg.seq} within one batch",
                )
            last_seq[seg.stream] = seg.seq
            status = self.status_of(seg.stream)
            if status == AWAITING or (
                status == FROZEN and self.map.owner(seg.stream) == self.ordinal
            ):  # type: ignore[union-attr]
                # owned here again, but a stale copy must first go round to its successor
                awaiting.append(seg.stream)
            elif status != LIVE:
                not_owned.append(seg.stream)
            else:
                try:
                    self.streams[seg.stream].check(seg)
                except SegmentError as exc:
                    raise Refusal(400, "bad_segment", f"segments[{i}]: {exc}", segment=i) from None
        if not_owned:
            raise Refusal(
                409,
                "not_owner",
                f"shard {self.ordinal} does not own {sorted(set(not_owned))} at epoch {self.epoch}; "
                f"route by the shard map in this answer (batch was routed by epoch {batch.epoch})",
            )
        if awaiting:
            raise Refusal(
                503,
                "handoff_pending",
                f"shard {self.ordinal} owns {sorted(set(awaiting))} at epoch {self.epoch} but is still "
                "waiting for their state from the previous owner; retry shortly",
            )
        return [
            s
            for s in batch.segments
            if not self.streams[s.stream].is_duplicate(batch.sender, s.seq)
        ]

    def _apply_batch(self, batch: wire.Batch) -> int:
        values = 0
        for seg in batch.segments:
            stream = self.streams.get(seg.stream)
            if stream is not None:  # absent only on replay, for a stream the monitor dropped
                values += stream.apply(batch.sender, seg)
        return values

    # ------------------------------------------------------------------ handoff

    def outgoing(self) -> list[tuple[str, int, int]]:
        """Return ``(stream, target ordinal, generation)`` for every frozen stream to push."""
        with self.lock:
            out: list[tuple[str, int, int]] = []
            if self.storage_failed:
                return out  # what we hold may not be durable: hand nothing on
            for name, epoch in self.frozen.items():
                shards = self.history.get(epoch) if epoch != self.epoch else self.map.shards  # type: ignore[union-attr]
                if shards is None:
                    shards = self.map.shards  # type: ignore[union-attr]
                out.append(
                    (name, owner_of(self.plan.monitor, name, shards), self.streams[name].generation)
                )
            return out

    def handoff_payload(self, stream: str) -> dict[str, Any]:
        """Return the transfer document of a frozen stream (state, generation, our map)."""
        with self.lock:
            if stream not in self.frozen:
                raise Refusal(
                    409, "not_frozen", f"stream {stream!r} is not frozen on shard {self.ordinal}"
                )
            assert self.map is not None
            return {
                "monitor": self.plan.monitor,
                "stream": stream,
                "generation": self.streams[stream].generation,
                "from": self.ordinal,
                "frozen_for": self.frozen[stream],
                "frozen_at": self.frozen_at.get(stream),
                "shard_map": self.map.model_dump(mode="json"),
                "state": self.streams[stream].to_state(),
            }

    def receive_handoff(self, doc: dict[str, Any], raw: bytes | None = None) -> str:
        """Install a pushed stream state; return ``installed`` or ``duplicate``.

        ``raw``: the JSON ``doc`` was parsed from, logged as is (saves re-encoding).

        Accepted only where the protocol sends it: a stream this shard awaits (or
        holds as a stale frozen copy) and owned at the epoch the copy was frozen
        for, or one it owned then and must pass on. A copy frozen for an epoch at or
        before which this shard started the stream empty (handoff timeout), or aimed
        at a stream live here, is older than the data here and is refused with 409
        ``handoff_superseded``, never installed over it (docs/workers.md).
        """
        try:
            stream = doc["stream"]
            generation = int(doc["generation"])
            shard_map = ShardMap.model_validate(doc["shard_map"])
            # absent from shards of an older version: they push to the owner at their epoch
            frozen_for = int(doc.get("frozen_for", shard_map.epoch))
            state = doc["state"]
            if doc.get("monitor") != self.plan.monitor:
                raise Refusal(
                    400,
                    "wrong_monitor",
                    f"handoff for monitor {doc.get('monitor')!r}, this worker serves {self.plan.monitor!r}",
                )
            if self.plan.spec(stream) is None:
                raise Refusal(
                    400, "unknown_stream", f"monitor {self.plan.monitor!r} has no stream {stream!r}"
                )
            if not isinstance(state, dict) or state.get("generation") != generation:
                raise Refusal(
                    400,
                    "bad_handoff",
                    "handoff 'state' must be a stream state of the stated generation",
                )
            if not 1 <= frozen_for <= shard_map.epoch:
                raise Refusal(
                    400,
                    "bad_handoff",
                    f"handoff 'frozen_for' must be an epoch from 1 to the carried map's "
                    f"{shard_map.epoch}, got {frozen_for}",
                )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, Refusal):
                raise
            raise Refusal(
                400, "bad_handoff", f"handoff document is incomplete or invalid: {exc}"
            ) from None
        self.adopt_map(shard_map)
        with self.lock:
            held = self.streams.get(stream)
            floor = self.superseded.get(stream, 0)
            if frozen_for <= floor:
                self._refuse_superseded(
                    stream,
                    doc,
                    f"shard {self.ordinal} started {stream!r} empty at epoch {floor} after waiting "
                    f"{self.handoff_timeout_s:.0f}s for it; this copy, frozen for epoch {frozen_for}, "
                    "is older than the data it has taken since",
                )
            if held is not None and held.generation > generation:
                return (
                    "duplicate"  # we already installed this copy (its ack was lost) or a later one
                )
            if held is not None and stream not in self.frozen:
                self._refuse_superseded(
                    stream,
                    doc,
                    f"stream {stream!r} is live on shard {self.ordinal} (generation "
                    f"{held.generation}); a copy of generation {generation} cannot replace it",
                )
            owner_then = self._owner_at(stream, frozen_for)
            if held is None and owner_then not in (self.ordinal, None):
                raise Refusal(
                    409,
                    "not_awaited",
                    f"stream {stream!r} frozen for epoch {frozen_for} goes to shard {owner_then}, "
                    f"not to shard {self.ordinal}",
                )
            if (
                held is None
                and stream not in self.awaiting
                and (
                    owner_then is None or self.map.owner(stream) == self.ordinal  # type: ignore[union-attr]
                )
            ):
                raise Refusal(
                    409,
                    "not_awaited",
                    f"shard {self.ordinal} does not await stream {stream!r} at epoch {self.epoch}",
                )
            # Build it first: a state the detectors cannot restore is refused, not logged.
            try:
                built = StreamState.from_state(
                    self.plan.streams[stream], state, self.plan.factory, self.plan.join
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise Refusal(
                    400, "bad_handoff", f"stream {stream!r}: state cannot be restored: {exc}"
                ) from None
            record = {
                "stream": stream,
                "generation": generation,
                "from": doc.get("from"),
                "state": state,
            }
            try:
                lsn = self._log(
                    REC_HANDOFF_IN, raw if raw is not None else json.dumps(record).encode()
                )
                self._install(record, built, live=True)
                if lsn is not None and self.wal is not None:
                    self.wal.sync(lsn)  # the sender drops its copy on our answer: durable first
            except OSError as exc:
                raise self.storage_refusal(exc) from None
            self.counters.handoffs_in += 1
            frozen_at = doc.get("frozen_at")
            if isinstance(frozen_at, (int, float)):
                self.handoff_pauses[stream] = max(0.0, time.time() - float(frozen_at))
            return "installed"

    def _owner_at(self, stream: str, epoch: int) -> int | None:
        assert self.map is not None
        shards = self.map.shards if epoch == self.map.epoch else self.history.get(epoch)
        return None if shards is None else owner_of(self.plan.monitor, stream, shards)

    def _refuse_superseded(self, stream: str, doc: dict[str, Any], why: str) -> None:
        self.counters.handoffs_superseded += 1
        state = doc.get("state")
        values = state.get("values_total") if isinstance(state, dict) else None
        log.error(
            "shard %d refuses a late handoff of %s from shard %s (%s values): %s",
            self.ordinal,
            stream,
            doc.get("from"),
            values,
            why,
        )
        raise Refusal(409, "handoff_superseded", why, stream=stream)

    def _install(
        self, doc: dict[str, Any], built: StreamState | None = None, *, live: bool = False
    ) -> None:
        name = doc["stream"]
        if name not in self.plan.streams:
            return  # replay of a stream the monitor has dropped since
        state = built or StreamState.from_state(
            self.plan.streams[name], doc["state"], self.plan.factory, self.plan.join
        )
        # The sender may run another configuration (during a rolling update): the
        # state says what its detectors are; those that differ from ours start again.
        in_effect = None if self.identities is None else self.identities.get(name)
        change = state.rebaseline(
            self.plan.factory, None if in_effect is None else in_effect["detectors"]
        )
        if live:
            self._count_rebaseline(name, change)
        state.generation = int(doc["generation"]) + 1
        self.streams[name] = state
        self.awaiting.pop(name, None)
        self.frozen.pop(name, None)
        assert self.map is not None
        if self.map.owner(name) != self.ordinal:
            self.frozen[name] = self.map.epoch  # passed on to the current owner
            self.frozen_at[name] = time.time()

    def handoff_acked(self, stream: str, generation: int) -> bool:
        """Drop a frozen stream after its successor confirmed it; return True if dropped."""
        with self.lock:
            held = self.streams.get(stream)
            if held is None or stream not in self.frozen or held.generation != generation:
                return False
            # No fsync: if this record is lost the stream is pushed again and the
            # successor answers "duplicate".
            self._log(
                REC_HANDOFF_DONE, json.dumps({"stream": stream, "generation": generation}).encode()
            )
            self._drop_frozen(stream)
            self.counters.handoffs_out += 1
            return True

    def handoff_superseded(self, stream: str, generation: int) -> int | None:
        """Drop a frozen copy its successor refused as older than its data; return its values.

        The successor started the stream empty after the handoff timeout, so this
        copy's window can no longer be merged: its values are counted as lost.
        """
        with self.lock:
            held = self.streams.get(stream)
            if held is None or stream not in self.frozen or held.generation != generation:
                return None
            lost = held.values_total
            record = {
                "stream": stream,
                "generation": generation,
                "superseded": True,
                "values": lost,
            }
            self._log(REC_HANDOFF_DONE, json.dumps(record).encode())
            self._drop_frozen(stream)
            self.counters.handoffs_dropped += 1
            self.counters.lost_values += lost
            log.error(
                "shard %d: the successor of stream %s started it empty after the handoff timeout "
                "and refused this copy; its %d values are lost (counted in %s)",
                self.ordinal,
                stream,
                lost,
                "driftwarden_worker_lost_values_total",
            )
            return lost

    def _drop_frozen(self, stream: str) -> None:
        self.streams.pop(stream, None)
        self.frozen.pop(stream, None)
        self.frozen_at.pop(stream, None)
        came_back = self.map is not None and self.map.owner(stream) == self.ordinal
        if came_back and stream in self.plan.streams:
            # it moved back here while this stale copy went round: the real one is coming
            self.awaiting.setdefault(stream, self._clock())

    def expire_awaiting(self, now: float | None = None) -> list[str]:
        """Start streams fresh whose handoff did not come within the timeout; return them."""
        now = self._clock() if now is None else now
        with self.lock:
            late = [
                s for s, since in self.awaiting.items() if now - since >= self.handoff_timeout_s
            ]
            for name in late:
                self._log(REC_FRESH, json.dumps({"stream": name}).encode())
                self._start_fresh(name)
                self.counters.handoff_timeouts += 1
                log.error(
                    "shard %d: no handoff for stream %s within %.0fs of epoch %d; starting it EMPTY. "
                    "Its previous window is lost. Check that the previous owner is running "
                    "(its /status lists outgoing handoffs) and raise "
                    "DRIFTWARDEN_WORKER__HANDOFF_TIMEOUT_S if shards take longer to start.",
                    self.ordinal,
                    name,
                    self.handoff_timeout_s,
                    self.epoch,
                )
            return late

    def _start_fresh(self, name: str) -> None:
        if name in self.awaiting and self.map is not None:
            self.superseded[name] = self.map.epoch
        self.awaiting.pop(name, None)
        if name not in self.streams and name in self.plan.streams:
            self.streams[name] = StreamState.fresh(
                self.plan.streams[name], self.plan.factory, self.plan.join
            )

    # ------------------------------------------------------------------ snapshots

    def capture(self) -> tuple[int, dict[str, Any]]:
        """Return ``(lsn, state)``: the full state after WAL record ``lsn``."""
        with self.lock:
            assert self.map is not None
            lsn = self.wal.written_lsn if self.wal is not None else 0
            state = {
                "ordinal": self.ordinal,
                "map": self.map.model_dump(mode="json"),
                "history": {str(k): v for k, v in self.history.items()},
                "streams": {
                    name: {"state": st.to_state(), "frozen_epoch": self.frozen.get(name)}
                    for name, st in self.streams.items()
                },
                "awaiting": sorted(self.awaiting),
                "known_streams": None if self.known_streams is None else sorted(self.known_streams),
                "detector_identities": self.identities,
                "superseded": dict(self.superseded),
            }
            self.counters.values_since_snapshot = 0
            return lsn, state

    def take_snapshot(self) -> Path | None:
        """Write a snapshot and drop WAL segments no kept snapshot needs; return its path."""
        if self.data_dir is None or self.wal is None:
            return None
        with self._snapshot_lock:  # the periodic and the shutdown snapshot may overlap
            return self._write_snapshot()

    def _write_snapshot(self) -> Path:
        assert self.data_dir is not None and self.wal is not None
        lsn, state = self.capture()
        self.wal.sync(lsn)  # never let a snapshot get ahead of the durable log
        directory = self.data_dir / "snapshots"
        try:
            path = snapshot.write_snapshot(directory, lsn, state, io=self.io)
        except OSError as exc:
            self.counters.snapshot_errors += 1
            log.error(
                "shard %d cannot write a snapshot in %s: %s; the WAL keeps growing until it can",
                self.ordinal,
                directory,
                exc,
            )
            raise
        oldest = snapshot.oldest_kept_lsn(directory)
        if oldest is not None:
            self.wal.truncate_before(oldest + 1)
        self.counters.snapshots += 1
        return path

    def close(self) -> None:
        try:
            if self.wal is not None:
                self.wal.close()
        finally:
            if self._dir_lock is not None:
                self._dir_lock.release()

    # ------------------------------------------------------------------ read side

    def fingerprint(self, streams: Iterable[str] | None = None) -> dict[str, Any]:
        """Return the detector states of held streams (for equality checks in tests)."""
        with self.lock:
            names = self.streams if streams is None else [s for s in streams if s in self.streams]
            return {name: self.streams[name].to_state() for name in names}
