"""Page-Hinkley, DDM, EDDM, HDDM_A, HDDM_W and ADWIN against river 0.26.1, value by value."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from river import drift as river_drift

from driftwarden.detectors import DetectorInputError, detector_from_state
from driftwarden.detectors.sequential import (
    ADWIN,
    DDM,
    EDDM,
    HDDMA,
    HDDMW,
    PageHinkley,
)

HSETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def real_stream(draw):
    """Piecewise-normal stream: a few segments with their own mean and spread."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        loc = draw(st.floats(-2, 2))
        scale = draw(st.floats(0.1, 3))
        parts.append(rng.normal(loc, scale, size=draw(st.integers(0, 1500))))
    return np.concatenate(parts)


@st.composite
def error_stream(draw):
    """Piecewise-Bernoulli 0/1 stream."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        p = draw(st.floats(0.0, 0.7))
        parts.append((rng.random(draw(st.integers(0, 1500))) < p).astype(float))
    return np.concatenate(parts)


def river_trace(detector, values):
    """Per-value (drift, warning) flags of a river detector fed one value at a time."""
    drifts, warnings = [], []
    for x in values.tolist():
        detector.update(x)
        drifts.append(detector.drift_detected)
        warnings.append(getattr(detector, "warning_detected", False))
    return np.array(drifts, bool), np.array(warnings, bool)


def assert_same_trace(ours, theirs, values):
    ev = ours.update_many(values)
    drifts, warnings = river_trace(theirs, values)
    assert ev.drift.tolist() == drifts.tolist()
    if ev.warning is not None:
        assert ev.warning.tolist() == warnings.tolist()
    assert ev.position.tolist() == list(range(1, len(values) + 1))
    if len(values):
        assert ours.drift_detected == theirs.drift_detected


@HSETTINGS
@given(
    values=real_stream(),
    mode=st.sampled_from(["up", "down", "both"]),
    delta=st.sampled_from([0.0, 0.005, 0.1, 0.25]),
    threshold=st.sampled_from([1.0, 10.0, 25.0, 50.0]),
    alpha=st.sampled_from([1.0, 1 - 1e-4, 0.99]),
    min_instances=st.integers(0, 60),
)
def test_page_hinkley_equals_river(values, mode, delta, threshold, alpha, min_instances):
    kwargs = {
        "min_instances": min_instances,
        "delta": delta,
        "threshold": threshold,
        "alpha": alpha,
        "mode": mode,
    }
    assert_same_trace(PageHinkley(**kwargs), river_drift.PageHinkley(**kwargs), values)


@HSETTINGS
@given(
    values=error_stream(),
    warm_start=st.integers(0, 60),
    thresholds=st.sampled_from([(2.0, 3.0), (1.0, 2.0), (2.5, 4.0)]),
)
def test_ddm_equals_river(values, warm_start, thresholds):
    kwargs = {
        "warm_start": warm_start,
        "warning_threshold": thresholds[0],
        "drift_threshold": thresholds[1],
    }
    assert_same_trace(DDM(**kwargs), river_drift.binary.DDM(**kwargs), values)


@HSETTINGS
@given(
    values=error_stream(),
    warm_start=st.integers(0, 60),
    levels=st.sampled_from([(0.95, 0.9), (0.8, 0.75), (0.9, 0.5)]),
)
def test_eddm_equals_river(values, warm_start, levels):
    kwargs = {"warm_start": warm_start, "alpha": levels[0], "beta": levels[1]}
    assert_same_trace(EDDM(**kwargs), river_drift.binary.EDDM(**kwargs), values)


@HSETTINGS
@given(
    values=error_stream(),
    conf=st.sampled_from([(0.001, 0.005), (0.01, 0.05), (0.0001, 0.001)]),
    two_sided=st.booleans(),
)
def test_hddm_a_equals_river(values, conf, two_sided):
    kwargs = {
        "drift_confidence": conf[0],
        "warning_confidence": conf[1],
        "two_sided_test": two_sided,
    }
    assert_same_trace(HDDMA(**kwargs), river_drift.binary.HDDMA(**kwargs), values)


@HSETTINGS
@given(
    values=error_stream(),
    conf=st.sampled_from([(0.001, 0.005), (0.01, 0.05)]),
    lambda_val=st.sampled_from([0.05, 0.01, 0.2]),
    two_sided=st.booleans(),
)
def test_hddm_w_equals_river(values, conf, lambda_val, two_sided):
    kwargs = {
        "drift_confidence": conf[0],
        "warning_confidence": conf[1],
        "lambda_val": lambda_val,
        "two_sided_test": two_sided,
    }
    assert_same_trace(HDDMW(**kwargs), river_drift.binary.HDDMW(**kwargs), values)


@HSETTINGS
@given(
    values=st.one_of(real_stream(), error_stream()),
    delta=st.sampled_from([0.002, 0.01, 0.1]),
    clock=st.sampled_from([1, 4, 32]),
    max_buckets=st.sampled_from([2, 5, 9]),
    min_window_length=st.sampled_from([1, 5, 20]),
    grace_period=st.sampled_from([0, 10, 100]),
)
def test_adwin_equals_river(values, delta, clock, max_buckets, min_window_length, grace_period):
    kwargs = {
        "delta": delta,
        "clock": clock,
        "max_buckets": max_buckets,
        "min_window_length": min_window_length,
        "grace_period": grace_period,
    }
    ours, theirs = ADWIN(**kwargs), river_drift.ADWIN(**kwargs)
    assert_same_trace(ours, theirs, values)
    assert ours.width == theirs.width


def test_adwin_long_stream_many_levels_equals_river():
    # 60k values exercise deep bucket levels and repeated cuts.
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(m, 1, 15_000) for m in (0.0, 0.3, -0.2, 0.0)])
    ours, theirs = ADWIN(), river_drift.ADWIN()
    assert_same_trace(ours, theirs, values)
    assert ours.width == theirs.width


def _make(cls):
    return {
        PageHinkley: lambda: PageHinkley(delta=0.1, threshold=8.0),
        DDM: lambda: DDM(warm_start=10),
        EDDM: lambda: EDDM(warm_start=5, alpha=0.9, beta=0.8),
        HDDMA: lambda: HDDMA(two_sided_test=True, drift_confidence=0.01),
        HDDMW: lambda: HDDMW(two_sided_test=True, drift_confidence=0.01),
        ADWIN: lambda: ADWIN(delta=0.05, clock=4),
    }[cls]()


def _stream_for(cls, seed):
    rng = np.random.default_rng(seed)
    if cls in (PageHinkley, ADWIN):
        return np.concatenate([rng.normal(size=400), rng.normal(1.5, size=400)])
    return np.concatenate([rng.random(400) < 0.1, rng.random(400) < 0.5]).astype(float)


ALL = [PageHinkley, DDM, EDDM, HDDMA, HDDMW, ADWIN]


@pytest.mark.parametrize("cls", ALL)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 800), max_size=5))
def test_batches_equal_value_by_value(cls, seed, cuts):
    values = _stream_for(cls, seed)
    whole, pieces, single = _make(cls), _make(cls), _make(cls)
    ev = whole.update_many(values)
    bounds = [0, *sorted(cuts), len(values)]
    parts = [pieces.update_many(values[a:b]) for a, b in itertools.pairwise(bounds)]
    for x in values:
        single.update(x)
    joined = type(ev).concat(parts, ev.threshold)
    assert joined == ev
    assert whole.to_state() == pieces.to_state() == single.to_state()
    assert whole.result == pieces.result == single.result


@pytest.mark.parametrize("cls", ALL)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(0, 800))
def test_state_round_trip_mid_stream(cls, seed, cut):
    values = _stream_for(cls, seed)
    original = _make(cls)
    original.update_many(values[:cut])
    text = json.dumps(original.to_state(), allow_nan=False)
    restored = detector_from_state(json.loads(text))
    assert type(restored) is cls and restored.to_state() == original.to_state()
    assert original.update_many(values[cut:]) == restored.update_many(values[cut:])
    assert original.to_state() == restored.to_state()


def test_alarms_reset_like_river_and_statistics_are_reported():
    ph = PageHinkley(delta=0.25, threshold=25.0)
    rng = np.random.default_rng(1)
    ev = ph.update_many(np.concatenate([rng.normal(size=2000), rng.normal(1.0, size=500)]))
    assert len(ev.alarms) == 1
    i = int(ev.alarms[0]) - 1
    assert ev.statistic[i] > 25.0 and ev.statistic[i - 1] <= 25.0
    # the value after an alarm starts a fresh test
    assert not ev.drift[i + 1] and ev.statistic[i + 1] < 25.0


def test_standardised_page_hinkley_equals_river_on_standardised_values():
    rng = np.random.default_rng(2)
    raw = np.concatenate([rng.normal(50, 4, 3000), rng.normal(52, 4, 3000)])
    ours = PageHinkley(delta=0.25, threshold=25.0, loc=50.0, scale=4.0)
    theirs = river_drift.PageHinkley(delta=0.25, threshold=25.0)
    ev = ours.update_many(raw)
    drifts, _ = river_trace(theirs, (raw - 50.0) / 4.0)
    assert ev.drift.tolist() == drifts.tolist() and drifts.any()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", [DDM, EDDM])
def test_binary_detectors_refuse_values_outside_0_1(cls):
    det = cls()
    det.update_many([0, 1, 1, 0, True, False])
    before = det.to_state()
    with pytest.raises(DetectorInputError, match=r"0 \(correct\) and 1 \(error\).*index 2"):
        det.update_many([0.0, 1.0, 0.5])
    assert det.to_state() == before


@pytest.mark.parametrize("cls", [HDDMA, HDDMW])
def test_bounded_detectors_refuse_values_outside_unit_interval(cls):
    det = cls()
    det.update_many([0.0, 0.25, 1.0])
    with pytest.raises(DetectorInputError, match=r"\[0, 1\].*index 1"):
        det.update_many([0.5, 1.5])
    assert det.n_seen == 3


@pytest.mark.parametrize("cls", ALL)
def test_non_finite_empty_and_wrong_dtype(cls):
    det = _make(cls)
    with pytest.raises(DetectorInputError, match="non-finite"):
        det.update_many([0.0, np.nan])
    with pytest.raises(TypeError, match="must be numeric"):
        det.update_many(["1", "0"])
    assert len(det.update_many(np.array([], dtype=float))) == 0
    assert det.n_seen == 0 and not det.drift_detected and not det.result.evaluated
    omit = type(det)(**{**det._params(), "nan_policy": "omit"})
    omit.update_many([1.0, np.inf, 0.0])
    assert omit.n_seen == 2 and omit.n_dropped == 1


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        PageHinkley(mode="sideways")
    with pytest.raises(ValueError, match="scale positive"):
        PageHinkley(scale=0.0)
    with pytest.raises(ValueError, match="beta <= alpha"):
        EDDM(alpha=0.5, beta=0.9)
    with pytest.raises(ValueError, match="max_buckets >= 2"):
        ADWIN(max_buckets=1)
