"""Drift scenarios: reproducible, schema-valid, reference-like first, then the documented shift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from threadpoolctl import threadpool_limits

from driftwarden.bundles import load_bundle
from driftwarden.bundles.scenarios import SCENARIOS, scenario, scenarios_for

N, AT = 1200, 600


@pytest.fixture(autouse=True, scope="module")
def _one_native_thread():
    # As the server runs models (DRIFTWARDEN_SERVER__MODEL_THREADS=1): OpenMP and BLAS
    # pools spinning on a shared 2-core machine make small predictions seconds slow.
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def bundles():
    return {
        name: load_bundle(f"builtin://{name}") for name in {s.bundle for s in SCENARIOS.values()}
    }


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_stream_fits_the_bundle_schema(name, bundles):
    bundle = bundles[SCENARIOS[name].bundle]
    frame, labels = scenario(name, n=N, drift_at=AT, seed=5)
    assert list(frame.columns) == bundle.feature_names
    assert len(frame) == len(labels) == N
    for spec in bundle.manifest.features:
        if spec.type == "categorical":
            assert set(frame[spec.name]) <= set(spec.categories), spec.name
        else:
            assert np.isfinite(frame[spec.name].to_numpy(np.float64)).all(), spec.name
    if bundle.task == "classification":
        assert set(labels) <= set(bundle.classes)
    else:
        assert np.isfinite(labels.astype(np.float64)).all()
    bundle.predict(frame)  # the model accepts every row


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_arguments_same_stream(name):
    a = scenario(name, n=300, drift_at=100, seed=9)
    b = scenario(name, n=300, drift_at=100, seed=9)
    c = scenario(name, n=300, drift_at=100, seed=10)
    pd.testing.assert_frame_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not a[0].equals(c[0])


@pytest.mark.parametrize("bundle", sorted({s.bundle for s in SCENARIOS.values()}))
def test_every_scenario_of_a_bundle_starts_with_the_same_reference_rows(bundle):
    streams = [scenario(s.name, n=400, drift_at=200, seed=3) for s in scenarios_for(bundle)]
    first = streams[0]
    for frame, labels in streams[1:]:
        pd.testing.assert_frame_equal(frame.iloc[:200], first[0].iloc[:200])
        np.testing.assert_array_equal(labels[:200], first[1][:200])


@pytest.mark.parametrize("bundle", ["diamonds", "diabetes", "iris", "insurance"])
def test_pre_drift_rows_look_like_the_reference(bundle, bundles):
    frame, _ = scenario(f"{bundle}:none", n=2000, drift_at=2000, seed=1)
    reference = bundles[bundle].reference
    for spec in bundles[bundle].manifest.features:
        if spec.type == "numeric":
            p = stats.ks_2samp(frame[spec.name], reference[spec.name]).pvalue
            assert p > 1e-4, (spec.name, p)


def _halves(name, **kwargs):
    frame, labels = scenario(name, n=4000, drift_at=2000, seed=2, **kwargs)
    return frame.iloc[:2000], frame.iloc[2000:], labels[:2000], labels[2000:]


def test_diamonds_carat_shift_moves_size_up():
    before, after, *_ = _halves("diamonds:carat-shift")
    sd = before["carat"].std()
    assert after["carat"].mean() - before["carat"].mean() > 0.5 * sd
    assert after["x"].mean() > before["x"].mean()  # rows stay physically consistent


def test_diamonds_cut_mix_reaches_the_documented_shares():
    before, after, *_ = _halves("diamonds:cut-mix")
    share = after["cut"].value_counts(normalize=True)
    assert share["Fair"] == pytest.approx(0.35, abs=0.04)
    assert share["Ideal"] == pytest.approx(0.05, abs=0.02)
    assert before["cut"].value_counts(normalize=True)["Ideal"] > 0.3


def test_diamonds_price_inflation_changes_labels_not_features(bundles):
    before, after, y_before, y_after = _halves("diamonds:price-inflation")
    assert stats.ks_2samp(before["carat"], after["carat"]).pvalue > 1e-3
    model = bundles["diamonds"]
    ratio = np.median(y_after / model.predict(after)) / np.median(y_before / model.predict(before))
    assert ratio == pytest.approx(1.35, abs=0.05)


def test_severity_scales_the_shift_and_zero_means_none():
    shifts = []
    for severity in (0.0, 0.5, 1.0):
        before, after, *_ = _halves("insurance:older-drivers", severity=severity)
        shifts.append(after["driver_age"].mean() - before["driver_age"].mean())
    assert abs(shifts[0]) < 1.5
    assert shifts[0] < shifts[1] < shifts[2]
    assert shifts[2] == pytest.approx(15.0, abs=1.5)


def test_insurance_variance_and_mix_shifts():
    before, after, *_ = _halves("insurance:mileage-spread")
    assert np.log(after["annual_miles"]).std() == pytest.approx(0.8, abs=0.05)
    assert np.log(before["annual_miles"]).std() == pytest.approx(0.45, abs=0.05)
    _, after, *_ = _halves("insurance:braking-rollout")
    assert (after["emergency_braking"] == "yes").mean() == pytest.approx(0.95, abs=0.02)
    assert (after["region"] == "urban").mean() == pytest.approx(0.70, abs=0.03)


@pytest.mark.parametrize(
    ("name", "min_increase"),
    [("insurance:braking-ineffective", 0.1), ("iris:label-swap", 0.3)],
)
def test_concept_drift_raises_the_error_rate_with_features_unchanged(name, min_increase, bundles):
    before, after, y_before, y_after = _halves(name)
    model = bundles[SCENARIOS[name].bundle]
    numeric = [f.name for f in model.manifest.features if f.type == "numeric"]
    for column in numeric:
        assert stats.ks_2samp(before[column], after[column]).pvalue > 1e-3, column
    error_before = np.mean(model.predict(before) != y_before)
    error_after = np.mean(model.predict(after) != y_after)
    assert error_after - error_before > min_increase


def test_digits_brightness_and_rotation_change_images_not_labels(bundles):
    before, after, y_before, _ = _halves("digits:brightness")
    assert after.to_numpy().mean() > before.to_numpy().mean() + 2.0
    assert after.to_numpy().max() <= 16.0
    _, rotated, _, y_rotated = _halves("digits:rotation")
    model = bundles["digits"]
    assert np.mean(model.predict(rotated) != y_rotated) > np.mean(model.predict(before) != y_before)
    embed_shift = np.linalg.norm(
        model.embed(rotated).mean(axis=0) - model.embed(before).mean(axis=0)
    )
    assert embed_shift > 0.5


def test_regression_concept_drift_raises_the_error(bundles):
    before, after, y_before, y_after = _halves("diabetes:bmi-effect")
    model = bundles["diabetes"]
    mse_before = np.mean((model.predict(before) - y_before) ** 2)
    mse_after = np.mean((model.predict(after) - y_after) ** 2)
    assert mse_after > 1.2 * mse_before


def test_iris_petal_shift_is_half_a_standard_deviation():
    before, after, *_ = _halves("iris:petal-shift")
    sd = before["petal_length"].std()
    assert (after["petal_length"].mean() - before["petal_length"].mean()) / sd == pytest.approx(
        0.5, abs=0.12
    )


def test_every_bundle_has_a_no_drift_and_a_drift_scenario():
    for bundle in ("diamonds", "diabetes", "iris", "digits", "insurance"):
        kinds = {s.kind for s in scenarios_for(bundle)}
        assert "none" in kinds and kinds & {"data", "concept"}, bundle
    assert all(s.description for s in SCENARIOS.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "nope"}, "unknown scenario 'nope'; choose from"),
        ({"name": "iris:none", "n": 10, "drift_at": 11}, "0 <= drift_at <= n"),
        ({"name": "iris:none", "severity": -1}, "severity must be >= 0"),
    ],
)
def test_bad_arguments_are_explained(kwargs, message):
    with pytest.raises((KeyError, ValueError), match=message):
        scenario(**kwargs)
