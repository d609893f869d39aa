"""Bounded inputs of the model server: the in-flight limit, the sender queue, label times.

The real ASGI app (httpx ASGITransport) with its lifespan; a model call that blocks on an
event holds requests in flight so the limit is reached without timing assumptions.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftwarden.bundles import Bundle, load_bundle
from driftwarden.common import names
from driftwarden.common.sharding import ShardMap
from driftwarden.ingest.sender import Sender, SenderSettings
from driftwarden.model_server.app import create_app
from driftwarden.model_server.settings import ServerOptions, Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle("builtin://diamonds")


class Emitter:
    """Records labels; ``room`` says whether the queue toward the workers has space."""

    def __init__(self, room: bool = True) -> None:
        self.room = room
        self.labels: list[tuple[list[str], list[Any]]] = []

    def emit_features(self, columns: Any) -> None:
        pass

    def emit_predictions(self, ids: Any, values: Any) -> None:
        pass

    def emit_labels(self, ids: Any, labels: Any) -> None:
        self.labels.append((list(ids), list(labels)))

    def emit_embeddings(self, group: str, matrix: Any) -> None:
        pass

    def has_room(self, values: int) -> bool:
        return self.room

    async def start(self) -> None:
        pass

    async def stop(self, drain_timeout: float = 5.0) -> None:
        pass


@asynccontextmanager
async def serve(
    bundle: Bundle, emitter: Any = None, **server: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = Settings(bundle="unused://", server=ServerOptions(**server))
    app = create_app(settings, bundle=bundle, emitter=emitter or Emitter())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
            yield client, app.state.driftwarden


def record(bundle: Bundle) -> dict[str, Any]:
    row = bundle.reference[bundle.feature_names].iloc[0]
    return {
        spec.name: float(row[spec.name]) if spec.type == "numeric" else str(row[spec.name])
        for spec in bundle.manifest.features
    }


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise AssertionError(f"{name}{labels} not exported")


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------ in-flight limit


async def test_requests_beyond_the_inflight_limit_get_503_with_retry_after(bundle):
    release = threading.Event()
    async with serve(bundle, max_inflight_requests=2, retry_after_s=3) as (client, state):
        model = state.batcher._model

        def blocking(frame):
            release.wait(30)
            return model(frame)

        state.batcher._model = blocking
        held = [asyncio.create_task(client.post("/predict", json=record(bundle))) for _ in range(2)]
        await until(lambda: state.active_requests == 2)

        refused = await client.post("/predict", json=record(bundle))
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "3"
        body = refused.json()
        assert body["reason"] == "inflight_limit" and body["retry_after_s"] == 3
        assert "MAX_INFLIGHT_REQUESTS" in body["detail"] and "2 requests" in body["detail"]
        fb = await client.post("/feedback", json={"prediction_id": "0123456789ab-1", "label": 1.0})
        assert fb.status_code == 503 and fb.json()["reason"] == "inflight_limit"

        release.set()
        answered = await asyncio.gather(*held)
        assert [r.status_code for r in answered] == [200, 200]
        assert state.active_requests == 0
        again = await client.post("/predict", json=record(bundle))
        assert again.status_code == 200
        metrics = (await client.get("/metrics")).text
    assert sample(metrics, names.M_OVERLOADED, handler="/predict", reason="inflight_limit") == 1
    assert sample(metrics, names.M_OVERLOADED, handler="/feedback", reason="inflight_limit") == 1
    assert sample(metrics, names.M_REQUESTS, handler="/predict", code="503") == 1


async def test_refused_and_failed_requests_give_their_slot_back(bundle):
    async with serve(bundle, max_inflight_requests=1) as (client, state):
        for _ in range(3):
            bad = await client.post("/predict", content=b"{", headers={"content-type": "x/y"})
            assert bad.status_code == 415
            assert (await client.post("/feedback", content=b"[")).status_code == 400

        def failing(frame):
            raise ValueError("boom")

        model, state.batcher._model = state.batcher._model, failing
        assert (await client.post("/predict", json=record(bundle))).status_code == 500
        state.batcher._model = model
        assert state.active_requests == 0
        assert (await client.post("/predict", json=record(bundle))).status_code == 200


async def test_not_ready_answers_carry_retry_after(bundle):
    settings = Settings(bundle="unused://", server=ServerOptions(retry_after_s=2))
    app = create_app(settings, bundle=bundle, emitter=Emitter())
    transport = httpx.ASGITransport(app=app)  # lifespan not run: the model is not loaded
    async with httpx.AsyncClient(transport=transport, base_url="http://model") as client:
        resp = await client.post("/predict", json=record(bundle))
    assert resp.status_code == 503 and resp.headers["retry-after"] == "2"


# ------------------------------------------------------------------ queue toward the workers


async def test_feedback_is_refused_not_shed_when_the_sender_queue_is_full(bundle):
    emitter = Emitter(room=False)
    async with serve(bundle, emitter, retry_after_s=5) as (client, state):
        served = (await client.post("/predict", json=record(bundle))).json()
        label = {"prediction_id": served["id"], "label": 1000.0}
        resp = await client.post("/feedback", json=label)
        assert resp.status_code == 503 and resp.headers["retry-after"] == "5"
        assert resp.json()["reason"] == "sender_queue_full"
        assert "MAX_BUFFERED_VALUES" in resp.json()["detail"]
        assert emitter.labels == []
        emitter.room = True
        assert (await client.post("/feedback", json=label)).status_code == 202
        metrics = (await client.get("/metrics")).text
    assert emitter.labels == [([served["id"]], [1000.0])]
    assert sample(metrics, names.M_OVERLOADED, handler="/feedback", reason="sender_queue_full") == 1
    assert state.active_requests == 0


async def test_sender_has_room_follows_its_buffer_bound():
    sender = Sender(
        "ns/m",
        shard_map=ShardMap(monitor="ns/m", epoch=1, shards=1),
        settings=SenderSettings(max_buffered_values=3),
        registry=None,
    )
    assert sender.has_room(3) and not sender.has_room(4)
    sender.emit_labels(["a", "b"], np.array([1.0, 2.0]))
    assert sender.buffered_values == 2
    assert sender.has_room(1) and not sender.has_room(2)
    await sender.stop(0)
    assert not sender.has_room(1)


# ------------------------------------------------------------------ where the bound comes from


def test_the_inflight_limit_comes_from_the_environment(monkeypatch):
    assert Settings(bundle="x").server.max_inflight_requests == 256
    monkeypatch.setenv("DRIFTWARDEN_SERVER__MAX_INFLIGHT_REQUESTS", "7")
    monkeypatch.setenv("DRIFTWARDEN_SERVER__RETRY_AFTER_S", "4")
    server = Settings(bundle="x").server
    assert (server.max_inflight_requests, server.retry_after_s) == (7, 4)


def test_serve_flag_overrides_the_inflight_limit(monkeypatch):
    from driftwarden.model_server import __main__ as serve_main

    seen: dict[str, Any] = {}

    def fake_create_app(settings: Settings) -> None:
        seen["limit"] = settings.server.max_inflight_requests
        raise SystemExit(0)

    monkeypatch.setattr("driftwarden.model_server.app.create_app", fake_create_app)
    monkeypatch.setattr(serve_main, "limit_native_threads", lambda threads: None)
    monkeypatch.setenv("DRIFTWARDEN_SERVER__MAX_INFLIGHT_REQUESTS", "7")
    with pytest.raises(SystemExit):
        serve_main.main(["--bundle", "builtin://diamonds", "--max-inflight-requests", "9"])
    assert seen["limit"] == 9


def test_the_operator_renders_the_inflight_limit_from_the_spec():
    from driftwarden.operator import builders
    from driftwarden.operator.settings import OperatorSettings
    from support.operator import monitor

    def env(spec_model: dict[str, Any]) -> dict[str, str]:
        m = monitor({"model": spec_model})
        deployment = builders.build_model_deployment(m, OperatorSettings())
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    key = "DRIFTWARDEN_SERVER__MAX_INFLIGHT_REQUESTS"
    assert env({"bundle": "builtin://diamonds"})[key] == "256"
    assert env({"bundle": "builtin://diamonds", "maxInflightRequests": 40})[key] == "40"
    # What the server parses from that variable is what the spec said.
    assert ServerOptions.model_validate({"max_inflight_requests": "40"}).max_inflight_requests == 40


# ------------------------------------------------------------------ label timestamps


def _parser(bundle: Bundle, now: float, **window: float) -> Any:
    from driftwarden.model_server.validation import RequestParser

    return RequestParser(bundle.manifest, 10, clock=lambda: now, **window)


def test_label_timestamps_inside_the_window_are_accepted(bundle):
    now = 1_800_000_000.0
    parser = _parser(bundle, now, label_max_age_s=3600, label_max_future_s=300)
    body = json.dumps(
        [
            {"prediction_id": "0123456789ab-1", "label": 1.0, "timestamp": now - 3600},
            {"prediction_id": "0123456789ab-2", "label": 2.0, "timestamp": now + 300},
            {"prediction_id": "0123456789ab-3", "label": 3.0, "timestamp": int(now)},
            {"prediction_id": "0123456789ab-4", "label": 4.0},
        ]
    ).encode()
    ids, labels, batch = parser.parse_feedback(body)
    assert len(ids) == 4 and labels == [1.0, 2.0, 3.0, 4.0] and batch


@pytest.mark.parametrize(
    ("offset", "side"), [(-3601.0, "past"), (301.0, "future"), (-1e12, "past"), (1e12, "future")]
)
def test_label_timestamps_outside_the_window_are_refused_naming_field_and_window(
    bundle, offset, side
):
    from driftwarden.model_server.validation import Rejection

    now = 1_800_000_000.0
    parser = _parser(bundle, now, label_max_age_s=3600, label_max_future_s=300)
    good = {"prediction_id": "0123456789ab-1", "label": 1.0, "timestamp": now}
    bad = {"prediction_id": "0123456789ab-2", "label": 1.0, "timestamp": now + offset}
    with pytest.raises(Rejection) as caught:
        parser.parse_feedback(json.dumps([good, bad]).encode())
    rejection = caught.value
    assert rejection.status == 422 and rejection.reason == "timestamp_out_of_window"
    [problem] = rejection.problems
    assert (problem.field, problem.record) == ("timestamp", 1)
    # The window, in RFC 3339 and Unix seconds, and the settings that define it.
    assert "2027-01-15T07:00:00Z and 2027-01-15T08:05:00Z" in problem.message
    assert "1799996400 to 1800000300" in problem.message
    assert "labelJoin.maxDelay" in problem.message
    assert "MAX_LABEL_FUTURE_S" in problem.message
    assert "record 1, field 'timestamp'" in str(rejection)


def test_non_numeric_or_non_finite_timestamps_are_refused(bundle):
    from driftwarden.model_server.validation import Rejection

    parser = _parser(bundle, 1_800_000_000.0)
    for raw in (b'"yesterday"', b"true", b"NaN", b"1e999"):
        body = b'{"prediction_id": "0123456789ab-1", "label": 1.0, "timestamp": ' + raw + b"}"
        with pytest.raises(Rejection) as caught:
            parser.parse_feedback(body)
        assert caught.value.status in (400, 422)
        assert caught.value.problems[0].field in ("timestamp", None)


async def test_feedback_endpoint_refuses_stale_labels_with_422(bundle):
    import time

    emitter = Emitter()
    async with serve(bundle, emitter, max_label_future_s=60) as (client, _):
        stale = {"prediction_id": "0123456789ab-1", "label": 1.0, "timestamp": time.time() - 7200}
        resp = await client.post("/feedback", json=stale)
        assert resp.status_code == 422
        body = resp.json()
        assert body["errors"][0]["field"] == "timestamp"
        assert body["errors"][0]["rule"] == "timestamp_out_of_window"
        assert "at most 60s in the future" in body["detail"]
        assert "3600s in the past" in body["detail"]  # the default labelJoin.maxDelay, 1h
        fresh = dict(stale, timestamp=time.time() - 60)
        assert (await client.post("/feedback", json=fresh)).status_code == 202
        metrics = (await client.get("/metrics")).text
    assert emitter.labels == [(["0123456789ab-1"], [1.0])]
    rejected = sample(
        metrics, names.M_REJECTIONS, handler="/feedback", reason="timestamp_out_of_window"
    )
    assert rejected == 1


def test_the_past_bound_is_the_monitors_label_join_max_delay(tmp_path):
    config = tmp_path / "monitor.json"
    config.write_text(
        json.dumps(
            {
                "namespace": "ml",
                "name": "m",
                "spec": {
                    "model": {"bundle": "builtin://diamonds"},
                    "labelJoin": {"maxDelay": "2h30m"},
                },
            }
        )
    )
    assert Settings(monitor_config=config).label_max_age_s() == 9000
    config.write_text(
        json.dumps({"namespace": "ml", "name": "m", "spec": {"model": {"bundle": "builtin://x"}}})
    )
    assert Settings(monitor_config=config).label_max_age_s() == 3600
    assert Settings(bundle="x").label_max_age_s() == 3600
