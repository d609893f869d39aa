"""MultinomialCUSUM: categorical and binned-numeric e-detector — budget, detection, contracts."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from driftwarden.common.spec import DetectorConfig, DetectorType
from driftwarden.detectors import MultinomialCUSUM, detector_from_state, make_detector
from driftwarden.detectors.base import DetectorInputError


def _max_alarms(n_values: int, budget: float) -> float:
    expected = n_values / budget
    return expected + 3.0 * math.sqrt(expected)


CATS = ["a", "b", "c", "d"]
MIX = [0.4, 0.3, 0.2, 0.1]


@pytest.mark.parametrize(
    "stream",
    [
        ("categorical", lambda r, n: r.choice(CATS, size=n, p=MIX)),
        ("numeric", lambda r, n: r.standard_t(2, size=n)),
        ("numeric", lambda r, n: r.poisson(2.0, size=n).astype(float)),
    ],
)
def test_keeps_its_budget_on_null_streams(stream):
    kind, draw = stream
    rng = np.random.default_rng(3)
    budget, n_values = 2_000.0, 300_000
    det = MultinomialCUSUM(draw(rng, 5_000), budget=budget, value_kind=kind)
    alarms = det.update_many(draw(rng, n_values)).alarms.size
    assert alarms <= _max_alarms(n_values, budget)


def test_detects_a_category_mix_change_a_new_category_and_a_shape_change():
    rng = np.random.default_rng(5)
    ref = rng.choice(CATS, size=5_000, p=MIX)
    det = MultinomialCUSUM(ref, budget=1e6)
    det.update_many(rng.choice(CATS, size=5_000, p=MIX))
    alarms = det.update_many(rng.choice(CATS, size=3_000, p=[0.25, 0.25, 0.25, 0.25])).alarms
    assert alarms.size and alarms[0] - 5_000 < 1_500
    new = MultinomialCUSUM(ref, budget=1e6)
    new.update_many(rng.choice(CATS, size=2_000, p=MIX))
    assert new.update_many(["zzz"] * 20).alarms.size  # an unseen category alarms within 20
    shape = MultinomialCUSUM(rng.normal(size=5_000), budget=1e6, value_kind="numeric")
    shape.update_many(rng.normal(size=3_000))
    sq3 = math.sqrt(3.0)
    alarms = shape.update_many(rng.uniform(-sq3, sq3, size=4_000)).alarms  # same mean, variance
    assert alarms.size and alarms[0] - 3_000 < 3_000


def test_batching_and_state_round_trip_are_exact():
    rng = np.random.default_rng(1)
    ref = rng.choice(CATS, size=1_000, p=MIX)
    stream = np.concatenate(
        [rng.choice(CATS, size=800, p=MIX), rng.choice(CATS, size=800, p=[0.1, 0.2, 0.3, 0.4])]
    )
    whole = MultinomialCUSUM(ref, budget=1e4, learning_window=50)
    ev = whole.update_many(stream)
    for cuts in ([0, 1, 2, 700, 1600], [0, 333, 999, 1600]):
        part = MultinomialCUSUM(ref, budget=1e4, learning_window=50)
        evs = [part.update_many(stream[a:b]) for a, b in itertools.pairwise(cuts)]
        assert np.array_equal(np.concatenate([e.statistic for e in evs]), ev.statistic)
        assert part.to_state() == whole.to_state()
    half = MultinomialCUSUM(ref, budget=1e4, learning_window=50)
    half.update_many(stream[:777])
    restored = detector_from_state(json.loads(json.dumps(half.to_state(), allow_nan=False)))
    assert restored.update_many(stream[777:]) == half.update_many(stream[777:])
    assert restored.to_state() == half.to_state() == whole.to_state()


def test_bad_input_and_the_factory():
    rng = np.random.default_rng(0)
    det = MultinomialCUSUM(["a", "b"] * 50, budget=1e4)
    with pytest.raises(DetectorInputError, match="missing"):
        det.update_many(["a", None])
    assert det.n_seen == 0
    with pytest.raises(ValueError, match="value_kind"):
        MultinomialCUSUM(["a"], value_kind="text")
    cat = make_detector(
        DetectorConfig(type=DetectorType.MULTINOMIAL_CUSUM), reference=["x", "y"],
        kind="categorical", budget=5e6,
    )  # fmt: skip
    assert isinstance(cat, MultinomialCUSUM) and cat.threshold == pytest.approx(math.log(5e6))
    num = make_detector(
        DetectorConfig(type=DetectorType.MULTINOMIAL_CUSUM, bins=8), reference=rng.normal(size=400),
        kind="numeric",
    )  # fmt: skip
    assert num.value_kind == "numeric" and len(num.buckets) == 8
