"""E-detectors and false-alarm budgets: contracts, calibration and the monitor-wide split.

The calibration tests are seeded and fail when a detector raises more false alarms
than its budget allows: with budget B and N null values the expected count is at
most N/B; the assertion allows three Poisson standard deviations above it.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftwarden.common.spec import DetectorConfig, DetectorType, DriftMonitorSpec
from driftwarden.detectors import (
    MixtureCUSUM,
    detector_from_state,
    e_bh_alarms,
    e_bonferroni_alarms,
    make_detector,
    split_budget,
)
from driftwarden.detectors.base import DetectorInputError, DetectorResult
from driftwarden.detectors.budget import alpha_per_evaluation, page_hinkley_threshold
from driftwarden.detectors.edetectors import null_index_pmf, score_index, score_table, tilt


def _max_alarms(n_values: int, budget: float) -> float:
    expected = n_values / budget
    return expected + 3.0 * math.sqrt(expected)


NULL_STREAMS = {
    "normal": lambda rng, n: rng.normal(size=n),
    "student-t2": lambda rng, n: rng.standard_t(2, size=n),  # infinite variance
    "lognormal": lambda rng, n: rng.lognormal(0.0, 1.0, size=n),
    "poisson-ties": lambda rng, n: rng.poisson(3.0, size=n).astype(float),
    "rounded-ties": lambda rng, n: np.round(rng.normal(size=n), 1),
}


# ------------------------------------------------------------------ calibration to the budget


@pytest.mark.parametrize("stream", sorted(NULL_STREAMS))
def test_mixture_cusum_keeps_its_budget_on_null_streams(stream):
    rng = np.random.default_rng(11)
    draw = NULL_STREAMS[stream]
    budget, n_values = 5_000.0, 600_000
    det = MixtureCUSUM(draw(rng, 2_000), budget=budget)
    alarms = det.update_many(draw(rng, n_values)).alarms.size
    assert alarms <= _max_alarms(n_values, budget), (stream, alarms)
    # and calibration is not wastefully conservative: at least a third of the budget is used
    assert alarms >= n_values / budget / 3.0, (stream, alarms)


def test_without_calibration_ville_threshold_is_log_budget_and_holds():
    rng = np.random.default_rng(5)
    det = MixtureCUSUM(rng.normal(size=2_000), budget=2_000.0, calibrate=False)
    assert det.threshold == pytest.approx(math.log(2_000.0))
    alarms = det.update_many(rng.normal(size=400_000)).alarms.size
    assert alarms <= 400_000 / 2_000.0  # ARL0 >= budget, no margin needed


def test_calibrated_threshold_is_below_ville_and_grows_with_the_budget():
    ref = np.random.default_rng(0).normal(size=3_000)
    small, large = MixtureCUSUM(ref, budget=1e4), MixtureCUSUM(ref, budget=1e8)
    assert small.threshold < math.log(1e4) and large.threshold < math.log(1e8)
    assert large.threshold - small.threshold == pytest.approx(math.log(1e4), abs=1e-9)


def test_page_hinkley_factory_default_keeps_its_budget():
    rng = np.random.default_rng(2)
    budget, n_values = 20_000.0, 800_000
    det = make_detector(
        DetectorConfig(type=DetectorType.PAGE_HINKLEY), reference=rng.normal(size=5_000),
        budget=budget,
    )  # fmt: skip
    alarms = det.update_many(rng.normal(size=n_values)).alarms.size
    assert alarms <= _max_alarms(n_values, budget)
    assert det.result.budget == budget and det.alpha == 1.0


def test_split_budget_keeps_the_monitor_budget_over_many_streams():
    rng = np.random.default_rng(8)
    n_streams, rows, monitor_budget = 20, 100_000, 2_000.0
    per_test = split_budget(monitor_budget, n_streams)
    assert per_test == 40_000.0
    alarms = 0
    for _ in range(n_streams):
        det = MixtureCUSUM(rng.normal(size=2_000), budget=per_test)
        alarms += det.update_many(rng.normal(size=rows)).alarms.size
    assert alarms <= _max_alarms(rows, monitor_budget)


# ------------------------------------------------------------------ detection


def test_mixture_cusum_detects_mean_and_variance_shifts_in_both_directions():
    rng = np.random.default_rng(4)
    ref = rng.normal(size=5_000)
    for change in (
        lambda n: rng.normal(0.5, 1.0, n),
        lambda n: rng.normal(-0.5, 1.0, n),
        lambda n: rng.normal(0.0, math.sqrt(2.0), n),
        lambda n: rng.normal(0.0, math.sqrt(0.5), n),
    ):
        det = MixtureCUSUM(ref, budget=1e6)
        det.update_many(rng.normal(size=3_000))
        alarms = det.update_many(change(1_000)).alarms
        assert alarms.size and alarms[0] - 3_000 < 400


def test_scores_standardise_any_continuous_stream():
    rng = np.random.default_rng(0)
    ref = rng.lognormal(size=4_000)
    det = MixtureCUSUM(ref, budget=1e5)
    z = det.scores(rng.lognormal(size=50_000))
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1.0) < 0.03


def test_tilts_make_exact_e_values_under_the_reference_score_distribution():
    ref = np.round(np.random.default_rng(1).normal(size=1_000), 1)  # ties
    pmf = null_index_pmf(np.sort(ref))
    table = score_table(ref.size)
    assert pmf.sum() == pytest.approx(1.0)
    for a, b, c in ((0.0, 0.5, -0.125), (0.25, 0.0, -0.5 * math.log(2.0))):
        theta = tilt(pmf, table, a, b, c)
        assert theta > 0
        e = np.exp(theta * ((a * table + b) * table + c))
        assert float(np.dot(pmf, e)) == pytest.approx(1.0, abs=1e-10)


def test_score_index_is_the_doubled_mid_rank():
    ref = np.array([1.0, 2.0, 2.0, 3.0])
    assert score_index(ref, np.array([0.0, 1.0, 2.0, 2.5, 9.0])).tolist() == [0, 1, 4, 6, 8]


# ------------------------------------------------------------------ contracts


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 3_000), max_size=6),
    seed=st.integers(0, 2**16),
)
def test_batching_never_changes_anything(cuts, seed):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=300)
    stream = np.concatenate([rng.normal(size=1_500), rng.normal(1.0, 1.0, size=1_500)])
    whole = MixtureCUSUM(ref, budget=1e4)
    ev_whole = whole.update_many(stream)
    parts = MixtureCUSUM(ref, budget=1e4)
    bounds = [0, *sorted(cuts), stream.size]
    evs = [parts.update_many(stream[a:b]) for a, b in itertools.pairwise(bounds)]
    assert np.array_equal(np.concatenate([e.alarms for e in evs]), ev_whole.alarms)
    assert np.array_equal(np.concatenate([e.statistic for e in evs]), ev_whole.statistic)
    assert parts.to_state() == whole.to_state()


def test_one_value_at_a_time_equals_one_batch():
    rng = np.random.default_rng(3)
    ref, stream = rng.normal(size=200), rng.normal(0.8, 1.0, size=400)
    a, b = MixtureCUSUM(ref, budget=5e3), MixtureCUSUM(ref, budget=5e3)
    ev = a.update_many(stream)
    drift = []
    for x in stream:
        b.update(float(x))
        drift.append(b.drift_detected)
    assert np.array_equal(np.array(drift), ev.drift) and a.to_state() == b.to_state()


def test_state_round_trip_is_exact_strict_json_and_skips_recalibration(monkeypatch):
    rng = np.random.default_rng(6)
    det = MixtureCUSUM(rng.normal(size=500), budget=1e5)
    det.update_many(rng.normal(0.3, 1.0, size=700))
    text = json.dumps(det.to_state(), allow_nan=False)

    def no_calibration(*args, **kwargs):
        raise AssertionError("a restored detector must not recalibrate")

    monkeypatch.setattr("driftwarden.detectors.edetectors.calibrate_threshold", no_calibration)
    restored = detector_from_state(json.loads(text))
    assert restored.threshold == det.threshold and restored.result == det.result
    more = rng.normal(0.3, 1.0, size=500)
    assert restored.update_many(more) == det.update_many(more)
    assert restored.to_state() == det.to_state()


def test_bad_input_and_bad_configuration_are_explained():
    rng = np.random.default_rng(0)
    det = MixtureCUSUM(rng.normal(size=100), budget=1e4)
    with pytest.raises(DetectorInputError, match="non-finite"):
        det.update_many([0.0, float("nan")])
    assert det.n_seen == 0
    with pytest.raises(TypeError, match="categorical"):
        det.update_many(["a", "b"])
    omit = MixtureCUSUM(rng.normal(size=100), budget=1e4, nan_policy="omit")
    omit.update_many([0.0, float("inf"), 1.0])
    assert omit.n_seen == 2 and omit.n_dropped == 1
    assert len(det.update_many([])) == 0
    with pytest.raises(ValueError, match="constant"):
        MixtureCUSUM(np.ones(50))
    with pytest.raises(ValueError, match="at least 20"):
        MixtureCUSUM(rng.normal(size=5))
    with pytest.raises(ValueError, match="greater than 1"):
        MixtureCUSUM(rng.normal(size=100), budget=0.5)


# ------------------------------------------------------------------ budgets, factory, plan


def test_factory_builds_the_default_numeric_detector_with_the_given_budget():
    ref = np.random.default_rng(0).normal(size=1_000)
    det = make_detector(DetectorConfig(type=DetectorType.MIXTURE_CUSUM), reference=ref, budget=3e6)
    assert isinstance(det, MixtureCUSUM) and det.budget == 3e6
    fixed = make_detector(
        DetectorConfig(type=DetectorType.MIXTURE_CUSUM, threshold=9.0), reference=ref
    )
    assert fixed.threshold == 9.0
    assert (
        DriftMonitorSpec.model_validate({"model": {"bundle": "builtin://x"}})
        .detectors.numeric[0]
        .type
        is DetectorType.MIXTURE_CUSUM
    )


def test_per_test_alphas_follow_the_budget_when_unset():
    ref = np.random.default_rng(0).normal(size=500)
    ks = make_detector(DetectorConfig(type=DetectorType.KS), reference=ref, evaluate_every=100,
                       budget=1e6)  # fmt: skip
    assert ks.alpha == alpha_per_evaluation(1e6, 100) == 1e-4
    iks = make_detector(DetectorConfig(type=DetectorType.IKS), reference=ref, budget=1e5)
    assert iks.alpha == 1e-5
    explicit = make_detector(DetectorConfig(type=DetectorType.KS, alpha=0.01), reference=ref)
    assert explicit.alpha == 0.01


def test_page_hinkley_threshold_matches_the_documented_pair():
    # delta 0.25, lambda 25: Siegmund's approximation gives ARL0 ~ 1.9e6 two-sided
    assert page_hinkley_threshold(0.25, 1.9e6) == pytest.approx(25.0, abs=0.2)
    assert page_hinkley_threshold(0.25, 1e8) > page_hinkley_threshold(0.25, 1e6)


def test_plan_splits_the_monitor_budget_over_its_tests():
    from driftwarden.drift_worker.plan import spec_factory
    from driftwarden.drift_worker.streams import StreamSpec

    spec = DriftMonitorSpec.model_validate(
        {"model": {"bundle": "builtin://x"}, "detectors": {"valuesPerFalseAlarm": 2_000_000}}
    )
    factory = spec_factory(spec, tests_in_monitor=7)
    stream = StreamSpec("feature:a", "numeric", np.random.default_rng(0).normal(size=400))
    det = factory(stream)["mixtureCusum"]
    assert det.budget == 14_000_000 and det.result.budget == 14_000_000


def _e_result(log_e: float, budget: float = 1e6, threshold: float = 12.0) -> DetectorResult:
    # statistic on the detector's scale: normalised log e-value minus (log budget - threshold)
    return DetectorResult(
        statistic=log_e - math.log(budget) + threshold, p_value=None, threshold=threshold,
        drift=False, n_seen=1_000, budget=budget,
    )  # fmt: skip


def test_e_bonferroni_and_e_bh_over_streams():
    b = 1_000.0
    results = {
        "a": _e_result(math.log(4 * b) + 0.01),  # reaches m·B with m = 4
        "b": _e_result(math.log(2 * b) + 0.01),  # reaches m·B/2: e-BH with k = 2
        "c": _e_result(0.0),
        "d": _e_result(1.0),
        "no-budget": DetectorResult(0.3, 0.01, 0.05, True, 10),
    }
    assert e_bonferroni_alarms(results, b) == {"a": True, "b": False, "c": False, "d": False}
    assert e_bh_alarms(results, b) == {"a": True, "b": True, "c": False, "d": False}
    assert e_bh_alarms({}, b) == {} and e_bonferroni_alarms({}, b) == {}
