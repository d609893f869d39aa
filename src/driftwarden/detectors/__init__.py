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
from .budget import e_bh_alarms, e_bonferroni_alarms, split_budget
from .categorical import PSI, Chi2, JensenShannon, KLDivergence
from .concept import ErrorRateIncrease, RelativeMSE
from .decision import StreamDecision, benjamini_hochberg, bonferroni, decide, wasserstein_sigma
from .edetectors import MixtureCUSUM, MultinomialCUSUM
from .factory import DETECTOR_CLASSES, ValueKind, detector_from_state, make_detector
from .ks import IKS, KSWindow
from .multivariate import MMD, NMDDM
from .sequential import ADWIN, DDM, EDDM, HDDMA, HDDMW, PageHinkley

__all__ = [
    "ADWIN",
    "DDM",
    "DETECTOR_CLASSES",
    "EDDM",
    "HDDMA",
    "HDDMW",
    "IKS",
    "MMD",
    "NMDDM",
    "PSI",
    "Chi2",
    "Detector",
    "DetectorInputError",
    "DetectorResult",
    "ErrorRateIncrease",
    "Evaluations",
    "JensenShannon",
    "KLDivergence",
    "KSWindow",
    "MixtureCUSUM",
    "MultinomialCUSUM",
    "PageHinkley",
    "RelativeMSE",
    "StreamDecision",
    "ValueKind",
    "benjamini_hochberg",
    "bonferroni",
    "decide",
    "detector_from_state",
    "e_bh_alarms",
    "e_bonferroni_alarms",
    "make_detector",
    "split_budget",
    "wasserstein_sigma",
]
