"""Loading a bundle: ``load_bundle(uri) -> Bundle``.

A bundle is one directory: ``bundle.json`` (see :mod:`driftwarden.bundles.manifest`),
the model file, and ``reference.csv`` (the features of a held-out sample, the model's
``prediction`` for each row and the true ``target``). A model-free bundle (``kind:
model-free``, for a model served elsewhere) has no model file; its features are in
``schema.json`` and its reference sample has ``prediction`` and ``target`` only if the
manifest declares them. Loading it loads no model: :meth:`Bundle.predict` refuses.

URIs:
- ``builtin://<name>``: ``$DRIFTWARDEN_BUNDLES_DIR/<name>`` (default
  ``~/.cache/driftwarden/bundles/<name>``), trained there on first use;
- ``file:///abs/path``: an existing directory inside the bundles directory (symbolic
  links followed; anything resolving outside it is refused);
- a plain path: an existing directory (for the command line; a DriftMonitor cannot
  name one).

Every file a manifest names must lie inside its bundle, and a bundle pinned by digest
(``load_bundle(uri, digest=...)``, ``spec.model.digest``) loads only if its digest
matches (:mod:`driftwarden.bundles.integrity`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from functools import cached_property
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
from pydantic import ValidationError

from driftwarden.bundles.errors import BundleError, BundleIntegrityError
from driftwarden.bundles.integrity import (
    bundle_digest,
    check_digest_format,
    confined,
    verify_digest,
)
from driftwarden.bundles.manifest import (
    KIND_MODEL_FREE,
    MANIFEST_FILE,
    PREDICTION_COLUMN,
    TARGET_COLUMN,
    BundleManifest,
    SchemaFile,
)
from driftwarden.bundles.models import Model, load_model
from driftwarden.common.optional import import_torch

__all__ = [
    "BUNDLES_DIR_ENV",
    "Bundle",
    "BundleError",
    "BundleIntegrityError",
    "bundles_dir",
    "load_bundle",
    "load_bundle_dir",
    "resolve_uri",
]

BUNDLES_DIR_ENV = "DRIFTWARDEN_BUNDLES_DIR"
log = logging.getLogger(__name__)


def bundles_dir() -> Path:
    """Return the directory that holds built-in bundles (``$DRIFTWARDEN_BUNDLES_DIR``)."""
    configured = os.environ.get(BUNDLES_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "driftwarden" / "bundles"


class Bundle:
    """A loaded bundle: the manifest, the model (None if model-free), the reference sample."""

    def __init__(
        self,
        path: Path,
        manifest: BundleManifest,
        model: Model | None,
        digest: str | None = None,
    ) -> None:
        """``digest``: the bundle's ``sha256:`` digest, computed when it was loaded."""
        self.path = path
        self.manifest = manifest
        self.model = model
        self.digest = digest

    def __repr__(self) -> str:
        return f"Bundle(name={self.name!r}, task={self.task!r}, path='{self.path}')"

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def task(self) -> str | None:
        """Return the prediction's task; None for a model-free bundle without a prediction."""
        return self.manifest.task

    @property
    def has_model(self) -> bool:
        """Whether the bundle has a model to call (False: model-free)."""
        return self.model is not None

    @property
    def has_prediction(self) -> bool:
        """Whether predictions are watched: always with a model, if declared without one."""
        return self.manifest.prediction is not None

    @property
    def has_labels(self) -> bool:
        """Whether the bundle has true labels (``target``), which the concept stream needs."""
        return self.manifest.target is not None

    @property
    def feature_names(self) -> list[str]:
        return self.manifest.feature_names

    @property
    def classes(self) -> list[str] | None:
        return self.manifest.prediction_classes

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.manifest.metrics)

    @property
    def has_embedding(self) -> bool:
        return self.manifest.embedding is not None

    @cached_property
    def reference(self) -> pd.DataFrame:
        """Return ``reference.csv``: the feature columns, ``prediction`` and ``target``.

        A model-free bundle's sample has ``prediction`` and ``target`` only if declared.
        """
        path = confined(self.path, self.manifest.reference.file, "reference sample")
        if not path.is_file():
            raise BundleError(
                f"bundle {self.name!r} at {self.path}: reference sample {path.name} is missing; "
                "retrain the bundle (driftwarden train) or restore the file"
            )
        text_columns = [f.name for f in self.manifest.features if f.type == "categorical"]
        if self.task == "classification":
            text_columns += [PREDICTION_COLUMN, TARGET_COLUMN]
        frame = pd.read_csv(path, dtype=dict.fromkeys(text_columns, str))
        expected = [
            *self.feature_names,
            *([PREDICTION_COLUMN] if self.has_prediction else []),
            *([TARGET_COLUMN] if self.has_labels else []),
        ]
        missing = [c for c in expected if c not in frame.columns]
        if missing:
            raise BundleError(
                f"bundle {self.name!r}: {path} lacks columns {missing}; expected {expected}"
            )
        return frame[expected]

    @property
    def reference_features(self) -> pd.DataFrame:
        """Return the reference sample's feature columns in schema order."""
        return self.reference[self.feature_names]

    def features_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Return ``frame``'s feature columns in schema order (extra columns dropped)."""
        missing = [name for name in self.feature_names if name not in frame.columns]
        if missing:
            raise KeyError(
                f"bundle {self.name!r}: input lacks feature columns {missing}; "
                f"the schema's features are {self.feature_names}"
            )
        return frame[self.feature_names]

    def _model(self) -> Model:
        if self.model is None:
            raise BundleError(
                f"bundle {self.name!r} is model-free: it has no model to call (the model is "
                "served elsewhere; send its records to /v1/records)"
            )
        return self.model

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Return one prediction per row: float64 values (regression) or class labels (str)."""
        out = self._model().predict(self.features_frame(frame))
        if self.task == "regression":
            return np.asarray(out, dtype=np.float64)
        return np.asarray(out).astype(str).astype(object)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray | None:
        """Return class probabilities (columns in ``classes`` order), or None for regression."""
        if self.task != "classification":
            return None
        return self._model().predict_proba(self.features_frame(frame))

    def embed(self, frame: pd.DataFrame) -> np.ndarray | None:
        """Return the model's embedding of each row (``(n, dim)`` float64), or None if it has none."""
        if not self.has_embedding:
            return None
        return self._model().embed(self.features_frame(frame))

    def predict_and_embed(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """Return ``(predict(frame), embed(frame))``, in one model pass where the model allows."""
        if not self.has_embedding:
            return self.predict(frame), None
        combined = getattr(self.model, "predict_and_embed", None)
        if combined is None:
            return self.predict(frame), self.embed(frame)
        labels, embedding = combined(self.features_frame(frame))
        return np.asarray(labels).astype(str).astype(object), embedding

    @cached_property
    def reference_embeddings(self) -> np.ndarray | None:
        """Return the embedding of every reference row, or None if the model has none."""
        return self.embed(self.reference_features)


def resolve_uri(uri: str) -> tuple[Path, str | None]:
    """Return the bundle directory ``uri`` names, and the built-in name if it is one."""
    parsed = urlparse(uri)
    if parsed.scheme == "builtin":
        name = (parsed.netloc + parsed.path).strip("/")
        from driftwarden.bundles.train import BUILTIN

        if name not in BUILTIN:
            raise BundleError(
                f"unknown built-in bundle {uri!r}; built-ins are "
                f"{', '.join(f'builtin://{n}' for n in sorted(BUILTIN))}"
            )
        return bundles_dir() / name, name
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise BundleError(f"bundle URI {uri!r}: file URIs must be local (file:///abs/path)")
        return _inside_bundles_dir(uri, Path(unquote(parsed.path))), None
    if parsed.scheme == "":
        return Path(uri).expanduser(), None
    raise BundleError(
        f"bundle URI {uri!r}: unsupported scheme {parsed.scheme!r}; "
        "use builtin://<name>, file:///abs/path or a directory path"
    )


def _inside_bundles_dir(uri: str, path: Path) -> Path:
    """Return ``path`` resolved if it lies inside the bundles directory, else raise."""
    root = bundles_dir().resolve()
    resolved = path.resolve()
    if not path.is_absolute() or not resolved.is_relative_to(root):
        raise BundleIntegrityError(
            f"bundle URI {uri!r} resolves to {resolved}, outside the bundles directory {root} "
            f"({BUNDLES_DIR_ENV}); file:// bundles must lie inside it ('..' and symbolic "
            "links are followed before the check)"
        )
    return resolved


_train_lock = threading.Lock()


def load_bundle(uri: str | os.PathLike[str], *, digest: str | None = None) -> Bundle:
    """Return the bundle at ``uri``, training a missing ``builtin://`` bundle first.

    ``digest`` (``sha256:<64 hex>``): refuse to load unless the bundle has this digest.
    """
    text = os.fspath(uri)
    if digest is not None:
        check_digest_format(digest)  # before any training or reading
    directory = ensure_bundle(text)
    return load_bundle_dir(directory, digest=digest, uri=text)


def ensure_bundle(uri: str) -> Path:
    """Return the directory of ``uri``, training a missing or stale built-in bundle first."""
    directory, builtin = resolve_uri(uri)
    if builtin is not None:
        from driftwarden.bundles.train import TORCH_BUILTINS, recipe_fingerprint, train_bundle

        with _train_lock:  # one training per process; across processes, see train_bundle
            cached = _cached_recipe(directory)
            if cached != recipe_fingerprint():
                if builtin in TORCH_BUILTINS:
                    try:
                        import_torch(f"built-in bundle {builtin!r} (a torch model)")
                    except ImportError as exc:
                        raise BundleError(str(exc)) from exc
                if cached is not None:
                    log.warning(
                        "built-in bundle %s at %s was trained by another version (recipe %s); "
                        "retraining",
                        builtin,
                        directory,
                        cached,
                    )
                try:
                    train_bundle(builtin, directory.parent, force=cached is not None)
                except OSError as exc:
                    raise BundleError(
                        f"cannot train built-in bundle {builtin!r} into {directory.parent}: "
                        f"{exc}. Point {BUNDLES_DIR_ENV} at a writable directory, or train "
                        "ahead of time with `driftwarden train --out DIR` using this version"
                    ) from exc
    return directory


def _cached_recipe(directory: Path) -> str | None:
    """Return the recipe fingerprint of the built-in bundle in ``directory``, or None if absent."""
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        return str(manifest.get("training", {}).get("recipe", ""))
    except (OSError, ValueError):
        return None


def read_manifest(directory: Path) -> BundleManifest:
    """Return the parsed ``bundle.json`` of ``directory``; raise :class:`BundleError`."""
    manifest_path = confined(directory, MANIFEST_FILE, "manifest")
    if not manifest_path.is_file():
        raise BundleError(
            f"{directory} is not a bundle: {MANIFEST_FILE} is missing "
            "(create one with `driftwarden train --out DIR`)"
        )
    try:
        body = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if isinstance(body, dict) and body.get("kind") == KIND_MODEL_FREE and "schema" in body:
        if "features" in body:
            raise BundleError(
                f"{manifest_path}: a model-free bundle keeps its features in its schema file "
                f"({body['schema']!r}), not in {MANIFEST_FILE}"
            )
        body["features"] = read_schema(directory, str(body["schema"])).features
    try:
        return BundleManifest.model_validate(body)
    except ValidationError as exc:
        raise BundleError(f"{manifest_path}: invalid manifest:\n{exc}") from exc


def read_schema(directory: Path, name: str) -> SchemaFile:
    """Return a model-free bundle's parsed schema file; the error names each bad field."""
    path = confined(directory, name, "feature schema")
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(
            f"bundle {directory}: feature schema {name!r} named in {MANIFEST_FILE} is missing"
        ) from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from exc
    try:
        return SchemaFile.model_validate(body)
    except ValidationError as exc:
        problems = [
            f"  {_field_path(body, error['loc'])}: {error['msg']}"
            for error in exc.errors(include_url=False)
        ]
        raise BundleError(
            f"{path}: invalid feature schema ({len(problems)} problem(s)):\n" + "\n".join(problems)
        ) from None


def _field_path(body: object, loc: tuple[int | str, ...]) -> str:
    """Return ``features[2] ('age').min`` for pydantic's ``('features', 2, 'min')``."""
    text = ""
    node = body
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                text += f" ({node['name']!r})"
        else:
            text += f".{part}" if text else part
            node = node.get(part) if isinstance(node, dict) else None
    return text or "schema"


def load_bundle_dir(
    directory: Path, *, digest: str | None = None, uri: str | None = None
) -> Bundle:
    """Return the bundle stored in ``directory``; with ``digest``, only if it has that digest."""
    manifest = read_manifest(directory)
    # Also refuses a manifest naming a file outside the bundle, before anything is read.
    actual = bundle_digest(directory, manifest)
    if digest is not None:
        verify_digest(uri or str(directory), actual, digest)
    if manifest.model is None:  # model-free: nothing to load
        return Bundle(directory, manifest, None, digest=actual)
    try:
        model = load_model(directory, manifest.model, manifest.prediction_classes)
    except FileNotFoundError as exc:
        raise BundleError(str(exc)) from exc
    return Bundle(directory, manifest, model, digest=actual)
