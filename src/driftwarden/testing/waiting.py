"""Polling helpers for tests that wait on an eventually consistent system."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "wait_until"]

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time (an AssertionError, so pytest reports it as a failure)."""


def wait_until(
    probe: Callable[[], T],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    what: str = "the condition",
    describe: Callable[[], str] | None = None,
) -> T:
    """Return probe()'s first truthy result, polling until timeout seconds have passed.

    On timeout, raise WaitTimeout naming ``what``, the last value or exception, and
    ``describe()`` (e.g. the object's current status) to show why it never held.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = probe()
        except Exception as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            detail = ""
            if describe is not None:
                try:
                    detail = f"; current state: {describe()}"
                except Exception as exc:
                    detail = f"; describing the state failed: {exc!r}"
            raise WaitTimeout(
                f"{what} did not hold within {timeout:.0f} s (last: {last!r}){detail}"
            )
        time.sleep(interval)
