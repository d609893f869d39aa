"""The shared retry delays: capped doubling, reset, and equal jitter."""

from __future__ import annotations

from driftwarden.common.backoff import Backoff, jittered


def test_delays_double_up_to_the_cap_and_reset_after_a_success() -> None:
    b = Backoff(0.05, 0.3)
    assert [b.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    b.reset()
    assert b.next() == 0.05
    assert Backoff(10.0, 5.0).next() == 5.0  # the first delay is capped too


def test_jitter_stays_between_half_and_the_whole_delay() -> None:
    assert all(1.0 <= jittered(2.0) <= 2.0 for _ in range(200))
