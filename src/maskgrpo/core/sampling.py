"""Primitives shared by the samplers (docs/algorithm.md §2).

``LogitsFn`` is the only thing the samplers and estimators know about a model:
``logits_fn(input_ids (B, L), positions (B, K) | None) -> logits (B, K, V)`` (or (B, L, V) when
positions is None). Computing the LM head only at ``positions`` is what makes "logits only
where needed" cheap; a model that cannot do that may compute all positions and gather.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

LogitsFn = Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def gather_positions(logits_fn: LogitsFn, input_ids: torch.Tensor, positions: torch.Tensor, head_only: bool) -> torch.Tensor:
    """Logits at ``positions`` (B, K): via the model's head-only path, or full logits then gather."""
    if head_only:
        return logits_fn(input_ids, positions)  # (B, K, V)
    full = logits_fn(input_ids, None)  # (B, L, V)
    index = positions.unsqueeze(-1).expand(-1, -1, full.shape[-1])  # (B, K, V)
    return full.gather(1, index)


def gumbel_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise in float64 (low-precision noise measurably degrades samples)."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=generator.device if generator else "cpu")
    u = u.to(device).clamp_(min=1e-300, max=1.0 - 1e-16)
    return -torch.log(-torch.log(u))


def sample_tokens(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """argmax(z + tau * g): a sample from softmax(z / tau); greedy at tau = 0.  (..., V) -> (...)."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    noise = gumbel_noise(logits.shape, generator, logits.device)
    return (logits.double() + temperature * noise).argmax(dim=-1)


def step_quotas(num_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """n_i = floor(M / s) + [i < M mod s]: tokens to commit at each step; (B,) -> (B, s)."""
    base = torch.div(num_masked, steps, rounding_mode="floor").unsqueeze(1)  # (B, 1)
    extra = (torch.arange(steps, device=num_masked.device).unsqueeze(0) < (num_masked % steps).unsqueeze(1)).long()
    return base + extra  # (B, s)


def top_n_mask(scores: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """True at the n[b] highest-scoring entries of each row; (B, K), (B,) -> (B, K) bool."""
    order = scores.argsort(dim=1, descending=True, stable=True)  # (B, K)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks < n.unsqueeze(1)


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """z = z_u + (w + 1)(z_c - z_u) = (1 + w) z_c - w z_u  (LLaDA's and MMaDA's convention)."""
    return uncond + (scale + 1.0) * (cond - uncond)
