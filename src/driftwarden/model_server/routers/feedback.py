"""``POST /feedback``: the true label of an earlier prediction, for concept-drift detection."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from driftwarden.model_server.metrics import OVERLOAD_INFLIGHT, OVERLOAD_SENDER_FULL
from driftwarden.model_server.routers.common import (
    NO_LABELS_DETAIL,
    json_response,
    model_free,
    not_ready,
    overloaded,
    read_json_body,
    reject,
)
from driftwarden.model_server.state import StateDep
from driftwarden.model_server.validation import Rejection

router = APIRouter(tags=["feedback"])
PATH = "/feedback"


@router.post(
    PATH,
    status_code=202,
    summary="Report the true label of earlier predictions",
    description=(
        "Send `{prediction_id, label}` or an array of them. Labels may arrive late and at any "
        "replica: the drift worker that owns the performance stream joins them to the "
        "predictions it recorded."
    ),
    responses={
        400: {"description": "body is not valid JSON"},
        413: {"description": "body or batch too large"},
        409: {
            "description": "a model-free bundle without labels (`reason`: `model_free`): "
            "there is no concept stream to join them to"
        },
        415: {"description": "content-type is not JSON"},
        422: {
            "description": "unknown id format, a label outside the model's classes, or a "
            "`timestamp` outside the allowed window (`timestamp_out_of_window`)"
        },
        503: {
            "description": "model not loaded yet, shutting down, serving its limit of requests "
            "at once (`reason`: `inflight_limit`), or the queue toward the drift workers is "
            "full (`sender_queue_full`); retry after `Retry-After` seconds"
        },
    },
)
async def feedback(request: Request, state: StateDep) -> Response:
    if not state.ready:
        return not_ready(state)
    if state.bundle is not None and not state.bundle.has_labels:
        return model_free(NO_LABELS_DETAIL)
    if not state.admit():
        return overloaded(state, PATH, OVERLOAD_INFLIGHT)
    try:
        try:
            body = await read_json_body(request, state.settings.server.max_body_bytes)
            ids, labels, _ = state.parser.parse_feedback(body)
        except Rejection as rejection:
            return reject(state, PATH, rejection)
        # Labels exist only for the workers: refuse them (the client retries) rather than
        # accept and shed them.
        if not state.emitter.has_room(len(ids)):
            return overloaded(state, PATH, OVERLOAD_SENDER_FULL)
        state.emitter.emit_labels(ids, labels)
        state.metrics.feedback.inc(len(ids))
        return json_response({"accepted": len(ids), "forwarded": state.emitting}, 202)
    finally:
        state.release()
