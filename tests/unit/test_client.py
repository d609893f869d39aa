"""``driftwarden.client``: batching, retries, the bounded buffer, and a real server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from driftwarden.bundles import Bundle, load_bundle
from driftwarden.client import Client
from driftwarden.model_server.app import create_app
from driftwarden.model_server.settings import Settings


class Recorder:
    """The Sender's interface, remembering what reached it."""

    def __init__(self) -> None:
        self.rows = 0
        self.prediction_ids: list[str] = []
        self.label_ids: list[str] = []

    def emit_features(self, columns):
        self.rows += len(next(iter(columns.values())))

    def emit_predictions(self, ids, values):
        self.prediction_ids += list(ids)

    def emit_labels(self, ids, labels):
        self.label_ids += list(ids)

    def emit_embeddings(self, group, matrix):
        pass

    def has_room(self, values):
        return True

    async def start(self):
        pass

    async def stop(self, drain_timeout=5.0):
        pass


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle("builtin://iris")


@pytest.fixture
def server(bundle) -> Iterator[tuple[str, Recorder]]:
    """A real uvicorn serving the model-server app on 127.0.0.1 (a free port)."""
    recorder = Recorder()
    app = create_app(Settings(bundle="unused://"), bundle=bundle, emitter=recorder)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(srv.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", recorder
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


def iris_features(bundle: Bundle, n: int) -> list[dict[str, float]]:
    frame = bundle.reference[bundle.feature_names]
    return [{k: float(v) for k, v in frame.iloc[i % len(frame)].items()} for i in range(n)]


def test_records_and_labels_reach_a_real_server(bundle, server):
    url, recorder = server
    rows = iris_features(bundle, 1200)
    with Client(url, token="t0ken", batch_size=250, flush_interval=0.05) as client:
        for i, row in enumerate(rows):
            client.log(row, prediction="setosa", id=f"order-{i}")
        client.log(rows[0])  # no prediction, no id
        for i in range(0, 1200, 3):
            client.log_label(f"order-{i}", "versicolor")
        assert client.flush(timeout=30)
        stats = client.stats
    assert stats.acknowledged == 1201 and stats.labels_acknowledged == 400
    assert stats.dropped == stats.rejected == 0
    assert recorder.rows == 1201
    assert recorder.prediction_ids == [f"order-{i}" for i in range(1200)]
    assert recorder.label_ids == [f"order-{i}" for i in range(0, 1200, 3)]


def test_503_and_connection_errors_are_retried_honouring_retry_after():
    answers: list[Any] = [
        httpx.Response(503, headers={"Retry-After": "0.3"}, json={"reason": "sender_queue_full"}),
        httpx.ConnectError("refused"),
        httpx.Response(503, headers={"Retry-After": "0.2"}),
        httpx.Response(202, json={"accepted": 2}),
    ]
    seen: list[tuple[float, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((time.monotonic(), json.loads(request.content)))
        assert request.headers["authorization"] == "Bearer s3cret"
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = Client(
        "http://127.0.0.1:9", token="s3cret", transport=httpx.MockTransport(handler),
        flush_interval=0.01, backoff_initial=0.01,
    )  # fmt: skip
    client.log({"a": 1.0}, prediction=2.0, id="x")
    client.log({"a": 2.0})
    assert client.flush(timeout=10)
    client.close()
    stats = client.stats
    assert stats.acknowledged == 2 and stats.retries == 3 and stats.dropped == 0
    assert [body for _, body in seen] == [seen[0][1]] * 4  # the same batch, resent
    assert seen[0][1] == {
        "records": [
            {"features": {"a": 1.0}, "prediction": 2.0, "id": "x"},
            {"features": {"a": 2.0}},
        ]
    }
    assert seen[1][0] - seen[0][0] >= 0.29  # waited the Retry-After
    assert seen[3][0] - seen[2][0] >= 0.19


def test_a_full_buffer_drops_the_oldest_and_counts_it():
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(202)

    client = Client(
        "http://127.0.0.1:9", transport=httpx.MockTransport(handler),
        max_buffered=3, batch_size=100, flush_interval=60,
    )  # fmt: skip
    for i in range(5):
        client.log({"a": float(i)})
    assert client.stats.dropped == 2 and client.buffered == 3
    client.close(timeout=5)
    assert bodies == [{"records": [{"features": {"a": float(i)}} for i in (2, 3, 4)]}]
    assert client.stats.acknowledged == 3
    with pytest.raises(RuntimeError):
        client.log({"a": 0.0})


def test_refused_batches_are_counted_not_retried():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(422, json={"detail": "record 0, field 'features.a': is required"})

    with Client(
        "http://127.0.0.1:9", transport=httpx.MockTransport(handler), flush_interval=0.01
    ) as c:
        c.log({"b": 1.0})
        c.log_label("x", 1.0)
        assert c.flush(timeout=5)
    assert calls == ["/v1/records", "/feedback"]
    assert c.stats.rejected == 2 and c.stats.acknowledged == 0


def test_close_gives_up_on_an_unreachable_server_and_counts_what_is_left():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    client = Client(
        "http://127.0.0.1:9", transport=httpx.MockTransport(handler), flush_interval=0.01,
        batch_size=2, backoff_initial=0.01, backoff_max=0.05,
    )  # fmt: skip
    for i in range(5):
        client.log({"a": float(i)})
    started = time.monotonic()
    client.close(timeout=0.5)
    assert time.monotonic() - started < 5
    stats = client.stats
    assert stats.acknowledged == 0 and stats.dropped == 5 and stats.retries > 0
