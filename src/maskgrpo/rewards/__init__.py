"""Reward functions chosen by name (STYLE.md 5; signatures as TRL's reward functions).

``get_reward(name)`` resolves a lazy ``"module:attr"`` import string from ``_REWARDS`` or a
third-party plugin under the entry-point group ``maskgrpo.rewards`` (built-in names win).
Every function: ``fn(prompts: list[str], completions: list[str], **columns) -> list[float|None]``.

Parameters (``RewardFunctionSpec.params``): ``bind_reward(name, params)`` binds them as keyword
arguments into every call, so ``{name: http, params: {url: ...}}`` calls
``http_reward(prompts, completions, url=..., **columns)``. A reward declares its parameters as
keyword-only arguments (required ones without a default); its positional and ``**columns``
arguments receive the task's data columns, never parameters. ``check_reward_params`` (run by the
spec's validator, so ``maskgrpo validate`` reports it) fails on an unknown reward name listing the
valid ones, and names the parameter that is missing or unknown
(``maskgrpo.core.registry.parameter_error``, the same check as task parameters). A plugin must
therefore be installed where the document is validated (and compiled).

>>> check_reward_params("http", {})
Traceback (most recent call last):
ValueError: reward 'http' needs parameter 'url' (missing: url)
>>> bind_reward("sort_exact", {})(["sort:21="], ["12"], answer=["12"])
[1.0]
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from maskgrpo.core.registry import LazyRegistry, parameter_error
from maskgrpo.rewards.combine import combine, weighted_sum

__all__ = ["bind_reward", "check_reward_name", "check_reward_params", "combine", "get_reward", "list_rewards", "weighted_sum"]

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
    "http": "maskgrpo.rewards.http:http_reward",
}


_REGISTRY = LazyRegistry("reward", _REWARDS, ENTRY_POINT_GROUP)


def list_rewards() -> list[str]:
    """Every reward name: built-in and plugins, sorted."""
    return _REGISTRY.names()


def get_reward(name: str) -> Callable[..., list]:
    """The reward function registered as ``name``; unknown -> ValueError listing the names."""
    return _REGISTRY.load(name)


def _param_errors(name: str, fn: Callable[..., Any], params: dict[str, Any]) -> str | None:
    return parameter_error(f"reward {name!r}", fn, params, keyword_only=True)


def check_reward_name(name: str) -> None:
    """ValueError listing the valid names when ``name`` is no registered reward."""
    if name not in _REWARDS and name not in _REGISTRY.names():
        raise ValueError(f"unknown reward {name!r}; valid rewards: {', '.join(_REGISTRY.names())}")


def check_reward_params(name: str, params: dict[str, Any]) -> None:
    """ValueError when ``name`` is no registered reward (listing the valid names) or when
    ``params`` do not fit its keyword-only parameters (naming the parameter). A registered
    reward whose module cannot be imported here (an optional dependency missing) is checked when
    it is called instead."""
    try:
        fn = get_reward(name)
    except ImportError:
        return
    error = _param_errors(name, fn, params)
    if error:
        raise ValueError(error)


def bind_reward(name: str, params: dict[str, Any] | None = None) -> Callable[..., list]:
    """Reward ``name`` with ``params`` bound as keyword arguments; no params: the function itself."""
    fn = get_reward(name)
    error = _param_errors(name, fn, params or {})
    if error:
        raise ValueError(error)
    return functools.partial(fn, **params) if params else fn

