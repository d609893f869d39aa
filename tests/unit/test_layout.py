"""The project layout keeps the standard library importable and the libraries free of process code."""

import ast
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


# Libraries may import only these driftwarden packages (never a process package).
_LIBRARY_IMPORTS = {
    "detectors": {"common", "detectors"},
    "ingest": {"common", "ingest"},
    "common": {"common"},
    "client": {"client"},  # users install it beside their own model: no server code
}


def _driftwarden_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] == "driftwarden" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_libraries_never_import_process_packages():
    package = ROOT / "src" / "driftwarden"
    wrong = {}
    for library, allowed in _LIBRARY_IMPORTS.items():
        for path in (package / library).rglob("*.py"):
            extra = _driftwarden_imports(path) - allowed
            if extra:
                wrong[str(path.relative_to(ROOT))] = sorted(extra)
    assert not wrong, f"library modules import process packages (see docs/architecture.md): {wrong}"
