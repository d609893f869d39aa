"""spec.labelJoin.key: a /predict field carries the caller's join id (docs/model-server.md).

The model server reads the key from the monitor config the operator renders
(monitor.json); the default ``prediction_id`` keeps server-generated ids.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from driftwarden.bundles import Bundle, load_bundle
from driftwarden.common.errors import ConfigError
from driftwarden.common.sharding import ShardMap
from driftwarden.model_server.app import create_app
from driftwarden.model_server.batching import MicroBatcher
from driftwarden.model_server.settings import Settings
from driftwarden.model_server.validation import INVALID_ID, PREDICTION_ID_PATTERN, record_model
from driftwarden.operator import builders
from driftwarden.operator.settings import OperatorSettings
from support.operator import monitor

pytestmark = pytest.mark.anyio

KEY = "request_id"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def iris() -> Bundle:
    return load_bundle("builtin://iris")


class Emitter:
    def __init__(self) -> None:
        self.predictions: list[str] = []
        self.labels: list[tuple[str, Any]] = []

    def emit_features(self, columns):
        pass

    def emit_predictions(self, ids, values):
        self.predictions.extend(ids)

    def emit_labels(self, ids, labels):
        self.labels.extend(zip(ids, labels, strict=True))

    def emit_embeddings(self, group, matrix):
        pass

    def has_room(self, values):
        return True

    async def start(self):
        pass

    async def stop(self, drain_timeout=5.0):
        pass


def monitor_file(tmp_path: Path, label_join: dict[str, Any] | None) -> Path:
    spec: dict[str, Any] = {"model": {"bundle": "builtin://iris"}}
    if label_join is not None:
        spec["labelJoin"] = label_join
    path = tmp_path / "monitor.json"
    path.write_text(json.dumps({"name": "m", "namespace": "ns", "spec": spec}))
    return path


@asynccontextmanager
async def serve(
    bundle: Bundle, monitor: Path, emitter: Emitter
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Settings(bundle="unused://", monitor_config=monitor), bundle=bundle, emitter=emitter
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            yield client


def rec(bundle: Bundle, i: int = 0) -> dict[str, Any]:
    row = bundle.reference[bundle.feature_names].iloc[i]
    return {k: float(v) for k, v in row.items()}


async def test_the_key_field_becomes_the_id_predictions_and_labels_carry(iris, tmp_path):
    emitter = Emitter()
    async with serve(iris, monitor_file(tmp_path, {"key": KEY}), emitter) as client:
        one = await client.post("/predict", json={**rec(iris), KEY: "order-17"})
        assert one.status_code == 200 and one.json()["id"] == "order-17"
        batch = await client.post(
            "/predict",
            json=[{**rec(iris, 1), KEY: "a:1"}, rec(iris, 2), {**rec(iris, 3), KEY: "a/3"}],
        )
        ids = [p["id"] for p in batch.json()["predictions"]]
        assert ids[0] == "a:1" and ids[2] == "a/3"
        assert re.fullmatch(PREDICTION_ID_PATTERN, ids[1])  # absent: generated
        label = iris.classes[0]
        fb = await client.post("/feedback", json={"prediction_id": "order-17", "label": label})
        assert fb.status_code == 202
    assert emitter.predictions == ["order-17", *ids]
    assert emitter.labels == [("order-17", label)]


@pytest.mark.parametrize("value", [17, "", "x" * 129, "has space", ["a"], {"id": "a"}])
async def test_a_malformed_key_field_is_refused_naming_it(iris, tmp_path, value):
    emitter = Emitter()
    async with serve(iris, monitor_file(tmp_path, {"key": KEY}), emitter) as client:
        resp = await client.post("/predict", json=[rec(iris), {**rec(iris, 1), KEY: value}])
    assert resp.status_code == 422, resp.text
    errors = resp.json()["errors"]
    assert [(e["record"], e["field"], e["rule"]) for e in errors] == [(1, KEY, INVALID_ID)]
    assert "labelJoin.key" in errors[0]["message"]
    assert emitter.predictions == []  # refused before the model


@pytest.mark.parametrize("label_join", [None, {}, {"key": "prediction_id"}])
async def test_the_default_key_keeps_server_ids_and_no_extra_field(iris, tmp_path, label_join):
    emitter = Emitter()
    async with serve(iris, monitor_file(tmp_path, label_join), emitter) as client:
        ok = await client.post("/predict", json=rec(iris))
        assert re.fullmatch(PREDICTION_ID_PATTERN, ok.json()["id"])
        extra = await client.post("/predict", json={**rec(iris), KEY: "x"})
        assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == KEY
        own = await client.post("/predict", json={**rec(iris), "prediction_id": "x"})
        assert own.status_code == 422  # the default key is not a request field


async def test_openapi_documents_the_key_field(iris, tmp_path):
    async with serve(iris, monitor_file(tmp_path, {"key": KEY}), Emitter()) as client:
        doc = (await client.get("/openapi.json")).json()
    text = json.dumps(doc)
    assert f'"{KEY}"' in text and "labelJoin.key" in text


def test_a_key_that_names_a_feature_is_a_config_error(iris):
    with pytest.raises(ConfigError, match="names a feature"):
        record_model(iris.manifest, iris.feature_names[0])


def test_settings_read_the_key_from_the_monitor_config(tmp_path):
    assert Settings(monitor_config=monitor_file(tmp_path, {"key": KEY})).label_join_key() == KEY
    assert Settings(monitor_config=monitor_file(tmp_path, None)).label_join_key() == "prediction_id"
    assert Settings().label_join_key() == "prediction_id"
    with pytest.raises(ConfigError, match="labelJoin.key"):
        Settings(monitor_config=monitor_file(tmp_path, {"key": 5})).label_join_key()


async def test_the_batcher_keeps_callers_ids_in_order_across_a_shared_batch():
    batcher = MicroBatcher(
        lambda frame: (np.asarray(frame["x"], dtype=np.float64), None), ["x"], max_wait=0.05
    )
    await batcher.start()
    try:
        results = await asyncio.gather(
            batcher.submit({"x": [1.0, 2.0]}, 2, ["a", None]),
            batcher.submit({"x": [3.0]}, 1),
            batcher.submit({"x": [4.0]}, 1, ["d"]),
        )
    finally:
        await batcher.stop()
    (ids1, p1), (ids2, _), (ids3, p3) = results
    assert ids1[0] == "a" and ids3 == ["d"] and p1.tolist() == [1.0, 2.0] and p3.tolist() == [4.0]
    generated = [ids1[1], ids2[0]]
    assert len(set(generated)) == 2 and all(i.startswith(batcher.ids.prefix) for i in generated)


@pytest.mark.parametrize(("label_join", "key"), [({"key": KEY}, KEY), (None, "prediction_id")])
def test_the_operator_renders_the_key_the_model_server_reads(tmp_path, label_join, key):

    spec: dict[str, Any] = {"model": {"bundle": "builtin://iris"}}
    if label_join is not None:
        spec["labelJoin"] = label_join
    m = monitor(spec)
    config = builders.build_config_map(
        m, OperatorSettings(), ShardMap(monitor=f"{m.namespace}/{m.name}", epoch=1, shards=1)
    )
    path = tmp_path / builders.MONITOR_FILE
    path.write_text(config["data"][builders.MONITOR_FILE])
    assert Settings(monitor_config=path).label_join_key() == key
    # a changed key is a changed config: the model-server pods roll
    other = monitor({**spec, "labelJoin": {"key": "other_id"}})
    assert builders.config_hash(other) != builders.config_hash(m)
