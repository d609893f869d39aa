"""The FastAPI application: ``create_app(settings) -> FastAPI``.

The model loads in the lifespan; OpenAPI request and response schemas are generated
from the loaded bundle's feature schema the first time ``/openapi.json`` is asked for.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter, create_model

from driftwarden.bundles import Bundle
from driftwarden.model_server.emission import Emitter
from driftwarden.model_server.metrics import ServerMetrics
from driftwarden.model_server.routers import feedback, metrics, predict, probes
from driftwarden.model_server.settings import Settings
from driftwarden.model_server.state import ServerState
from driftwarden.model_server.validation import label_annotation

# Routes get their own latency/request series; anything else is "other" (bounded labels).
KNOWN_HANDLERS = frozenset(
    {"/predict", "/feedback", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"}
)


class RequestMetricsMiddleware:
    """Pure ASGI middleware: request count by route and status, latency by route."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        handler = path if path in KNOWN_HANDLERS else "other"
        started = time.perf_counter()
        status = [500]

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            self.metrics.latency.labels(handler).observe(time.perf_counter() - started)
            self.metrics.requests.labels(handler, str(status[0])).inc()


def create_app(
    settings: Settings | None = None,
    *,
    bundle: Bundle | None = None,
    emitter: Emitter | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """Return the model-server app; ``bundle``/``emitter`` override what settings name."""
    settings = settings or Settings()
    state = ServerState(settings, ServerMetrics(registry))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.open(bundle, emitter)
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="Driftwarden model server",
        description="Predictions with drift monitoring: features and predictions are sent "
        "to the drift workers off the request path.",
        version="1",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.driftwarden = state
    for module in (predict, feedback, probes, metrics):
        app.include_router(module.router)
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics)
    app.openapi = lambda: _openapi(app, state)  # type: ignore[method-assign]
    return app


def _schema(adapter: TypeAdapter, components: dict[str, Any]) -> dict[str, Any]:
    schema = adapter.json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    return schema


def _openapi(app: FastAPI, state: ServerState) -> dict[str, Any]:
    """Return the OpenAPI document, with /predict and /feedback typed by the bundle."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    if state.parser is None or state.bundle is None:
        return doc  # model not loaded yet: do not cache the untyped document
    manifest = state.bundle.manifest
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    record = state.parser.record
    feedback_item = state.parser.feedback
    prediction = create_model(
        "Prediction",
        id=(str, ...),
        prediction=(label_annotation(manifest), ...),
    )
    batch = create_model("PredictionBatch", predictions=(list[prediction], ...))
    accepted = create_model("FeedbackAccepted", accepted=(int, ...), forwarded=(bool, ...))

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    def reply(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    post = doc["paths"][predict.PATH]["post"]
    post["requestBody"] = body(_schema(TypeAdapter(record | list[record]), components))
    post["description"] += f"\n\nModel: `{manifest.name}` ({manifest.task}). {manifest.description}"
    post["responses"]["200"] = reply(
        _schema(TypeAdapter(prediction | batch), components),
        "one prediction (object in) or `predictions` in input order (array in)",
    )
    post = doc["paths"][feedback.PATH]["post"]
    post["requestBody"] = body(
        _schema(TypeAdapter(feedback_item | list[feedback_item]), components)
    )
    post["responses"]["202"] = reply(_schema(TypeAdapter(accepted), components), "labels accepted")
    app.openapi_schema = doc
    return doc
