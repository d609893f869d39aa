"""``POST /v1/records`` (plain JSON and CloudEvents) through the real ASGI app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftwarden.bundles import Bundle, load_bundle
from driftwarden.common import names
from driftwarden.model_server.app import create_app
from driftwarden.model_server.settings import ServerOptions, Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module", params=["diamonds", "iris"])
def bundle(request) -> Bundle:
    return load_bundle(f"builtin://{request.param}")


class RecordingEmitter:
    def __init__(self, room: bool = True) -> None:
        self.features: list[dict[str, list[Any]]] = []
        self.predictions: list[tuple[list[str], list[Any]]] = []
        self.labels: list[tuple[list[str], list[Any]]] = []
        self.room = room
        self.asked: list[int] = []

    def emit_features(self, columns):
        self.features.append({k: list(v) for k, v in columns.items()})

    def emit_predictions(self, ids, values):
        self.predictions.append((list(ids), list(values)))

    def emit_labels(self, ids, labels):
        self.labels.append((list(ids), list(labels)))

    def emit_embeddings(self, group, matrix):
        raise AssertionError("records carry no embeddings")

    def has_room(self, values):
        self.asked.append(values)
        return self.room

    async def start(self):
        pass

    async def stop(self, drain_timeout=5.0):
        pass

    def rows(self) -> int:
        return sum(len(next(iter(f.values()))) for f in self.features)


@asynccontextmanager
async def serve(bundle: Bundle, emitter: Any, **server: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Settings(bundle="unused://", server=ServerOptions(**server)), bundle=bundle, emitter=emitter
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            yield client


def features(bundle: Bundle, n: int) -> list[dict[str, Any]]:
    out = []
    for row in bundle.reference[bundle.feature_names].head(n).itertuples(index=False):
        out.append(
            {
                spec.name: float(v) if spec.type == "numeric" else str(v)
                for spec, v in zip(bundle.manifest.features, row, strict=False)
            }
        )
    return out


def prediction(bundle: Bundle, row: int) -> Any:
    value = bundle.reference["prediction"].iloc[row]
    return str(value) if bundle.task == "classification" else float(value)


def label(bundle: Bundle, row: int) -> Any:
    value = bundle.reference["target"].iloc[row]
    return str(value) if bundle.task == "classification" else float(value)


def counter(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


async def test_one_record_and_a_batch_reach_the_sender(bundle):
    emitter = RecordingEmitter()
    recs = features(bundle, 5)
    async with serve(bundle, emitter) as client:
        one = await client.post(
            "/v1/records",
            json={"id": "order-1", "features": recs[0], "prediction": prediction(bundle, 0)},
        )
        assert one.status_code == 202, one.text
        assert one.json() == {
            "accepted": 1,
            "ids": ["order-1"],
            "predictions": 1,
            "forwarded": True,
        }
        batch = [
            {"features": recs[1], "prediction": prediction(bundle, 1)},  # id generated
            {"features": recs[2]},  # no prediction: features only, no id
            {"id": "3f2a9c1e-0b7d-4e55-9a61-2c8e5d1f7a00", "features": recs[3],
             "prediction": prediction(bundle, 3), "timestamp": 1764690000.5},
            {"features": recs[4], "prediction": prediction(bundle, 4)},
        ]  # fmt: skip
        many = await client.post("/v1/records", json={"records": batch})
        assert many.status_code == 202, many.text
        body = many.json()
        assert body["accepted"] == 4 and body["predictions"] == 3
        ids = body["ids"]
        assert ids[1] is None and ids[2] == "3f2a9c1e-0b7d-4e55-9a61-2c8e5d1f7a00"
        assert ids[0] and ids[3] and ids[0] != ids[3]
        metrics = (await client.get("/metrics")).text
    assert emitter.rows() == 5
    assert emitter.features[1] == {n: [r[n] for r in recs[1:]] for n in bundle.feature_names}
    assert emitter.predictions == [
        (["order-1"], [prediction(bundle, 0)]),
        ([ids[0], ids[2], ids[3]], [prediction(bundle, i) for i in (1, 3, 4)]),
    ]
    # features per record, plus two per prediction (prediction and performance streams)
    nf = len(bundle.feature_names)
    assert emitter.asked == [nf + 2, 4 * nf + 6]
    assert counter(metrics, names.M_RECORDS, outcome="accepted", reason="ok") == 5


@pytest.mark.parametrize(
    ("record", "field", "rule"),
    [
        ({"features": "drop"}, "features", "missing_feature"),
        ({"features": {"drop": 1}}, "features.drop", "unknown_feature"),
        ({"features": "DROP", "prediction": []}, "prediction", "invalid_prediction"),
        ({"features": "DROP", "id": "has space"}, "id", "invalid_id"),
        ({"features": "DROP", "timestamp": "yesterday"}, "timestamp", "wrong_type"),
        ({"features": "DROP", "other": 1}, "other", "unknown_feature"),
        ({"features": "NAN"}, "features.NUMERIC", "not_finite"),
        ({"features": "BIG"}, "features.NUMERIC", "outside_limits"),
        ({"features": "CAT"}, "features.CATEGORY", "unknown_category"),
    ],
)
async def test_invalid_records_are_422_naming_record_and_field(bundle, record, field, rule):
    good = features(bundle, 2)
    numeric = next(s.name for s in bundle.manifest.features if s.type == "numeric")
    categorical = next((s.name for s in bundle.manifest.features if s.type != "numeric"), None)
    bad = dict(good[1])
    if record["features"] == "drop":
        bad.pop(numeric)
        field = f"features.{numeric}"
    elif record["features"] == "NAN":
        bad[numeric] = float("nan")
    elif record["features"] == "BIG":
        bad[numeric] = 1e300
    elif record["features"] == "CAT":
        if categorical is None:  # iris has none: the rule is checked on diamonds' record
            bundle = load_bundle("builtin://diamonds")
            good = features(bundle, 2)
            bad = dict(good[1])
            categorical = next(s.name for s in bundle.manifest.features if s.type != "numeric")
        bad[categorical] = "no-such-category"
    elif isinstance(record["features"], dict):
        bad.update(record["features"])
    field = field.replace("NUMERIC", numeric).replace("CATEGORY", str(categorical))
    record = {**record, "features": bad}
    emitter = RecordingEmitter()
    async with serve(bundle, emitter) as client:
        content = json.dumps({"records": [{"features": good[0]}, record]}, allow_nan=True)
        got = await client.post(
            "/v1/records", content=content, headers={"content-type": "application/json"}
        )
        assert got.status_code == 422, got.text
        error = got.json()["errors"][0]
        assert (error["record"], error["field"], error["rule"]) == (1, field, rule), error
        assert f"record 1, field {field!r}" in got.json()["detail"]
        metrics = (await client.get("/metrics")).text
    assert emitter.features == [] and emitter.predictions == []  # nothing of the batch queued
    assert counter(metrics, names.M_RECORDS, outcome="refused", reason=rule) == 1
    assert counter(metrics, names.M_REJECTIONS, handler="/v1/records", reason=rule) == 1


@pytest.mark.parametrize(
    ("body", "status", "rule"),
    [
        (b'{"records": []}', 422, "empty_batch"),
        (b"[1, 2", 400, "malformed_json"),
        (b"[]", 422, "wrong_type"),
        (b"null", 422, "wrong_type"),
        (b'{"records": 3}', 422, "wrong_type"),
    ],
)
async def test_bodies_that_are_not_records_are_4xx_never_5xx(bundle, body, status, rule):
    async with serve(bundle, RecordingEmitter()) as client:
        got = await client.post(
            "/v1/records", content=body, headers={"content-type": "application/json"}
        )
    assert got.status_code == status, got.text
    assert got.json()["errors"][0]["rule"] == rule


async def test_batches_over_max_records_are_413(bundle):
    recs = [{"features": f} for f in features(bundle, 3)]
    async with serve(bundle, RecordingEmitter(), max_records=2) as client:
        got = await client.post("/v1/records", json={"records": recs})
    assert got.status_code == 413 and got.json()["errors"][0]["rule"] == "too_many_records"


async def test_a_full_sender_is_503_with_retry_after_and_nothing_queued(bundle):
    emitter = RecordingEmitter(room=False)
    async with serve(bundle, emitter, retry_after_s=3) as client:
        recs = [{"features": f, "prediction": prediction(bundle, 0)} for f in features(bundle, 2)]
        got = await client.post("/v1/records", json={"records": recs})
        metrics = (await client.get("/metrics")).text
    assert got.status_code == 503 and got.headers["retry-after"] == "3"
    assert got.json()["reason"] == "sender_queue_full"
    assert emitter.features == [] and emitter.predictions == []
    assert counter(metrics, names.M_RECORDS, outcome="refused", reason="sender_queue_full") == 2
    assert counter(metrics, names.M_RECORDS, outcome="accepted", reason="ok") == 0


async def test_record_ids_are_joinable_by_feedback(bundle):
    """A label sent to /feedback with a record's id reaches the performance stream with it."""
    emitter = RecordingEmitter()
    recs = features(bundle, 2)
    async with serve(bundle, emitter) as client:
        sent = await client.post(
            "/v1/records",
            json={
                "records": [
                    {
                        "id": "ext:order/42",
                        "features": recs[0],
                        "prediction": prediction(bundle, 0),
                    },
                    {"features": recs[1], "prediction": prediction(bundle, 1)},
                ]
            },
        )
        ids = sent.json()["ids"]
        fb = await client.post(
            "/feedback",
            json=[
                {"prediction_id": ids[0], "label": label(bundle, 0)},
                {"prediction_id": ids[1], "label": label(bundle, 1)},
            ],
        )
        assert fb.status_code == 202, fb.text
    (pred_ids, _), = emitter.predictions  # fmt: skip
    (label_ids, labels), = emitter.labels  # fmt: skip
    assert pred_ids == label_ids == ids
    assert labels == [label(bundle, 0), label(bundle, 1)]


async def test_record_ids_join_labels_on_a_real_worker_stream(bundle):
    """The worker's label join pairs a record's prediction with the /feedback label by id."""
    from driftwarden.drift_worker.streams import JoinConfig, LabelJoin

    emitter = RecordingEmitter()
    recs = features(bundle, 3)
    async with serve(bundle, emitter) as client:
        await client.post(
            "/v1/records",
            json={
                "records": [
                    {"id": f"r-{i}", "features": recs[i], "prediction": prediction(bundle, i)}
                    for i in range(3)
                ]
            },
        )
        await client.post("/feedback", json={"prediction_id": "r-1", "label": label(bundle, 1)})
    join = LabelJoin(bundle.task, JoinConfig(max_delay_s=3600.0, max_pending=100))
    (ids, values), = emitter.predictions  # fmt: skip
    join.add_predictions(ids, np.asarray(values), ts=1.0)
    (label_ids, labels), = emitter.labels  # fmt: skip
    errors = join.add_labels(label_ids, np.asarray(labels), ts=2.0)
    assert len(errors) == 1  # r-1 met its prediction; r-0 and r-2 still wait


async def test_binary_cloudevent_is_one_record_with_the_event_id(bundle):
    emitter = RecordingEmitter()
    rec = {"features": features(bundle, 1)[0], "prediction": prediction(bundle, 0)}
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "evt-7",
        "ce-source": "urn:shop:model",
        "ce-type": "io.driftwarden.record",
    }
    async with serve(bundle, emitter) as client:
        got = await client.post("/v1/records", json=rec, headers=headers)
        assert got.status_code == 202, got.text
        assert got.json()["ids"] == ["evt-7"]
        missing = await client.post(
            "/v1/records", json=rec, headers={k: v for k, v in headers.items() if k != "ce-source"}
        )
        version = await client.post(
            "/v1/records", json=rec, headers={**headers, "ce-specversion": "0.3"}
        )
        clash = await client.post("/v1/records", json={**rec, "id": "other"}, headers=headers)
        bad_id = await client.post("/v1/records", json=rec, headers={**headers, "ce-id": "a b"})
    assert emitter.predictions == [(["evt-7"], [prediction(bundle, 0)])]
    assert missing.status_code == 400
    assert missing.json()["errors"][0]["field"] == "ce-source"
    assert missing.json()["errors"][0]["rule"] == "invalid_cloudevent"
    assert version.status_code == 400 and version.json()["errors"][0]["field"] == "ce-specversion"
    assert clash.status_code == 422 and clash.json()["errors"][0]["field"] == "id"
    assert bad_id.status_code == 422 and bad_id.json()["errors"][0]["field"] == "ce-id"


async def test_structured_cloudevent_carries_the_record_in_data(bundle):
    emitter = RecordingEmitter()
    rec = {"features": features(bundle, 1)[0], "prediction": prediction(bundle, 0)}
    event = {
        "specversion": "1.0",
        "id": "evt-9",
        "source": "urn:shop:model",
        "type": "io.driftwarden.record",
        "datacontenttype": "application/json",
        "data": rec,
    }
    ce = {"content-type": "application/cloudevents+json; charset=utf-8"}
    async with serve(bundle, emitter) as client:
        got = await client.post("/v1/records", content=json.dumps(event), headers=ce)
        assert got.status_code == 202, got.text
        assert got.json()["ids"] == ["evt-9"]
        no_data = await client.post(
            "/v1/records",
            content=json.dumps({k: v for k, v in event.items() if k != "data"}),
            headers=ce,
        )
        no_type = await client.post(
            "/v1/records",
            content=json.dumps({k: v for k, v in event.items() if k != "type"}),
            headers=ce,
        )
        xml = await client.post(
            "/v1/records", content=json.dumps({**event, "datacontenttype": "text/xml"}), headers=ce
        )
        bad_feature = dict(rec["features"])
        bad_feature.pop(bundle.feature_names[0])
        bad_data = await client.post(
            "/v1/records",
            content=json.dumps({**event, "data": {"features": bad_feature}}),
            headers=ce,
        )
        array = await client.post("/v1/records", content=b"[]", headers=ce)
    assert emitter.predictions == [(["evt-9"], [prediction(bundle, 0)])]
    assert (no_data.status_code, no_data.json()["errors"][0]["field"]) == (400, "data")
    assert (no_type.status_code, no_type.json()["errors"][0]["field"]) == (400, "type")
    assert (xml.status_code, xml.json()["errors"][0]["field"]) == (400, "datacontenttype")
    assert bad_data.status_code == 422
    assert bad_data.json()["errors"][0]["field"] == f"features.{bundle.feature_names[0]}"
    assert array.status_code == 400 and array.json()["errors"][0]["rule"] == "invalid_cloudevent"


async def test_records_are_accepted_beside_a_model_and_without_workers(bundle):
    async with serve(bundle, None) as client:
        rec = {"features": features(bundle, 1)[0]}
        got = await client.post("/v1/records", json=rec)
        assert (await client.post("/predict", json=rec["features"])).status_code == 200
    assert got.status_code == 202
    assert got.json() == {"accepted": 1, "ids": [None], "predictions": 0, "forwarded": False}


async def test_openapi_types_the_records_body_from_the_bundle(bundle):
    async with serve(bundle, None) as client:
        doc = (await client.get("/openapi.json")).json()
    post = doc["paths"]["/v1/records"]["post"]
    assert "requestBody" in post and "202" in post["responses"]
    schemas = doc["components"]["schemas"]
    logged = next(s for n, s in schemas.items() if n.endswith("LoggedRecord"))
    assert set(logged["properties"]) == {"id", "features", "prediction", "timestamp"}
    assert logged["required"] == ["features"]
