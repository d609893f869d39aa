"""Label join on the performance stream: early, late, expired and unmatched labels."""

from __future__ import annotations

import numpy as np

from driftwarden.drift_worker.streams import JoinConfig, LabelJoin, errors_for


def test_labels_meet_predictions_in_either_order_within_the_delay() -> None:
    join = LabelJoin("regression", JoinConfig(max_delay_s=10.0))
    assert join.add_predictions(["a", "b"], np.array([1.0, 2.0]), ts=0.0).size == 0
    early = join.add_labels(["c"], np.array([5.0]), ts=1.0)  # label before its prediction
    assert early.size == 0 and list(join.labels) == ["c"]
    late = join.add_labels(["a"], np.array([4.0]), ts=9.0)  # 9 s late, within 10 s
    assert late.tolist() == [9.0]  # squared error (4 - 1)^2
    got = join.add_predictions(["c"], np.array([3.0]), ts=9.5)
    assert got.tolist() == [4.0]
    assert join.joined == 2 and list(join.predictions) == ["b"]


def test_what_outlives_the_delay_is_counted_and_dropped() -> None:
    join = LabelJoin("regression", JoinConfig(max_delay_s=10.0))
    join.add_predictions(["a"], np.array([1.0]), ts=0.0)
    join.add_labels(["zz"], np.array([1.0]), ts=0.0)
    join.add_predictions(["b"], np.array([1.0]), ts=10.5)  # event time moves past a's deadline
    assert join.expired_predictions == 1 and join.unmatched_labels == 1
    assert (
        join.add_labels(["a"], np.array([2.0]), ts=11.0).size == 0
    )  # too late: now unmatched-in-waiting
    assert list(join.labels) == ["a"]


def test_pending_is_bounded() -> None:
    join = LabelJoin("classification", JoinConfig(max_delay_s=1e9, max_pending=3))
    join.add_predictions([str(i) for i in range(5)], ["x"] * 5, ts=0.0)
    assert list(join.predictions) == ["2", "3", "4"] and join.evicted_predictions == 2
    assert join.expired_predictions == 0  # in time, but over the bound: evicted, not expired
    join.add_labels([f"l{i}" for i in range(4)], ["x"] * 4, ts=1.0)
    assert list(join.labels) == ["l1", "l2", "l3"] and join.evicted_labels == 1
    assert join.unmatched_labels == 0


def test_eviction_and_expiry_are_counted_apart() -> None:
    join = LabelJoin("regression", JoinConfig(max_delay_s=10.0, max_pending=2))
    join.add_predictions(["a", "b"], np.array([1.0, 2.0]), ts=0.0)
    join.add_predictions(["c"], np.array([3.0]), ts=5.0)  # over the bound: a evicted
    assert (join.evicted_predictions, join.expired_predictions) == (1, 0)
    join.add_predictions(["d"], np.array([4.0]), ts=10.5)  # b past the horizon: expired
    assert (join.evicted_predictions, join.expired_predictions) == (1, 1)
    assert list(join.predictions) == ["c", "d"]


def test_a_repeated_prediction_id_replaces_the_waiting_one() -> None:
    join = LabelJoin("regression", JoinConfig(max_delay_s=10.0))
    join.add_predictions(["order-1"], np.array([1.0]), ts=0.0)
    join.add_predictions(["order-1"], np.array([3.0]), ts=1.0)
    assert join.replaced_predictions == 1 and len(join.predictions) == 1
    assert join.add_labels(["order-1"], np.array([5.0]), ts=2.0).tolist() == [4.0]  # the latest
    state = join.to_state()
    assert LabelJoin.from_state(state, join.config).to_state() == state
    old = {k: v for k, v in state.items() if not k.startswith(("evicted", "replaced"))}
    assert LabelJoin.from_state(old, join.config).replaced_predictions == 0  # older snapshots


def test_classification_errors_compare_labels_as_class_names() -> None:
    assert errors_for("classification", ["1", "cat", 2.0], [1.0, "dog", "2"]).tolist() == [
        0.0,
        1.0,
        0.0,
    ]


def test_state_round_trip_is_exact() -> None:
    join = LabelJoin("regression", JoinConfig(max_delay_s=10.0))
    join.add_predictions(["a", "b"], np.array([1.0, 2.0]), ts=1.0)
    join.add_labels(["x"], np.array([0.5]), ts=2.0)
    again = LabelJoin.from_state(join.to_state(), join.config)
    assert again.to_state() == join.to_state()
    assert again.add_labels(["b"], np.array([0.0]), ts=3.0).tolist() == [4.0]
