"""The project layout keeps the standard library importable."""

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stdlib_operator_is_not_shadowed(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("operator", None)
    mod = importlib.import_module("operator")
    assert hasattr(mod, "itemgetter"), mod
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_components_live_under_one_namespace():
    for name in ("operator", "model_server", "drift_worker"):
        importlib.import_module(f"driftwarden.{name}")
