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


def ar_like_keep_prob(
    rate: float, prompt_len: int | torch.Tensor, completion_len: int, span: str = "completion"
) -> torch.Tensor:
    """kappa = min(1, 2 (1 - r)(1 - u)): probability that a completion token stays visible.

    span="completion" (the paper): u_n = n / (L_o - 1) for completion token n; returns (L_o,).
    span="sequence" (the official code, docs/algorithm.md §10): the ramp runs over the absolute
    positions p >= 1 of each row's own unpadded sequence of length L = P + L_o, where P is the
    row's unpadded prompt length: completion token n sits at p = P + n and
    keep(p) = min(1, 2 (1 - r)(1 - (p - 1) / (L - 2))). ``prompt_len`` is then an int or a (B,)
    tensor of unpadded prompt lengths; returns (L_o,) or (B, L_o). It masks more than the nominal
    rate (the prompt takes part of the ramp).
    """
    if span not in ("completion", "sequence"):
        raise ValueError(f"ar_span must be 'completion' or 'sequence', got {span!r}")
    n = torch.arange(completion_len, dtype=torch.float32)  # (L_o,)
    if span == "completion":
        u = n / max(completion_len - 1, 1)
    else:
        prompt = torch.as_tensor(prompt_len, dtype=torch.float32).reshape(-1, 1)  # (B or 1, 1)
        length = prompt + completion_len  # (B, 1) unpadded L
        u = (prompt + n - 1.0) / (length - 2.0).clamp(min=1.0)  # (B, L_o)
        if not isinstance(prompt_len, torch.Tensor) or prompt_len.dim() == 0:
            u = u[0]
    return torch.clamp(2.0 * (1.0 - rate) * (1.0 - u), max=1.0)


def ar_like_mask(
    seed: int, row_ids: torch.Tensor, prompt_len: int, completion_len: int, rate: float, span: str = "completion",
    unpadded_prompt_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """MaskGRPO's AR-like ("fading-out") text mask: later completion tokens are masked more.

    The last completion token is always masked; for rate >= 0.5 the expected masked fraction of
    the completion is exactly ``rate`` (span="completion"). span="sequence" ramps over each row's
    unpadded sequence (``unpadded_prompt_lengths`` (B,); default: ``prompt_len`` for every row).
    """
    ramp_prompt = prompt_len if unpadded_prompt_lengths is None else unpadded_prompt_lengths.cpu()
    keep = ar_like_keep_prob(rate, ramp_prompt if span == "sequence" else prompt_len, completion_len, span)
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


def _choose(u: torch.Tensor, count: int) -> torch.Tensor:
    """True at the ``count`` positions with the smallest uniforms ``u`` (L,): a uniform subset."""
    chosen = torch.zeros(u.shape[0], dtype=torch.bool)
    if count > 0:
        chosen[u.argsort()[:count]] = True
    return chosen


def block_random_masks(
    seed: int, row_ids: torch.Tensor, prompt_len: int, valid_lengths: torch.Tensor, completion_len: int,
    block_length: int, num_views: int, min_t: float = 0.0, max_t: float = 1.0,
) -> torch.Tensor:
    """SPG's block-wise masks: per view, one random block of the answer is partly masked, earlier
    blocks stay clean, later blocks (and everything after the answer's first EOS) are masked.

    valid_lengths: (B,) answer length per row (up to and including the first EOS). Per row the
    answer has K = ceil(len / b) blocks; view v takes block j_v = perm_v mod K (a random
    permutation of the L_o / b block indices, so views use distinct blocks when K >= views); in
    block j the first m = min(b, len - j b) positions are the answer's, of which c ~ U{max(floor(m
    min_t), 1) .. min(floor(m max_t), m)} are masked uniformly at random. A block longer than the completion is the whole completion.
    Returns (views, B, L) bool.
    """
    block_length = min(block_length, completion_len)
    if completion_len % block_length:
        raise ValueError(f"spg block_length ({block_length}) must divide the completion length ({completion_len})")
    num_blocks = completion_len // block_length
    out = torch.zeros(num_views, len(row_ids), prompt_len + completion_len, dtype=torch.bool)
    generator = torch.Generator()
    for i, (row, length) in enumerate(zip(row_ids.tolist(), valid_lengths.tolist())):
        length = max(int(length), 1)
        generator.manual_seed(row_seed(seed, row, stream=3))
        order = torch.randperm(num_blocks, generator=generator)
        answer_blocks = (length - 1) // block_length + 1
        for v in range(num_views):
            j = int(order[v % num_blocks]) % answer_blocks
            start = j * block_length
            m = min(block_length, length - start)
            low, high = max(int(m * min_t), 1), min(int(m * max_t), m)
            count = low + int(torch.randint(0, high - low + 1, (), generator=generator))
            completion = torch.zeros(completion_len, dtype=torch.bool)
            completion[start + block_length:] = True  # later blocks
            completion[start:start + m] = _choose(torch.rand(m, generator=generator), count)
            completion[length:] = True  # after the answer (post-EOS), also inside block j
            out[v, i, prompt_len:] = completion
    return out


def count_masks(seed: int, row_ids: torch.Tensor, prompt_len: int, completion_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ESPO's mask: per row a count x ~ U{0..L_o} and x completion positions masked uniformly at
    random; t = x / (L_o + 1). Returns (t (B,), mask (B, L))."""
    counts = (row_uniforms(seed, row_ids, 1, stream=4)[:, 0] * (completion_len + 1)).long().clamp(max=completion_len)
    u = row_uniforms(seed, row_ids, completion_len, stream=5)  # (B, L_o)
    ranks = u.argsort(dim=1).argsort(dim=1)  # rank of each position's uniform in its row
    return counts.float() / (completion_len + 1), _place(ranks < counts.unsqueeze(1), prompt_len)
