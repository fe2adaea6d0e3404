"""Reward functions chosen by name (STYLE.md 5; signatures as TRL's reward functions).

``get_reward(name)`` resolves a lazy ``"module:attr"`` import string from ``_REWARDS`` or a
third-party plugin under the entry-point group ``maskgrpo.rewards`` (built-in names win).
Every function: ``fn(prompts: list[str], completions: list[str], **columns) -> list[float|None]``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Callable

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


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _REWARDS}


def list_rewards() -> list[str]:
    """Every reward name: built-in and plugins, sorted."""
    return sorted(set(_REWARDS) | set(_plugins()))


def get_reward(name: str) -> Callable[..., list]:
    """The reward function registered as ``name``; unknown -> ValueError listing the names."""
    if name in _REWARDS:
        module, _, attr = _REWARDS[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    plugins = _plugins()
    if name in plugins:
        return plugins[name].load()
    raise ValueError(f"unknown reward {name!r}; valid rewards: {', '.join(list_rewards())}")
