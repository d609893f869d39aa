"""Durations as the DriftMonitor spec and Prometheus write them (``90s``, ``1h30m``, ``250ms``)."""

from __future__ import annotations

import re

__all__ = ["parse_duration"]

# One or more <digits><unit> parts with Prometheus' units. The CRD accepts a subset (no
# d/w/y, spec.DURATION_PATTERN) so that CEL's duration() reads them the same way.
_WHOLE = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str) -> float:
    """Return the seconds in a duration such as ``1h30m`` or ``250ms``.

    >>> parse_duration("1h30m"), parse_duration("250ms")
    (5400.0, 0.25)
    """
    if not _WHOLE.match(text):
        raise ValueError(
            f"invalid duration {text!r}: expected digits with units ms, s, m, h, d, w or y, "
            "e.g. '30s' or '1h30m'"
        )
    return float(sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text)))
