"""The masked-diffusion SFT objective (docs/algorithm.md, "SFT warm start"): noising and the loss.

A batch of clean sequences ``x`` (B, L) with the scored columns ``target_positions`` (N,) is
noised by one of two rules, then scored by the weighted cross-entropy

    loss = sum_{b, k} CE(logits_bk, x_bk) * masked_bk / scale_b  /  denominator

1. ``text_noise`` (LLaDA / d1): t_b ~ U(eps, 1) per row, each target masked i.i.d. with
   probability t_b; ``scale`` = t (the 1/t weight of the ELBO), ``denominator`` = B * N (every
   target, masked or not).
2. ``slot_noise`` (MaskGIT, as MMaDA trains its image slots): u_b ~ U(0, 1), rate
   max(cos(pi u / 2), m), and round(rate * N) slots (at least one) chosen uniformly; ``scale`` =
   1, ``denominator`` = the masked count (a plain mean over the masked slots, no 1/t). With
   probability ``cond_dropout`` a row's condition is replaced by ``unconditional(row)`` (the empty
   prompt), so classifier-free guidance has an unconditional model to contrast with.

The draws come from ``generator`` in a fixed order (rows, then rates, then masks, then dropout),
so a stage and a benchmark given the same generator noise identically. ``sft_loss_share`` gives
the loss of a subset of rows as its exact share of the batch loss (DeepSpeed ranks and
micro-batches sum to the single-process loss). ``vocab_slice`` (offset, size) restricts the
softmax to the image codebook.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F


class SftNoise(NamedTuple):
    inputs: torch.Tensor  # (B, L) noisy sequences
    masked: torch.Tensor  # (B, N) bool: targets replaced by the mask token
    scale: torch.Tensor  # (B, 1) float32: per-row divisor of the CE (t for text, 1 for slots)
    denominator: float  # the batch loss's divisor


def _replace(x: torch.Tensor, positions: torch.Tensor, masked: torch.Tensor, mask_id: int) -> torch.Tensor:
    noisy = x.clone()
    targets = x[:, positions]
    noisy[:, positions] = torch.where(masked, torch.full_like(targets, mask_id), targets)
    return noisy


def text_noise(x: torch.Tensor, target_positions: torch.Tensor, mask_id: int, min_t: float,
               generator: torch.Generator) -> SftNoise:
    """LLaDA's forward process over the completion (module docstring, 1)."""
    batch, n = x.shape[0], target_positions.numel()
    t = min_t + (1 - min_t) * torch.rand(batch, generator=generator).to(x.device)  # (B,)
    masked = torch.rand((batch, n), generator=generator).to(x.device) < t.unsqueeze(1)  # (B, N)
    return SftNoise(_replace(x, target_positions, masked, mask_id), masked, t.unsqueeze(1), float(batch * n))


def slot_noise(x: torch.Tensor, target_positions: torch.Tensor, mask_id: int, min_masking_rate: float,
               cond_dropout: float, unconditional: Callable[[torch.Tensor], torch.Tensor],
               generator: torch.Generator) -> SftNoise:
    """MaskGIT's cosine slot masking with condition dropout (module docstring, 2)."""
    batch, n = x.shape[0], target_positions.numel()
    u = torch.rand(batch, generator=generator)
    rate = torch.clamp(torch.cos(math.pi / 2 * u), min=min_masking_rate)  # (B,)
    count = torch.clamp(torch.round(rate * n), min=1).long()  # (B,)
    ranks = torch.rand(batch, n, generator=generator).argsort(dim=1).argsort(dim=1)  # (B, N) a random permutation
    masked = (ranks < count.unsqueeze(1)).to(x.device)  # (B, N)
    noisy = _replace(x, target_positions, masked, mask_id)
    drop = (torch.rand(batch, generator=generator) < cond_dropout).to(x.device)  # (B,)
    if drop.any():
        noisy[drop] = unconditional(noisy[drop])
    return SftNoise(noisy, masked, torch.ones(batch, 1, device=x.device), float(masked.sum()))


def sft_loss_share(logits: torch.Tensor, targets: torch.Tensor, noise: SftNoise, rows: torch.Tensor,
                   vocab_slice: tuple[int, int] | None = None) -> torch.Tensor:
    """The rows' part of the batch loss: sum over them of CE * masked / scale, over the batch's
    denominator. ``logits`` (b, N, V) and ``targets`` (b, N) are those of ``rows``."""
    logits = logits.float()
    if vocab_slice is not None:
        offset, size = vocab_slice
        logits, targets = logits[..., offset:offset + size], targets - offset
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (b, N)
    return (ce * noise.masked[rows] / noise.scale[rows]).sum() / noise.denominator
