"""``POST /predict``: one record (a JSON object) or a batch (a JSON array of objects)."""

from __future__ import annotations

import logging

import numpy as np
from fastapi import APIRouter, Request, Response

from driftwarden.model_server.metrics import OVERLOAD_INFLIGHT
from driftwarden.model_server.routers.common import (
    NO_MODEL_DETAIL,
    json_response,
    model_free,
    not_ready,
    overloaded,
    read_json_body,
    reject,
)
from driftwarden.model_server.state import StateDep
from driftwarden.model_server.validation import Rejection

log = logging.getLogger("driftwarden.model_server")
router = APIRouter(tags=["predictions"])
PATH = "/predict"


@router.post(
    PATH,
    summary="Predict for one record or a batch",
    description=(
        "Send one record as a JSON object, or a batch as a JSON array of records. Every "
        "feature of the model's schema is required; numbers must be finite, categories one "
        "of the listed values. Each prediction gets an `id` to quote in `/feedback`: "
        "the value of the record's own join-key field where the monitor's "
        "`spec.labelJoin.key` names one and the record carries it, else one the server "
        "generates. "
        "A model-free bundle (its model is served elsewhere) answers 409."
    ),
    responses={
        400: {"description": "body is not valid JSON"},
        413: {"description": "body or batch too large"},
        409: {
            "description": "the bundle is model-free (`reason`: `model_free`): send records "
            "to /v1/records instead"
        },
        415: {"description": "content-type is not JSON"},
        422: {
            "description": "a record breaks the schema, or its join-key field "
            "(spec.labelJoin.key) is not a valid id (`invalid_id`); `errors` names record, "
            "field, rule"
        },
        500: {
            "description": "the model raised for valid input (a fault of the model, not the input)"
        },
        503: {
            "description": "model not loaded yet, shutting down, or serving its limit of "
            "requests at once (`reason`: `inflight_limit`); retry after `Retry-After` seconds"
        },
    },
)
async def predict(request: Request, state: StateDep) -> Response:
    if not state.ready:
        return not_ready(state)
    if state.bundle is not None and not state.bundle.has_model:
        return model_free(NO_MODEL_DETAIL)
    if not state.admit():
        return overloaded(state, PATH, OVERLOAD_INFLIGHT)
    state.metrics.inflight.inc()
    try:
        try:
            body = await read_json_body(request, state.settings.server.max_body_bytes)
            columns, rows, batch, join_ids = state.parser.parse_predict(body)
        except Rejection as rejection:
            return reject(state, PATH, rejection)
        try:
            ids, predictions = await state.batcher.submit(columns, rows, join_ids)
        except RuntimeError as exc:
            if not state.ready:
                return not_ready(state)
            log.error("prediction failed: %s", exc)
            return json_response({"detail": f"model call failed: {exc}"}, 500)
        except Exception as exc:
            return json_response({"detail": f"model call failed: {type(exc).__name__}: {exc}"}, 500)
        if predictions.dtype.kind == "f" and not np.isfinite(predictions).all():
            # JSON has no NaN or infinity; the input limits exist so this cannot happen.
            log.error("the model returned a non-finite prediction for valid input")
            return json_response({"detail": "model call failed: non-finite prediction"}, 500)
        values = predictions.tolist()
        if not batch:
            return json_response({"id": ids[0], "prediction": values[0]})
        return json_response(
            {"predictions": [{"id": i, "prediction": v} for i, v in zip(ids, values, strict=False)]}
        )
    finally:
        state.metrics.inflight.dec()
        state.release()
