"""The model server through the real ASGI app (httpx ASGITransport), for every bundle.

Each test runs the app's lifespan, so the micro-batcher, metrics and emitter are the
production ones; a recording emitter stands in for the drift workers except where
the real Sender is wired to a mock worker.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from threadpoolctl import threadpool_limits

from driftwarden.bundles import Bundle, load_bundle
from driftwarden.bundles.limits import input_limits
from driftwarden.bundles.train import BUILTIN
from driftwarden.common import names
from driftwarden.common.sharding import ShardMap
from driftwarden.ingest import wire
from driftwarden.ingest.sender import Sender, SenderSettings
from driftwarden.model_server.app import create_app
from driftwarden.model_server.settings import ServerOptions, Settings

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True, scope="module")
def _one_native_thread():
    # As the server runs models (DRIFTWARDEN_SERVER__MODEL_THREADS=1): OpenMP and BLAS
    # pools spinning on a shared 2-core machine make small predictions seconds slow.
    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module", params=sorted(BUILTIN))
def bundle(request) -> Bundle:
    return load_bundle(f"builtin://{request.param}")


class RecordingEmitter:
    """Remembers every emit_* call (the Sender's interface)."""

    def __init__(self) -> None:
        self.features: list[dict[str, list[Any]]] = []
        self.predictions: list[tuple[list[str], list[Any]]] = []
        self.labels: list[tuple[list[str], list[Any]]] = []
        self.embeddings: list[tuple[str, np.ndarray]] = []
        self.started = self.stopped = False

    def emit_features(self, columns):
        self.features.append({k: list(v) for k, v in columns.items()})

    def emit_predictions(self, ids, values):
        self.predictions.append((list(ids), list(values)))

    def emit_labels(self, ids, labels):
        self.labels.append((list(ids), list(labels)))

    def emit_embeddings(self, group, matrix):
        self.embeddings.append((group, np.asarray(matrix)))

    def has_room(self, values):
        return True

    async def start(self):
        self.started = True

    async def stop(self, drain_timeout=5.0):
        self.stopped = True

    def emitted_ids(self) -> list[str]:
        return [i for ids, _ in self.predictions for i in ids]


def settings(**server: Any) -> Settings:
    return Settings(bundle="unused://", server=ServerOptions(**server))


@asynccontextmanager
async def serve(
    bundle: Bundle, emitter: Any = None, **server: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(settings(**server), bundle=bundle, emitter=emitter)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            yield client, app.state.driftwarden


def records(frame: pd.DataFrame, bundle: Bundle) -> list[dict[str, Any]]:
    """Return JSON records of ``frame``'s features (numbers as float, categories as str)."""
    out = []
    for row in frame[bundle.feature_names].itertuples(index=False):
        rec = {}
        for spec, value in zip(bundle.manifest.features, row, strict=False):
            rec[spec.name] = float(value) if spec.type == "numeric" else str(value)
        out.append(rec)
    return out


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def sample_value(text: str, name: str, **labels: str) -> float:
    return metric_samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


# ------------------------------------------------------------------ predictions


async def test_predictions_equal_the_model_called_directly(bundle):
    frame = bundle.reference.head(40)
    expected = bundle.predict(frame).tolist()
    recs = records(frame, bundle)
    emitter = RecordingEmitter()
    async with serve(bundle, emitter, max_wait_ms=20) as (client, state):
        single = await client.post("/predict", json=recs[0])
        assert single.status_code == 200, single.text
        assert single.json()["prediction"] == expected[0]
        batch = await client.post("/predict", json=recs)
        assert [p["prediction"] for p in batch.json()["predictions"]] == expected
        # 40 concurrent one-record requests: gathered into fewer model calls, same answers.
        before = state.batcher.batches
        answers = await asyncio.gather(*(client.post("/predict", json=r) for r in recs))
        got = [a.json()["prediction"] for a in answers]
        if bundle.task == "classification":
            assert got == expected
        else:
            # BLAS kernels may sum in another order for another batch shape: the last bit
            # can differ (as it does calling the model directly on other row groupings).
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
        assert state.batcher.batches - before < len(recs)
        ids = [single.json()["id"], *(p["id"] for p in batch.json()["predictions"])]
        ids += [a.json()["id"] for a in answers]
        assert len(set(ids)) == len(ids) == 81
    # Everything served was emitted: features, predictions with their ids.
    assert sorted(emitter.emitted_ids()) == sorted(ids)
    emitted_rows = sum(len(next(iter(f.values()))) for f in emitter.features)
    assert emitted_rows == 81
    assert set(emitter.features[0]) == set(bundle.feature_names)
    assert emitter.started and emitter.stopped


async def test_regression_values_survive_json_exactly(bundle):
    frame = bundle.reference.head(5)
    async with serve(bundle) as (client, _):
        got = (await client.post("/predict", json=records(frame, bundle))).json()
    values = [p["prediction"] for p in got["predictions"]]
    if bundle.task == "regression":
        assert all(isinstance(v, float) for v in values)
        np.testing.assert_array_equal(np.asarray(values), bundle.predict(frame))
    else:
        assert set(values) <= set(bundle.classes)


async def test_embeddings_are_emitted_for_models_that_have_them(bundle):
    frame = bundle.reference.head(12)
    emitter = RecordingEmitter()
    async with serve(bundle, emitter) as (client, _):
        assert (await client.post("/predict", json=records(frame, bundle))).status_code == 200
    if bundle.manifest.embedding is None:
        assert emitter.embeddings == []
        return
    (group, matrix), *_ = emitter.embeddings
    assert group == bundle.manifest.embedding.group
    np.testing.assert_allclose(matrix, bundle.embed(frame), rtol=1e-5, atol=1e-6)


async def test_server_serves_without_any_worker(bundle):
    async with serve(bundle) as (client, state):
        assert not state.emitting
        rec = records(bundle.reference.head(1), bundle)[0]
        assert (await client.post("/predict", json=rec)).status_code == 200
        fb = await client.post(
            "/feedback",
            json={"prediction_id": "0123456789ab-1", "label": _label(bundle, 0)},
        )
        assert fb.status_code == 202 and fb.json() == {"accepted": 1, "forwarded": False}
        assert (await client.get("/readyz")).json()["emission"] is False


# ------------------------------------------------------------------ bad input


def _raw(record: dict[str, Any], literal: str) -> bytes:
    """Return ``record`` as JSON with the placeholder "__X__" replaced by a raw literal."""
    return json.dumps(record).replace('"__X__"', literal).encode()


def _bad_cases(bundle: Bundle) -> list[tuple[str, Any, int, str, str | None]]:
    """Return (case, body, status, rule, field) for every class of bad input."""
    good = records(bundle.reference.head(1), bundle)[0]
    numeric = next(f.name for f in bundle.manifest.features if f.type == "numeric")
    first = bundle.feature_names[0]
    cases = [
        ("string for a number", {**good, numeric: "1.5"}, 422, "wrong_type", numeric),
        ("boolean for a number", {**good, numeric: True}, 422, "wrong_type", numeric),
        ("null value", {**good, numeric: None}, 422, "wrong_type", numeric),
        (
            "missing feature",
            {k: v for k, v in good.items() if k != first},
            422,
            "missing_feature",
            first,
        ),
        (
            "unknown feature",
            {**good, "colour_of_the_sky": 1.0},
            422,
            "unknown_feature",
            "colour_of_the_sky",
        ),
        ("NaN", _raw({**good, numeric: "__X__"}, "NaN"), 422, "not_finite", numeric),
        ("infinity", json.dumps({**good, numeric: math.inf}).encode(), 422, "not_finite", numeric),
        (
            "overflowing number",
            _raw({**good, numeric: "__X__"}, "1e999"),
            422,
            "not_finite",
            numeric,
        ),
        ("beyond the model's limit", {**good, numeric: 1e308}, 422, "outside_limits", numeric),
        ("empty batch", [], 422, "empty_batch", None),
        ("too many records", [good] * 11, 413, "too_many_records", None),
        ("not JSON", b'{"carat": 1,', 400, "malformed_json", None),
        ("not an object", b"42", 422, "wrong_type", None),
        ("body too large", b"[" + b" " * 300_000 + b"]", 413, "body_too_large", None),
    ]
    categorical = [f for f in bundle.manifest.features if f.type == "categorical"]
    if categorical:
        name = categorical[0].name
        cases += [
            ("unknown category", {**good, name: "Plutonium"}, 422, "unknown_category", name),
            ("number for a category", {**good, name: 3}, 422, "unknown_category", name),
        ]
    return cases


async def test_every_class_of_bad_input_is_refused_before_the_model(bundle):
    emitter = RecordingEmitter()
    async with serve(bundle, emitter, max_records=10, max_body_bytes=200_000) as (client, state):
        for case, body, status, rule, field in _bad_cases(bundle):
            kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
            resp = await client.post("/predict", **kwargs)
            assert resp.status_code == status, (case, resp.text)
            doc = resp.json()
            rules = [e["rule"] for e in doc["errors"]]
            assert rule in rules, (case, doc)
            if field is not None:
                assert any(e["field"] == field and e["rule"] == rule for e in doc["errors"]), doc
                assert repr(field) in doc["detail"], (case, doc["detail"])
            assert f"[{rule}]" in doc["detail"]
        assert state.batcher.batches == 0  # nothing reached the model
        metrics = (await client.get("/metrics")).text
    assert emitter.features == [] and emitter.predictions == []
    for case, _, _, rule, _ in _bad_cases(bundle):
        got = sample_value(metrics, names.M_REJECTIONS, handler="/predict", reason=rule)
        assert got >= 1, (case, rule)
    total = sum(
        v
        for (n, labels), v in metric_samples(metrics).items()
        if n == names.M_REJECTIONS and dict(labels)["handler"] == "/predict"
    )
    assert total == len(_bad_cases(bundle))


async def test_a_bad_record_in_a_batch_names_its_index(bundle):
    recs = records(bundle.reference.head(3), bundle)
    numeric = next(f.name for f in bundle.manifest.features if f.type == "numeric")
    recs[2][numeric] = "oops"
    async with serve(bundle) as (client, _):
        resp = await client.post("/predict", json=recs)
    assert resp.status_code == 422
    assert resp.json()["errors"][0] == {
        "record": 2,
        "field": numeric,
        "rule": "wrong_type",
        "message": "Input should be a valid number (got 'oops')",
    }
    assert resp.json()["detail"].startswith(f"record 2, field {numeric!r}")


async def test_wrong_content_type_and_lying_length_are_refused(bundle):
    rec = records(bundle.reference.head(1), bundle)[0]
    async with serve(bundle, max_body_bytes=2048) as (client, _):
        resp = await client.post(
            "/predict", content=json.dumps(rec), headers={"content-type": "text/csv"}
        )
        assert (
            resp.status_code == 415 and resp.json()["errors"][0]["rule"] == "unsupported_media_type"
        )
        big = json.dumps([rec] * 200).encode()

        async def chunks():
            for start in range(0, len(big), 1000):
                yield big[start : start + 1000]

        resp = await client.post("/predict", content=chunks())  # no content-length
        assert resp.status_code == 413 and "2048-byte limit" in resp.json()["detail"]


# ------------------------------------------------------------------ feedback


def _label(bundle: Bundle, row: int) -> Any:
    value = bundle.reference["target"].iloc[row]
    return str(value) if bundle.task == "classification" else float(value)


async def test_feedback_round_trip(bundle):
    emitter = RecordingEmitter()
    frame = bundle.reference.head(3)
    async with serve(bundle, emitter) as (client, _):
        served = (await client.post("/predict", json=records(frame, bundle))).json()
        ids = [p["id"] for p in served["predictions"]]
        one = await client.post(
            "/feedback", json={"prediction_id": ids[0], "label": _label(bundle, 0)}
        )
        assert one.status_code == 202 and one.json() == {"accepted": 1, "forwarded": True}
        many = await client.post(
            "/feedback",
            json=[
                {"prediction_id": i, "label": _label(bundle, k)} for k, i in enumerate(ids[1:], 1)
            ],
        )
        assert many.json()["accepted"] == 2
        metrics = (await client.get("/metrics")).text
    labelled = [
        (i, label)
        for ids_, labels in emitter.labels
        for i, label in zip(ids_, labels, strict=False)
    ]
    assert labelled == [(ids[k], _label(bundle, k)) for k in range(3)]
    assert set(ids) <= set(emitter.emitted_ids())  # the worker can join them
    assert sample_value(metrics, names.M_FEEDBACK_LABELS) == 3


async def test_bad_feedback_is_refused(bundle):
    emitter = RecordingEmitter()
    bad_label = "martian" if bundle.task == "classification" else "12"
    cases = [
        ({"prediction_id": "not an id", "label": _label(bundle, 0)}, "invalid_id", "prediction_id"),
        ({"prediction_id": "0123456789ab-1f", "label": bad_label}, "invalid_label", "label"),
        ({"prediction_id": "0123456789ab-1f"}, "missing_feature", "label"),
    ]
    async with serve(bundle, emitter) as (client, _):
        for body, rule, field in cases:
            resp = await client.post("/feedback", json=body)
            assert resp.status_code == 422, resp.text
            assert (resp.json()["errors"][0]["rule"], resp.json()["errors"][0]["field"]) == (
                rule,
                field,
            )
        if bundle.task == "regression":
            resp = await client.post(
                "/feedback", content=b'{"prediction_id": "0123456789ab-1", "label": NaN}'
            )
            assert resp.json()["errors"][0]["rule"] == "invalid_label"
        metrics = (await client.get("/metrics")).text
    assert emitter.labels == []
    assert sample_value(metrics, names.M_REJECTIONS, handler="/feedback", reason="invalid_id") == 1


# ------------------------------------------------------------------ metrics, probes, docs


async def test_metrics_describe_the_traffic(bundle):
    frame = bundle.reference.head(30)
    async with serve(bundle) as (client, _):
        await client.post("/predict", json=records(frame, bundle))
        await client.post("/predict", json=records(frame.head(1), bundle)[0])
        await client.post("/predict", json=[])
        text = (await client.get("/metrics")).text
    assert sample_value(text, names.M_REQUESTS, handler="/predict", code="200") == 2
    assert sample_value(text, names.M_REQUESTS, handler="/predict", code="422") == 1
    assert sample_value(text, names.M_REQUEST_LATENCY + "_count", handler="/predict") == 3
    assert sample_value(text, names.M_BATCH_SIZE + "_sum") == 31
    assert sample_value(text, names.M_BATCH_REQUESTS + "_count") == 2
    assert sample_value(text, names.M_PREDICTIONS + "_count") == 31
    assert sample_value(text, names.M_EMISSION_ENABLED) == 0
    assert sample_value(text, names.M_INFLIGHT) == 0
    assert "process_cpu_seconds_total" in text
    served = bundle.predict(frame).tolist() + bundle.predict(frame.head(1)).tolist()
    if bundle.task == "classification":
        for cls in bundle.classes:
            got = sample_value(text, names.M_PREDICTED_CLASS, **{"class": cls})
            assert got == served.count(cls), cls
        # Class i is counted in bucket le=i+0.5: the cumulative buckets give the class mix.
        first = sample_value(text, names.M_PREDICTIONS + "_bucket", le="0.5")
        assert first == served.count(bundle.classes[0])
    else:
        reference = bundle.reference["prediction"]
        median_le = [
            dict(labels)["le"]
            for (n, labels), _ in metric_samples(text).items()
            if n == names.M_PREDICTIONS + "_bucket"
        ]
        assert len(median_le) >= 5  # deciles of the reference predictions
        assert float(median_le[0]) >= reference.min()


async def test_values_outside_the_training_range_are_served_and_counted(bundle):
    spec = next(f for f in bundle.manifest.features if f.type == "numeric")
    low, high = input_limits(spec)
    rec = records(bundle.reference.head(1), bundle)[0]
    beyond = [{**rec, spec.name: value} for value in (spec.max + 1.0, high, low)]
    async with serve(bundle) as (client, _):
        resp = await client.post("/predict", json=beyond)
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["predictions"]) == 3
        text = (await client.get("/metrics")).text
    assert sample_value(text, names.M_OUT_OF_RANGE, feature=spec.name) == 3
    others = [f.name for f in bundle.manifest.features if f.type == "numeric" and f is not spec]
    for name in others:  # exported from 0, and the reference row is inside its range
        assert (names.M_OUT_OF_RANGE, (("feature", name),)) in metric_samples(text)
        assert sample_value(text, names.M_OUT_OF_RANGE, feature=name) == 0


async def test_probes_follow_the_lifespan(bundle):
    app = create_app(settings(), bundle=bundle)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.post("/predict", json={})).status_code == 503
        async with app.router.lifespan_context(app):
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["bundle"] == bundle.name
            assert (await client.get("/healthz")).json() == {"status": "ok"}
        stopped = await client.get("/readyz")
        assert stopped.status_code == 503 and stopped.json()["status"] == "stopping"


async def test_openapi_is_generated_from_the_bundle_schema(bundle):
    async with serve(bundle) as (client, _):
        doc = (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    record = next(s for name, s in schemas.items() if name.endswith("Record"))
    assert sorted(record["required"]) == sorted(bundle.feature_names)
    assert record["additionalProperties"] is False
    for spec in bundle.manifest.features:
        prop = record["properties"][spec.name]
        if spec.type == "categorical":
            assert prop["enum"] == spec.categories
        else:
            assert prop["type"] == "number"
            # The limits the parser enforces are the ones published.
            assert (prop["minimum"], prop["maximum"]) == input_limits(spec)
    for path in ("/predict", "/feedback"):
        post = doc["paths"][path]["post"]
        body = post["requestBody"]["content"]["application/json"]["schema"]
        _one, many = body["anyOf"]  # one record or an array of records
        assert many["type"] == "array" and (many["minItems"], many["maxItems"]) == (1, 1000)
        for code, response in post["responses"].items():
            if code[0] in "45":  # every error answer is documented with its body
                error = response["content"]["application/json"]["schema"]
                assert error == {"$ref": "#/components/schemas/Error"}, (path, code)
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    prediction = schemas["Prediction"]["properties"]["prediction"]
    if bundle.task == "classification":
        assert prediction["enum"] == bundle.classes
    else:
        assert prediction["type"] == "number"
    assert "/feedback" in doc["paths"] and "/metrics" in doc["paths"]


# ------------------------------------------------------------------ failures and the real Sender


class FailingModel:
    def predict(self, frame):
        if (frame.iloc[:, 0] < 0).any():
            raise ValueError("negative sepal length")
        return np.asarray(["setosa"] * len(frame), dtype=object)

    def predict_proba(self, frame):
        return None

    def embed(self, frame):
        return None


async def test_a_failing_model_answers_500_and_the_server_keeps_serving():
    iris = load_bundle("builtin://iris")
    broken = Bundle(iris.path, iris.manifest, FailingModel())
    good = records(iris.reference.head(1), iris)[0]
    async with serve(broken) as (client, _):
        resp = await client.post("/predict", json={**good, "sepal_length": -1.0})
        assert resp.status_code == 500
        assert "ValueError: negative sepal length" in resp.json()["detail"]
        assert (await client.post("/predict", json=good)).json()["prediction"] == "setosa"
        assert (await client.get("/healthz")).status_code == 200
        text = (await client.get("/metrics")).text
    assert sample_value(text, names.M_REQUESTS, handler="/predict", code="500") == 1


async def test_the_real_sender_delivers_to_the_owner_shards():
    diamonds = load_bundle("builtin://diamonds")
    received: list[wire.Segment] = []

    def worker(request: httpx.Request) -> httpx.Response:
        received.extend(wire.decode(request.content).segments)
        return httpx.Response(200, json={"status": "ok"})

    sender = Sender(
        "default/diamonds",
        shard_map=ShardMap(monitor="default/diamonds", epoch=1, shards=2),
        settings=SenderSettings(url_template="http://worker-{ordinal}:8080", flush_interval=0.01),
        transport=httpx.MockTransport(worker),
        registry=None,
    )
    frame = diamonds.reference.head(25)
    async with serve(diamonds, sender) as (client, _):
        served = (await client.post("/predict", json=records(frame, diamonds))).json()
        ids = [p["id"] for p in served["predictions"]]
        await client.post("/feedback", json={"prediction_id": ids[0], "label": 1234.0})
        for _ in range(200):
            if sender.acked_values and not sender.buffered_values:
                break
            await asyncio.sleep(0.01)
    streams = {s.stream for s in received}
    assert {names.feature_stream(f) for f in diamonds.feature_names} <= streams
    carat = np.concatenate([s.columns["v"] for s in received if s.stream == "feature:carat"])
    np.testing.assert_array_equal(carat, frame["carat"].to_numpy())
    cut = [v for s in received if s.stream == "feature:cut" for v in s.columns["v"]]
    assert cut == frame["cut"].tolist()
    performance = [s for s in received if s.stream == names.STREAM_PERFORMANCE]
    joined_ids = [
        i for s in performance if s.kind == wire.KIND_PREDICTIONS for i in s.columns["id"]
    ]
    assert joined_ids == ids
    labels = [s for s in performance if s.kind == wire.KIND_LABELS]
    assert labels and list(labels[0].columns["id"]) == [ids[0]]


async def test_settings_with_a_shard_map_build_the_sender(tmp_path):
    monitor = tmp_path / "monitor.json"
    monitor.write_text(
        json.dumps(
            {"name": "m", "namespace": "ns", "spec": {"model": {"bundle": "builtin://iris"}}}
        )
    )
    shard_map = tmp_path / "shardmap.json"
    shard_map.write_text(ShardMap(monitor="ns/m", epoch=1, shards=1).model_dump_json())
    cfg = Settings(
        monitor_config=monitor,
        shard_map=shard_map,
        sender=SenderSettings(url_template="http://127.0.0.1:9/{ordinal}", request_timeout=0.2),
        server=ServerOptions(drain_timeout_s=0.0),
    )
    app = create_app(cfg)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            ready = (await client.get("/readyz")).json()
            assert ready == {"status": "ready", "bundle": "iris", "emission": True}
            iris = app.state.driftwarden.bundle
            assert (
                await client.post("/predict", json=records(iris.reference.head(2), iris))
            ).status_code == 200
            text = (await client.get("/metrics")).text
    assert sample_value(text, names.M_EMISSION_ENABLED) == 1
    assert sample_value(text, names.M_SENDER_QUEUE, monitor="m") > 0  # nobody acknowledged


class SlowModel:
    """Iris-shaped model that takes a while per call, so requests queue behind it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.rows = 0

    def predict(self, frame):
        import time

        time.sleep(self.seconds)
        self.rows += len(frame)
        return np.asarray(["virginica"] * len(frame), dtype=object)

    def predict_proba(self, frame):
        return None

    def embed(self, frame):
        return None


async def test_shutdown_answers_queued_requests_then_drains_the_emitter():
    iris = load_bundle("builtin://iris")
    model = SlowModel(0.05)
    slow = Bundle(iris.path, iris.manifest, model)
    emitter = RecordingEmitter()
    recs = records(iris.reference.head(12), iris)
    app = create_app(settings(max_batch_rows=4), bundle=slow, emitter=emitter)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
        async with app.router.lifespan_context(app):
            pending = [asyncio.create_task(client.post("/predict", json=r)) for r in recs]
            batcher = app.state.driftwarden.batcher
            for _ in range(500):  # until every request is queued (the first batch runs)
                if batcher.submitted == len(recs):
                    break
                await asyncio.sleep(0.005)
            assert batcher.submitted == len(recs) and model.rows < len(recs)
        # The lifespan has closed: every request that was queued got its answer.
        answers = await asyncio.gather(*pending)
        assert [a.status_code for a in answers] == [200] * 12
        assert model.rows == 12
        assert (await client.post("/predict", json=recs[0])).status_code == 503
    assert emitter.stopped and len(emitter.emitted_ids()) == 12
