"""KSWindow and IKS against scipy.stats.ks_2samp, plus batching, state and bad input."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import scipy.stats as ss
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftwarden.common.spec import DetectorConfig, DetectorType
from driftwarden.detectors import (
    IKS,
    DetectorInputError,
    KSWindow,
    detector_from_state,
    make_detector,
)

HSETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def samples(draw):
    """Reference and stream: continuous values, or coarse integers with many ties."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n_ref = draw(st.integers(1, 300))
    window = draw(st.integers(1, 60))
    n_stream = draw(st.integers(0, 400))
    if draw(st.booleans()):
        ref = rng.normal(size=n_ref)
        stream = rng.normal(loc=draw(st.floats(-1, 1)), size=n_stream)
    else:
        k = draw(st.integers(1, 6))
        ref = rng.integers(0, k, n_ref).astype(float)
        stream = rng.integers(0, k + 1, n_stream).astype(float)
    return ref, stream, window


# scipy itself warns computing the asymptotic p-value for n = m = 1 (it returns NaN)
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
@HSETTINGS
@given(
    data=samples(),
    every=st.integers(1, 25),
    alternative=st.sampled_from(["two-sided", "less", "greater"]),
    method=st.sampled_from(["auto", "exact", "asymp"]),
)
def test_kswindow_equals_scipy_at_every_evaluation(data, every, alternative, method):
    ref, stream, window = data
    det = KSWindow(
        ref, window=window, evaluate_every=every, alpha=0.05, alternative=alternative, method=method
    )
    ev = det.update_many(stream)
    expected_positions = [p for p in range(window, len(stream) + 1) if p % every == 0]
    assert ev.position.tolist() == expected_positions
    for pos, stat, p in zip(ev.position, ev.statistic, ev.p_value, strict=False):
        r = ss.ks_2samp(ref, stream[pos - window : pos], alternative=alternative, method=method)
        assert stat == r.statistic
        assert p == r.pvalue or (np.isnan(p) and np.isnan(r.pvalue))  # scipy: NaN for n=m=1 asymp
    if len(ev):
        assert det.result.statistic == ev.statistic[-1]
        assert np.array_equal(det.result.p_value, ev.p_value[-1], equal_nan=True)
        assert det.drift_detected == (ev.p_value[-1] < 0.05)


@HSETTINGS
@given(
    data=samples(),
    alternative=st.sampled_from(["two-sided", "less", "greater"]),
    alpha=st.sampled_from([0.001, 0.05, 0.3]),
)
def test_iks_equals_scipy_after_every_value(data, alternative, alpha):
    ref, stream, window = data
    det = IKS(ref, window=window, alpha=alpha, alternative=alternative, method="exact")
    ev = det.update_many(stream)
    assert ev.position.tolist() == list(range(window, len(stream) + 1))
    # scipy at up to 30 evenly spread steps (every step is checked against
    # KSWindow(evaluate_every=1) below, which is itself checked against scipy).
    picks = np.unique(np.linspace(0, len(ev) - 1, num=min(len(ev), 30)).astype(int))
    for i in picks:
        pos = ev.position[i]
        r = ss.ks_2samp(ref, stream[pos - window : pos], alternative=alternative, method="exact")
        assert ev.statistic[i] == r.statistic
        assert ev.drift[i] == (r.pvalue < alpha)  # per-step alarm via the critical h
    if len(ev):
        r = ss.ks_2samp(ref, stream[-window:], alternative=alternative, method="exact")
        assert ev.p_value[-1] == det.result.p_value == r.pvalue
        assert np.isnan(ev.p_value[:-1]).all()


@HSETTINGS
@given(data=samples(), alpha=st.sampled_from([0.001, 0.01, 0.2]))
def test_iks_matches_kswindow_evaluated_every_value(data, alpha):
    ref, stream, window = data
    ks = KSWindow(ref, window=window, evaluate_every=1, alpha=alpha)
    iks = IKS(ref, window=window, alpha=alpha)
    a, b = ks.update_many(stream), iks.update_many(stream)
    assert np.array_equal(a.position, b.position)
    assert np.array_equal(a.statistic, b.statistic)
    assert np.array_equal(a.drift, b.drift)
    assert ks.result == iks.result


def test_iks_asymptotic_statistic_within_one_ulp_of_scipy():
    # Above 10,000 values scipy's "auto" is asymptotic and reports the float ECDF
    # difference; IKS reports h/lcm, which may differ in the last bit.
    rng = np.random.default_rng(3)
    ref = rng.normal(size=12_000)
    stream = rng.normal(size=300)
    det = IKS(ref, window=100)
    ev = det.update_many(stream)
    for pos in ev.position[::37]:
        r = ss.ks_2samp(ref, stream[pos - 100 : pos])
        i = int(pos - ev.position[0])
        np.testing.assert_allclose(ev.statistic[i], r.statistic, rtol=1e-14)
    r = ss.ks_2samp(ref, stream[-100:])
    np.testing.assert_allclose(det.result.p_value, r.pvalue, rtol=1e-12)


@pytest.mark.parametrize("cls", [KSWindow, IKS])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 500), max_size=6))
def test_batch_boundaries_do_not_change_anything(cls, seed, cuts):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=200)
    stream = np.concatenate([rng.normal(size=250), rng.normal(0.7, size=250)])
    kwargs = {"evaluate_every": 10} if cls is KSWindow else {}
    whole = cls(ref, window=50, **kwargs)
    ev_whole = whole.update_many(stream)
    pieces = cls(ref, window=50, **kwargs)
    bounds = [0, *sorted(cuts), len(stream)]
    parts = [pieces.update_many(stream[a:b]) for a, b in itertools.pairwise(bounds) if b >= a]
    one_by_one = cls(ref, window=50, **kwargs)
    for x in stream:
        one_by_one.update(x)
    got = np.concatenate([p.position for p in parts])
    assert np.array_equal(got, ev_whole.position)
    assert np.array_equal(np.concatenate([p.statistic for p in parts]), ev_whole.statistic)
    assert whole.to_state() == pieces.to_state() == one_by_one.to_state()
    assert whole.result == one_by_one.result


@pytest.mark.parametrize("cls", [KSWindow, IKS])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(0, 400))
def test_state_round_trip_mid_stream_continues_identically(cls, seed, cut):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=300)
    stream = np.concatenate([rng.normal(size=200), rng.normal(0.5, 2, size=200)])
    kwargs = {"evaluate_every": 7} if cls is KSWindow else {}
    original = cls(ref, window=40, alternative="greater", **kwargs)
    original.update_many(stream[:cut])
    restored = detector_from_state(json.loads(json.dumps(original.to_state(), allow_nan=False)))
    assert type(restored) is cls
    assert restored.to_state() == original.to_state()
    assert original.update_many(stream[cut:]) == restored.update_many(stream[cut:])
    assert original.to_state() == restored.to_state()
    assert original.result == restored.result


def test_from_state_refuses_other_detectors_state():
    rng = np.random.default_rng(0)
    state = KSWindow(rng.normal(size=10), window=5).to_state()
    with pytest.raises(ValueError, match="state is for detector 'ks'"):
        IKS.from_state(state)
    with pytest.raises(ValueError, match="unknown detector"):
        detector_from_state({**state, "detector": "nope"})
    with pytest.raises(ValueError, match="unsupported state version"):
        KSWindow.from_state({**state, "version": 99})


def test_calibration_no_drift_alarm_rate_within_alpha():
    """400 seeded no-drift runs, one full-window test each: alarm rate <= alpha + 3 sd."""
    alpha, runs = 0.05, 400
    alarms = 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        det = KSWindow(rng.normal(size=400), window=200, evaluate_every=200, alpha=alpha)
        ev = det.update_many(rng.normal(size=200))
        assert len(ev) == 1
        alarms += int(ev.drift[0])
    rate = alarms / runs
    tolerance = 3 * np.sqrt(alpha * (1 - alpha) / runs)
    assert rate <= alpha + tolerance
    # The exact test is conservative with discrete statistics, but not useless.
    assert rate >= alpha / 3


def test_calibration_p_values_uniform_under_no_drift():
    """Under no drift, p-values over 300 independent windows are uniform (KS of the p-values)."""
    pvals = []
    for seed in range(300):
        rng = np.random.default_rng(10_000 + seed)
        det = KSWindow(rng.normal(size=3000), window=500, evaluate_every=500, method="asymp")
        pvals.append(det.update_many(rng.normal(size=500)).p_value[0])
    assert ss.kstest(pvals, "uniform").pvalue > 1e-3


def test_detects_mean_shift_and_min_effect_gate():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=5000)
    shifted = rng.normal(0.2, size=1000)
    det = KSWindow(ref, window=1000, evaluate_every=1000, alpha=0.01)
    assert det.update_many(shifted).drift[0]
    gated = KSWindow(ref, window=1000, evaluate_every=1000, alpha=0.01, min_effect=0.2)
    ev = gated.update_many(shifted)
    assert ev.p_value[0] < 0.01 and ev.statistic[0] < 0.2 and not ev.drift[0]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", [KSWindow, IKS])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise_and_leave_state_unchanged(cls, bad):
    rng = np.random.default_rng(0)
    det = cls(rng.normal(size=50), window=10)
    det.update_many(rng.normal(size=15))
    before = det.to_state()
    batch = rng.normal(size=8)
    batch[3] = bad
    with pytest.raises(
        DetectorInputError, match=r"1 non-finite value\(s\).*index 3.*nan_policy='omit'"
    ):
        det.update_many(batch)
    assert det.to_state() == before


@pytest.mark.parametrize("cls", [KSWindow, IKS])
def test_omit_policy_drops_and_counts_non_finite_values(cls):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=50)
    clean = rng.normal(size=30)
    dirty = np.insert(clean, [2, 10, 10], [np.nan, np.inf, np.nan])
    a = cls(ref, window=10, nan_policy="omit")
    b = cls(ref, window=10)
    assert a.update_many(dirty) == b.update_many(clean)
    assert a.n_dropped == 3 and a.n_seen == b.n_seen == 30


@pytest.mark.parametrize("cls", [KSWindow, IKS])
def test_empty_batch_is_a_no_op(cls):
    det = cls(np.arange(10.0), window=5)
    before = det.to_state()
    ev = det.update_many([])
    assert len(ev) == 0 and ev.alarms.size == 0
    assert det.to_state() == before
    assert not det.drift_detected and not det.result.evaluated


@pytest.mark.parametrize("cls", [KSWindow, IKS])
def test_wrong_dtype_and_shape_are_refused(cls):
    det = cls(np.arange(10.0), window=5)
    with pytest.raises(TypeError, match="must be numeric.*categorical detector"):
        det.update_many(np.array(["a", "b"]))
    with pytest.raises(TypeError, match="must be numeric"):
        det.update_many([1 + 2j])
    with pytest.raises(DetectorInputError, match="1-d batch"):
        det.update_many(np.zeros((3, 2)))
    # bool and int are numbers
    det.update_many(np.array([True, False, True]))
    det.update_many(np.array([1, 2, 3], dtype=np.int32))
    assert det.n_seen == 6


def test_bad_construction_is_refused_with_clear_errors():
    with pytest.raises(ValueError, match="reference sample is empty"):
        KSWindow([], window=5)
    with pytest.raises(ValueError, match="non-finite"):
        KSWindow([1.0, np.nan], window=5)
    with pytest.raises(ValueError, match="window must be a positive integer"):
        KSWindow([1.0], window=0)
    with pytest.raises(ValueError, match="alternative must be one of"):
        IKS([1.0], alternative="bigger")
    with pytest.raises(ValueError, match="nan_policy"):
        IKS([1.0], nan_policy="ignore")


def test_factory_builds_ks_detectors_with_defaults():
    ref = np.random.default_rng(0).normal(size=100)
    ks = make_detector(
        DetectorConfig(type=DetectorType.KS), reference=ref, window=50, evaluate_every=10
    )
    assert (
        isinstance(ks, KSWindow)
        and ks.alpha == 10 / 1e6  # evaluate_every / the default false-alarm budget
        and ks.window == 50
        and ks.evaluate_every == 10
    )
    iks = make_detector(
        DetectorConfig(type=DetectorType.IKS, alpha=0.02, min_effect=0.1), reference=ref
    )
    assert isinstance(iks, IKS) and iks.alpha == 0.02 and iks.min_effect == 0.1
    with pytest.raises(ValueError, match="needs|reference"):
        make_detector(DetectorConfig(type=DetectorType.KS), reference=None)


def test_production_sizes_equal_scipy():
    """Reference 5,000 and window 1,000 (the bench's sizes): KS and IKS equal scipy exactly."""
    rng = np.random.default_rng(11)
    ref = rng.normal(size=5000)
    stream = np.concatenate([rng.normal(size=1500), rng.normal(0.2, size=1500)])
    ks = KSWindow(ref, window=1000, evaluate_every=500)
    iks = IKS(ref, window=1000)
    ev, ev_i = ks.update_many(stream), iks.update_many(stream)
    for pos, stat, p in zip(ev.position, ev.statistic, ev.p_value, strict=False):
        r = ss.ks_2samp(ref, stream[pos - 1000 : pos])
        assert stat == r.statistic and p == r.pvalue
        assert ev_i.statistic[pos - 1000] == r.statistic
    assert iks.result.p_value == ks.result.p_value
