"""Decision rules: BH and Bonferroni against scipy, gates, and family-wise calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as ss
from hypothesis import example, given, settings
from hypothesis import strategies as st

from driftwarden.detectors import (
    DetectorResult,
    KSWindow,
    benjamini_hochberg,
    bonferroni,
    decide,
    wasserstein_sigma,
)


@settings(max_examples=200, deadline=None)
@given(
    p=st.lists(st.floats(0, 1), min_size=1, max_size=80),
    q=st.floats(0.001, 0.5),
)
@example(p=[0.0, 0.0, 0.47498286775735765], q=0.47498286775735765)  # p_(m) == q: rounding
def test_benjamini_hochberg_equals_scipy(p, q):
    p = np.array(p)
    expected = ss.false_discovery_control(p, method="bh") <= q
    assert benjamini_hochberg(p, q).tolist() == expected.tolist()


@settings(max_examples=100, deadline=None)
@given(p=st.lists(st.floats(0, 1), min_size=1, max_size=50), a=st.floats(0.001, 0.5))
def test_bonferroni(p, a):
    p = np.array(p)
    assert bonferroni(p, a).tolist() == (p <= a / len(p)).tolist()


def test_nan_p_values_are_not_rejected_nor_counted():
    assert benjamini_hochberg(np.array([np.nan, 0.01, 0.02]), 0.05).tolist() == [False, True, True]
    assert bonferroni(np.array([np.nan, 0.02]), 0.05).tolist() == [False, True]


def test_bh_family_wise_alarm_rate_across_50_features_under_no_drift():
    """200 seeded runs x 50 no-drift KS features: P(any alarm after BH) stays near q."""
    q, runs, features = 0.05, 200, 50
    any_alarm = 0
    raw_any = 0
    for run in range(runs):
        rng = np.random.default_rng(run)
        results = {}
        for f in range(features):
            det = KSWindow(rng.normal(size=200), window=100, evaluate_every=100, alpha=q,
                           method="asymp")  # fmt: skip
            det.update_many(rng.normal(size=100))
            results[f"feature:{f}"] = det.result
        decisions = decide(results, fdr=q)
        any_alarm += any(d.drift for d in decisions.values())
        raw_any += any(r.drift for r in results.values())
    rate = any_alarm / runs
    assert rate <= q + 3 * math.sqrt(q * (1 - q) / runs)
    assert raw_any / runs > 0.5  # without control, 50 tests at 5% alarm most of the time


def _r(p=None, drift=False, n=1000, effect=None, stat=0.1):
    return DetectorResult(stat, p, 0.05, drift, n, effect_size=effect)


def test_gates_and_reasons():
    results = {
        "feature:a": _r(p=1e-6, drift=True, effect=0.3),
        "feature:b": _r(p=1e-6, drift=True, n=50, effect=0.3),  # too few samples
        "feature:c": _r(p=1e-6, drift=True, effect=0.01),  # negligible effect
        "feature:d": _r(p=0.04, drift=True, effect=0.2),  # not significant after BH
        "prediction": _r(p=None, drift=True),  # sequential detector: own decision
        "performance": DetectorResult(math.nan, None, 0.05, False, 0),
    }
    for name in [f"feature:{i}" for i in range(10)]:
        results[name] = _r(p=0.5)
    out = decide(results, fdr=0.05, min_samples=200, min_effect=0.05)
    assert out["feature:a"].drift and out["feature:a"].reason == "drift"
    assert out["feature:b"].reason == "min-samples" and not out["feature:b"].drift
    assert out["feature:c"].reason == "min-effect"
    assert out["feature:d"].reason == "multiple-testing" and not out["feature:d"].drift
    assert out["prediction"].drift
    assert out["performance"].reason == "not-evaluated"
    none = decide(results, method="none", min_samples=0)
    assert none["feature:d"].drift
    with pytest.raises(ValueError, match="method must be one of"):
        decide(results, method="holm")


def test_wasserstein_in_reference_sigmas():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 3, 20_000)
    assert wasserstein_sigma(ref, ref + 1.5) == pytest.approx(0.5, rel=0.02)
    with pytest.raises(ValueError, match="constant"):
        wasserstein_sigma(np.ones(5), np.zeros(5))
