"""The examples in docstrings (``>>>``) run as doctests: an example that no longer holds fails here."""
import doctest
import importlib

import pytest

from tests.test_imports import _modules

WITH_EXAMPLES = sorted(name for name, path in _modules().items() if ">>>" in path.read_text())


def test_some_docstrings_have_examples():
    assert WITH_EXAMPLES  # else the test below runs nothing


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_hold(name):
    module = importlib.import_module(f"edgetune.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name}: no example found by doctest"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples fail (see the output above)"
