"""Retry delays shared by the sender, the client, the operator and worker handoffs."""

from __future__ import annotations

import random


def jittered(delay: float) -> float:
    """Return a delay drawn uniformly from ``[delay / 2, delay]`` (spreads out retries)."""
    return delay * (0.5 + random.random() / 2)


class Backoff:
    """Capped exponential backoff: ``initial``, twice that, ... up to ``maximum``.

    :meth:`next` returns the delay before the coming retry (unjittered) and doubles the
    one after; :meth:`reset` starts over after a success.
    """

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = min(initial, maximum)

    def next(self) -> float:
        """Return the delay before this retry; the next one is twice as long (capped)."""
        delay = self._next
        self._next = min(self.maximum, delay * 2)
        return delay

    def reset(self) -> None:
        """Start over at ``initial`` (after a success)."""
        self._next = min(self.initial, self.maximum)
