"""Stream ownership: rendezvous (highest-random-weight) hashing and the shard map.

Every stream of every monitor has exactly one owner shard. Going from N to M
shards moves only the streams whose highest-weight ordinal changes, so a
reshard touches as few windows as possible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field


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


class ShardMap(BaseModel):
    """Which shard owns what, at which epoch; published by the operator.

    ``epoch`` grows by one every time ``shards`` changes. Senders route by it and
    workers refuse batches for streams they do not own in their current epoch.
    """

    model_config = ConfigDict(frozen=True)

    monitor: str = Field(description="Monitor key, '<namespace>/<name>'.")
    epoch: int = Field(ge=0)
    shards: int = Field(ge=1)

    def owner(self, stream: str) -> int:
        return owner_of(self.monitor, stream, self.shards)
