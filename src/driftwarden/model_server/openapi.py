"""The OpenAPI document: ``openapi_document(app, state) -> dict``.

Request and response bodies of /predict and /feedback are typed by the loaded bundle
from the same pydantic types the parser validates with, so every constraint the server
enforces (required features, categories, numeric limits, 1 to MAX_RECORDS records) is
in the schema and a schema-valid request is never refused. Every status a route can
answer is listed with its body; ``tests/e2e/test_server_fuzz.py`` holds the server to it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from driftwarden.model_server.records import RecordsParser
from driftwarden.model_server.routers import feedback, predict, records
from driftwarden.model_server.state import ServerState
from driftwarden.model_server.validation import REASONS, label_annotation


class ProblemItem(BaseModel):
    """One failed rule: which record and field, and the rule (a metric ``reason``)."""

    record: int | None = Field(description="index in the batch; null for one record")
    field: str | None = Field(description="the feature or key; null for the whole body")
    rule: str = Field(description=f"one of: {', '.join(REASONS)}")
    message: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: ``detail`` says what is wrong; ``errors`` lists each rule broken."""

    model_config = ConfigDict(extra="allow", title="Error")

    detail: str
    errors: list[ProblemItem] | None = None
    status: str | None = Field(None, description="503 only: `starting` or `stopping`")
    reason: str | None = Field(
        None,
        description="503 for a full server only: `inflight_limit` (too many requests at once) "
        "or `sender_queue_full` (/feedback: no room toward the drift workers)",
    )
    retry_after_s: int | None = Field(None, description="503 only: as the Retry-After header")


def _schema(adapter: TypeAdapter[Any], components: dict[str, Any]) -> dict[str, Any]:
    schema = adapter.json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    return schema


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _type_errors(doc: dict[str, Any], components: dict[str, Any]) -> None:
    # Every documented 4xx/5xx of every operation carries the one error body.
    components["Error"] = _schema(TypeAdapter(ErrorBody), components)
    error = {"$ref": "#/components/schemas/Error"}
    for operations in doc["paths"].values():
        for operation in operations.values():
            for code, response in operation.get("responses", {}).items():
                if code[0] in "45":
                    response["content"] = _json(error)
                if code == "503":
                    response["headers"] = {
                        "Retry-After": {
                            "description": "seconds to wait before retrying",
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    }


def openapi_document(app: FastAPI, state: ServerState) -> dict[str, Any]:
    """Return the OpenAPI document, with /predict, /feedback and /v1/records typed by the bundle."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    _type_errors(doc, components)
    if state.parser is None or state.bundle is None:
        return doc  # model not loaded yet: do not cache the untyped document
    manifest = state.bundle.manifest
    parser = state.parser
    prediction = create_model(
        "Prediction",
        id=(str, ...),
        prediction=(label_annotation(manifest), ...),
    )
    batch = create_model("PredictionBatch", predictions=(list[prediction], ...))
    accepted = create_model("FeedbackAccepted", accepted=(int, ...), forwarded=(bool, ...))

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": _json(schema)}

    def reply(schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"description": description, "content": _json(schema)}

    post = doc["paths"][predict.PATH]["post"]
    post["requestBody"] = body(
        _schema(TypeAdapter(parser.record | parser.record_batch), components)
    )
    if manifest.has_model:
        post["description"] += (
            f"\n\nModel: `{manifest.name}` ({manifest.task}). {manifest.description}"
        )
    else:
        post["description"] += (
            f"\n\nBundle `{manifest.name}` is model-free (the model is served elsewhere): "
            "this endpoint answers 409; send records to /v1/records."
        )
    post["responses"]["200"] = reply(
        _schema(TypeAdapter(prediction | batch), components),
        "one prediction (object in) or `predictions` in input order (array in)",
    )
    post = doc["paths"][feedback.PATH]["post"]
    post["requestBody"] = body(
        _schema(TypeAdapter(parser.feedback | parser.feedback_batch), components)
    )
    post["responses"]["202"] = reply(_schema(TypeAdapter(accepted), components), "labels accepted")
    logged = RecordsParser(parser)
    queued = create_model(
        "RecordsAccepted",
        accepted=(int, ...),
        ids=(list[str | None], ...),
        predictions=(int, ...),
        forwarded=(bool, ...),
    )
    post = doc["paths"][records.PATH]["post"]
    post["requestBody"] = body(
        _schema(TypeAdapter(logged.record | logged.record_batch), components)
    )
    post["responses"]["202"] = reply(
        _schema(TypeAdapter(queued), components),
        "every record queued for the drift workers; `ids` in input order",
    )
    app.openapi_schema = doc
    return doc
