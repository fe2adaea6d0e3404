"""Reward functions chosen by name (STYLE.md 5; signatures as TRL's reward functions).

``get_reward(name)`` resolves a lazy ``"module:attr"`` import string from ``_REWARDS`` or a
third-party plugin under the entry-point group ``maskgrpo.rewards`` (built-in names win).
Every function: ``fn(prompts: list[str], completions: list[str], **columns) -> list[float|None]``.
"""

from __future__ import annotations

from typing import Callable

from maskgrpo.core.registry import LazyRegistry
from maskgrpo.rewards.combine import combine, weighted_sum

__all__ = ["combine", "get_reward", "list_rewards", "weighted_sum"]

ENTRY_POINT_GROUP = "maskgrpo.rewards"

_REWARDS: dict[str, str] = {
    "sort_exact": "maskgrpo.rewards.toy:sort_exact",
    "sort_dense": "maskgrpo.rewards.toy:sort_dense",
    "add": "maskgrpo.rewards.toy:add_reward",
    "countdown": "maskgrpo.rewards.toy:countdown_reward",
    "countdown_tagged": "maskgrpo.rewards.toy:countdown_reward_tagged",
    "sudoku": "maskgrpo.rewards.toy:sudoku_reward",
    "sudoku_tagged": "maskgrpo.rewards.toy:sudoku_reward_tagged",
    "gsm8k": "maskgrpo.rewards.reasoning:gsm8k_reward",
    "gsm8k_format": "maskgrpo.rewards.reasoning:gsm8k_format",
    "gsm8k_int": "maskgrpo.rewards.reasoning:gsm8k_int",
    "gsm8k_correct": "maskgrpo.rewards.reasoning:gsm8k_correct",
    "math": "maskgrpo.rewards.reasoning:math_reward",
    "math_format": "maskgrpo.rewards.reasoning:math_format",
    "math_correct": "maskgrpo.rewards.reasoning:math_correct",
    "code": "maskgrpo.rewards.code:code_reward",
    "geneval_strict": "maskgrpo.rewards.geneval:geneval_strict",
    "geneval_soft": "maskgrpo.rewards.geneval:geneval_soft",
    "clip_score": "maskgrpo.rewards.clip:clip_score",
}


_REGISTRY = LazyRegistry("reward", _REWARDS, ENTRY_POINT_GROUP)


def list_rewards() -> list[str]:
    """Every reward name: built-in and plugins, sorted."""
    return _REGISTRY.names()


def get_reward(name: str) -> Callable[..., list]:
    """The reward function registered as ``name``; unknown -> ValueError listing the names."""
    return _REGISTRY.load(name)
