"""Request validation built from the bundle's feature schema.

Records are checked by pydantic models generated from ``bundle.json``: numeric
features are strict finite numbers (no strings, booleans, NaN or infinities),
categorical features a closed set of strings, and no feature may be missing or
unknown. A failed check becomes a :class:`Rejection` whose message names the record,
the field and the rule, with a bounded ``reason`` used as the metric label.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from driftwarden.bundles.limits import input_limits
from driftwarden.bundles.manifest import BundleManifest
from driftwarden.common.durations import parse_duration
from driftwarden.common.errors import ConfigError
from driftwarden.common.spec import LabelJoinSpec

# Rejection reasons: the complete, bounded set of metric label values.
MALFORMED_JSON = "malformed_json"
BODY_TOO_LARGE = "body_too_large"
TOO_MANY_RECORDS = "too_many_records"
EMPTY_BATCH = "empty_batch"
MISSING_FEATURE = "missing_feature"
UNKNOWN_FEATURE = "unknown_feature"
WRONG_TYPE = "wrong_type"
UNKNOWN_CATEGORY = "unknown_category"
NOT_FINITE = "not_finite"
OUTSIDE_LIMITS = "outside_limits"
INVALID_LABEL = "invalid_label"
INVALID_ID = "invalid_id"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
TIMESTAMP_OUT_OF_WINDOW = "timestamp_out_of_window"
INVALID_PREDICTION = "invalid_prediction"
INVALID_CLOUDEVENT = "invalid_cloudevent"
INVALID = "invalid"
REASONS = (
    MALFORMED_JSON,
    BODY_TOO_LARGE,
    TOO_MANY_RECORDS,
    EMPTY_BATCH,
    MISSING_FEATURE,
    UNKNOWN_FEATURE,
    WRONG_TYPE,
    UNKNOWN_CATEGORY,
    NOT_FINITE,
    OUTSIDE_LIMITS,
    INVALID_LABEL,
    INVALID_ID,
    UNSUPPORTED_MEDIA_TYPE,
    TIMESTAMP_OUT_OF_WINDOW,
    INVALID_PREDICTION,
    INVALID_CLOUDEVENT,
    INVALID,
)

# Prediction ids: 12 hex digits naming the server process, a dash, a hex counter.
PREDICTION_ID_PATTERN = r"^[0-9a-f]{12}-[0-9a-f]{1,16}$"
# Ids /feedback joins on: the server's own, or those callers gave records on /v1/records
# (UUIDs, CloudEvent ids); bounded so a label cannot carry an arbitrary string.
RECORD_ID_PATTERN = r"^[A-Za-z0-9._:/@+-]{1,128}$"

# spec.labelJoin.key's default: /feedback quotes the id /predict generated and answered.
DEFAULT_JOIN_KEY = str(LabelJoinSpec.model_fields["key"].default)
# The attribute (not the JSON key) of a record's join-key field: features are f0..fN.
JOIN_ATTR = "join_id"

# The label window's defaults: spec.labelJoin.maxDelay's default, and clock skew.
DEFAULT_LABEL_MAX_AGE_S = parse_duration(LabelJoinSpec.model_fields["max_delay"].default)
DEFAULT_LABEL_MAX_FUTURE_S = 300.0


@dataclass
class Problem:
    """One failed rule: where (record index, field) and which rule."""

    rule: str
    message: str
    field: str | None = None
    record: int | None = None

    def describe(self) -> str:
        where = []
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        prefix = ", ".join(where) or "body"
        return f"{prefix}: {self.message} [{self.rule}]"

    def as_json(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "field": self.field,
            "rule": self.rule,
            "message": self.message,
        }


@dataclass
class Rejection(Exception):
    """A request refused before it reached the model."""

    status: int
    reason: str  # metric label: the first problem's rule
    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        shown = "; ".join(p.describe() for p in self.problems[:5])
        more = len(self.problems) - 5
        return shown + (f"; and {more} more" if more > 0 else "")

    def body(self) -> dict[str, Any]:
        return {"detail": str(self), "errors": [p.as_json() for p in self.problems[:100]]}


def _alias_names(manifest: BundleManifest) -> dict[str, str]:
    # Python-safe attribute names: feature names may clash with BaseModel attributes
    # ("json", "copy") or not be identifiers at all; the JSON key is the alias.
    return {f"f{i}": spec.name for i, spec in enumerate(manifest.features)}


def join_key_field(key: str | None) -> str | None:
    """Return the /predict field that carries a caller's join id, or None (server ids).

    ``key`` is the monitor's ``spec.labelJoin.key``; its default, ``prediction_id``,
    means the server generates every id (there is no such request field).
    """
    return None if key is None or key == DEFAULT_JOIN_KEY else key


def record_model(manifest: BundleManifest, join_key: str | None = None) -> type[BaseModel]:
    """Return the pydantic model of one input record of ``manifest``'s bundle.

    ``join_key`` (see :func:`join_key_field`): an optional top-level string field of
    that name carries the record's join id, the id /feedback will quote.
    """
    if join_key is not None and join_key in manifest.feature_names:
        raise ConfigError(
            f"spec.labelJoin.key {join_key!r} names a feature of bundle {manifest.name!r}; "
            "the join key must be a request field of its own"
        )
    fields: dict[str, Any] = {}
    for attr, spec in zip(_alias_names(manifest), manifest.features, strict=False):
        description = spec.description or spec.name
        if spec.type == "numeric":
            low, high = input_limits(spec)
            extra = {}
            if spec.min is not None and spec.max is not None:
                extra = {"x-training-range": [spec.min, spec.max]}
                description += f" (training range {spec.min:g} to {spec.max:g})"
            description += f"; the model accepts {low:g} to {high:g}"
            annotation = Annotated[
                float,
                Field(
                    strict=True,
                    allow_inf_nan=False,
                    ge=low,
                    le=high,
                    alias=spec.name,
                    description=description,
                    json_schema_extra=extra or None,
                ),
            ]
        else:
            annotation = Annotated[
                Literal[tuple(spec.categories)],  # type: ignore[misc]
                Field(alias=spec.name, description=description),
            ]
        fields[attr] = (annotation, ...)
    if join_key is not None:
        fields[JOIN_ATTR] = (
            Annotated[
                str | None,
                Field(
                    pattern=RECORD_ID_PATTERN,
                    alias=join_key,
                    description=f"{join_key}: your id for this prediction (optional; the "
                    "monitor's spec.labelJoin.key). /predict answers it as the `id` and "
                    "/feedback quotes it as `prediction_id` to join the label; without it the "
                    "server generates the id. 1 to 128 characters: letters, digits and "
                    ". _ : / @ + -",
                ),
            ],
            None,
        )
    title = "".join(part.capitalize() for part in manifest.name.split("-")) + "Record"
    if join_key is not None:
        title = title[: -len("Record")] + "PredictRecord"  # not the features-only schema
    return create_model(
        title,
        __config__=ConfigDict(extra="forbid", title=title, frozen=True),
        **fields,
    )


def label_annotation(manifest: BundleManifest) -> Any:
    """Return the type of a ground-truth label for ``manifest``'s bundle."""
    classes = manifest.prediction_classes
    if manifest.task == "classification" and classes:
        return Literal[tuple(classes)]  # type: ignore[misc]
    # Regression, or a model-free bundle without a prediction (whose /feedback answers
    # 409 before parsing, so this type only documents it).
    return Annotated[float, Field(strict=True, allow_inf_nan=False)]


def feedback_model(manifest: BundleManifest) -> type[BaseModel]:
    """Return the pydantic model of one ``/feedback`` item: prediction id and true label."""
    title = "".join(part.capitalize() for part in manifest.name.split("-")) + "Feedback"
    return create_model(
        title,
        __config__=ConfigDict(extra="forbid", title=title, frozen=True),
        prediction_id=(
            Annotated[
                str,
                Field(
                    pattern=RECORD_ID_PATTERN,
                    description="id from /predict, or the id given to a record on /v1/records",
                ),
            ],
            ...,
        ),
        label=(
            Annotated[
                label_annotation(manifest),
                Field(description=manifest.target.name if manifest.target else "true label"),
            ],
            ...,
        ),
        timestamp=(
            Annotated[
                float | None,
                Field(
                    strict=True,
                    allow_inf_nan=False,
                    description="when the label was observed, Unix seconds (optional). It must "
                    "lie between now minus the monitor's labelJoin.maxDelay (an older label can "
                    "no longer meet its prediction: the prediction stopped waiting) and now plus "
                    "DRIFTWARDEN_SERVER__MAX_LABEL_FUTURE_S (clock skew); outside, 422 "
                    "timestamp_out_of_window. The join itself uses the arrival time.",
                ),
            ],
            None,
        ),
    )


_TYPE_REASONS = {
    "missing": MISSING_FEATURE,
    "extra_forbidden": UNKNOWN_FEATURE,
    "literal_error": UNKNOWN_CATEGORY,
    "finite_number": NOT_FINITE,
    "greater_than_equal": OUTSIDE_LIMITS,
    "less_than_equal": OUTSIDE_LIMITS,
    "too_long": TOO_MANY_RECORDS,
    "too_short": EMPTY_BATCH,
    "json_invalid": MALFORMED_JSON,
    "string_pattern_mismatch": INVALID_ID,
}


def _reason(error_type: str) -> str:
    if error_type in _TYPE_REASONS:
        return _TYPE_REASONS[error_type]
    if error_type.endswith(("_type", "_parsing")):
        return WRONG_TYPE
    return INVALID


def _problem(error: dict[str, Any], feedback: bool, join_key: str | None = None) -> Problem:
    loc = list(error["loc"])
    record = loc.pop(0) if loc and isinstance(loc[0], int) else None
    name = str(loc[0]) if loc else None
    rule = _reason(error["type"])
    message = error["msg"]
    if not feedback and join_key is not None and name == join_key:
        shown = repr(error.get("input", "?"))[:60]
        return Problem(
            rule=INVALID_ID,
            message="is the monitor's labelJoin.key, the id /feedback joins the label on: a "
            f"string of 1 to 128 characters (letters, digits and . _ : / @ + -), got {shown}",
            field=name,
            record=record,
        )
    if feedback and name == "label" and rule in (UNKNOWN_CATEGORY, WRONG_TYPE, NOT_FINITE):
        rule = INVALID_LABEL
    if rule == NOT_FINITE:
        message = "must be a finite number (NaN and infinities are refused)"
    elif rule == OUTSIDE_LIMITS:
        ctx = error.get("ctx", {})
        bound = f"at least {ctx['ge']:g}" if "ge" in ctx else f"at most {ctx.get('le', 0):g}"
        message = (
            f"must be {bound}, the model's input limit (got {error.get('input', '?')!r}); values "
            "outside the training range but inside the limits are served"
        )
    elif rule == UNKNOWN_FEATURE:
        message = "is not a feature of this model"
    elif rule == MISSING_FEATURE:
        message = "is required"
    elif rule == INVALID_ID:
        message = (
            "is not a prediction id returned by /predict or a record id sent to /v1/records "
            "(1 to 128 characters: letters, digits and . _ : / @ + -)"
        )
    elif rule == TOO_MANY_RECORDS:
        message = message.replace("List", "batch").replace("items", "records")
    elif rule == EMPTY_BATCH:
        message = "batch has no records"
    if "input" in error and rule in (WRONG_TYPE, UNKNOWN_CATEGORY, INVALID_LABEL):
        shown = repr(error["input"])
        message += f" (got {shown[:60]})"
    return Problem(rule=rule, message=message, field=name, record=record)


class RequestParser:
    """Parses ``/predict`` and ``/feedback`` bodies into validated records."""

    def __init__(
        self,
        manifest: BundleManifest,
        max_records: int,
        *,
        label_max_age_s: float = DEFAULT_LABEL_MAX_AGE_S,
        label_max_future_s: float = DEFAULT_LABEL_MAX_FUTURE_S,
        join_key: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``label_max_age_s``/``label_max_future_s``: the window of /feedback timestamps.

        ``join_key``: the monitor's ``spec.labelJoin.key``; a value other than the
        default ``prediction_id`` is a /predict field carrying the caller's join id.
        """
        self.manifest = manifest
        self.join_key = join_key_field(join_key)
        self.max_records = max_records
        self.label_max_age_s = label_max_age_s
        self.label_max_future_s = label_max_future_s
        self.clock = clock
        # features only (what /v1/records nests), and the /predict record (plus the key)
        self.features_record = record_model(manifest)
        self.record = (
            self.features_record if self.join_key is None else record_model(manifest, self.join_key)
        )
        self.feedback = feedback_model(manifest)
        self._attrs = list(_alias_names(manifest))
        self._names = manifest.feature_names
        # The published schema (minItems, maxItems) and the parser are built from the
        # same types, so the documented and enforced batch bounds cannot disagree.
        self.record_batch = _batch(self.record, max_records)
        self.feedback_batch = _batch(self.feedback, max_records)
        self._one = TypeAdapter(self.record)
        self._many = TypeAdapter(self.record_batch)
        self._fb_one = TypeAdapter(self.feedback)
        self._fb_many = TypeAdapter(self.feedback_batch)

    @staticmethod
    def _is_batch(body: bytes) -> bool:
        # A JSON array is a batch, an object one record; peek instead of parsing twice.
        return body.lstrip()[:1] == b"["

    def _validate(self, body: bytes, one: TypeAdapter, many: TypeAdapter, feedback: bool):
        batch = self._is_batch(body)
        try:
            value = (many if batch else one).validate_json(body)
        except ValidationError as exc:
            problems = [_problem(e, feedback, self.join_key) for e in exc.errors(include_url=False)]
            status = 413 if problems and problems[0].rule == TOO_MANY_RECORDS else 422
            if problems and problems[0].rule == MALFORMED_JSON:
                status = 400
            raise Rejection(status, problems[0].rule if problems else INVALID, problems) from None
        return (value if batch else [value]), batch

    def parse_records(self, body: bytes) -> tuple[dict[str, list[Any]], int, bool]:
        """Return ``(columns by feature name, row count, was a batch)``; raise :class:`Rejection`."""
        columns, rows, batch, _ = self.parse_predict(body)
        return columns, rows, batch

    def parse_predict(
        self, body: bytes
    ) -> tuple[dict[str, list[Any]], int, bool, list[str | None] | None]:
        """Return ``(columns, row count, was a batch, join ids)``; raise :class:`Rejection`.

        Join ids: per record the value of the ``labelJoin.key`` field (None where a
        record leaves it out: the server generates that id), or None for the whole
        request when the key is the default (every id generated).
        """
        records, batch = self._validate(body, self._one, self._many, feedback=False)
        columns = {
            name: [getattr(r, attr) for r in records]
            for attr, name in zip(self._attrs, self._names, strict=False)
        }
        ids: list[str | None] | None = None
        if self.join_key is not None:
            ids = [getattr(r, JOIN_ATTR) for r in records]
            if all(i is None for i in ids):
                ids = None
        return columns, len(records), batch, ids

    def parse_feedback(self, body: bytes) -> tuple[list[str], list[Any], bool]:
        """Return ``(prediction ids, labels, was a batch)``; raise :class:`Rejection`."""
        items, batch = self._validate(body, self._fb_one, self._fb_many, feedback=True)
        self._check_timestamps([i.timestamp for i in items], batch)
        return [i.prediction_id for i in items], [i.label for i in items], batch

    def _check_timestamps(self, stamps: list[float | None], batch: bool) -> None:
        if all(t is None for t in stamps):
            return
        now = self.clock()
        low, high = now - self.label_max_age_s, now + self.label_max_future_s
        window = (
            f"must lie between {_rfc3339(low)} and {_rfc3339(high)} (Unix {low:.0f} to "
            f"{high:.0f}: at most labelJoin.maxDelay = {self.label_max_age_s:g}s in the past, "
            "when the prediction stops waiting for its label, and at most "
            f"{self.label_max_future_s:g}s in the future, "
            "DRIFTWARDEN_SERVER__MAX_LABEL_FUTURE_S)"
        )
        problems = [
            Problem(
                TIMESTAMP_OUT_OF_WINDOW,
                f"{window}; got {t!r} ({_rfc3339(t)})",
                field="timestamp",
                record=i if batch else None,
            )
            for i, t in enumerate(stamps)
            if t is not None and not low <= t <= high
        ]
        if problems:
            raise Rejection(422, TIMESTAMP_OUT_OF_WINDOW, problems)


def _rfc3339(unix: float) -> str:
    try:
        stamp = datetime.fromtimestamp(unix, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return "out of range"
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def _batch(item: type[BaseModel], max_records: int) -> Any:
    """Return the type of a batch body: 1 to ``max_records`` items."""
    return Annotated[list[item], Field(min_length=1, max_length=max_records)]  # type: ignore[valid-type]
