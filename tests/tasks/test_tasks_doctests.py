"""Every docstring example under maskgrpo.tasks runs."""

import doctest
import importlib

import pytest

MODULES = ["maskgrpo.tasks.tokenizer", "maskgrpo.tasks.base", "maskgrpo.tasks.toy"]


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
