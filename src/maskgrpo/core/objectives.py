"""Objectives beside MaskGRPO's clipped surrogate (core/loss.py): SPG, wd1 and ESPO.

Each returns the *sum* of its per-row terms and says what the caller divides that sum by over a
whole minibatch (``*_denominator``), so a minibatch split into micro-batches or ranks gives the
exact minibatch loss. l_v,k are the per-view masked-reconstruction log-probs of the estimator of
the same name (core/importance.py: ``spg_views``, ``wd1_views``, ``espo_views``).

1. SPG (Sandwiched Policy Gradient, arXiv 2510.09541; facebookresearch/SPG ``SPGTrainer``):
   a lower bound of log pi for positive-advantage sequences, an upper bound for the others, on
   V block-wise masks (m_v,k the view's masked answer tokens, n_v = sum_k m_v,k, t_v = n_v / len):
     ELBO_i = mean_v (1/n_v) sum_k m_v,k l_v,k
     EUBO_i = (1 / beta) mean over {k : q_k > 0} of log q_k,  q_k = mean_v m_v,k exp(beta l_v,k) / t_v
     MIX_i  = omega EUBO_i + (1 - omega) ELBO_i
     J_i    = ELBO_i if A_i > 0 else (EUBO_i | MIX_i | ELBO_i by ``bound``)
     loss   = -sum_i A_i len_i J_i / sum_i len_i       (len_i: answer tokens up to the first EOS)
   No ratio, no old log-probs (the official trainer reuses the rollout mu times without one).
   Deviations: none in the arithmetic; its masks are drawn per row from our seeds.
2. wd1 (arXiv 2507.08838; xiaohangt/wd1 ``RevDiffuGRPOTrainer``): ratio-free weighted likelihood
   over one group, with the d1 one-step log-prob l_k (completion fully masked):
     loss_group = -sum_i w+_i S_i + sum_i w-_i S_i,  S_i = sum_{k <= first EOS} l_i,k,
     w+ = softmax_group(psi A), w- = softmax_group(-psi A)
   then the mean over the minibatch's groups. No old or reference log-probs.
   Deviation: the official softmax runs over one device's micro-batch (G rows of one prompt);
   ours runs over each prompt group wherever its rows sit (the same when one group is one
   micro-batch); ``psi`` (the paper's temperature) defaults to 1 as in the code.
3. ESPO (arXiv 2512.03759; ML-GSAI/ESPO ``ESPOTrainer``): the whole sequence as one action with
   the ELBO E_i = sum_k l_i,k (estimator ``espo``, all L_o completion positions) as its
   log-likelihood:
     rho_i  = exp((E_i - E_old,i) / L_o)                   (per-token-normalised ratio)
     loss   = -mean_i min(rho_i A_i, clip(rho_i, 1 - eps, 1 + eps) A_i)
              + beta sum_i (E_i - E_ref,i)^2 / 2 / (B L_o)   (the robust k2 KL on the ELBO)
   Deviation: ESPO stratifies the mask counts across a micro-batch (one k, evenly spaced counts);
   ours draws each row's count from its own seed (batch-split invariant); one Monte Carlo sample.
"""

from __future__ import annotations

import torch

from .loss import LossStats


def spg_sequence_logprobs(
    view_logprobs: torch.Tensor,  # (V, B, N) l_v,k
    view_masks: torch.Tensor,  # (V, B, N) bool m_v,k: masked target positions of each view
    valid: torch.Tensor,  # (B, N) bool answer tokens (up to and including the first EOS)
    *, bound: str, eubo_beta: float, mix_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ELBO (B,), negative-advantage likelihood (B,)) of SPG, as in the module docstring."""
    m = (view_masks & valid.unsqueeze(0)).to(view_logprobs.dtype)  # (V, B, N)
    n = m.sum(dim=2)  # (V, B)
    elbo = ((view_logprobs * m).sum(dim=2) / n.clamp(min=1e-8)).mean(dim=0)  # (B,)
    if bound == "elbo":
        return elbo, elbo
    t = n / valid.sum(dim=1).to(n.dtype).clamp(min=1.0).unsqueeze(0)  # (V, B) empirical mask rate
    q = (torch.exp(eubo_beta * view_logprobs) * m / t.clamp(min=1e-8).unsqueeze(2)).mean(dim=0)  # (B, N)
    positive = q > 0
    log_q = torch.log(torch.where(positive, q, torch.ones_like(q)))
    eubo = (log_q * positive).sum(dim=1) / positive.sum(dim=1).clamp(min=1) / eubo_beta  # (B,)
    negative = eubo if bound == "eubo" else mix_weight * eubo + (1.0 - mix_weight) * elbo
    return elbo, negative


def spg_loss_sum(
    view_logprobs: torch.Tensor, view_masks: torch.Tensor, valid: torch.Tensor, advantages: torch.Tensor, *,
    bound: str = "mix", eubo_beta: float = 1.5, mix_weight: float = 0.5,
) -> tuple[torch.Tensor, LossStats]:
    """sum_i -A_i len_i J_i (divide by ``spg_denominator`` of the minibatch)."""
    elbo, negative = spg_sequence_logprobs(view_logprobs, view_masks, valid, bound=bound, eubo_beta=eubo_beta,
                                           mix_weight=mix_weight)
    adv = advantages.to(elbo.dtype)
    seq = torch.where(adv > 0, elbo, negative)  # (B,)
    lengths = valid.sum(dim=1).to(elbo.dtype)  # (B,)
    total = (-adv * seq * lengths).sum()
    return total, _stats(total / lengths.sum().clamp(min=1.0), float(lengths.sum()))


def spg_denominator(valid: torch.Tensor) -> torch.Tensor:
    return valid.sum().float()


def wd1_row_weights(advantages: torch.Tensor, group_ids: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
    """w+_i - w-_i with softmaxes of +-psi A over each prompt group; (B,) -> (B,)."""
    adv = advantages.to(torch.promote_types(advantages.dtype, torch.float32))
    out = torch.empty_like(adv)
    for g in torch.unique(group_ids):
        rows = group_ids == g
        out[rows] = torch.softmax(psi * adv[rows], dim=0) - torch.softmax(-psi * adv[rows], dim=0)
    return out


def wd1_loss_sum(logprobs: torch.Tensor, valid: torch.Tensor, row_weights: torch.Tensor) -> tuple[torch.Tensor, LossStats]:
    """-sum_i (w+_i - w-_i) S_i (divide by ``wd1_denominator``: the number of groups)."""
    seq = (logprobs * valid.to(logprobs.dtype)).sum(dim=1)  # (B,) S_i
    total = -(row_weights.to(seq.dtype) * seq).sum()
    return total, _stats(total, float(valid.sum()))


def wd1_denominator(group_ids: torch.Tensor) -> torch.Tensor:
    return torch.tensor(float(len(torch.unique(group_ids))))


def espo_loss_sum(
    elbo: torch.Tensor,  # (B,) E_i with grad
    old_elbo: torch.Tensor,  # (B,)
    advantages: torch.Tensor,  # (B,)
    completion_len: int, *,
    epsilon: float = 0.2, epsilon_high: float | None = None,
    ref_elbo: torch.Tensor | None = None, beta: float = 0.0,
) -> tuple[torch.Tensor, LossStats]:
    """sum_i [-min(rho A, clip(rho) A) + beta (E - E_ref)^2 / (2 L_o)] (divide by the rows)."""
    eps_high = epsilon if epsilon_high is None else epsilon_high
    adv = advantages.to(elbo.dtype)
    ratio = torch.exp((elbo - old_elbo.detach()) / completion_len)  # (B,)
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + eps_high)
    per_row = -torch.min(ratio * adv, clipped * adv)
    kl = torch.zeros_like(per_row)
    if ref_elbo is not None and beta != 0.0:
        kl = (elbo - ref_elbo.detach()) ** 2 / 2.0 / completion_len
        per_row = per_row + beta * kl
    total = per_row.sum()
    with torch.no_grad():
        rows = max(len(elbo), 1)
        in_region = ((ratio < 1.0 - epsilon) & (adv < 0)) | ((ratio > 1.0 + eps_high) & (adv > 0))
        stats = LossStats(
            loss=float(total.detach()) / rows, clip_fraction=float(in_region.float().mean()), kl=float(kl.mean()),
            ratio_deviation=float((ratio - 1.0).abs().mean()), num_tokens=float(rows),
            clip_ratio=float((ratio * adv < clipped * adv).float().mean()),
        )
    return total, stats


def espo_denominator(rows: int) -> torch.Tensor:
    return torch.tensor(float(rows))


def _stats(loss: torch.Tensor, num_tokens: float) -> LossStats:
    return LossStats(loss=float(loss.detach()), clip_fraction=0.0, kl=0.0, ratio_deviation=0.0, num_tokens=num_tokens)
