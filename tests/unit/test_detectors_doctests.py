"""The docstring examples of every detector module run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "driftwarden.drift_worker.detectors.ks",
    "driftwarden.drift_worker.detectors.sequential",
    "driftwarden.drift_worker.detectors.categorical",
    "driftwarden.drift_worker.detectors.concept",
    "driftwarden.drift_worker.detectors.multivariate",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
