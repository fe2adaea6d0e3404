"""Every docstring example under maskgrpo.rewards (this helper's modules) runs."""

import doctest
import importlib

import pytest

MODULES = ["maskgrpo.rewards.extract", "maskgrpo.rewards.toy", "maskgrpo.rewards.combine",
           "maskgrpo.rewards.math_equiv", "maskgrpo.rewards.reasoning"]


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
