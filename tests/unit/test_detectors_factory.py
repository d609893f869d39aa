"""make_detector covers every DetectorType, with defaults, and its detectors round-trip state."""

from __future__ import annotations

import json

import numpy as np
import pytest

from driftwarden.common.spec import DetectorConfig, DetectorType
from driftwarden.detectors import (
    DETECTOR_CLASSES,
    PageHinkley,
    detector_from_state,
    make_detector,
)
from driftwarden.detectors.budget import page_hinkley_threshold


def _reference_and_stream(t: DetectorType, rng: np.random.Generator):
    if t in (DetectorType.MMD, DetectorType.NM_DDM):
        return rng.normal(size=(80, 4)), rng.normal(size=(60, 4)), "embedding"
    if t in (DetectorType.DDM, DetectorType.EDDM, DetectorType.HDDM_A, DetectorType.HDDM_W):
        return None, (rng.random(300) < 0.2).astype(float), "numeric"
    if t is DetectorType.ERROR_RATE:
        return (
            (rng.random(300) < 0.2).astype(float),
            (rng.random(300) < 0.3).astype(float),
            "numeric",
        )
    if t is DetectorType.RELATIVE_MSE:
        return rng.normal(size=300) ** 2, rng.normal(size=300) ** 2, "numeric"
    return rng.normal(size=300), rng.normal(size=300), "numeric"


def test_every_detector_type_has_a_class():
    assert {t.value for t in DetectorType} == set(DETECTOR_CLASSES)


@pytest.mark.parametrize("t", list(DetectorType))
def test_factory_builds_every_type_and_state_round_trips(t):
    rng = np.random.default_rng(0)
    reference, stream, kind = _reference_and_stream(t, rng)
    extra = {"permutations": 20} if kind == "embedding" else {}
    det = make_detector(
        DetectorConfig(type=t, **extra), reference=reference, kind=kind, window=50,
        evaluate_every=25, seed=3,
    )  # fmt: skip
    assert det.kind == t.value
    det.update_many(stream[: len(stream) // 2])
    restored = detector_from_state(json.loads(json.dumps(det.to_state(), allow_nan=False)))
    assert det.update_many(stream[len(stream) // 2 :]) == restored.update_many(
        stream[len(stream) // 2 :]
    )
    assert det.result == restored.result and det.n_seen == restored.n_seen > 0


def test_page_hinkley_is_standardised_by_the_reference():
    ref = np.random.default_rng(1).normal(50.0, 4.0, size=1000)
    det = make_detector(DetectorConfig(type=DetectorType.PAGE_HINKLEY), reference=ref)
    assert isinstance(det, PageHinkley)
    assert det.loc == pytest.approx(50.0, abs=0.5) and det.scale == pytest.approx(4.0, rel=0.1)
    # lambda follows the default budget (one false alarm per 1e6 values), no fading
    assert det.delta == 0.25 and det.alpha == 1.0 and det.budget == 1e6
    assert det.threshold == pytest.approx(page_hinkley_threshold(0.25, 1e6))
    assert 23.0 < det.threshold < 24.5
    with pytest.raises(ValueError, match="constant"):
        make_detector(DetectorConfig(type=DetectorType.PAGE_HINKLEY), reference=np.ones(10))


def test_config_fields_reach_the_detector_and_missing_references_are_explained():
    ref = np.random.default_rng(2).normal(size=200)
    psi = make_detector(DetectorConfig(type=DetectorType.PSI, threshold=0.3, bins=5), reference=ref)
    assert psi.threshold == 0.3 and psi.bins == 5 and len(psi.buckets) == 5
    chi2 = make_detector(DetectorConfig(type=DetectorType.CHI2), reference=["a", "b"],
                         kind="categorical")  # fmt: skip
    assert chi2.buckets == ["a", "b", "__unseen__"]
    adwin = make_detector(DetectorConfig(type=DetectorType.ADWIN, delta=0.01), reference=None)
    assert adwin.delta == 0.01
    with pytest.raises(ValueError, match="reference.csv"):
        make_detector(DetectorConfig(type=DetectorType.KS), reference=None)
    with pytest.raises(ValueError, match="not on embeddings"):
        make_detector(DetectorConfig(type=DetectorType.PSI), reference=ref, kind="embedding")
