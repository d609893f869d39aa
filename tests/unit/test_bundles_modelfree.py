"""Model-free bundles: created from a reference file, loaded without a model, served as a
gateway (``/predict`` answers 409), and planned by the drift worker from the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from driftwarden.bundles import BundleError, load_bundle
from driftwarden.bundles.bundle_cli import main as bundle_main
from driftwarden.bundles.create import create_model_free, read_reference
from driftwarden.bundles.integrity import bundle_digest, bundle_files
from driftwarden.bundles.manifest import BundleManifest
from driftwarden.common import names
from driftwarden.common.spec import DriftMonitorSpec
from driftwarden.drift_worker.plan import plan_from_bundle
from driftwarden.model_server.app import create_app
from driftwarden.model_server.emission import bundle_streams
from driftwarden.model_server.settings import Settings


def _reference(tmp_path: Path, rows: int = 300) -> Path:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows),
            "income": rng.normal(50_000, 8_000, rows).round(2),
            "city": rng.choice(["paris", "rome", "oslo"], rows),
            "segment": rng.integers(1, 4, rows),  # numbers that are really categories
            "score": rng.normal(0.5, 0.1, rows),
            "churned": rng.choice(["no", "yes"], rows),
        }
    )
    frame["predicted"] = np.where(frame["score"] > 0.5, "yes", "no")
    path = tmp_path / "ref.csv"
    frame.to_csv(path, index=False)
    return path


def _create(tmp_path: Path, name: str = "mf", **kwargs: Any) -> Path:
    out = tmp_path / name
    create_model_free(_reference(tmp_path), out, **kwargs)
    return out


def test_create_infers_the_schema_and_writes_schema_reference_and_manifest(tmp_path):
    out = _create(
        tmp_path,
        categorical=["segment"],
        prediction="predicted",
        prediction_type="classification",
        label="churned",
        metrics={"accuracy": 0.8},
    )
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json", "reference.csv", "schema.json"]
    body = json.loads((out / "bundle.json").read_text())
    assert body["kind"] == "model-free" and "model" not in body and "features" not in body
    assert body["schema"] == "schema.json" and body["task"] == "classification"
    bundle = load_bundle(out)
    assert not bundle.has_model and bundle.has_prediction and bundle.has_labels
    by_name = {f.name: f for f in bundle.manifest.features}
    assert list(by_name) == ["age", "income", "city", "segment", "score"]
    assert by_name["age"].type == "numeric" and 18 <= by_name["age"].min <= by_name["age"].max < 90
    assert by_name["city"].categories == ["oslo", "paris", "rome"]
    assert by_name["segment"].type == "categorical" and by_name["segment"].categories == [
        "1",
        "2",
        "3",
    ]
    assert bundle.classes == ["no", "yes"] and bundle.metrics == {"accuracy": 0.8}
    assert bundle.manifest.target is not None and bundle.manifest.target.name == "churned"
    assert list(bundle.reference.columns) == [*by_name, "prediction", "target"]
    assert len(bundle.reference) == 300
    with pytest.raises(BundleError, match="model-free.*/v1/records"):
        bundle.predict(bundle.reference)


def test_features_only_bundle_has_no_prediction_or_target_columns(tmp_path):
    bundle = load_bundle(_create(tmp_path))
    assert bundle.task is None and not bundle.has_prediction and not bundle.has_labels
    # The prediction and label columns of the file are just features here.
    assert "predicted" in bundle.feature_names and "churned" in bundle.feature_names
    assert "prediction" not in bundle.reference.columns


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label": "churned"}, "--label needs --prediction"),
        ({"prediction": "predicted"}, "go together"),
        ({"prediction": "nope", "prediction_type": "regression"}, "'nope' is not in the"),
        ({"prediction": "predicted", "prediction_type": "regression"}, "not numeric"),
        ({"categorical": ["zzz"]}, "not in the reference file"),
    ],
)
def test_create_refuses_inconsistent_options(tmp_path, kwargs, message):
    with pytest.raises(BundleError, match=message):
        _create(tmp_path, **kwargs)


def test_create_refuses_incomplete_and_unknown_input(tmp_path):
    (tmp_path / "gaps.csv").write_text("a,b\n1,x\n,y\n")
    with pytest.raises(BundleError, match="column 'a' has 1 empty value"):
        create_model_free(tmp_path / "gaps.csv", tmp_path / "out")
    (tmp_path / "ref.json").write_text("{}")
    with pytest.raises(BundleError, match="use .csv or .parquet"):
        read_reference(tmp_path / "ref.json")
    out = _create(tmp_path)
    with pytest.raises(BundleError, match="not empty"):
        create_model_free(tmp_path / "ref.csv", out)


def test_parquet_needs_pyarrow_or_says_so(tmp_path, monkeypatch):
    frame = pd.read_csv(_reference(tmp_path))
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        (tmp_path / "ref.parquet").write_bytes(b"PAR1")
        with pytest.raises(BundleError, match="needs pyarrow"):
            read_reference(tmp_path / "ref.parquet")
        return
    frame.to_parquet(tmp_path / "ref.parquet")
    create_model_free(tmp_path / "ref.parquet", tmp_path / "pq")
    assert load_bundle(tmp_path / "pq").feature_names == list(frame.columns)


def test_an_edited_schema_is_checked_again_with_errors_naming_the_field(tmp_path):
    out = _create(tmp_path)
    path = out / "schema.json"
    good = path.read_text()
    schema = json.loads(good)
    schema["features"][0]["min"] = 1000.0  # age: min above max
    schema["features"][2]["type"] = "text"  # city
    path.write_text(json.dumps(schema))
    with pytest.raises(BundleError) as caught:
        load_bundle(out)
    text = str(caught.value)
    assert "schema.json: invalid feature schema (2 problem(s))" in text
    assert "features[0] ('age')" in text and "min 1000" in text
    assert "features[2] ('city').type" in text
    # A valid edit (a category the reference has not shown, a wider range) loads.
    schema = json.loads(good)
    schema["features"][0]["min"] = 0.0
    schema["features"][2]["categories"].append("bern")
    path.write_text(json.dumps(schema))
    assert "bern" in (load_bundle(out).manifest.feature("city").categories or [])
    schema["features"].append(schema["features"][0])
    path.write_text(json.dumps(schema))
    with pytest.raises(BundleError, match="duplicate feature names"):
        load_bundle(out)


def test_the_digest_covers_schema_reference_and_manifest(tmp_path):
    out = _create(tmp_path)
    manifest = load_bundle(out).manifest
    assert list(bundle_files(out, manifest)) == ["bundle.json", "reference.csv", "schema.json"]
    digest = bundle_digest(out, manifest)
    assert load_bundle(out, digest=digest).digest == digest
    (out / "unrelated.txt").write_text("not part of the bundle")
    assert bundle_digest(out, manifest) == digest
    path = out / "schema.json"
    path.write_text(path.read_text().replace('"name": "city"', '"name": "town"'))
    with pytest.raises(BundleError, match="refusing to load"):
        load_bundle(out, digest=digest)


def test_cli_create_prints_the_digest_and_errors_exit_2(tmp_path, capsys):
    reference = _reference(tmp_path)
    out = tmp_path / "cli"
    argv = ["create", "--reference", str(reference), "--out", str(out), "--name", "churn"]
    argv += ["--categorical", "segment", "--prediction", "predicted"]
    argv += ["--prediction-type", "classification", "--label", "churned", "--metric", "auc=0.9"]
    assert bundle_main(argv) == 0
    printed = capsys.readouterr()
    digest = printed.out.strip()
    assert digest == bundle_digest(out, load_bundle(out).manifest)
    assert "segment (categorical)" in printed.err
    assert load_bundle(out).name == "churn" and load_bundle(out).metrics == {"auc": 0.9}
    assert bundle_main(["digest", str(out)]) == 0 and capsys.readouterr().out.strip() == digest
    assert bundle_main(["create", "--reference", str(reference), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_model_bundle_manifests_are_unchanged_and_need_their_model():
    body = json.loads((load_bundle("builtin://iris").path / "bundle.json").read_text())
    assert "kind" not in body and "schema" not in body and body["model"]["file"]
    manifest = BundleManifest.model_validate(body)
    assert manifest.kind == "model" and manifest.to_json() == body
    with pytest.raises(ValueError, match="needs \\['model'\\]"):
        BundleManifest.model_validate({**body, "model": None})
    with pytest.raises(ValueError, match="names no 'model'"):
        BundleManifest.model_validate({**body, "kind": "model-free"})


# ------------------------------------------------------------------ model server


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _serve_and_post(bundle: Any, requests: list[tuple[str, Any]]) -> list[httpx.Response]:
    app = create_app(Settings(bundle="unused://"), bundle=bundle, emitter=None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            out = [await client.get("/readyz")]
            for path, body in requests:
                out.append(await client.post(path, json=body))
            out.append(await client.get("/openapi.json"))
            out.append(await client.get("/healthz"))
            return out


@pytest.mark.anyio
async def test_the_model_server_serves_a_model_free_bundle_as_a_gateway(tmp_path):
    bundle = load_bundle(
        _create(tmp_path, prediction="predicted", prediction_type="classification", label="churned")
    )
    record = {"age": 30.0, "income": 1.0, "city": "rome", "segment": 2.0, "score": 0.1}
    feedback = {"prediction_id": "0123456789ab-1", "label": "yes"}
    ready, predict, fed, doc, health = await _serve_and_post(
        bundle, [("/predict", record), ("/feedback", feedback)]
    )
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert predict.status_code == 409
    assert predict.json() == {
        "detail": "bundle has no model; send records to /v1/records",
        "reason": "model_free",
    }
    assert fed.status_code == 202 and fed.json()["accepted"] == 1  # /feedback unchanged
    assert doc.status_code == 200 and "409" in doc.json()["paths"]["/predict"]["post"]["responses"]
    assert health.status_code == 200


@pytest.mark.anyio
async def test_feedback_without_labels_in_the_bundle_is_409_not_5xx(tmp_path):
    bundle = load_bundle(_create(tmp_path))
    _, predict, fed, _, _ = await _serve_and_post(
        bundle, [("/predict", {}), ("/feedback", {"prediction_id": "0123456789ab-1", "label": 1})]
    )
    assert predict.status_code == 409 and fed.status_code == 409
    assert "concept stream" in fed.json()["detail"]


@pytest.mark.anyio
async def test_records_reach_the_gateway_with_a_prediction_only_if_declared(tmp_path):
    features = {"age": 30.0, "income": 1.0, "city": "rome", "score": 0.1, "segment": 2.0}
    features["churned"] = "no"  # no --label: the label column is a feature
    declared = load_bundle(
        _create(tmp_path, "with", prediction="predicted", prediction_type="classification")
    )
    _, ok, bad, _, _ = await _serve_and_post(
        declared,
        [
            ("/v1/records", {"id": "r-1", "features": features, "prediction": "yes"}),
            ("/v1/records", {"id": "r-2", "features": features, "prediction": "maybe"}),
        ],
    )
    assert ok.status_code == 202, ok.text
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "prediction"
    bare = load_bundle(_create(tmp_path, "without"))
    record = {**features, "predicted": "no"}
    _, ok, refused, _, _ = await _serve_and_post(
        bare,
        [
            ("/v1/records", {"features": record}),
            ("/v1/records", {"features": record, "prediction": 1.0}),
        ],
    )
    assert ok.status_code == 202, ok.text
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "prediction"
    assert "declares no prediction" in refused.json()["errors"][0]["message"]


# ------------------------------------------------------------------ drift worker


def _plan(bundle: Any) -> Any:
    spec = DriftMonitorSpec.model_validate({"model": {"bundle": "file:///x"}})
    return plan_from_bundle("ns/mf", spec, bundle)


@pytest.mark.parametrize(
    ("kwargs", "extra"),
    [
        ({}, set()),
        ({"prediction": "score", "prediction_type": "regression"}, {names.STREAM_PREDICTION}),
        (
            {"prediction": "predicted", "prediction_type": "classification", "label": "churned"},
            {names.STREAM_PREDICTION, names.STREAM_PERFORMANCE},
        ),
    ],
)
def test_worker_streams_follow_what_the_bundle_declares(tmp_path, kwargs, extra):
    bundle = load_bundle(_create(tmp_path, categorical=["segment"], **kwargs))
    plan = _plan(bundle)
    features = {names.feature_stream(n) for n in bundle.feature_names}
    assert set(plan.streams) == features | extra
    assert bundle_streams(bundle) == features | extra  # the server sends what workers expect
    assert plan.streams[names.feature_stream("segment")].kind == "categorical"
    assert plan.streams[names.feature_stream("age")].kind == "numeric"
    if names.STREAM_PERFORMANCE in plan.streams:
        perf = plan.streams[names.STREAM_PERFORMANCE]
        assert perf.task == "classification" and set(np.unique(perf.reference)) <= {0.0, 1.0}
    for stream in plan.streams.values():
        assert plan.factory(stream)  # every stream gets its default detectors


# ------------------------------------------------------------------ operator


def test_a_model_free_monitor_still_gets_the_model_server_as_its_gateway():
    from driftwarden.common.sharding import ShardMap
    from driftwarden.operator import builders
    from driftwarden.operator.settings import OperatorSettings
    from support.operator import FAKE
    from support.operator import monitor as make_monitor

    digest = "sha256:" + "ab" * 32
    monitor = make_monitor(
        {"model": {"bundle": "file:///opt/driftwarden-bundles/churn", "digest": digest}},
        name="churn",
    )
    shard_map = ShardMap(monitor=monitor.key, epoch=1, shards=monitor.spec.workers.shards)
    children = builders.build_children(
        monitor, OperatorSettings(), shard_map=shard_map, renderers=FAKE
    )
    kinds = {(c["kind"], c["metadata"]["name"]) for c in children}
    name = names.model_service("churn")
    assert ("Deployment", name) in kinds and ("Service", name) in kinds
    deployment = next(c for c in children if c["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # Ready means loaded and serving: true of a model-free bundle (no model call involved).
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
