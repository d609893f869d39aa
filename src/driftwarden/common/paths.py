"""Where the source checkout is, for tools that work on its files (generate, tests, bench)."""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["source_root"]


@functools.cache
def source_root() -> Path | None:
    """Return the repository root of an editable (``src/``) install, or None when installed.

    The root is the nearest parent of this package holding a ``pyproject.toml`` that
    names the ``driftwarden`` project, so moving a module never changes the answer.
    """
    for parent in Path(__file__).resolve().parents:
        pyproject = parent / "pyproject.toml"
        if pyproject.is_file() and 'name = "driftwarden"' in pyproject.read_text():
            return parent
    return None
