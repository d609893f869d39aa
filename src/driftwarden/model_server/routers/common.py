"""Helpers shared by the JSON endpoints: bounded body reads and rejection replies."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request, Response

from driftwarden.model_server.metrics import OVERLOAD_INFLIGHT
from driftwarden.model_server.state import ServerState
from driftwarden.model_server.validation import (
    BODY_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    Problem,
    Rejection,
)


async def read_json_body(request: Request, limit: int) -> bytes:
    """Return the request body; raise :class:`Rejection` if it is not JSON or over ``limit``."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if media and media != "application/json" and not media.endswith("+json"):
        raise Rejection(
            415,
            UNSUPPORTED_MEDIA_TYPE,
            [Problem(UNSUPPORTED_MEDIA_TYPE, f"content-type {media!r}; send application/json")],
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    # Read in chunks so a body without (or lying about) its length still stops at the limit.
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> Rejection:
    return Rejection(
        413,
        BODY_TOO_LARGE,
        [
            Problem(
                BODY_TOO_LARGE,
                f"body of {size} bytes exceeds the {limit}-byte limit "
                "(DRIFTWARDEN_SERVER__MAX_BODY_BYTES); split the batch",
            )
        ],
    )


def json_response(payload: Any, status: int = 200) -> Response:
    # json.dumps straight to bytes: no response-model validation on the hot path.
    return Response(
        json.dumps(payload, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
    )


def reject(state: ServerState, handler: str, rejection: Rejection) -> Response:
    state.metrics.rejections.labels(handler, rejection.reason).inc()
    return json_response(rejection.body(), rejection.status)


def not_ready(state: ServerState) -> Response:
    status = "stopping" if state.stopping else "starting"
    response = json_response(
        {"detail": f"the model server is {status}; retry shortly", "status": status}, 503
    )
    response.headers["Retry-After"] = str(state.settings.server.retry_after_s)
    return response


# The ``reason`` of a 409 from a model-free bundle: nothing here can answer the request.
MODEL_FREE = "model_free"
NO_MODEL_DETAIL = "bundle has no model; send records to /v1/records"
NO_LABELS_DETAIL = (
    "bundle declares no labels: the concept stream compares predictions with labels and "
    "needs both in the reference sample; recreate the bundle with --prediction and --label"
)


def model_free(detail: str) -> Response:
    """Return the 409 for a request a model-free bundle cannot serve (never a 5xx)."""
    return json_response({"detail": detail, "reason": MODEL_FREE}, 409)


def overloaded(state: ServerState, handler: str, reason: str) -> Response:
    """Return the 503 for a full server, with Retry-After, and count it."""
    options = state.settings.server
    if reason == OVERLOAD_INFLIGHT:
        detail = (
            f"the model server is serving its limit of {options.max_inflight_requests} "
            "requests at once (DRIFTWARDEN_SERVER__MAX_INFLIGHT_REQUESTS, "
            "spec.model.maxInflightRequests); retry after the Retry-After delay or add replicas"
        )
    else:
        detail = (
            "the queue toward the drift workers is full (DRIFTWARDEN_SENDER__MAX_BUFFERED_VALUES); "
            "the labels were not accepted: retry after the Retry-After delay"
        )
    state.metrics.overloaded.labels(handler, reason).inc()
    response = json_response(
        {"detail": detail, "reason": reason, "retry_after_s": options.retry_after_s}, 503
    )
    response.headers["Retry-After"] = str(options.retry_after_s)
    return response
