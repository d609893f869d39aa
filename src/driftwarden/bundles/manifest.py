"""The ``bundle.json`` manifest: what a bundle promises to its consumers.

The drift worker builds its detectors from the feature schema and the reference
sample, the model server builds its request models from the same schema, and the
alert rules compare live metrics with the training metrics recorded here. Keep this
file the one definition of that shape.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION: Literal[1] = 1
MANIFEST_FILE = "bundle.json"
REFERENCE_FILE = "reference.csv"
# Column names of reference.csv besides the features; a feature may not use them.
PREDICTION_COLUMN = "prediction"
TARGET_COLUMN = "target"

# The discriminator of bundle.json: a bundle with a model file the model server calls, or
# a model-free bundle (the model is served elsewhere; only what to watch is stored).
BundleKind = Literal["model", "model-free"]
KIND_MODEL: BundleKind = "model"
KIND_MODEL_FREE: BundleKind = "model-free"
# A model-free bundle's editable feature schema (``{"features": [...]}``), named by
# bundle.json's ``schema`` and merged into the manifest when it is read.
SCHEMA_FILE = "schema.json"

Task = Literal["regression", "classification"]
FeatureType = Literal["numeric", "categorical"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """One input feature: its name, type and what training saw of it."""

    name: str = Field(min_length=1)
    type: FeatureType
    description: str = ""
    # Categorical: the closed set of values the model knows; anything else is rejected.
    categories: list[str] | None = None
    # Numeric: the range seen in training. Informational (dashboards, detector
    # bucketing); the server does not reject values outside it, because drift is
    # exactly what must reach the detectors.
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _type_fields(self) -> FeatureSpec:
        if self.type == "categorical":
            if not self.categories:
                raise ValueError(
                    f"feature {self.name!r}: categorical needs a non-empty 'categories'"
                )
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"feature {self.name!r}: duplicate categories")
        elif self.categories is not None:
            raise ValueError(f"feature {self.name!r}: numeric features take no 'categories'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} > max {self.max}")
        return self


class PredictionSpec(_Strict):
    """What ``Bundle.predict`` returns: numbers (regression) or class labels."""

    type: Literal["numeric", "categorical"]
    classes: list[str] | None = None
    description: str = ""


class EmbeddingSpec(_Strict):
    """An embedding the model exposes (``Bundle.embed``), monitored as one stream."""

    group: str = Field(min_length=1, pattern=r"^[a-z0-9_]+$")
    dim: int = Field(gt=0)
    description: str = ""


class ModelSpec(_Strict):
    """How the model file is stored and loaded."""

    format: Literal["sklearn-joblib", "torch-cnn"]
    file: str
    # Architecture parameters for formats that rebuild a module before loading weights.
    params: dict[str, int | float | str] = Field(default_factory=dict)


class TargetSpec(_Strict):
    name: str
    description: str = ""


class ReferenceSpec(_Strict):
    file: str = REFERENCE_FILE
    rows: int = Field(gt=0)
    description: str = ""


class SchemaFile(_Strict):
    """A model-free bundle's ``schema.json``: the features, editable by hand."""

    features: list[FeatureSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> SchemaFile:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {duplicates}")
        reserved = {PREDICTION_COLUMN, TARGET_COLUMN} & set(names)
        if reserved:
            raise ValueError(
                f"feature names {sorted(reserved)} are reserved for reference.csv's "
                "prediction and label columns"
            )
        return self


class BundleManifest(_Strict):
    """The parsed ``bundle.json``.

    ``kind`` tells the two variants apart. ``"model"`` (the default, so older manifests
    read unchanged): ``model``, ``task``, ``prediction``, ``target`` and ``metrics`` are
    required. ``"model-free"``: no ``model``; the features come from ``schema`` (merged
    in by :func:`driftwarden.bundles.bundle.read_manifest`); ``prediction`` (with
    ``task``) and ``target`` are optional, and a ``target`` needs a ``prediction``
    because labels are only compared with predictions (the concept stream).
    """

    format_version: Literal[1] = FORMAT_VERSION
    kind: BundleKind = KIND_MODEL
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    task: Task | None = None
    # Model-free bundles: the file holding the features (SCHEMA_FILE); None otherwise.
    schema_file: str | None = Field(default=None, alias="schema")
    features: list[FeatureSpec] = Field(min_length=1)
    target: TargetSpec | None = None
    prediction: PredictionSpec | None = None
    embedding: EmbeddingSpec | None = None
    model: ModelSpec | None = None
    reference: ReferenceSpec
    # Held-out metrics, e.g. {"mse": ..., "rmse": ..., "r2": ...} or {"accuracy": ...}.
    metrics: dict[str, float] = Field(default_factory=dict)
    training: dict[str, str | int | float] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {duplicates}")
        reserved = {PREDICTION_COLUMN, TARGET_COLUMN} & set(names)
        if reserved:
            raise ValueError(f"feature names {sorted(reserved)} are reserved for reference.csv")
        if self.kind == KIND_MODEL:
            missing = [
                key
                for key, value in (
                    ("model", self.model),
                    ("task", self.task),
                    ("prediction", self.prediction),
                    ("target", self.target),
                )
                if value is None
            ]
            if missing:
                raise ValueError(
                    f"a bundle of kind 'model' needs {missing}; a bundle without a model "
                    "says kind: 'model-free'"
                )
            if self.schema_file is not None:
                raise ValueError("'schema' is for model-free bundles; put features in bundle.json")
        else:
            if self.model is not None:
                raise ValueError("a model-free bundle names no 'model'")
            if self.embedding is not None:
                raise ValueError("a model-free bundle has no 'embedding' (no model computes it)")
            if (self.task is None) != (self.prediction is None):
                raise ValueError(
                    "a model-free bundle declares 'prediction' and 'task' together, or neither"
                )
            if self.target is not None and self.prediction is None:
                raise ValueError(
                    "a model-free bundle with a 'target' (labels) needs a 'prediction': "
                    "concept drift compares predictions with labels"
                )
        if self.prediction is None:
            return self
        if self.task == "classification":
            if self.prediction.type != "categorical" or not self.prediction.classes:
                raise ValueError("classification bundles predict categorical labels with 'classes'")
        elif self.prediction.type != "numeric" or self.prediction.classes is not None:
            raise ValueError("regression bundles predict numeric values without 'classes'")
        return self

    def to_json(self) -> dict[str, Any]:
        """Return the ``bundle.json`` body: a model bundle as before ``kind`` existed.

        A model-free bundle's features are left out: they live in its ``schema`` file.
        """
        body = self.model_dump(mode="json", by_alias=True)
        if self.kind == KIND_MODEL:
            del body["kind"], body["schema"]
            return body
        del body["features"]
        return {key: value for key, value in body.items() if value is not None}

    @property
    def has_model(self) -> bool:
        """Whether the bundle has a model file (kind ``"model"``)."""
        return self.model is not None

    @property
    def prediction_classes(self) -> list[str] | None:
        """Return the classes of a classification prediction, or None."""
        return None if self.prediction is None else self.prediction.classes

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(f"bundle {self.name!r} has no feature {name!r}")
