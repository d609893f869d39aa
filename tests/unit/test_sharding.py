"""Rendezvous ownership and the shard map (DESIGN.md invariants 1 and 2)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from driftwarden.common.sharding import MAX_HISTORY, ShardMap, assign, owner_of

streams = st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=60, unique=True)


@settings(max_examples=60, deadline=None)
@given(streams=streams, n=st.integers(1, 20), m=st.integers(1, 20))
def test_resharding_moves_only_streams_whose_owner_changes(
    streams: list[str], n: int, m: int
) -> None:
    before, after = assign("ns/m", streams, n), assign("ns/m", streams, m)
    for s in streams:
        assert 0 <= after[s] < m
        if m > n:
            # growing: a stream either stays or moves to one of the new shards
            assert after[s] == before[s] or after[s] >= n
        elif m < n:
            # shrinking: only streams of the removed shards move
            assert after[s] == before[s] or before[s] >= m


def test_ownership_is_deterministic_and_spreads_streams() -> None:
    names = [f"feature:f{i}" for i in range(3000)]
    counts = Counter(owner_of("ns/m", s, 5) for s in names)
    assert set(counts) == set(range(5))
    assert max(counts.values()) < 1.15 * 3000 / 5  # within 15% of an even split
    assert assign("ns/m", names, 5) == assign("ns/m", names, 5)
    # the monitor is part of the key: two monitors do not pile onto the same shard
    assert assign("ns/a", names[:50], 5) != assign("ns/b", names[:50], 5)


def test_owner_of_rejects_zero_shards() -> None:
    with pytest.raises(ValueError, match="shards must be >= 1"):
        owner_of("ns/m", "prediction", 0)


def test_advance_keeps_bounded_history_and_json_round_trips() -> None:
    m = ShardMap(monitor="ns/m", epoch=1, shards=3)
    for shards in [5, 2] + [4] * (MAX_HISTORY + 3):
        m = m.advance(shards)
    assert m.epoch == 1 + 2 + MAX_HISTORY + 3
    assert len(m.history) == MAX_HISTORY and m.history[-1] == (m.epoch - 1, 4)
    assert ShardMap.model_validate_json(m.model_dump_json()) == m
    small = ShardMap(monitor="ns/m", epoch=1, shards=3).advance(5).advance(2)
    assert (small.shards_at(1), small.shards_at(2), small.shards_at(3), small.shards_at(0)) == (
        3,
        5,
        2,
        None,
    )


@pytest.mark.parametrize("history", [[[3, 2]], [[1, 2], [1, 3]], [[2, 2], [1, 3]], [[1, 0]]])
def test_history_must_be_increasing_earlier_epochs(history: list[list[int]]) -> None:
    with pytest.raises(ValidationError):
        ShardMap.model_validate({"monitor": "ns/m", "epoch": 3, "shards": 2, "history": history})


def test_old_maps_without_history_still_parse() -> None:
    assert ShardMap.model_validate_json('{"monitor":"ns/m","epoch":4,"shards":2}').history == ()
