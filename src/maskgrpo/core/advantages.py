"""Group-relative advantages (docs/algorithm.md §4).

A_i = (r_i - mean_G) / (std_G + 1e-5) over each prompt's group of G completions, with the
unbiased std; ``scale="none"`` gives d1's A_i = r_i - mean_G. Groups whose rewards are all equal
get A = 0 exactly and are counted in ``zero_std_ratio``. ``rank=True`` first replaces rewards by
their in-group rank score (G - 1 - rank_i) / (G - 1) (best = 1), ties broken by order.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class GroupStats(NamedTuple):
    reward_mean: float
    reward_std: float  # std of all rewards in the batch
    group_std_mean: float  # mean in-group std (diversity of a group)
    zero_std_ratio: float  # fraction of groups whose rewards are all equal
    nonzero_groups: torch.Tensor  # (num_groups,) bool, for dynamic filtering


def rank_rewards(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """In-group rank score (G - 1 - rank) / (G - 1): best completion 1, worst 0; (N,) -> (N,)."""
    grouped = rewards.reshape(-1, group_size)  # (num_groups, G)
    order = grouped.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(group_size).expand_as(order))
    return ((group_size - 1 - ranks).float() / (group_size - 1)).reshape(-1)


def group_advantages(
    rewards: torch.Tensor,  # (N,) N = num_groups * G, groups contiguous
    group_size: int,
    *,
    scale: str = "std",
    rank: bool = False,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, GroupStats]:
    """Advantages (N,) and detached group statistics."""
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2, got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if scale not in ("std", "none"):
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    rewards = rewards.float()
    values = rank_rewards(rewards, group_size) if rank else rewards
    grouped = values.reshape(-1, group_size)  # (num_groups, G)
    raw = rewards.reshape(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, unbiased=True, keepdim=True)
    constant = (raw == raw[:, :1]).all(dim=1)  # (num_groups,) judged on the raw rewards, not the ranks
    centred = grouped - mean
    adv = centred / (std + eps) if scale == "std" else centred
    adv = torch.where(constant.unsqueeze(1), torch.zeros_like(adv), adv)
    stats = GroupStats(
        reward_mean=float(rewards.mean()),
        reward_std=float(rewards.std(unbiased=True)) if rewards.numel() > 1 else 0.0,
        group_std_mean=float(raw.std(dim=1, unbiased=True).mean()),
        zero_std_ratio=float(constant.float().mean()),
        nonzero_groups=~constant,
    )
    return adv.reshape(-1), stats
