"""Model adapters: one small class per stored model format.

A bundle's model is either a fitted scikit-learn estimator (stored with joblib) or
the digits CNN (a torch ``state_dict`` plus the architecture parameters recorded in
``bundle.json``). Both expose the same three calls on a feature frame whose columns
are already in schema order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from driftwarden.bundles.datasets import DIGITS_MAX, DIGITS_SIDE
from driftwarden.bundles.manifest import ModelSpec


class Model(Protocol):
    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...
    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray | None: ...
    def embed(self, frame: pd.DataFrame) -> np.ndarray | None: ...


class SklearnModel:
    """A fitted scikit-learn estimator or pipeline."""

    def __init__(self, estimator: object, classes: list[str] | None = None) -> None:
        self.estimator = estimator
        self._proba_order: np.ndarray | None = None
        if classes is not None:
            # scikit-learn orders probability columns by sorted class; the bundle
            # promises its manifest's order (e.g. low, medium, high).
            fitted = [str(c) for c in getattr(estimator, "classes_", [])]
            if sorted(fitted) != sorted(classes):
                raise ValueError(f"model classes {fitted} differ from the manifest's {classes}")
            self._proba_order = np.asarray([fitted.index(c) for c in classes])

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.estimator.predict(frame))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray | None:
        if not hasattr(self.estimator, "predict_proba"):
            return None
        proba = np.asarray(self.estimator.predict_proba(frame), dtype=np.float64)
        return proba if self._proba_order is None else proba[:, self._proba_order]

    def embed(self, frame: pd.DataFrame) -> np.ndarray | None:
        return None

    def save(self, path: Path) -> None:
        import joblib

        joblib.dump(self.estimator, path, compress=3)

    @classmethod
    def load(cls, path: Path, classes: list[str] | None = None) -> SklearnModel:
        import joblib

        # joblib is pickle: loading runs code from the file. Bundles are trusted
        # artefacts (built by `driftwarden train` or by the model's owner); see
        # docs/bundles.md.
        return cls(joblib.load(path), classes)


def build_digits_cnn(channels: int = 16, hidden: int = 64, classes: int = 10):
    """Return the digits CNN module: two 3x3 convolutions, one pooling, an embedding layer."""
    from driftwarden.common.optional import import_torch

    torch = import_torch("a torch-cnn bundle (digits)")
    nn = torch.nn

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, channels, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(channels, 2 * channels, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
            )
            flat = 2 * channels * (DIGITS_SIDE // 2) ** 2
            # The penultimate layer: its activations are the embedding monitored by MMD.
            self.embedding = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU())
            self.head = nn.Linear(hidden, classes)

        def embed(self, images: torch.Tensor) -> torch.Tensor:
            return self.embedding(self.features(images))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.head(self.embed(images))

    return DigitsCNN()


class TorchCNNModel:
    """The digits CNN: 64 pixel columns in, digit labels, probabilities and embeddings out."""

    def __init__(self, module, classes: list[str], params: dict) -> None:
        self.module = module.eval()
        self.classes = np.asarray(classes, dtype=object)
        self.params = dict(params)

    def _tensor(self, frame: pd.DataFrame):
        import torch

        pixels = frame.to_numpy(dtype=np.float32) / DIGITS_MAX
        return torch.from_numpy(np.ascontiguousarray(pixels)).reshape(
            -1, 1, DIGITS_SIDE, DIGITS_SIDE
        )

    def _logits(self, frame: pd.DataFrame) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(self._tensor(frame)).numpy()

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.classes[self._logits(frame).argmax(axis=1)]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        logits = self._logits(frame).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        expd = np.exp(logits)
        return expd / expd.sum(axis=1, keepdims=True)

    def embed(self, frame: pd.DataFrame) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module.embed(self._tensor(frame)).numpy().astype(np.float64)

    def predict_and_embed(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Return labels and embeddings from one forward pass (what a server needs)."""
        import torch

        with torch.inference_mode():
            embedding = self.module.embed(self._tensor(frame))
            logits = self.module.head(embedding).numpy()
        return self.classes[logits.argmax(axis=1)], embedding.numpy().astype(np.float64)

    def save(self, path: Path) -> None:
        import torch

        torch.save(self.module.state_dict(), path)

    @classmethod
    def load(cls, path: Path, classes: list[str], params: dict) -> TorchCNNModel:
        from driftwarden.common.optional import import_torch

        torch = import_torch("a torch-cnn bundle (digits)")

        module = build_digits_cnn(
            channels=int(params.get("channels", 16)),
            hidden=int(params.get("hidden", 64)),
            classes=len(classes),
        )
        # weights_only: a state_dict is tensors only, so nothing in the file can run code.
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return cls(module, classes, params)


def load_model(directory: Path, spec: ModelSpec, classes: list[str] | None) -> Model:
    """Return the adapter for the model file that ``spec`` describes."""
    path = directory / spec.file
    if not path.is_file():
        raise FileNotFoundError(
            f"bundle {directory}: model file {spec.file!r} named in bundle.json is missing; "
            "retrain the bundle (driftwarden train) or restore the file"
        )
    if spec.format == "sklearn-joblib":
        return SklearnModel.load(path, classes)
    if spec.format == "torch-cnn":
        if not classes:
            raise ValueError(f"bundle {directory}: a torch-cnn model needs prediction.classes")
        return TorchCNNModel.load(path, classes, spec.params)
    raise ValueError(f"bundle {directory}: unknown model format {spec.format!r}")
