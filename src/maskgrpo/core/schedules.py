"""Noise schedules and the MaskGRPO mask-rate schedule (docs/algorithm.md §1, §3).

1. Linear schedule (text): a token is masked with probability t.
2. Cosine schedule (images, MaskGIT/MMaDA): the masked fraction at progress r in [0, 1] is
   kappa(r) = cos(pi * r / 2), so r = 0 is fully masked and r = 1 is fully revealed.
3. MaskGRPO's mask-rate schedule over the mu iterations on one rollout batch:
   r_j = min(gamma + (1 - gamma) * j / mu, 0.999) for j = 1..mu ("high truncation": the rate
   never drops below gamma).
"""

from __future__ import annotations

import math


def linear_mask_prob(t: float) -> float:
    """Probability that a token is masked at time t of the linear schedule."""
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    return t


def cosine_masked_fraction(r: float) -> float:
    """kappa(r) = cos(pi r / 2): masked fraction at progress r of the cosine schedule."""
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"r must lie in [0, 1], got {r}")
    return math.cos(math.pi * r / 2.0)


def maskgrpo_mask_rate(iteration: int, num_iterations: int, min_mask_rate: float) -> float:
    """r_j for iteration j in 1..mu (1-based, as in the paper).

    >>> [round(maskgrpo_mask_rate(j, 4, 0.6), 3) for j in range(1, 5)]
    [0.7, 0.8, 0.9, 0.999]
    """
    if not 1 <= iteration <= num_iterations:
        raise ValueError(f"iteration must lie in 1..{num_iterations}, got {iteration}")
    if not 0.0 <= min_mask_rate < 1.0:
        raise ValueError(f"min_mask_rate (gamma) must lie in [0, 1), got {min_mask_rate}")
    rate = min_mask_rate + (1.0 - min_mask_rate) * iteration / num_iterations
    return min(rate, 0.999)


def maskgrpo_mask_rates(num_iterations: int, min_mask_rate: float) -> list[float]:
    """[r_1, ..., r_mu]."""
    return [maskgrpo_mask_rate(j, num_iterations, min_mask_rate) for j in range(1, num_iterations + 1)]
