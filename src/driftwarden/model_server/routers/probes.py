"""``/healthz`` (liveness) and ``/readyz`` (readiness) for Kubernetes probes."""

from __future__ import annotations

from fastapi import APIRouter, Response

from driftwarden.model_server.routers.common import json_response, not_ready
from driftwarden.model_server.state import StateDep

router = APIRouter(tags=["probes"])


@router.get(
    "/healthz",
    summary="Liveness: the process can serve",
    responses={
        200: {"description": '`{"status": "ok"}`'},
        500: {"description": "the batching task stopped: restart the pod"},
    },
)
async def healthz(state: StateDep) -> Response:
    # Loading a model is not a liveness failure; a dead batching task is, because no
    # prediction can be answered again until the pod restarts.
    if state.ready and (state.batcher is None or not state.batcher.running):
        return json_response({"status": "failed", "detail": "the batching task stopped"}, 500)
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: the model is loaded and taking requests",
    responses={
        200: {"description": '`{"status": "ready", "bundle": <name>, "emission": <bool>}`'},
        503: {"description": "model not loaded yet, or shutting down"},
    },
)
async def readyz(state: StateDep) -> Response:
    if not state.ready or state.bundle is None:
        return not_ready(state)
    return json_response(
        {"status": "ready", "bundle": state.bundle.name, "emission": state.emitting}
    )
