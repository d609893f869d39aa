"""Bundles: manifest rules, URI resolution, the five built-ins, training and the CLI.

Built-in bundles come from the shared cache (``$DRIFTWARDEN_BUNDLES_DIR`` or
``~/.cache/driftwarden/bundles``), retrained only when the training recipe changes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from threadpoolctl import threadpool_limits

from driftwarden.bundles import Bundle, BundleError, load_bundle
from driftwarden.bundles.bundle import BUNDLES_DIR_ENV, resolve_uri
from driftwarden.bundles.cli import main as train_main
from driftwarden.bundles.manifest import BundleManifest, FeatureSpec
from driftwarden.bundles.train import BUILTIN, recipe_fingerprint, train_bundle

ALL = sorted(BUILTIN)


@pytest.fixture(autouse=True, scope="module")
def _one_native_thread():
    # As the server runs models (DRIFTWARDEN_SERVER__MODEL_THREADS=1): OpenMP and BLAS
    # pools spinning on a shared 2-core machine make small predictions seconds slow.
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module", params=ALL)
def bundle(request) -> Bundle:
    return load_bundle(f"builtin://{request.param}")


def _manifest(**changes) -> dict:
    body = {
        "name": "m",
        "task": "regression",
        "features": [{"name": "a", "type": "numeric"}],
        "target": {"name": "y"},
        "prediction": {"type": "numeric"},
        "model": {"format": "sklearn-joblib", "file": "model.joblib"},
        "reference": {"rows": 1},
        "metrics": {"mse": 1.0},
    }
    body.update(changes)
    return body


# ------------------------------------------------------------------ manifest rules


def test_minimal_manifest_parses():
    assert BundleManifest.model_validate(_manifest()).feature_names == ["a"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"features": [{"name": "c", "type": "categorical"}]}, "non-empty 'categories'"),
        (
            {"features": [{"name": "c", "type": "categorical", "categories": ["x", "x"]}]},
            "duplicate categories",
        ),
        ({"features": [{"name": "a", "type": "numeric", "categories": ["x"]}]}, "no 'categories'"),
        ({"features": [{"name": "a", "type": "numeric", "min": 2, "max": 1}]}, "min 2.0 > max"),
        ({"features": [{"name": "prediction", "type": "numeric"}]}, "reserved"),
        (
            {"features": [{"name": "a", "type": "numeric"}, {"name": "a", "type": "numeric"}]},
            "duplicate feature names",
        ),
        ({"task": "classification"}, "classification bundles predict categorical"),
        ({"prediction": {"type": "numeric", "classes": ["a"]}}, "regression bundles"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
        ({"name": "Not A Slug"}, "should match pattern"),
    ],
)
def test_manifest_rejects_inconsistent_bundles(changes, message):
    with pytest.raises(ValidationError, match=message):
        BundleManifest.model_validate(_manifest(**changes))


def test_feature_lookup_names_the_bundle():
    manifest = BundleManifest.model_validate(_manifest())
    assert manifest.feature("a") == FeatureSpec(name="a", type="numeric")
    with pytest.raises(KeyError, match="bundle 'm' has no feature 'b'"):
        manifest.feature("b")


# ------------------------------------------------------------------ URIs


def test_builtin_uri_resolves_under_the_bundles_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(BUNDLES_DIR_ENV, str(tmp_path))
    assert resolve_uri("builtin://diamonds") == (tmp_path / "diamonds", "diamonds")


def test_file_uri_and_plain_path_resolve_to_directories(monkeypatch, tmp_path):
    monkeypatch.setenv(BUNDLES_DIR_ENV, str(tmp_path))
    assert resolve_uri(f"file://{tmp_path}/my%20model") == (tmp_path / "my model", None)
    assert resolve_uri(str(tmp_path)) == (tmp_path, None)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("builtin://nope", "unknown built-in bundle 'builtin://nope'; built-ins are"),
        ("s3://bucket/model", "unsupported scheme 's3'"),
        ("file://host/path", "must be local"),
    ],
)
def test_bad_uris_say_what_is_accepted(uri, message):
    with pytest.raises(BundleError, match=message):
        resolve_uri(uri)


def test_directory_without_manifest_is_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="bundle.json is missing"):
        load_bundle(tmp_path)


# ------------------------------------------------------------------ the built-ins


def test_reference_predictions_are_the_models_own(bundle):
    reference = bundle.reference
    assert list(reference.columns) == [*bundle.feature_names, "prediction", "target"]
    assert len(reference) == bundle.manifest.reference.rows
    predicted = bundle.predict(reference)
    if bundle.task == "regression":
        assert predicted.dtype == np.float64
        np.testing.assert_allclose(predicted, reference["prediction"].to_numpy(), rtol=1e-9)
    else:
        assert set(predicted) <= set(bundle.classes)
        assert (predicted == reference["prediction"].to_numpy()).all()


def test_schema_describes_the_reference_sample(bundle):
    reference = bundle.reference
    for spec in bundle.manifest.features:
        column = reference[spec.name]
        if spec.type == "categorical":
            assert set(column) <= set(spec.categories), spec.name
        else:
            assert np.isfinite(column.to_numpy(np.float64)).all()
            if bundle.name != "insurance":  # insurance ranges come from the training draw only
                assert spec.min <= column.min() and column.max() <= spec.max, spec.name


@pytest.mark.parametrize("name", ["diabetes", "iris", "digits"])  # reference = whole test split
def test_metrics_match_the_held_out_reference(name):
    bundle = load_bundle(f"builtin://{name}")
    assert bundle.manifest.reference.rows == bundle.manifest.training["test_rows"]
    reference = bundle.reference
    if bundle.task == "regression":
        mse = float(np.mean((reference["prediction"] - reference["target"]) ** 2))
        assert mse == pytest.approx(bundle.metrics["mse"], rel=1e-9)
    else:
        accuracy = float(np.mean(reference["prediction"] == reference["target"]))
        assert accuracy == pytest.approx(bundle.metrics["accuracy"])


def test_models_are_better_than_guessing(bundle):
    if bundle.task == "regression":
        assert bundle.metrics["r2"] > {"diamonds": 0.95, "diabetes": 0.3}[bundle.name]
    else:
        assert (
            bundle.metrics["accuracy"]
            > {"iris": 0.9, "digits": 0.95, "insurance": 0.7}[bundle.name]
        )


def test_probabilities_follow_the_manifest_class_order(bundle):
    sample = bundle.reference.head(50)
    proba = bundle.predict_proba(sample)
    if bundle.task == "regression":
        assert proba is None
        return
    assert proba.shape == (50, len(bundle.classes))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    labels = np.asarray(bundle.classes, dtype=object)[proba.argmax(axis=1)]
    assert (labels == bundle.predict(sample)).all()


def test_only_the_digits_cnn_has_an_embedding(bundle):
    sample = bundle.reference.head(7)
    embedding = bundle.embed(sample)
    if bundle.name != "digits":
        assert embedding is None and bundle.manifest.embedding is None
        return
    assert embedding.shape == (7, bundle.manifest.embedding.dim)
    assert (embedding >= 0).all()  # ReLU activations
    assert bundle.reference_embeddings.shape == (len(bundle.reference), 64)


def test_predict_takes_columns_in_any_order_and_names_missing_ones(bundle):
    sample = bundle.reference.head(5)
    shuffled = sample[list(reversed(sample.columns))]
    np.testing.assert_array_equal(bundle.predict(shuffled), bundle.predict(sample))
    with pytest.raises(KeyError, match=bundle.feature_names[0]):
        bundle.predict(sample.drop(columns=bundle.feature_names[0]))


def test_bundle_json_is_the_documented_shape(bundle):
    body = json.loads((bundle.path / "bundle.json").read_text())
    assert body["format_version"] == 1 and body["name"] == bundle.name
    assert body["training"]["recipe"] == recipe_fingerprint()
    assert body["training"]["seed"] == 0
    assert (bundle.path / body["model"]["file"]).is_file()


# ------------------------------------------------------------------ training


def test_training_is_deterministic(tmp_path):
    first = train_bundle("iris", tmp_path / "a")
    second = train_bundle("iris", tmp_path / "b")
    a = pd.read_csv(first / "reference.csv")
    b = pd.read_csv(second / "reference.csv")
    pd.testing.assert_frame_equal(a, b)
    assert json.loads((first / "bundle.json").read_text()) == json.loads(
        (second / "bundle.json").read_text()
    )


def test_existing_bundle_is_kept_unless_forced(tmp_path):
    target = train_bundle("diabetes", tmp_path)
    marker = target / "marker"
    marker.write_text("x")
    assert train_bundle("diabetes", tmp_path) == target and marker.exists()
    train_bundle("diabetes", tmp_path, force=True)
    assert not marker.exists() and (target / "bundle.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["diabetes"]  # no staging left over


def test_stale_builtin_is_retrained_on_load(monkeypatch, tmp_path):
    monkeypatch.setenv(BUNDLES_DIR_ENV, str(tmp_path))
    target = train_bundle("iris", tmp_path)
    body = json.loads((target / "bundle.json").read_text())
    body["training"]["recipe"] = "0000stale0000"
    (target / "bundle.json").write_text(json.dumps(body))
    loaded = load_bundle("builtin://iris")
    assert loaded.manifest.training["recipe"] == recipe_fingerprint()


def test_unwritable_bundles_dir_says_what_to_do(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(BUNDLES_DIR_ENV, str(blocker / "bundles"))
    with pytest.raises(
        BundleError, match="cannot train built-in bundle 'iris'.*writable directory"
    ):
        load_bundle("builtin://iris")


def test_missing_model_file_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv(BUNDLES_DIR_ENV, str(tmp_path))
    target = train_bundle("iris", tmp_path)
    (target / "model.joblib").unlink()
    with pytest.raises(BundleError, match="model file 'model.joblib'.*missing"):
        load_bundle(f"file://{target}")


def test_missing_reference_is_reported(tmp_path):
    target = train_bundle("iris", tmp_path)
    (target / "reference.csv").unlink()
    # Every file of the bundle is read (for its digest) when it loads, not when first used.
    with pytest.raises(BundleError, match="reference sample 'reference.csv'.*missing"):
        _ = load_bundle(target).reference


def test_invalid_manifest_names_the_file(tmp_path):
    target = train_bundle("iris", tmp_path)
    body = json.loads((target / "bundle.json").read_text())
    body["task"] = "ranking"
    (target / "bundle.json").write_text(json.dumps(body))
    with pytest.raises(BundleError, match=r"bundle.json: invalid manifest"):
        load_bundle(target)


def test_cli_trains_named_bundles(tmp_path, capsys):
    assert train_main(["iris", "diabetes", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diabetes", "iris"]
    assert "accuracy=0.9" in capsys.readouterr().out
    assert load_bundle(tmp_path / "iris").task == "classification"


def test_cli_rejects_unknown_names(tmp_path, capsys):
    assert train_main(["iris", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown bundle(s) ['nope']" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_copied_bundle_loads_from_a_file_uri(monkeypatch, tmp_path):
    source = load_bundle("builtin://iris")
    monkeypatch.setenv(BUNDLES_DIR_ENV, str(tmp_path))
    copy = Path(shutil.copytree(source.path, tmp_path / "copy"))
    loaded = load_bundle(f"file://{copy}")
    np.testing.assert_array_equal(
        loaded.predict(loaded.reference), source.predict(source.reference)
    )
