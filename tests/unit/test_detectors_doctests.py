"""The docstring examples of every detector module run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "driftwarden.detectors.ks",
    "driftwarden.detectors.sequential",
    "driftwarden.detectors.categorical",
    "driftwarden.detectors.concept",
    "driftwarden.detectors.multivariate",
    "driftwarden.detectors.edetectors",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
