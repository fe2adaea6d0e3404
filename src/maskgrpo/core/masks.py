"""Seeded masks for the importance estimators (docs/algorithm.md §3).

Every mask is a pure function of (seed, row id, rate, shapes). Each row draws from its own
``torch.Generator`` seeded by mixing the mask seed with the row's global id (its index in the
rollout), so a row's mask is the same whatever the batch split, the device count or the order of
calls: old, reference and new log-probs see the identical mask.

Masks are boolean tensors over the whole sequence ``[prompt (P), completion (L_o)]``; True means
"replaced by the mask token". Prompts are left-padded, so the completion starts at column P.

Deviation: the reference implementations draw one mask for the whole (per-device) batch from the
global RNG; we draw per row so that results do not depend on how the batch is split.
"""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def row_seed(seed: int, row_id: int, stream: int = 0) -> int:
    """A 63-bit seed for one row of one mask (``stream`` separates independent draws)."""
    return _splitmix64(_splitmix64(_splitmix64(seed & _MASK64) ^ (row_id & _MASK64)) ^ stream) >> 1


def row_uniforms(seed: int, row_ids: torch.Tensor, length: int, stream: int = 0) -> torch.Tensor:
    """U(0, 1) draws, one independent stream per row: (B, length) float32 on the CPU."""
    out = torch.empty(len(row_ids), length)
    generator = torch.Generator()
    for i, row in enumerate(row_ids.tolist()):  # (B,)
        generator.manual_seed(row_seed(seed, row, stream))
        out[i] = torch.rand(length, generator=generator)
    return out


def _place(completion_mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Embed a (B, L_o) completion mask into a (B, P + L_o) sequence mask (prompt unmasked)."""
    batch = completion_mask.shape[0]
    prompt_part = torch.zeros(batch, prompt_len, dtype=torch.bool, device=completion_mask.device)
    return torch.cat([prompt_part, completion_mask], dim=1)  # (B, L)


def d1_mask(
    seed: int, row_ids: torch.Tensor, prompt_valid: torch.Tensor, completion_len: int, prompt_mask_prob: float = 0.15
) -> torch.Tensor:
    """diffu-GRPO (d1): prompt tokens masked with probability p, the completion fully masked.

    prompt_valid: (B, P) bool, False at left padding (padding is never masked).
    """
    batch, prompt_len = prompt_valid.shape  # (B, P)
    u = row_uniforms(seed, row_ids, prompt_len).to(prompt_valid.device)  # (B, P)
    prompt_mask = (u < prompt_mask_prob) & prompt_valid
    completion_mask = torch.ones(batch, completion_len, dtype=torch.bool, device=prompt_valid.device)
    return torch.cat([prompt_mask, completion_mask], dim=1)  # (B, L)


def bernoulli_completion_mask(
    seed: int, row_ids: torch.Tensor, prompt_len: int, completion_len: int, rate: float | torch.Tensor
) -> torch.Tensor:
    """Completion tokens masked i.i.d. with probability ``rate`` (scalar or (B,)); prompt never."""
    u = row_uniforms(seed, row_ids, completion_len)  # (B, L_o)
    rate_t = torch.as_tensor(rate, dtype=u.dtype).reshape(-1, 1)  # (B or 1, 1)
    return _place(u < rate_t, prompt_len)


def ar_like_keep_prob(rate: float, prompt_len: int, completion_len: int, span: str = "completion") -> torch.Tensor:
    """kappa_n = min(1, 2 (1 - r)(1 - u_n)): probability that completion token n stays visible.

    span="completion": u_n = n / (L_o - 1) (the paper). span="sequence": the ramp spans prompt
    and completion, u_n = (P + n) / (P + L_o - 1), as the reference code does (it masks more than
    the nominal rate). Returns (L_o,) float32.
    """
    if span not in ("completion", "sequence"):
        raise ValueError(f"ar_span must be 'completion' or 'sequence', got {span!r}")
    n = torch.arange(completion_len, dtype=torch.float32)  # (L_o,)
    if span == "completion":
        u = n / max(completion_len - 1, 1)
    else:
        u = (prompt_len + n) / max(prompt_len + completion_len - 1, 1)
    return torch.clamp(2.0 * (1.0 - rate) * (1.0 - u), max=1.0)


def ar_like_mask(
    seed: int, row_ids: torch.Tensor, prompt_len: int, completion_len: int, rate: float, span: str = "completion"
) -> torch.Tensor:
    """MaskGRPO's AR-like ("fading-out") text mask: later completion tokens are masked more.

    The last completion token is always masked; for rate >= 0.5 the expected masked fraction of
    the completion is exactly ``rate`` (span="completion").
    """
    keep = ar_like_keep_prob(rate, prompt_len, completion_len, span)  # (L_o,)
    u = row_uniforms(seed, row_ids, completion_len)  # (B, L_o)
    return _place(u >= keep, prompt_len)


def random_slot_mask(seed: int, row_ids: torch.Tensor, maskable: torch.Tensor, rate: float) -> torch.Tensor:
    """i.i.d. Bernoulli(rate) over the positions where ``maskable`` (B, L) is True (image slots).

    Text and special tokens (maskable False) are never masked.
    """
    u = row_uniforms(seed, row_ids, maskable.shape[1]).to(maskable.device)  # (B, L)
    return (u < rate) & maskable


def coupled_masks(
    seed: int, row_ids: torch.Tensor, prompt_len: int, completion_len: int, t_low: float = 0.2, t_high: float = 0.8
) -> tuple[torch.Tensor, torch.Tensor]:
    """DiffuCoder's coupled pair: t ~ U(t_low, t_high) per row, M ~ Bernoulli(t) on the completion.

    Returns (t (B,), M (B, L)); the complementary mask is ``M`` flipped on the completion.
    """
    t = t_low + (t_high - t_low) * row_uniforms(seed, row_ids, 1, stream=1)[:, 0]  # (B,)
    return t, bernoulli_completion_mask(seed, row_ids, prompt_len, completion_len, t)
