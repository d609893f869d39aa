"""Stream ownership: rendezvous (highest-random-weight) hashing and the shard map.

Every stream of every monitor has exactly one owner shard. Going from N to M
shards moves only the streams whose highest-weight ordinal changes, so a
reshard touches as few windows as possible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from driftwarden.common.spec import MAX_SHARDS


def _weight(monitor: str, stream: str, ordinal: int) -> int:
    key = f"{monitor}\x00{stream}\x00{ordinal}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def owner_of(monitor: str, stream: str, shards: int) -> int:
    """Return the ordinal (0..shards-1) that owns ``stream`` of ``monitor``."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    return max(range(shards), key=lambda k: (_weight(monitor, stream, k), -k))


def assign(monitor: str, streams: Iterable[str], shards: int) -> dict[str, int]:
    """Return the owner ordinal of every stream."""
    return {s: owner_of(monitor, s, shards) for s in streams}


# Epochs of history a shard map carries: enough for a shard that missed a few
# reshards to find each stream's previous owner.
MAX_HISTORY = 32
# How far ahead of a shard's epoch a map pushed over the network may be. The operator
# advances one epoch per reshard and pushes each; a shard that was away longer reads
# the newest map from its mounted ConfigMap. A map further ahead is refused, so a
# forged epoch (2**62) cannot make a shard ignore every real map after it.
MAX_EPOCH_AHEAD = MAX_HISTORY


class ShardMap(BaseModel):
    """Which shard owns what, at which epoch; published by the operator.

    ``epoch`` grows by one every time ``shards`` changes. Senders route by it and
    workers refuse batches for streams they do not own in their current epoch.
    ``history`` lists ``(epoch, shards)`` of earlier epochs, oldest first: a worker
    that gains a stream looks up its previous owner there to know whether to wait
    for a state handoff (docs/workers.md). Build successors with :meth:`advance`.
    """

    model_config = ConfigDict(frozen=True)

    monitor: str = Field(
        max_length=317,  # namespace (63) + "/" + name (253)
        description="Monitor key, '<namespace>/<name>'.",
    )
    epoch: int = Field(ge=0, lt=2**53)
    shards: int = Field(ge=1, le=MAX_SHARDS)
    history: tuple[tuple[int, int], ...] = Field(
        default=(),
        max_length=MAX_HISTORY,
        description="(epoch, shards) of earlier epochs, oldest first.",
    )

    @model_validator(mode="after")
    def _history_before_epoch(self) -> ShardMap:
        epochs = [e for e, _ in self.history]
        if any(e >= self.epoch for e in epochs) or epochs != sorted(set(epochs)):
            raise ValueError(
                f"history epochs {epochs} must be increasing and below epoch {self.epoch}"
            )
        if any(not 1 <= n <= MAX_SHARDS for _, n in self.history):
            raise ValueError(f"history shard counts must be between 1 and {MAX_SHARDS}")
        return self

    def owner(self, stream: str) -> int:
        return owner_of(self.monitor, stream, self.shards)

    def shards_at(self, epoch: int) -> int | None:
        """Return the shard count at ``epoch``, or None if this map does not know it."""
        if epoch == self.epoch:
            return self.shards
        for e, n in self.history:
            if e == epoch:
                return n
        return None

    def advance(self, shards: int) -> ShardMap:
        """Return the map of the next epoch with ``shards`` shards (this one kept in history)."""
        history = (*self.history, (self.epoch, self.shards))[-MAX_HISTORY:]
        return ShardMap(monitor=self.monitor, epoch=self.epoch + 1, shards=shards, history=history)


def check_pushed_map(current: ShardMap | None, candidate: ShardMap) -> str | None:
    """Return why a shard must refuse ``candidate`` arriving over the network, or None.

    Shard counts are bounded by the model itself (``MAX_SHARDS``, the CRD's bound).
    Here: the same monitor, an epoch no further than ``MAX_EPOCH_AHEAD`` past the
    current one, and a history that agrees with what the shard already knows (an
    epoch never changes its shard count).
    """
    if current is None:
        return None
    if candidate.monitor != current.monitor:
        return (
            f"shard map is for monitor {candidate.monitor!r}, this shard serves {current.monitor!r}"
        )
    if candidate.epoch > current.epoch + MAX_EPOCH_AHEAD:
        return (
            f"epoch {candidate.epoch} is more than {MAX_EPOCH_AHEAD} ahead of this shard's epoch "
            f"{current.epoch}; the operator advances one epoch per reshard"
        )
    known = {current.epoch: current.shards, **dict(current.history)}
    theirs = {candidate.epoch: candidate.shards, **dict(candidate.history)}
    for epoch in sorted(known.keys() & theirs.keys()):
        if known[epoch] != theirs[epoch]:
            return (
                f"epoch {epoch} had {known[epoch]} shards here but the pushed map says "
                f"{theirs[epoch]}"
            )
    return None
