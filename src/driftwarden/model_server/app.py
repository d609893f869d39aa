"""The FastAPI application: ``create_app(settings) -> FastAPI``.

The model loads in the lifespan; OpenAPI request and response schemas are generated
from the loaded bundle's feature schema the first time ``/openapi.json`` is asked for
(:mod:`driftwarden.model_server.openapi`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from driftwarden.bundles import Bundle
from driftwarden.model_server.docs import add_offline_docs
from driftwarden.model_server.emission import Emitter
from driftwarden.model_server.metrics import ServerMetrics
from driftwarden.model_server.openapi import openapi_document
from driftwarden.model_server.routers import feedback, metrics, predict, probes, records
from driftwarden.model_server.settings import Settings
from driftwarden.model_server.state import ServerState

# Routes get their own latency/request series; anything else is "other" (bounded labels).
KNOWN_HANDLERS = frozenset(
    {
        "/predict",
        "/feedback",
        "/v1/records",
        "/healthz",
        "/readyz",
        "/metrics",
        "/docs",
        "/redoc",
        "/openapi.json",
    }
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
        docs_url=None,  # FastAPI's pages load their assets from a CDN: ours are offline
        redoc_url=None,
    )
    app.state.driftwarden = state
    for module in (predict, feedback, records, probes, metrics):
        app.include_router(module.router)
    add_offline_docs(app)
    app.add_middleware(RequestMetricsMiddleware, metrics=state.metrics)
    app.openapi = lambda: openapi_document(app, state)  # type: ignore[method-assign]
    return app
