"""Weighted sum of reward functions (docs/algorithm.md §4: r_i = Σ_f w_f R_f(i)).

A None or NaN from a function is skipped in the sum (as TRL's ``nansum`` does); a row where every
function is skipped totals 0.0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["combine", "weighted_sum", "RewardFn"]

RewardFn = Callable[..., list]


def combine(values: Sequence[Sequence[float | None]], weights: Sequence[float]) -> list[float]:
    """Row totals of per-function reward lists.

    >>> combine([[1.0, None, 0.0], [0.5, 0.5, float("nan")]], [2.0, 1.0])
    [2.5, 0.5, 0.0]

    Row 0: 2*1.0 + 1*0.5; row 1: the None is skipped, 1*0.5; row 2: 2*0.0, the NaN is skipped.
    """
    if len(values) != len(weights):
        raise ValueError(f"{len(values)} reward lists but {len(weights)} weights")
    if not values:
        return []
    n = len(values[0])
    for k, col in enumerate(values):
        if len(col) != n:
            raise ValueError(f"reward function #{k} returned {len(col)} values, expected {n}")
    totals = [0.0] * n
    for col, w in zip(values, weights):
        for i, v in enumerate(col):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            totals[i] += float(w) * float(v)
    return totals


def weighted_sum(fns: Sequence[RewardFn | str], weights: Sequence[float] | None = None) -> RewardFn:
    """A reward function returning Σ_f w_f R_f(i); ``fns`` are callables or registry names.

    >>> total = weighted_sum(["sort_exact", "sort_dense"], [1.0, 0.5])
    >>> total(["sort:21="] * 2, ["12", "21"], answer=["12", "12"])
    [1.5, 0.0]
    """
    from maskgrpo.rewards import get_reward  # registry lives in the package __init__

    resolved = [get_reward(f) if isinstance(f, str) else f for f in fns]
    if not resolved:
        raise ValueError("weighted_sum needs at least one reward function")
    ws = [1.0] * len(resolved) if weights is None else [float(w) for w in weights]
    if len(ws) != len(resolved):
        raise ValueError(f"weighted_sum: {len(resolved)} functions but {len(ws)} weights")

    def total(prompts: list[str], completions: list[Any], **columns: Any) -> list[float]:
        return combine([fn(prompts, completions, **columns) for fn in resolved], ws)

    total.__name__ = "weighted_sum(" + ", ".join(getattr(f, "__name__", repr(f)) for f in resolved) + ")"
    return total
