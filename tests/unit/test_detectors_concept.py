"""Relative-MSE and error-rate concept drift against scipy's Welch t-test and Fisher test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats as ss
from hypothesis import given, settings
from hypothesis import strategies as st

from driftwarden.detectors import (
    DetectorInputError,
    ErrorRateIncrease,
    RelativeMSE,
    detector_from_state,
)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(0.5, 2.0),
    window=st.integers(2, 80),
    every=st.integers(1, 30),
)
def test_relative_mse_equals_welch_t_test(seed, scale, window, every):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=300) ** 2
    stream = rng.normal(scale=scale, size=300) ** 2
    det = RelativeMSE(ref, window=window, evaluate_every=every, min_increase=0.1, alpha=0.05)
    ev = det.update_many(stream)
    picks = np.unique(np.linspace(0, len(ev) - 1, num=min(len(ev), 15)).astype(int))
    for pos, stat, p, d in zip(
        ev.position[picks], ev.statistic[picks], ev.p_value[picks], ev.drift[picks], strict=False
    ):
        win = stream[pos - window : pos]
        r = ss.ttest_ind(win, ref, equal_var=False, alternative="greater")
        np.testing.assert_allclose(stat, win.mean() / ref.mean() - 1, rtol=1e-10)
        np.testing.assert_allclose(p, r.pvalue, rtol=1e-8, atol=1e-14)
        assert d == (stat > 0.1 and p < 0.05)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rate=st.floats(0.0, 0.6),
    window=st.integers(2, 80),
    every=st.integers(1, 30),
)
def test_error_rate_equals_fisher_exact(seed, rate, window, every):
    rng = np.random.default_rng(seed)
    ref = (rng.random(400) < 0.15).astype(float)
    stream = (rng.random(300) < rate).astype(float)
    det = ErrorRateIncrease(ref, window=window, evaluate_every=every)
    ev = det.update_many(stream)
    picks = np.unique(np.linspace(0, len(ev) - 1, num=min(len(ev), 15)).astype(int))
    for pos, stat, p, d in zip(
        ev.position[picks], ev.statistic[picks], ev.p_value[picks], ev.drift[picks], strict=False
    ):
        e = int(stream[pos - window : pos].sum())
        r = ss.fisher_exact(
            [[e, window - e], [int(ref.sum()), 400 - int(ref.sum())]], alternative="greater"
        )
        assert p == r.pvalue
        np.testing.assert_allclose(stat, e / window - ref.mean(), atol=1e-15)
        assert d == (stat > 0.05 and p < 0.01)


def test_calibration_relative_mse_no_drift():
    alarms = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        det = RelativeMSE(rng.normal(size=1000) ** 2, window=300, evaluate_every=300, alpha=0.05,
                          min_increase=0.0)  # fmt: skip
        alarms += int(det.update_many(rng.normal(size=300) ** 2).drift[0])
    assert alarms / 200 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200)


@pytest.mark.parametrize("cls", [RelativeMSE, ErrorRateIncrease])
def test_state_round_trip_and_batching(cls):
    rng = np.random.default_rng(3)
    ref = (rng.random(500) < 0.2).astype(float)
    stream = (rng.random(600) < 0.3).astype(float)
    whole = cls(ref, window=100, evaluate_every=10)
    ev = whole.update_many(stream)
    part = cls(ref, window=100, evaluate_every=10)
    a = part.update_many(stream[:237])
    restored = detector_from_state(json.loads(json.dumps(part.to_state(), allow_nan=False)))
    b = restored.update_many(stream[237:])
    assert type(ev).concat([a, b], ev.threshold) == ev
    assert restored.to_state() == whole.to_state() and restored.result == whole.result


def test_bad_input():
    mse = RelativeMSE(np.ones(10) + np.arange(10), window=5)
    with pytest.raises(DetectorInputError, match="squared errors"):
        mse.update_many([1.0, -0.5])
    with pytest.raises(DetectorInputError, match="non-finite"):
        mse.update_many([np.nan])
    assert len(mse.update_many([])) == 0
    err = ErrorRateIncrease(np.array([0, 1, 0, 0]), window=5)
    with pytest.raises(DetectorInputError, match="0 \\(correct\\) / 1 \\(wrong\\)"):
        err.update_many([0, 2])
    with pytest.raises(TypeError, match="must be numeric"):
        err.update_many(["wrong"])
    with pytest.raises(ValueError, match="reference MSE is 0"):
        RelativeMSE(np.zeros(10))
    with pytest.raises(ValueError, match="at least 2"):
        ErrorRateIncrease([1.0])
