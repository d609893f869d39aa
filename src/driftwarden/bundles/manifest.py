"""The ``bundle.json`` manifest: what a bundle promises to its consumers.

The drift worker builds its detectors from the feature schema and the reference
sample, the model server builds its request models from the same schema, and the
alert rules compare live metrics with the training metrics recorded here. Keep this
file the one definition of that shape.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION: Literal[1] = 1
MANIFEST_FILE = "bundle.json"
REFERENCE_FILE = "reference.csv"
# Column names of reference.csv besides the features; a feature may not use them.
PREDICTION_COLUMN = "prediction"
TARGET_COLUMN = "target"

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


class BundleManifest(_Strict):
    """The parsed ``bundle.json``."""

    format_version: Literal[1] = FORMAT_VERSION
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    task: Task
    features: list[FeatureSpec] = Field(min_length=1)
    target: TargetSpec
    prediction: PredictionSpec
    embedding: EmbeddingSpec | None = None
    model: ModelSpec
    reference: ReferenceSpec
    # Held-out metrics, e.g. {"mse": ..., "rmse": ..., "r2": ...} or {"accuracy": ...}.
    metrics: dict[str, float]
    training: dict[str, str | int | float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate feature names: {duplicates}")
        reserved = {PREDICTION_COLUMN, TARGET_COLUMN} & set(names)
        if reserved:
            raise ValueError(f"feature names {sorted(reserved)} are reserved for reference.csv")
        if self.task == "classification":
            if self.prediction.type != "categorical" or not self.prediction.classes:
                raise ValueError("classification bundles predict categorical labels with 'classes'")
        elif self.prediction.type != "numeric" or self.prediction.classes is not None:
            raise ValueError("regression bundles predict numeric values without 'classes'")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(f"bundle {self.name!r} has no feature {name!r}")
