"""Schema-built request models: any feature names, strict types, bounded reasons."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftwarden.bundles.limits import FLOAT32_MAX, LIMIT_SPANS, input_limits
from driftwarden.bundles.manifest import BundleManifest, FeatureSpec
from driftwarden.model_server.validation import REASONS, Rejection, RequestParser

MANIFEST = BundleManifest.model_validate(
    {
        "name": "odd-names",
        "task": "classification",
        "features": [
            {"name": "json", "type": "numeric", "min": 0, "max": 1},
            {"name": "model_config", "type": "numeric"},
            {"name": "size (cm)", "type": "numeric"},
            {"name": "class", "type": "categorical", "categories": ["a", "b c", "1"]},
        ],
        "target": {"name": "y"},
        "prediction": {"type": "categorical", "classes": ["no", "yes"]},
        "model": {"format": "sklearn-joblib", "file": "m"},
        "reference": {"rows": 1},
        "metrics": {"accuracy": 1.0},
    }
)
GOOD = {"json": 0.5, "model_config": 2, "size (cm)": -1.5, "class": "b c"}


@pytest.fixture(scope="module")
def parser() -> RequestParser:
    return RequestParser(MANIFEST, max_records=5)


def test_feature_names_that_clash_with_python_or_pydantic_work(parser):
    columns, rows, batch = parser.parse_records(json.dumps(GOOD).encode())
    assert (rows, batch) == (1, False)
    assert columns == {"json": [0.5], "model_config": [2.0], "size (cm)": [-1.5], "class": ["b c"]}
    assert all(isinstance(v, float) for v in columns["model_config"])


def test_a_batch_keeps_record_order(parser):
    body = json.dumps([{**GOOD, "json": float(i)} for i in range(4)]).encode()
    columns, rows, batch = parser.parse_records(body)
    assert (rows, batch, columns["json"]) == (4, True, [0.0, 1.0, 2.0, 3.0])


@pytest.mark.parametrize(
    ("value", "rule"),
    [("1", "wrong_type"), (True, "wrong_type"), ([1], "wrong_type"), ({"v": 1}, "wrong_type")],
)
def test_numbers_are_strict(parser, value, rule):
    with pytest.raises(Rejection) as caught:
        parser.parse_records(json.dumps({**GOOD, "json": value}).encode())
    assert caught.value.reason == rule and caught.value.status == 422
    assert caught.value.problems[0].field == "json"


def test_categories_are_exact_strings(parser):
    for value in (1, "B C", "b  c", None):
        with pytest.raises(Rejection) as caught:
            parser.parse_records(json.dumps({**GOOD, "class": value}).encode())
        assert caught.value.reason == "unknown_category", value
        assert "'a', 'b c' or '1'" in str(caught.value)


def test_rejection_message_lists_at_most_five_problems(parser):
    body = json.dumps([{"x": i} for i in range(3)]).encode()
    with pytest.raises(Rejection) as caught:
        parser.parse_records(body)
    assert len(caught.value.problems) == 15  # 4 missing + 1 unknown, per record
    assert str(caught.value).endswith("and 10 more")
    assert len(caught.value.body()["errors"]) == 15


def test_feedback_labels_are_the_model_classes(parser):
    ids, labels, batch = parser.parse_feedback(
        b'{"prediction_id": "abcdef012345-ff", "label": "yes"}'
    )
    assert (ids, labels, batch) == (["abcdef012345-ff"], ["yes"], False)
    with pytest.raises(Rejection) as caught:
        parser.parse_feedback(b'{"prediction_id": "abcdef012345-ff", "label": "maybe"}')
    assert caught.value.reason == "invalid_label"


def accepted(name: str) -> st.SearchStrategy[float]:
    """Return every float the model accepts for feature ``name`` (its input limits)."""
    low, high = input_limits(MANIFEST.feature(name))
    return st.floats(min_value=low, max_value=high, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "json": accepted("json"),
                "model_config": accepted("model_config") | st.integers(-(2**53), 2**53),
                "size (cm)": accepted("size (cm)"),
                "class": st.sampled_from(["a", "b c", "1"]),
            }
        ),
        min_size=1,
        max_size=5,
    )
)
def test_every_valid_batch_parses_to_its_exact_values(rows):
    parser = RequestParser(MANIFEST, max_records=5)
    columns, n, _ = parser.parse_records(json.dumps(rows).encode())
    assert n == len(rows)
    for name in GOOD:
        assert columns[name] == [r[name] if name == "class" else float(r[name]) for r in rows]


@settings(max_examples=60, deadline=None)
@given(
    value=st.one_of(
        st.text(max_size=5),
        st.booleans(),
        st.none(),
        st.lists(st.integers(), max_size=2),
        st.sampled_from([math.nan, math.inf, -math.inf]),
    ),
    field=st.sampled_from(["json", "model_config", "size (cm)"]),
)
def test_every_invalid_number_is_refused_with_a_bounded_reason(value, field):
    parser = RequestParser(MANIFEST, max_records=5)
    with pytest.raises(Rejection) as caught:
        parser.parse_records(json.dumps({**GOOD, field: value}).encode())
    assert caught.value.reason in REASONS
    assert caught.value.reason in ("wrong_type", "not_finite")
    assert caught.value.problems[0].field == field


def test_values_beyond_the_input_limits_are_refused_naming_field_and_limit(parser):
    # "json" was trained on [0, 1]: it accepts 100 spans either side, -100 to 101.
    assert input_limits(MANIFEST.feature("json")) == (-100.0, 101.0)
    for value, bound in ((101.5, "at most 101"), (-1e308, "at least -100")):
        with pytest.raises(Rejection) as caught:
            parser.parse_records(json.dumps({**GOOD, "json": value}).encode())
        assert (caught.value.status, caught.value.reason) == (422, "outside_limits")
        assert caught.value.problems[0].field == "json"
        assert bound in str(caught.value) and "'json'" in str(caught.value)
    # A feature without a training range takes what float32 models can: up to 3.4e38.
    with pytest.raises(Rejection) as caught:
        parser.parse_records(json.dumps({**GOOD, "size (cm)": 1e39}).encode())
    assert caught.value.reason == "outside_limits"
    columns, _, _ = parser.parse_records(json.dumps({**GOOD, "json": 101.0}).encode())
    assert columns["json"] == [101.0]  # the limit itself is accepted, as the schema says


@settings(max_examples=200, deadline=None)
@given(
    low=st.floats(-1e12, 1e12),
    span=st.floats(0, 1e12),
)
def test_limits_contain_the_training_range_widened_by_the_documented_spans(low, span):
    high = low + span
    spec = FeatureSpec(name="f", type="numeric", min=low, max=high)
    lo, hi = input_limits(spec)
    width = (spec.max - spec.min) or max(abs(low), 1.0)  # a constant feature: its magnitude
    assert lo <= low - LIMIT_SPANS * width and hi >= high + LIMIT_SPANS * width
    # Rounding outward to 3 significant digits widens by at most 1% of the limit.
    assert lo >= (low - LIMIT_SPANS * width) - 0.01 * abs(lo)
    assert hi <= (high + LIMIT_SPANS * width) + 0.01 * abs(hi)
    assert -FLOAT32_MAX < lo < hi < FLOAT32_MAX
