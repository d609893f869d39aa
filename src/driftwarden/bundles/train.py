"""Training the built-in bundles, deterministically, in seconds.

Each trainer fits one model on package-shipped data with fixed seeds, measures it on
a held-out split, and returns a :class:`TrainedBundle`; :func:`train_bundle` writes
it atomically (train into a temporary sibling directory, then rename), so a reader
never sees a half-written bundle and two processes training at once both end up
with one complete copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from driftwarden.bundles import datasets as ds
from driftwarden.bundles.manifest import (
    MANIFEST_FILE,
    PREDICTION_COLUMN,
    REFERENCE_FILE,
    TARGET_COLUMN,
    BundleManifest,
    EmbeddingSpec,
    FeatureSpec,
    ModelSpec,
    PredictionSpec,
    ReferenceSpec,
    TargetSpec,
)
from driftwarden.bundles.models import SklearnModel, TorchCNNModel, build_digits_cnn

SEED = 0
REFERENCE_ROWS = 2000


@dataclass
class TrainedBundle:
    """A fitted model with everything its bundle directory needs."""

    manifest: BundleManifest
    model: SklearnModel | TorchCNNModel
    reference: pd.DataFrame  # features + prediction + target


def feature_specs(
    frame: pd.DataFrame,
    categories: dict[str, list[str]] | None = None,
    descriptions: dict[str, str] | None = None,
) -> list[FeatureSpec]:
    """Return the schema of ``frame``: categorical where ``categories`` names the column."""
    categories = categories or {}
    descriptions = descriptions or {}
    specs = []
    for name in frame.columns:
        if name in categories:
            specs.append(
                FeatureSpec(
                    name=name,
                    type="categorical",
                    categories=list(categories[name]),
                    description=descriptions.get(name, ""),
                )
            )
        else:
            column = frame[name].to_numpy(dtype=np.float64)
            specs.append(
                FeatureSpec(
                    name=name,
                    type="numeric",
                    min=float(column.min()),
                    max=float(column.max()),
                    description=descriptions.get(name, ""),
                )
            )
    return specs


def _reference(features: pd.DataFrame, prediction: np.ndarray, target: pd.Series) -> pd.DataFrame:
    frame = features.reset_index(drop=True).copy()
    frame[PREDICTION_COLUMN] = prediction
    frame[TARGET_COLUMN] = target.to_numpy()
    if len(frame) > REFERENCE_ROWS:
        frame = frame.sample(n=REFERENCE_ROWS, random_state=SEED).sort_index()
    return frame.reset_index(drop=True)


def _regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    err = pred - y
    mse = float(np.mean(err**2))
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(err))),
        "r2": float(1.0 - mse / np.var(y)),
    }


def _classification_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    accuracy = float(np.mean(np.asarray(y) == np.asarray(pred)))
    return {"accuracy": accuracy, "error_rate": 1.0 - accuracy}


def _training_info(rows: int, test_rows: int, source: str) -> dict[str, str | int | float]:
    import sklearn

    return {
        "seed": SEED,
        "train_rows": rows,
        "test_rows": test_rows,
        "data_source": source,
        "sklearn_version": sklearn.__version__,
        "python_version": platform.python_version(),
    }


def _tabular_pipeline(numeric: list[str], categories: dict[str, list[str]], estimator):
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    steps = [("numeric", StandardScaler(), numeric)]
    if categories:
        names = list(categories)
        steps.append(
            (
                "categorical",
                OneHotEncoder(categories=[categories[n] for n in names], handle_unknown="error"),
                names,
            )
        )
    return Pipeline([("prepare", ColumnTransformer(steps)), ("model", estimator)])


# --------------------------------------------------------------------------- trainers


def train_diamonds() -> TrainedBundle:
    """Diamond price (USD) regression: scaling + one-hot + a modest random forest."""
    from sklearn.ensemble import RandomForestRegressor

    X_train, X_test, y_train, y_test = ds.holdout_split("diamonds")
    X = pd.concat([X_train, X_test])
    forest = RandomForestRegressor(
        n_estimators=40,
        max_depth=14,
        min_samples_leaf=2,
        max_samples=0.5,
        n_jobs=min(2, os.cpu_count() or 1),
        random_state=SEED,
    )
    pipeline = _tabular_pipeline(ds.DIAMONDS_NUMERIC, ds.DIAMONDS_CATEGORIES, forest)
    pipeline.fit(X_train, y_train)
    # Serving predicts small batches; joblib's thread pool costs more than it saves there.
    forest.set_params(n_jobs=None)
    pred = pipeline.predict(X_test)
    manifest = BundleManifest(
        name="diamonds",
        description="Diamond price regression (plotnine's diamonds table, 53,940 stones).",
        task="regression",
        features=feature_specs(
            X,
            ds.DIAMONDS_CATEGORIES,
            {
                "carat": "weight in carats",
                "cut": "cut quality, Fair (worst) to Ideal",
                "color": "colour grade, D (best) to J",
                "clarity": "clarity grade, I1 (worst) to IF",
                "depth": "total depth percentage, 2z/(x+y)",
                "table": "width of the top relative to the widest point (%)",
                "x": "length (mm)",
                "y": "width (mm)",
                "z": "depth (mm)",
            },
        ),
        target=TargetSpec(name="price", description="price in US dollars"),
        prediction=PredictionSpec(type="numeric", description="predicted price in US dollars"),
        model=ModelSpec(format="sklearn-joblib", file="model.joblib"),
        reference=ReferenceSpec(
            rows=min(len(X_test), REFERENCE_ROWS), description="random sample of the 20% test split"
        ),
        metrics=_regression_metrics(y_test.to_numpy(), pred),
        training=_training_info(len(X_train), len(X_test), "plotnine/data/diamonds.csv"),
    )
    return TrainedBundle(manifest, SklearnModel(pipeline), _reference(X_test, pred, y_test))


def train_diabetes() -> TrainedBundle:
    """Diabetes progression linear regression on scikit-learn's 442 patients."""
    from sklearn.linear_model import LinearRegression

    X_train, X_test, y_train, y_test = ds.holdout_split("diabetes")
    X = pd.concat([X_train, X_test])
    pipeline = _tabular_pipeline(list(X.columns), {}, LinearRegression())
    pipeline.fit(X_train, y_train)
    pred = pipeline.predict(X_test)
    manifest = BundleManifest(
        name="diabetes",
        description="Disease progression one year after baseline (scikit-learn diabetes).",
        task="regression",
        features=feature_specs(
            X,
            descriptions={
                "age": "age in years",
                "sex": "sex, coded 1 or 2",
                "bmi": "body mass index",
                "bp": "average blood pressure",
                "s1": "total serum cholesterol",
                "s2": "low-density lipoproteins",
                "s3": "high-density lipoproteins",
                "s4": "total cholesterol / HDL",
                "s5": "log of serum triglycerides",
                "s6": "blood sugar level",
            },
        ),
        target=TargetSpec(name="progression", description="disease progression after one year"),
        prediction=PredictionSpec(type="numeric", description="predicted progression"),
        model=ModelSpec(format="sklearn-joblib", file="model.joblib"),
        reference=ReferenceSpec(rows=len(X_test), description="the 40% test split"),
        metrics=_regression_metrics(y_test.to_numpy(), pred),
        training=_training_info(len(X_train), len(X_test), "sklearn.datasets.load_diabetes"),
    )
    return TrainedBundle(manifest, SklearnModel(pipeline), _reference(X_test, pred, y_test))


def train_iris() -> TrainedBundle:
    """Iris species logistic regression."""
    from sklearn.linear_model import LogisticRegression

    X_train, X_test, y_train, y_test = ds.holdout_split("iris")
    X = pd.concat([X_train, X_test])
    pipeline = _tabular_pipeline(list(X.columns), {}, LogisticRegression(max_iter=1000))
    pipeline.fit(X_train, y_train)
    pred = pipeline.predict(X_test).astype(str)
    classes = [str(c) for c in pipeline.classes_]
    manifest = BundleManifest(
        name="iris",
        description="Iris species from sepal and petal measurements (cm).",
        task="classification",
        features=feature_specs(X),
        target=TargetSpec(name="species"),
        prediction=PredictionSpec(type="categorical", classes=classes, description="species"),
        model=ModelSpec(format="sklearn-joblib", file="model.joblib"),
        reference=ReferenceSpec(rows=len(X_test), description="the stratified 50% test split"),
        metrics=_classification_metrics(y_test.to_numpy(), pred),
        training=_training_info(len(X_train), len(X_test), "sklearn.datasets.load_iris"),
    )
    return TrainedBundle(
        manifest, SklearnModel(pipeline, classes), _reference(X_test, pred, y_test)
    )


def train_insurance() -> TrainedBundle:
    """Motor-insurance risk class (low|medium|high) on the synthetic generator."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    X_train, y_train = ds.load_insurance(n=12_000, seed=SEED)
    X_test, y_test = ds.load_insurance(n=5_000, seed=SEED + 1)
    booster = HistGradientBoostingClassifier(
        max_iter=50, learning_rate=0.15, max_leaf_nodes=15, random_state=SEED
    )
    pipeline = _tabular_pipeline(ds.INSURANCE_NUMERIC, ds.INSURANCE_CATEGORIES, booster)
    pipeline.fit(X_train, y_train)
    pred = pipeline.predict(X_test).astype(str)
    manifest = BundleManifest(
        name="insurance",
        description="Motor-insurance risk class on a synthetic, shiftable population.",
        task="classification",
        features=feature_specs(
            X_train,
            ds.INSURANCE_CATEGORIES,
            {
                "driver_age": "age of the main driver (years)",
                "annual_miles": "declared annual mileage",
                "vehicle_power_kw": "engine power (kW)",
                "vehicle_age": "vehicle age (years)",
                "prior_claims": "claims in the last five years",
                "emergency_braking": "automatic emergency braking fitted",
                "region": "where the vehicle is kept",
                "vehicle_type": "body type",
            },
        ),
        target=TargetSpec(name="risk", description="risk class from the generator"),
        prediction=PredictionSpec(
            type="categorical", classes=list(ds.INSURANCE_CLASSES), description="risk class"
        ),
        model=ModelSpec(format="sklearn-joblib", file="model.joblib"),
        reference=ReferenceSpec(
            rows=REFERENCE_ROWS, description="sample of 5,000 fresh draws from the reference world"
        ),
        metrics=_classification_metrics(y_test.to_numpy(), pred),
        training=_training_info(
            len(X_train), len(X_test), "driftwarden.bundles.datasets.InsuranceGenerator"
        ),
    )
    model = SklearnModel(pipeline, list(ds.INSURANCE_CLASSES))
    return TrainedBundle(manifest, model, _reference(X_test, pred, y_test))


def train_digits(epochs: int = 15) -> TrainedBundle:
    """Digit image classification with a small CNN; the embedding is its penultimate layer."""
    import torch

    X_train, X_test, y_train, y_test = ds.holdout_split("digits")
    classes = [str(d) for d in range(10)]
    params = {"channels": 16, "hidden": 64}
    torch.manual_seed(SEED)
    # One thread: the batches are tiny, so threads only add contention, and a fixed
    # thread count keeps the float summation order (and so the weights) reproducible.
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    module = build_digits_cnn(**params, classes=len(classes))
    images = torch.from_numpy(
        (X_train.to_numpy(np.float32) / ds.DIGITS_MAX).reshape(
            -1, 1, ds.DIGITS_SIDE, ds.DIGITS_SIDE
        )
    )
    labels = torch.from_numpy(y_train.astype(np.int64).to_numpy().copy())
    optimiser = torch.optim.Adam(module.parameters(), lr=3e-3)
    order_rng = torch.Generator().manual_seed(SEED)
    module.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=order_rng)
        for start in range(0, len(images), 64):
            batch = order[start : start + 64]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(module(images[batch]), labels[batch])
            loss.backward()
            optimiser.step()
    torch.set_num_threads(previous_threads)
    model = TorchCNNModel(module, classes, params)
    pred = model.predict(X_test).astype(str)
    manifest = BundleManifest(
        name="digits",
        description="Handwritten digit (8x8 pixels, intensity 0..16) classification, small CNN.",
        task="classification",
        features=[
            FeatureSpec(name=name, type="numeric", min=0.0, max=ds.DIGITS_MAX)
            for name in ds.DIGITS_FEATURES
        ],
        target=TargetSpec(name="digit"),
        prediction=PredictionSpec(type="categorical", classes=classes, description="digit"),
        embedding=EmbeddingSpec(
            group="penultimate",
            dim=params["hidden"],
            description="ReLU activations before the head",
        ),
        model=ModelSpec(format="torch-cnn", file="model.pt", params=params),
        reference=ReferenceSpec(rows=len(X_test), description="the stratified 30% test split"),
        metrics=_classification_metrics(y_test.to_numpy(), pred),
        training={
            **_training_info(len(X_train), len(X_test), "sklearn.datasets.load_digits"),
            "torch_version": torch.__version__,
            "epochs": epochs,
        },
    )
    return TrainedBundle(manifest, model, _reference(X_test, pred, y_test))


BUILTIN: dict[str, Callable[[], TrainedBundle]] = {
    "diamonds": train_diamonds,
    "diabetes": train_diabetes,
    "iris": train_iris,
    "digits": train_digits,
    "insurance": train_insurance,
}


# Built-ins whose model is a torch module: absent from the images' default flavour.
TORCH_BUILTINS = frozenset({"digits"})

_RECIPE_MODULES = ("train.py", "datasets.py", "models.py", "manifest.py")


def recipe_fingerprint() -> str:
    """Return a short hash of what determines a built-in bundle: this code and library versions.

    Stored in each built-in bundle's ``training.recipe``; ``load_bundle`` retrains a
    cached built-in whose recipe differs, so an upgrade never serves a stale or
    unpicklable model.
    """
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256()
    here = Path(__file__).parent
    for module in _RECIPE_MODULES:
        digest.update((here / module).read_bytes())
    for dist in ("scikit-learn", "torch", "numpy"):
        try:
            installed = version(dist)
        except PackageNotFoundError:  # torch is optional (the images' default flavour)
            installed = "absent"
        digest.update(f"{dist}=={installed}".encode())
    return digest.hexdigest()[:16]


def fit_builtin(name: str) -> TrainedBundle:
    """Return built-in bundle ``name`` freshly trained (native thread pools limited to one)."""
    from threadpoolctl import threadpool_limits

    # BLAS/OpenMP pools sized to the machine fight each other (and other processes) on
    # small problems; one thread is faster here and keeps results reproducible.
    with threadpool_limits(limits=1):
        trained = BUILTIN[name]()
    training = {**trained.manifest.training, "recipe": recipe_fingerprint()}
    trained.manifest = trained.manifest.model_copy(update={"training": training})
    return trained


def write_bundle(trained: TrainedBundle, directory: Path) -> None:
    """Write ``trained`` into ``directory`` (which must be new or empty)."""
    directory.mkdir(parents=True, exist_ok=True)
    assert trained.manifest.model is not None  # built-in bundles all have a model
    trained.model.save(directory / trained.manifest.model.file)
    trained.reference.to_csv(directory / REFERENCE_FILE, index=False)
    body = trained.manifest.to_json()
    (directory / MANIFEST_FILE).write_text(json.dumps(body, indent=2) + "\n")


def train_bundle(name: str, out_dir: Path, *, force: bool = False) -> Path:
    """Train built-in bundle ``name`` into ``out_dir/name`` and return that directory.

    An existing complete bundle is kept unless ``force``. The directory appears
    atomically, complete or not at all.
    """
    if name not in BUILTIN:
        raise KeyError(f"unknown built-in bundle {name!r}; choose from {sorted(BUILTIN)}")
    out_dir = Path(out_dir)
    target = out_dir / name
    if (target / MANIFEST_FILE).is_file() and not force:
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    try:
        write_bundle(fit_builtin(name), staging)
        if force and target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{name}-old-", dir=out_dir))
            with contextlib.suppress(FileNotFoundError):  # another process retired it first
                os.replace(target, retired / name)
            shutil.rmtree(retired, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished first; its bundle is equivalent (same seeds).
            if not (target / MANIFEST_FILE).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
