"""Test tiers follow the folder: tests/unit, tests/cluster, tests/e2e, tests/pods,
tests/images."""

from __future__ import annotations

from pathlib import Path

import pytest

_TIERS = ("unit", "cluster", "e2e", "pods", "images")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        parts = Path(str(item.fspath)).relative_to(root).parts
        if parts and parts[0] in _TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))
