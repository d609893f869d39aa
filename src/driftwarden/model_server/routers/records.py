"""``POST /v1/records``: the ingest gateway for models served elsewhere.

Records are validated like ``/predict`` records and handed to the same sender the
model's own predictions go through, so the caller never knows about shards. A 202
means every record of the request was queued for the drift workers; anything else
means none was.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from driftwarden.model_server.batching import IdFactory
from driftwarden.model_server.metrics import NOT_READY, OVERLOAD_INFLIGHT, OVERLOAD_SENDER_FULL
from driftwarden.model_server.records import CLOUDEVENTS_JSON, ParsedRecords, RecordsParser
from driftwarden.model_server.routers.common import (
    json_response,
    not_ready,
    overloaded,
    read_json_body,
    reject,
)
from driftwarden.model_server.state import ServerState, StateDep
from driftwarden.model_server.validation import Rejection

router = APIRouter(tags=["records"])
PATH = "/v1/records"


@router.post(
    PATH,
    status_code=202,
    summary="Log records of a model served elsewhere",
    description=(
        "Send one record `{id?, features, prediction?, timestamp?}` or a batch "
        '`{"records": [...]}`; or a CloudEvent carrying one record, in binary mode (`ce-*` '
        "headers, the body is the record) or structured mode (`application/cloudevents+json`, "
        "`data` is the record), whose `id` is the record id. Features follow the same schema "
        "and limits as `/predict`. Records with a prediction can be joined by a later "
        "`/feedback` quoting their `id` (the response lists the ids, generated where none was "
        "given). 202 means every record was queued for the drift workers; any other answer "
        "means none was."
    ),
    responses={
        400: {"description": "body is not valid JSON, or a malformed CloudEvent"},
        413: {"description": "body or batch too large"},
        415: {"description": "content-type is not JSON"},
        422: {"description": "a record breaks the schema; `errors` names record, field, rule"},
        503: {
            "description": "server starting or stopping, serving its limit of requests at once "
            "(`inflight_limit`), or the queue toward the drift workers is full "
            "(`sender_queue_full`); nothing was queued: retry after `Retry-After` seconds"
        },
    },
)
async def log_records(request: Request, state: StateDep) -> Response:
    if not state.ready:
        state.metrics.records.labels("refused", NOT_READY).inc()
        return not_ready(state)
    if not state.admit():
        state.metrics.records.labels("refused", OVERLOAD_INFLIGHT).inc()
        return overloaded(state, PATH, OVERLOAD_INFLIGHT)
    try:
        try:
            body = await read_json_body(request, state.settings.server.max_body_bytes)
            parsed = _parse(request, state, body)
        except Rejection as rejection:
            state.metrics.records.labels("refused", rejection.reason).inc()
            return reject(state, PATH, rejection)
        return _queue(request, state, parsed)
    finally:
        state.release()


def _parse(request: Request, state: ServerState, body: bytes) -> ParsedRecords:
    parser = _parser(request, state)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == CLOUDEVENTS_JSON:
        return parser.parse_structured(body)
    if "ce-specversion" in request.headers or "ce-id" in request.headers:
        return parser.parse_binary(request.headers, body)
    return parser.parse(body)


def _parser(request: Request, state: ServerState) -> RecordsParser:
    # Built once per app from the /predict parser, so both read the same schema.
    assert state.parser is not None
    parser: RecordsParser | None = getattr(request.app.state, "records_parser", None)
    if parser is None or parser.manifest is not state.parser.manifest:
        parser = RecordsParser(state.parser)
        request.app.state.records_parser = parser
    return parser


def _queue(request: Request, state: ServerState, parsed: ParsedRecords) -> Response:
    n = parsed.count
    predicted = [i for i, p in enumerate(parsed.predictions) if p is not None]
    # One value per feature per record, and two per prediction (the prediction stream
    # and the performance stream's join).
    values = n * len(parsed.columns) + 2 * len(predicted)
    if state.emitting and not state.emitter.has_room(values):
        state.metrics.records.labels("refused", OVERLOAD_SENDER_FULL).inc(n)
        return _sender_full(state)
    ids = list(parsed.ids)
    missing = [i for i in predicted if ids[i] is None]
    for i, generated in zip(missing, _id_factory(request, state).take(len(missing)), strict=True):
        ids[i] = generated
    state.metrics.observe_inputs(parsed.columns)
    if state.emitting:
        # Same path as /predict's after the model: the caller's prediction stands in.
        state.emitter.emit_features(parsed.columns)
        if predicted:
            state.emitter.emit_predictions(
                [ids[i] for i in predicted], [parsed.predictions[i] for i in predicted]
            )
    state.metrics.records.labels("accepted", "ok").inc(n)
    return json_response(
        {"accepted": n, "ids": ids, "predictions": len(predicted), "forwarded": state.emitting},
        202,
    )


def _sender_full(state: ServerState) -> Response:
    retry = state.settings.server.retry_after_s
    state.metrics.overloaded.labels(PATH, OVERLOAD_SENDER_FULL).inc()
    response = json_response(
        {
            "detail": "the queue toward the drift workers is full "
            "(DRIFTWARDEN_SENDER__MAX_BUFFERED_VALUES); no record was accepted: retry after "
            "the Retry-After delay",
            "reason": OVERLOAD_SENDER_FULL,
            "retry_after_s": retry,
        },
        503,
    )
    response.headers["Retry-After"] = str(retry)
    return response


def _id_factory(request: Request, state: ServerState) -> IdFactory:
    # /predict's factory where there is one, so ids stay unique per process.
    if state.batcher is not None:
        return state.batcher.ids
    factory: IdFactory | None = getattr(request.app.state, "record_ids", None)
    if factory is None:
        factory = IdFactory()
        request.app.state.record_ids = factory
    return factory
