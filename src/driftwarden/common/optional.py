"""Optional heavy dependencies, imported only where a feature needs them.

torch backs the MMD and NM-DDM detectors and the digits (CNN) bundle. The default
model-server and drift-worker images leave it out (about 1 GB even as the CPU build);
their ``-torch`` flavours carry it (docs/images.md).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["TORCH_FLAVOUR_HINT", "import_torch"]

TORCH_FLAVOUR_HINT = (
    "use the -torch image flavour (driftwarden/model-server:<tag>-torch, "
    "driftwarden/drift-worker:<tag>-torch; `make images IMAGES_ARGS=--torch`) "
    "or install it: pip install 'driftwarden[torch]'"
)


def import_torch(feature: str) -> ModuleType:
    """Return the torch module, or raise ImportError naming ``feature`` and the -torch flavour."""
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise ImportError(
            f"torch is not installed, and {feature} needs it: {TORCH_FLAVOUR_HINT}"
        ) from exc
