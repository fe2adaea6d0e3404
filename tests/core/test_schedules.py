"""Schedules: the linear and cosine noise schedules and MaskGRPO's mask-rate schedule r_j."""

from __future__ import annotations

import doctest
import importlib
import math
import pkgutil

import pytest

import maskgrpo.core
from maskgrpo.core.schedules import cosine_masked_fraction, linear_mask_prob, maskgrpo_mask_rate, maskgrpo_mask_rates


def test_linear_schedule_is_identity_on_unit_interval():
    assert linear_mask_prob(0.0) == 0.0
    assert linear_mask_prob(0.3) == 0.3
    assert linear_mask_prob(1.0) == 1.0
    with pytest.raises(ValueError, match="t must lie in"):
        linear_mask_prob(1.5)


def test_cosine_masked_fraction_literals():
    # kappa(r) = cos(pi r / 2): fully masked at r = 0, cos(pi/4) = 0.7071 at r = 1/2,
    # cos(pi/3) = 0.5 at r = 2/3, fully revealed (cos(pi/2) = 0) at r = 1.
    assert cosine_masked_fraction(0.0) == 1.0
    assert cosine_masked_fraction(0.5) == pytest.approx(math.sqrt(0.5))
    assert cosine_masked_fraction(2 / 3) == pytest.approx(0.5)
    assert cosine_masked_fraction(1.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="r must lie in"):
        cosine_masked_fraction(-0.1)


def test_maskgrpo_rates_text_default():
    # gamma = 0.6, mu = 4: r_j = 0.6 + 0.4 j / 4 = 0.7, 0.8, 0.9, 1.0 -> truncated to 0.999.
    assert maskgrpo_mask_rates(4, 0.6) == pytest.approx([0.7, 0.8, 0.9, 0.999])


def test_maskgrpo_rates_image_default_and_paper_mu():
    # Images: gamma = 0.8, mu = 6: r_j = 0.8 + 0.2 j / 6; r_3 = 0.9; the last one is truncated.
    rates = maskgrpo_mask_rates(6, 0.8)
    assert rates[2] == pytest.approx(0.9)
    assert rates[-1] == 0.999
    # Text reference: gamma = 0.6, mu = 12: r_1 = 0.6 + 0.4 / 12 = 0.6333; increasing; never below gamma.
    text = maskgrpo_mask_rates(12, 0.6)
    assert text[0] == pytest.approx(0.6 + 0.4 / 12)
    assert all(a < b for a, b in zip(text, text[1:]))
    assert min(text) > 0.6


def test_mu_one_is_nearly_fully_masked():
    # mu = 1: r_1 = gamma + (1 - gamma) = 1 -> 0.999 whatever gamma is.
    assert maskgrpo_mask_rate(1, 1, 0.0) == 0.999


@pytest.mark.parametrize("args, match", [
    ((0, 4, 0.6), "iteration must lie in 1..4"),
    ((5, 4, 0.6), "iteration must lie in 1..4"),
    ((1, 4, 1.0), "min_mask_rate"),
    ((1, 4, -0.1), "min_mask_rate"),
])
def test_rate_errors_name_the_argument(args, match):
    with pytest.raises(ValueError, match=match):
        maskgrpo_mask_rate(*args)


def test_core_doctests_pass():
    # Every docstring example under maskgrpo.core runs and is right (schedules has one).
    failed = attempted = 0
    for info in pkgutil.iter_modules(maskgrpo.core.__path__, "maskgrpo.core."):
        result = doctest.testmod(importlib.import_module(info.name))
        failed += result.failed
        attempted += result.attempted
    assert failed == 0
    assert attempted >= 1
