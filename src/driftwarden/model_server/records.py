"""Parsing of ``POST /v1/records`` bodies: records logged by models served elsewhere.

A record is ``{"id"?, "features", "prediction"?, "timestamp"?}``; ``features`` is
checked by the same pydantic model as a ``/predict`` record (so the same rules,
limits and reasons apply), ``prediction`` has the type of a ``/feedback`` label.
A body is one record or ``{"records": [...]}`` (1 to ``max_records``), or a
CloudEvent carrying one record, in binary mode (``ce-*`` headers, the body is the
record) or structured mode (``application/cloudevents+json``, ``data`` is the
record); the event's ``id`` is the record's id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from driftwarden.bundles.manifest import BundleManifest
from driftwarden.model_server.validation import (
    EMPTY_BATCH,
    INVALID,
    INVALID_CLOUDEVENT,
    INVALID_ID,
    INVALID_LABEL,
    INVALID_PREDICTION,
    MALFORMED_JSON,
    RECORD_ID_PATTERN,
    TOO_MANY_RECORDS,
    WRONG_TYPE,
    Problem,
    Rejection,
    RequestParser,
    _alias_names,
    _problem,
    label_annotation,
)

CLOUDEVENTS_JSON = "application/cloudevents+json"
# Required context attributes of CloudEvents 1.0 (https://github.com/cloudevents/spec).
CE_REQUIRED = ("specversion", "id", "source", "type")
CE_SPECVERSION = "1.0"
RECORD_ID_RULE = "1 to 128 characters: letters, digits and . _ : / @ + -"


@dataclass
class ParsedRecords:
    """Validated records as columns: what the sender takes."""

    columns: dict[str, list[Any]]  # feature name -> one value per record
    ids: list[str | None]  # the caller's id (or the event's) per record
    predictions: list[Any | None]  # None where the record carries no prediction
    batch: bool
    events: int = 0  # CloudEvents among them (0 or 1)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.ids)


def logged_record_model(manifest: BundleManifest, features: type[BaseModel]) -> type[BaseModel]:
    """Return the pydantic model of one logged record of ``manifest``'s bundle."""
    title = "".join(part.capitalize() for part in manifest.name.split("-")) + "LoggedRecord"
    fields: dict[str, Any] = {
        "id": (
            Annotated[
                str | None,
                Field(
                    pattern=RECORD_ID_PATTERN,
                    description="your id for the record (optional); quote it as "
                    "`prediction_id` in /feedback to join its label. " + RECORD_ID_RULE,
                ),
            ],
            None,
        ),
        "features": (features, ...),
        "prediction": (
            Annotated[
                label_annotation(manifest) | None,
                Field(description="what your model predicted for the record (optional)"),
            ]
            if manifest.prediction is not None
            # A model-free bundle without a prediction has no prediction stream to feed:
            # a prediction is refused (422 naming the field) rather than dropped unseen.
            else Annotated[
                None,
                Field(
                    description="the bundle declares no prediction: leave this out (recreate "
                    "the bundle with --prediction to watch predictions)"
                ),
            ],
            None,
        ),
        "timestamp": (
            Annotated[
                float | None,
                Field(
                    strict=True,
                    allow_inf_nan=False,
                    description="when the record was served, Unix seconds (optional; checked "
                    "to be finite, event time on the workers is the arrival time)",
                ),
            ],
            None,
        ),
    }
    return create_model(
        title, __config__=ConfigDict(extra="forbid", title=title, frozen=True), **fields
    )


class RecordsParser:
    """Parses ``/v1/records`` bodies with the rules of ``parser`` (the /predict parser)."""

    def __init__(self, parser: RequestParser) -> None:
        self.manifest = parser.manifest
        self.max_records = parser.max_records
        self._attrs = list(_alias_names(parser.manifest))
        self._names = parser.manifest.feature_names
        self.record = logged_record_model(parser.manifest, parser.features_record)
        records: Any = (
            Annotated[
                list[self.record],  # type: ignore[name-defined]
                Field(min_length=1, max_length=self.max_records),
            ],
            ...,
        )
        self.record_batch: Any = create_model(
            self.record.__name__ + "s",
            __config__=ConfigDict(extra="forbid", frozen=True),
            records=records,
        )
        self._one = TypeAdapter(self.record)
        self._many = TypeAdapter(self.record_batch)

    # ------------------------------------------------------------------ plain JSON

    def parse(self, body: bytes) -> ParsedRecords:
        """Return the records of a JSON body; raise :class:`Rejection`."""
        value = _load(body)
        batch = isinstance(value, dict) and "records" in value
        records = self._validate(value, batch)
        return self._columns(records, batch)

    def _validate(self, value: Any, batch: bool) -> list[Any]:
        try:
            if batch:
                parsed: Any = self._many.validate_python(value)
                return list(parsed.records)
            return [self._one.validate_python(value)]
        except ValidationError as exc:
            problems = [_record_problem(dict(e), batch) for e in exc.errors(include_url=False)]
            status = 413 if problems and problems[0].rule == TOO_MANY_RECORDS else 422
            raise Rejection(status, problems[0].rule if problems else INVALID, problems) from None

    def _columns(self, records: list[Any], batch: bool, events: int = 0) -> ParsedRecords:
        columns = {
            name: [getattr(r.features, attr) for r in records]
            for attr, name in zip(self._attrs, self._names, strict=False)
        }
        return ParsedRecords(
            columns=columns,
            ids=[r.id for r in records],
            predictions=[r.prediction for r in records],
            batch=batch,
            events=events,
        )

    # ------------------------------------------------------------------ CloudEvents

    def parse_structured(self, body: bytes) -> ParsedRecords:
        """Return the record of a structured-mode CloudEvent; raise :class:`Rejection`."""
        event = _load(body)
        if not isinstance(event, dict):
            raise _ce_error(None, f"a structured CloudEvent is a JSON object, got {_kind(event)}")
        attributes = {k: v for k, v in event.items() if k not in ("data", "data_base64")}
        self._check_attributes(attributes, where="")
        if "data_base64" in event:
            raise _ce_error("data_base64", "binary data is not a record; send JSON in 'data'")
        if "data" not in event:
            raise _ce_error("data", "is required: the record ({features, prediction?})")
        media = str(event.get("datacontenttype", "application/json")).split(";")[0].strip()
        if media != "application/json" and not media.endswith("+json"):
            raise _ce_error("datacontenttype", f"is {media!r}; the record must be JSON")
        return self._event_record(event["data"], str(event["id"]))

    def parse_binary(self, headers: Mapping[str, str], body: bytes) -> ParsedRecords:
        """Return the record of a binary-mode CloudEvent (``ce-*`` headers, JSON body)."""
        attributes = {
            k[3:]: v for k, v in headers.items() if k.lower().startswith("ce-") and len(k) > 3
        }
        self._check_attributes(attributes, where="ce-")
        return self._event_record(_load(body), attributes["id"])

    def _check_attributes(self, attributes: Mapping[str, Any], where: str) -> None:
        problems = [
            Problem(INVALID_CLOUDEVENT, "is required (CloudEvents 1.0)", field=where + name)
            for name in CE_REQUIRED
            if attributes.get(name) in (None, "")
        ]
        if problems:
            raise Rejection(400, INVALID_CLOUDEVENT, problems)
        for name in CE_REQUIRED:
            if not isinstance(attributes[name], str):
                raise _ce_error(where + name, f"must be a string, got {_kind(attributes[name])}")
        if attributes["specversion"] != CE_SPECVERSION:
            raise _ce_error(
                where + "specversion",
                f"is {attributes['specversion']!r}; this endpoint reads CloudEvents "
                f"{CE_SPECVERSION}",
            )
        try:
            TypeAdapter(Annotated[str, Field(pattern=RECORD_ID_PATTERN)]).validate_python(
                attributes["id"]
            )
        except ValidationError:
            raise Rejection(
                422,
                INVALID_ID,
                [
                    Problem(
                        INVALID_ID,
                        f"the event id is the record id: {RECORD_ID_RULE} "
                        f"(got {str(attributes['id'])[:60]!r})",
                        field=where + "id",
                    )
                ],
            ) from None

    def _event_record(self, data: Any, event_id: str) -> ParsedRecords:
        if isinstance(data, dict) and "records" in data:
            raise _ce_error("data", "one event carries one record; send a batch as plain JSON")
        if isinstance(data, dict) and data.get("id") not in (None, event_id):
            raise Rejection(
                422,
                INVALID_ID,
                [
                    Problem(
                        INVALID_ID,
                        f"is {data['id']!r} but the event id is {event_id!r}; "
                        "leave it out (the event id is the record id) or make them equal",
                        field="id",
                    )
                ],
            )
        if isinstance(data, dict):
            data = {**data, "id": event_id}
        records = self._validate(data, batch=False)
        return self._columns(records, batch=False, events=1)


def _load(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejection(
            400, MALFORMED_JSON, [Problem(MALFORMED_JSON, f"body is not valid JSON: {exc}")]
        ) from None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _ce_error(name: str | None, message: str) -> Rejection:
    return Rejection(400, INVALID_CLOUDEVENT, [Problem(INVALID_CLOUDEVENT, message, field=name)])


def _record_problem(error: dict[str, Any], batch: bool) -> Problem:
    """Return the problem of one pydantic error: the record index and the dotted field."""
    loc = list(error["loc"])
    if batch and loc and loc[0] == "records":
        loc.pop(0)
    record = loc.pop(0) if batch and loc and isinstance(loc[0], int) else None
    if batch and record is None and not loc and error["type"] in ("too_short", "too_long"):
        return _problem({**error, "loc": ()}, feedback=False)
    path = [str(p) for p in loc]
    top = path[0] if path else None
    # The feature rules (missing, unknown, limits, categories) read as /predict's.
    leaf = path[1] if top == "features" and len(path) > 1 else top
    problem = _problem({**error, "loc": [leaf] if leaf is not None else []}, feedback=False)
    problem.record = record
    problem.field = ".".join(path) if path else None
    if top == "id":
        problem.rule = INVALID_ID
        problem.message = RECORD_ID_RULE + f" (got {str(error.get('input'))[:60]!r})"
    elif top == "prediction":
        problem.rule = INVALID_PREDICTION
        if error["type"] == "none_required":  # a model-free bundle without a prediction
            problem.message = (
                "the bundle declares no prediction, so none is watched: leave it out, or "
                "recreate the bundle with --prediction"
            )
    elif top == "features" and len(path) == 1:
        # The whole features object is missing or not an object.
        if error["type"] != "missing":
            problem.rule = WRONG_TYPE
            problem.message = "must be an object of the model's features"
    elif top is None and error["type"] in ("model_type", "dict_type"):
        problem.rule = WRONG_TYPE
        problem.message = (
            'a record is an object {"features": {...}, "prediction"?, "id"?, "timestamp"?}'
        )
    if problem.rule == INVALID_LABEL:
        problem.rule = INVALID_PREDICTION
    if problem.rule == EMPTY_BATCH:
        problem.field = "records"
    return problem
