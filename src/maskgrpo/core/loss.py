"""The MaskGRPO objective: clipped surrogate plus a k3 KL penalty (docs/algorithm.md §4).

Per token, with rho = exp(l_theta - l_old):
    loss_k = -min(rho A, clip(rho, 1 - eps, 1 + eps) A) + beta * KL_k,
    KL_k = exp(l_ref - l_theta) - (l_ref - l_theta) - 1          (k3 estimator, >= 0)
Options:
1. ``normalization``: "token" averages over every weighted token of the batch given; "group"
   takes the token mean within each prompt group (``group_ids``), then the mean over the groups
   (what the official code computes: one group per micro-batch, then the mean over micro-batches;
   docs/algorithm.md §10); "sequence" averages each sequence's tokens, then the sequences (the
   paper). ``group_token_weights`` turns "group" into token weights, so a caller that splits a
   minibatch can keep it exact.
2. ``ratio_level``: "token" (default) or "sequence": one ratio per completion,
   rho_i = exp(sum_k w_k s_i (l_theta - l_old)) with s_i = ``sequence_weights`` (the 1/t of the
   row's mask, ``MaskViews.elbo_weight``: the ELBO difference), clipped per sequence; the KL term
   stays per token.
3. Clip statistics, as the peers name them: ``clip_fraction`` = weighted fraction of tokens in the
   clipped region (rho A beyond the clip on the side the min keeps it: zero gradient; DiffuCoder,
   ESPO's ``clip_ratio/region_mean``); ``clip_ratio`` = weighted mean of [rho A < clip(rho) A]
   (the official MaskGRPO/d1/TRL metric: tokens whose ratio is out of range but which the min
   does not clip, so they keep their gradient).
With mu = 1 (rho = 1) the loss is REINFORCE with a group baseline.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class LossStats(NamedTuple):
    loss: float
    clip_fraction: float  # weighted fraction of tokens whose ratio is clipped (zero gradient)
    kl: float  # weighted mean k3 KL to the reference (0 without one)
    ratio_deviation: float  # weighted mean |rho - 1|
    num_tokens: float  # total loss weight
    clip_ratio: float = 0.0  # weighted mean of [rho A < clip(rho) A] (the official metric)


def group_token_weights(weights: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """w_k / (sum of w over the row's group): a token mean within each group; summed, these
    weights count the groups that have tokens. (B, N), (B,) -> (B, N) float."""
    w = weights.float()
    _, inverse = torch.unique(group_ids, return_inverse=True)  # (B,) group index 0..G-1
    per_group = torch.zeros(int(inverse.max()) + 1, dtype=w.dtype, device=w.device).index_add_(0, inverse.to(w.device), w.sum(dim=1))
    return w / per_group[inverse.to(w.device)].clamp(min=1e-8).unsqueeze(1)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor, normalization: str) -> torch.Tensor:
    if normalization == "token":
        return (values * weights).sum() / weights.sum().clamp(min=1e-8)
    per_seq_weight = weights.sum(dim=1)  # (B,)
    per_seq = (values * weights).sum(dim=1) / per_seq_weight.clamp(min=1e-8)
    has_tokens = (per_seq_weight > 0).float()
    return (per_seq * has_tokens).sum() / has_tokens.sum().clamp(min=1.0)


def grpo_loss(
    pi_logprobs: torch.Tensor,  # (B, N) current policy, with grad
    pi_old_logprobs: torch.Tensor,  # (B, N) rollout policy, cached
    advantages: torch.Tensor,  # (B,)
    loss_weights: torch.Tensor,  # (B, N) bool or float: which tokens enter the loss (and how much)
    *,
    ref_logprobs: torch.Tensor | None = None,  # (B, N) reference policy, cached
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    normalization: str = "token",
    ratio_level: str = "token",
    group_ids: torch.Tensor | None = None,  # (B,) prompt group of each row ("group" normalisation)
    sequence_weights: torch.Tensor | None = None,  # (B,) 1/t per row (sequence-level ratio)
) -> tuple[torch.Tensor, LossStats]:
    """The scalar loss to minimise and detached stats."""
    if normalization not in ("token", "sequence", "group"):
        raise ValueError(f"normalization must be 'token', 'group' or 'sequence', got {normalization!r}")
    if ratio_level not in ("token", "sequence"):
        raise ValueError(f"ratio_level must be 'token' or 'sequence', got {ratio_level!r}")
    weights = loss_weights.to(pi_logprobs.dtype)
    eps_low, eps_high = epsilon, epsilon if epsilon_high is None else epsilon_high
    adv = advantages.to(pi_logprobs.dtype).unsqueeze(1)  # (B, 1)
    log_ratio = pi_logprobs - pi_old_logprobs.detach()  # (B, N)
    if ratio_level == "sequence":
        scale = weights if sequence_weights is None else weights * sequence_weights.to(weights).unsqueeze(1)
        log_ratio = (log_ratio * scale).sum(dim=1, keepdim=True).expand_as(log_ratio)
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)  # (B, N)
    kl = torch.zeros_like(per_token)
    if ref_logprobs is not None and beta != 0.0:
        delta = ref_logprobs.detach() - pi_logprobs
        kl = torch.exp(delta) - delta - 1.0
        per_token = per_token + beta * kl
    if normalization == "group":
        if group_ids is None:
            raise ValueError("normalization 'group' needs group_ids")
        group_weights = group_token_weights(weights, group_ids)  # each group's weights sum to 1
        loss = (per_token * group_weights).sum() / group_weights.sum().clamp(min=1e-8)
    else:
        loss = _weighted_mean(per_token, weights, normalization)
    with torch.no_grad():
        is_clipped = ((ratio < 1.0 - eps_low) & (adv < 0)) | ((ratio > 1.0 + eps_high) & (adv > 0))
        keeps_gradient_out_of_range = ratio * adv < clipped * adv
        total = weights.sum().clamp(min=1e-8)
        stats = LossStats(
            loss=float(loss),
            clip_fraction=float((is_clipped.to(weights.dtype) * weights).sum() / total),
            kl=float((kl * weights).sum() / total),
            ratio_deviation=float(((ratio - 1.0).abs() * weights).sum() / total),
            num_tokens=float(weights.sum()),
            clip_ratio=float((keeps_gradient_out_of_range.to(weights.dtype) * weights).sum() / total),
        )
    return loss, stats
