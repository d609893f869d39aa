"""Building a model-free bundle from a reference file: ``create_model_free(...)``.

A model-free bundle watches a model served elsewhere (KServe, Seldon, any service):
it holds what to watch and nothing to call. From a reference sample (CSV, or Parquet
when pyarrow is installed) this infers the feature schema (numeric or categorical; the
training range of each numeric feature, from which the input limits follow; the
categories of each categorical one), and writes::

    bundle.json     kind: model-free, what the prediction and label columns are
    schema.json     {"features": [...]}: the schema, editable, re-validated on load
    reference.csv   the features, then ``prediction`` and ``target`` if declared

A column is categorical if it is not numeric in the file, or if it is named in
``categorical``; every other column is a numeric feature except the prediction and
label columns.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from driftwarden.bundles.errors import BundleError
from driftwarden.bundles.integrity import bundle_digest
from driftwarden.bundles.manifest import (
    KIND_MODEL_FREE,
    MANIFEST_FILE,
    PREDICTION_COLUMN,
    REFERENCE_FILE,
    SCHEMA_FILE,
    TARGET_COLUMN,
    BundleManifest,
    FeatureSpec,
    PredictionSpec,
    ReferenceSpec,
    SchemaFile,
    TargetSpec,
    Task,
)

# The most categories a categorical feature may have: beyond it, a column is an id or
# free text, not something a chi-squared test can watch.
MAX_CATEGORIES = 1000


@dataclass(frozen=True)
class CreatedBundle:
    """What :func:`create_model_free` wrote: the directory, the manifest and its digest."""

    directory: Path
    manifest: BundleManifest
    digest: str


def read_reference(path: Path) -> pd.DataFrame:
    """Return the table in ``path`` (``.csv``, or ``.parquet`` with pyarrow installed)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise BundleError(f"reference file {path} does not exist")
    if suffix == ".csv":
        try:
            return pd.read_csv(path)
        except (ValueError, pd.errors.ParserError) as exc:
            raise BundleError(f"reference file {path}: not a readable CSV ({exc})") from exc
    if suffix in (".parquet", ".pq"):
        if importlib.util.find_spec("pyarrow") is None:
            raise BundleError(
                f"reference file {path} is Parquet, which needs pyarrow (pip install pyarrow); "
                "install it or convert the file to CSV"
            )
        return pd.read_parquet(path, engine="pyarrow")
    raise BundleError(
        f"reference file {path}: unknown format {suffix or '(no suffix)'!r}; use .csv or .parquet"
    )


def default_name(out: Path) -> str:
    """Return a bundle name from the output directory's name (lowercase, dashes)."""
    name = re.sub(r"[^a-z0-9-]+", "-", out.resolve().name.lower()).strip("-")
    return name or "bundle"


def _column(frame: pd.DataFrame, name: str, what: str) -> pd.Series:
    if name not in frame.columns:
        raise BundleError(
            f"{what} column {name!r} is not in the reference file; its columns are "
            f"{list(map(str, frame.columns))}"
        )
    column = frame[name]
    empty = int(column.isna().sum())
    if empty:
        raise BundleError(
            f"column {name!r} has {empty} empty value(s); the reference sample must be complete "
            "(drop or fill those rows first)"
        )
    return column


def _text(column: pd.Series) -> pd.Series:
    # Integers read as categories print without a trailing '.0' (pandas reads ints as
    # int64 when a column has no gaps, and _column refuses gaps).
    return column.astype(str)


def infer_feature(name: str, column: pd.Series, categorical: bool) -> FeatureSpec:
    """Return the schema of one feature column: numeric with its range, or its categories."""
    if categorical or not pd.api.types.is_numeric_dtype(column) or column.dtype == bool:
        categories = sorted(set(_text(column)))
        if len(categories) > MAX_CATEGORIES:
            raise BundleError(
                f"column {name!r} has {len(categories)} distinct values, more than "
                f"{MAX_CATEGORIES} categories; drop it (an id?) or bucket it first"
            )
        return FeatureSpec(name=name, type="categorical", categories=categories)
    values = column.astype("float64")
    if not values.map(lambda v: abs(v) != float("inf")).all():
        raise BundleError(f"column {name!r} holds infinite values; numbers must be finite")
    return FeatureSpec(name=name, type="numeric", min=float(values.min()), max=float(values.max()))


def create_model_free(
    reference: Path,
    out: Path,
    *,
    name: str | None = None,
    categorical: list[str] | tuple[str, ...] = (),
    prediction: str | None = None,
    prediction_type: Task | None = None,
    label: str | None = None,
    metrics: dict[str, float] | None = None,
    description: str = "",
) -> CreatedBundle:
    """Write a model-free bundle for the model whose reference sample is ``reference``.

    ``prediction``/``prediction_type``: the column holding the model's predictions and
    whether they are numbers (regression) or class labels (classification); ``label``:
    the column holding true labels, which needs a prediction (the concept stream
    compares the two). ``out`` must not exist or be empty.
    """
    if (prediction is None) != (prediction_type is None):
        raise BundleError("--prediction and --prediction-type go together")
    if label is not None and prediction is None:
        raise BundleError(
            "--label needs --prediction: labels are only compared with predictions (the "
            "concept-drift stream); without a prediction there is nothing to compare"
        )
    if label is not None and label == prediction:
        raise BundleError(f"--label and --prediction name the same column {label!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"output directory {out} exists and is not empty")
    frame = read_reference(reference)
    if frame.empty:
        raise BundleError(f"reference file {reference} has no rows")
    frame.columns = [str(c) for c in frame.columns]
    special = [c for c in (prediction, label) if c is not None]
    unknown = sorted(set(categorical) - set(frame.columns))
    if unknown:
        raise BundleError(
            f"--categorical names columns not in the reference file: {unknown}; its columns "
            f"are {list(frame.columns)}"
        )
    clash = sorted(set(categorical) & set(special))
    if clash:
        raise BundleError(f"--categorical names the prediction or label column: {clash}")
    feature_columns = [c for c in frame.columns if c not in special]
    if not feature_columns:
        raise BundleError(f"reference file {reference} has no feature columns")
    reserved = sorted({PREDICTION_COLUMN, TARGET_COLUMN} & set(feature_columns))
    if reserved:
        raise BundleError(
            f"feature columns {reserved} use names reserved for reference.csv's prediction "
            "and label columns; rename them, or name them with --prediction/--label"
        )
    features = [
        infer_feature(c, _column(frame, c, "feature"), c in categorical) for c in feature_columns
    ]
    out_frame = pd.DataFrame({f.name: frame[f.name] for f in features})
    prediction_spec = target_spec = None
    if prediction is not None:
        values = _column(frame, prediction, "prediction")
        target = _column(frame, label, "label") if label is not None else None
        if prediction_type == "regression":
            for column, what in ((values, prediction), (target, label)):
                if column is not None and not pd.api.types.is_numeric_dtype(column):
                    raise BundleError(
                        f"column {what!r} is not numeric, but --prediction-type is regression"
                    )
            prediction_spec = PredictionSpec(type="numeric", description=prediction)
            out_frame[PREDICTION_COLUMN] = values.astype("float64")
            if target is not None:
                out_frame[TARGET_COLUMN] = target.astype("float64")
        else:
            seen = set(_text(values)) | (set(_text(target)) if target is not None else set())
            classes = sorted(seen)
            prediction_spec = PredictionSpec(
                type="categorical", classes=classes, description=prediction
            )
            out_frame[PREDICTION_COLUMN] = _text(values)
            if target is not None:
                out_frame[TARGET_COLUMN] = _text(target)
        if label is not None:
            target_spec = TargetSpec(name=label)
    manifest = BundleManifest(
        kind=KIND_MODEL_FREE,
        name=name or default_name(out),
        description=description,
        task=prediction_type,
        schema_file=SCHEMA_FILE,
        features=features,
        prediction=prediction_spec,
        target=target_spec,
        reference=ReferenceSpec(file=REFERENCE_FILE, rows=len(out_frame)),
        metrics=metrics or {},
        training={"source": reference.name},
    )
    out.mkdir(parents=True, exist_ok=True)
    schema = SchemaFile(features=features).model_dump(mode="json", exclude_defaults=True)
    (out / SCHEMA_FILE).write_text(json.dumps(schema, indent=2) + "\n")
    out_frame.to_csv(out / REFERENCE_FILE, index=False)
    (out / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return CreatedBundle(out, manifest, bundle_digest(out, manifest))
