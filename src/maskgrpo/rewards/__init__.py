"""Reward functions chosen by name (docs/design.md, "Style"; signatures as TRL's reward functions).

``get_reward(name)`` resolves a lazy ``"module:attr"`` import string from ``_REWARDS`` or a
third-party plugin under the entry-point group ``maskgrpo.rewards`` (built-in names win).
Every function: ``fn(prompts: list[str], completions: list[str], **columns) -> list[float|None]``.

Parameters (``RewardFunctionSpec.params``): ``bind_reward(name, params)`` binds them as keyword
arguments into every call, so ``{name: http, params: {url: ...}}`` calls
``http_reward(prompts, completions, url=..., **columns)``. A reward declares a required parameter
as a keyword-only argument without a default; ``check_reward_params`` (run by the spec's validator,
so ``maskgrpo validate`` reports it) fails naming ``params.<field>`` when one is missing, or when a
parameter is unknown to a reward that takes no ``**`` arguments. A name that does not resolve here
(e.g. a plugin installed only in the stage image) is checked when it is called instead.

>>> check_reward_params("http", {})
Traceback (most recent call last):
ValueError: reward 'http' needs params.url (missing: url)
>>> bind_reward("sort_exact", {})(["sort:21="], ["12"], answer=["12"])
[1.0]
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from maskgrpo.core.registry import LazyRegistry
from maskgrpo.rewards.combine import combine, weighted_sum

__all__ = ["bind_reward", "check_reward_params", "combine", "get_reward", "list_rewards", "weighted_sum"]

ENTRY_POINT_GROUP = "maskgrpo.rewards"

_REWARDS: dict[str, str] = {
    "sort_exact": "maskgrpo.rewards.toy:sort_exact",
    "sort_dense": "maskgrpo.rewards.toy:sort_dense",
    "add": "maskgrpo.rewards.toy:add_reward",
    "chain": "maskgrpo.rewards.toy:chain_reward",
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
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to check against: the call decides
        return None
    kw_only = {p.name: p for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}
    missing = [k for k, p in kw_only.items() if p.default is p.empty and k not in params]
    if missing:
        return f"reward {name!r} needs params.{missing[0]} (missing: {', '.join(missing)})"
    if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        unknown = sorted(set(params) - set(kw_only))
        if unknown:
            return f"reward {name!r} has no parameter(s) {unknown}; valid: {sorted(kw_only)}"
    return None


def check_reward_params(name: str, params: dict[str, Any]) -> None:
    """ValueError naming ``params.<field>`` when ``params`` do not fit reward ``name``'s keyword
    arguments; nothing is checked when ``name`` does not resolve here (see the module docstring)."""
    try:
        fn = get_reward(name)
    except (ValueError, ImportError):
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

