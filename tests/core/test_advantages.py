"""Group-relative advantages on literal rewards, with the arithmetic in the comments."""

from __future__ import annotations

import math

import pytest
import torch

from maskgrpo.core.advantages import group_advantages, rank_rewards


def test_two_groups_of_two():
    # rewards [1, 0 | 0, 1], G = 2: each group has mean 0.5 and unbiased std
    # sqrt(((0.5)^2 + (0.5)^2) / (2 - 1)) = 0.70711, so A = +-0.5 / (0.70711 + 1e-5) = +-0.70710.
    adv, stats = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2)
    a = 0.5 / (math.sqrt(0.5) + 1e-5)
    assert torch.allclose(adv, torch.tensor([a, -a, -a, a]), atol=1e-6)
    assert stats.zero_std_ratio == 0.0
    assert stats.reward_mean == 0.5
    assert stats.reward_std == pytest.approx(math.sqrt(1 / 3))  # 4 values: sum of squares 1, / 3
    assert stats.group_std_mean == pytest.approx(math.sqrt(0.5))
    assert stats.nonzero_groups.tolist() == [True, True]


def test_one_group_of_four_uses_the_unbiased_std():
    # [1, 0, 0, 0]: mean 0.25; unbiased variance (0.75^2 + 3 * 0.25^2) / 3 = 0.75 / 3 = 0.25, std 0.5
    # (the biased std would be 0.433): A = [0.75, -0.25, -0.25, -0.25] / 0.50001.
    adv, _ = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4)
    assert torch.allclose(adv, torch.tensor([0.75, -0.25, -0.25, -0.25]) / 0.50001, atol=1e-6)
    assert float(adv.sum()) == pytest.approx(0.0, abs=1e-6)  # centred within the group


def test_zero_std_groups_give_exactly_zero_and_are_counted():
    # [1, 1 | 1, 0]: group 1 is constant -> A = 0 exactly; group 2 as above; ratio 1/2.
    adv, stats = group_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0]), 2)
    assert adv[:2].tolist() == [0.0, 0.0]
    assert adv[2].item() == pytest.approx(0.70710, abs=1e-5)
    assert stats.zero_std_ratio == 0.5
    assert stats.nonzero_groups.tolist() == [False, True]
    all_equal, stats = group_advantages(torch.tensor([0.3, 0.3, 0.3, 2.0, 2.0, 2.0]), 3)
    assert all_equal.tolist() == [0.0] * 6
    assert stats.zero_std_ratio == 1.0


def test_scale_none_is_d1_mean_centring():
    # d1: A = r - mean_G: [1, 0, 0, 0] -> [0.75, -0.25, -0.25, -0.25]; [2, 4] -> [-1, 1].
    adv, _ = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 4.0, 3.0, 3.0]), 4, scale="none")
    assert adv.tolist() == [0.75, -0.25, -0.25, -0.25, -1.0, 1.0, 0.0, 0.0]


def test_rank_rewards_literal():
    # [0.3, 0.9, 0.1], G = 3: ranks (best first) 1, 0, 2 -> (G - 1 - rank) / (G - 1) = 0.5, 1, 0.
    assert rank_rewards(torch.tensor([0.3, 0.9, 0.1]), 3).tolist() == [0.5, 1.0, 0.0]
    # Ties keep their order: [1, 1, 0] -> ranks 0, 1, 2 -> 1, 0.5, 0.
    assert rank_rewards(torch.tensor([1.0, 1.0, 0.0]), 3).tolist() == [1.0, 0.5, 0.0]


def test_rank_advantages_literal():
    # Rank scores [0.5, 1, 0]: mean 0.5, deviations [0, 0.5, -0.5], unbiased variance
    # (0.25 + 0.25) / 2 = 0.25, std 0.5: A = [0, 0.5, -0.5] / 0.50001.
    adv, stats = group_advantages(torch.tensor([0.3, 0.9, 0.1]), 3, rank=True)
    assert torch.allclose(adv, torch.tensor([0.0, 0.5, -0.5]) / 0.50001, atol=1e-6)
    assert stats.reward_mean == pytest.approx(1.3 / 3)  # statistics describe the raw rewards


def test_rank_keeps_zero_std_groups_at_zero():
    # All-equal rewards carry no preference: the group still gets A = 0 and counts as zero-std,
    # even though their rank scores (ties broken by order: 1, 0.5, 0) are not constant.
    adv, stats = group_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0, 1.0]), 3, rank=True)
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    assert stats.zero_std_ratio == 0.5
    assert stats.nonzero_groups.tolist() == [False, True]
    # Group 2 [0, 2, 1] -> rank scores [0, 1, 0.5] -> A = [-0.5, 0.5, 0] / 0.50001.
    assert torch.allclose(adv[3:], torch.tensor([-0.5, 0.5, 0.0]) / 0.50001, atol=1e-6)


@pytest.mark.parametrize("args, kwargs, match", [
    ((torch.ones(4), 1), {}, "group_size must be >= 2"),
    ((torch.ones(5), 2), {}, "5 rewards do not split into groups of 2"),
    ((torch.ones(4), 2), {"scale": "minmax"}, "scale must be 'std' or 'none'"),
])
def test_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        group_advantages(*args, **kwargs)
