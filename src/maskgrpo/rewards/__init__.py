"""Reward functions chosen by name (docs/design.md, "Style"; signatures as TRL's reward functions).

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
import re
from typing import Any, Callable

from maskgrpo.core.registry import LazyRegistry, parameter_error
from maskgrpo.rewards.combine import combine, weighted_sum

__all__ = ["bind_reward", "check_reward_name", "check_reward_params", "combine", "get_reward", "list_rewards",
           "secret_in_params", "weighted_sum"]

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
    return parameter_error(f"reward {name!r}", fn, params, keyword_only=True)


def check_reward_name(name: str) -> None:
    """ValueError listing the valid names when ``name`` is no registered reward."""
    if name not in _REWARDS and name not in _REGISTRY.names():
        raise ValueError(f"unknown reward {name!r}; valid rewards: {', '.join(_REGISTRY.names())}")


_SECRET_KEY = re.compile(r"token|passw|secret|api_?key|access_?key|private_?key|credential|"
                         r"^auth|authorization|cookie|session", re.IGNORECASE)
_SECRET_VALUE = re.compile(
    r"\b(AKIA|ASIA)[0-9A-Z]{16}\b|\bsk-[A-Za-z0-9_-]{20,}|\bgh[pousr]_[A-Za-z0-9]{30,}|\bxox[abprs]-|"
    r"\bhf_[A-Za-z0-9]{30,}|-----BEGIN [A-Z ]*PRIVATE KEY-----|^\s*(Bearer|Basic)\s+\S{8,}|"
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}|://[^/\s:@]+:[^/\s@]+@")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def secret_in_params(params: Any, path: str = "params") -> str | None:
    """The first ``params.<path>`` that looks like a secret (a key named like token/password/
    secret/api_key with a string value, or a value shaped like an access key, bearer token, private key, JWT or a URL
    with a password); None when there is none. Inside a ``*_env`` mapping the values are
    environment variable NAMES (the sanctioned way), so only their shape is checked."""
    if isinstance(params, dict):
        for key, value in params.items():
            where = f"{path}.{key}"
            if str(key).endswith("_env") and isinstance(value, dict):
                bad = next((f"{where}.{k}" for k, v in value.items()
                            if not (isinstance(v, str) and _ENV_NAME.match(v))), None)
                if bad:
                    return bad
                continue
            if _SECRET_KEY.search(str(key)) and isinstance(value, str) and value:
                return where
            found = secret_in_params(value, where)
            if found:
                return found
    elif isinstance(params, list):
        for i, value in enumerate(params):
            found = secret_in_params(value, f"{path}[{i}]")
            if found:
                return found
    elif isinstance(params, str) and _SECRET_VALUE.search(params):
        return path
    return None


def check_reward_params(name: str, params: dict[str, Any]) -> None:
    """ValueError when ``name`` is no registered reward (listing the valid names), when ``params``
    do not fit its keyword-only parameters (naming the parameter), or when one looks like a secret
    (`secret_in_params`: pipeline documents land in ConfigMaps and stage specs). A registered
    reward whose module cannot be imported here (an optional dependency missing) is checked when
    it is called instead."""
    secret = secret_in_params(params)
    if secret:
        raise ValueError(f"reward {name!r}: {secret} looks like a secret: never put one in a pipeline "
                         "document; keep it in an environment variable from a Kubernetes Secret and name "
                         "the variable (the http reward: params.headers_env)")
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

