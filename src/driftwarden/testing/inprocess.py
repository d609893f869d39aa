"""Shards in one process with handoffs delivered by direct calls.

The reference model of the protocol, used by the property tests and benchmarks:
the same :class:`~driftwarden.drift_worker.shard.ShardWorker` objects the HTTP
service wraps, with routing by the shard map and handoffs pumped synchronously.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from driftwarden.common.sharding import ShardMap
from driftwarden.drift_worker.plan import MonitorPlan
from driftwarden.drift_worker.shard import LIVE, Refusal, ShardWorker
from driftwarden.drift_worker.wal import FsyncPolicy
from driftwarden.ingest import wire


class InProcessCluster:
    """N shards of one monitor, routed and resharded like the real service."""

    def __init__(
        self,
        plan: MonitorPlan,
        shards: int,
        *,
        data_root: str | Path | None = None,
        fsync: FsyncPolicy = "never",
        epoch: int = 1,
    ) -> None:
        self.plan = plan
        self.data_root = Path(data_root) if data_root is not None else None
        self.fsync = fsync
        self.map = ShardMap(monitor=plan.monitor, epoch=epoch, shards=shards)
        self.workers: dict[int, ShardWorker] = {}
        for k in range(shards):
            self.workers[k] = self._start(k)

    def _start(self, ordinal: int) -> ShardWorker:
        data_dir = None if self.data_root is None else self.data_root / f"shard-{ordinal}"
        return ShardWorker(
            self.plan, ordinal, shard_map=self.map, data_dir=data_dir, fsync=self.fsync
        )

    def route(self, batch: wire.Batch) -> dict[int, wire.Batch]:
        """Split ``batch`` by owner shard under the current map."""
        parts: dict[int, list[wire.Segment]] = {}
        for seg in batch.segments:
            parts.setdefault(self.map.owner(seg.stream), []).append(seg)
        return {
            k: wire.Batch(batch.sender, self.map.epoch, segs, batch.monitor)
            for k, segs in parts.items()
        }

    def deliver(self, batch: wire.Batch) -> int:
        """Route and ingest ``batch``, pumping handoffs until every part is accepted."""
        values = 0
        for ordinal, part in self.route(batch).items():
            body = wire.encode(part)
            for _ in range(8):
                try:
                    values += self.workers[ordinal].ingest(body).values
                    break
                except Refusal as refusal:
                    if refusal.status != 503:
                        raise
                    self.pump_handoffs()
            else:
                raise RuntimeError(f"shard {ordinal} kept refusing a batch with 503")
        return values

    def pump_handoffs(self) -> int:
        """Push every frozen stream to its successor until none is left; return pushes made."""
        pushes = 0
        while True:
            moved = 0
            for worker in list(self.workers.values()):
                for stream, target, generation in worker.outgoing():
                    doc = worker.handoff_payload(stream)
                    self.workers[target].receive_handoff(doc)
                    worker.handoff_acked(stream, generation)
                    moved += 1
            pushes += moved
            if not moved:
                return pushes

    def reshard(self, shards: int, *, pump: bool = True) -> None:
        """Publish the next epoch with ``shards`` shards to every shard (new ones started)."""
        self.map = self.map.advance(shards)
        for k in range(shards):
            if k not in self.workers:
                self.workers[k] = self._start(k)
        for worker in self.workers.values():
            worker.adopt_map(self.map)
        if pump:
            self.pump_handoffs()
            self.retire()

    def retire(self) -> None:
        """Stop shards beyond the current count once they hold nothing."""
        for k in sorted(self.workers):
            if k >= self.map.shards and not self.workers[k].streams:
                self.workers.pop(k).close()

    def fingerprint(self) -> dict[str, Any]:
        """Return every live stream's state, whichever shard holds it."""
        out: dict[str, Any] = {}
        for worker in self.workers.values():
            for name in worker.streams:
                if worker.status_of(name) == LIVE:
                    if name in out:
                        raise AssertionError(f"stream {name} is live on two shards")
                    out[name] = worker.streams[name].to_state()
        return out

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()
