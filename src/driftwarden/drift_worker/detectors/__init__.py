"""Streaming drift detectors and the decision rules applied across a monitor's streams.

Every detector follows :class:`~.base.Detector`: ``update(x)``,
``update_many(values) -> Evaluations``, read-only ``drift_detected``, ``result``
(a :class:`~.base.DetectorResult`), and ``to_state()``/``from_state()``.
:func:`make_detector` builds one from a monitor's ``DetectorConfig``;
:func:`detector_from_state` restores any detector from its state.
See docs/detectors.md for the algorithms, defaults and decision rules.
"""

from __future__ import annotations

from .base import Detector, DetectorInputError, DetectorResult, Evaluations
from .factory import DETECTOR_CLASSES, StreamKind, detector_from_state, make_detector
from .ks import IKS, KSWindow

__all__ = [
    "DETECTOR_CLASSES",
    "IKS",
    "Detector",
    "DetectorInputError",
    "DetectorResult",
    "Evaluations",
    "KSWindow",
    "StreamKind",
    "detector_from_state",
    "make_detector",
]
