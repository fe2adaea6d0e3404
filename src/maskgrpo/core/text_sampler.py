"""Semi-autoregressive low-confidence remasking sampler for text (LLaDA; docs/algorithm.md §2.1).

The completion of length L_o is decoded in K = L_o / b blocks, left to right, s = S / K steps per
block. At each step the model proposes a token at every masked position of the current block
(a Gumbel-max sample at temperature tau, noise in float64), scores it by its probability at
temperature 1, and commits the n_i most confident; committed tokens never change.

Options beyond the reference (all off by default, so the default is LLaDA's sampler):
1. ``remasking="random"``: commit random masked positions instead of the most confident.
2. ``threshold``: confidence-threshold parallel decoding; each step commits every masked position
   of the block whose confidence is >= threshold, and at least the most confident one. Fewer
   forwards; the number of steps per block varies.
3. ``early_exit``: once a row's finished block is all EOS, the rest of its completion is EOS
   (the answer has ended) and the row takes part in no further forwards.
4. ``head_only`` (default True): the LM head runs only at the current block's positions; this is
   the same computation as full logits followed by slicing, for less work.

Rows that have nothing left to decode are dropped from the forward batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .sampling import LogitsFn, classifier_free_guidance, gather_positions, sample_tokens, step_quotas, top_n_mask


class TextSample(NamedTuple):
    tokens: torch.Tensor  # (B, L_o) the completions
    row_forwards: torch.Tensor  # (B,) model evaluations each row took part in (CFG counts 2)


def _validate(gen_length: int, steps: int, block_length: int) -> int:
    if gen_length % block_length:
        raise ValueError(f"block_length {block_length} must divide gen_length {gen_length}")
    num_blocks = gen_length // block_length
    if steps % num_blocks:
        raise ValueError(f"steps {steps} must be divisible by the number of blocks {num_blocks}")
    return num_blocks


@torch.no_grad()
def sample_text(
    logits_fn: LogitsFn,
    prompt_ids: torch.Tensor,  # (B, P) left-padded
    *,
    gen_length: int,
    steps: int,
    block_length: int,
    mask_id: int,
    eos_id: int,
    temperature: float = 0.0,
    cfg_scale: float = 0.0,
    prompt_valid: torch.Tensor | None = None,  # (B, P) bool; needed for CFG (pads stay unmasked)
    remasking: str = "low_confidence",
    threshold: float | None = None,
    early_exit: bool = False,
    head_only: bool = True,
    generator: torch.Generator | None = None,
) -> TextSample:
    """Sample completions for a batch of prompts; see the module docstring for the options."""
    if remasking not in ("low_confidence", "random"):
        raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")
    num_blocks = _validate(gen_length, steps, block_length)
    steps_per_block = steps // num_blocks
    batch, prompt_len = prompt_ids.shape
    device = prompt_ids.device
    x = torch.cat([prompt_ids, torch.full((batch, gen_length), mask_id, dtype=prompt_ids.dtype, device=device)], dim=1)
    if cfg_scale > 0.0 and prompt_valid is None:
        prompt_valid = torch.ones_like(prompt_ids, dtype=torch.bool)
    row_forwards = torch.zeros(batch, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)

    for block in range(num_blocks):
        lo, hi = prompt_len + block * block_length, prompt_len + (block + 1) * block_length
        positions = torch.arange(lo, hi, device=device)
        quotas = step_quotas((x[:, lo:hi] == mask_id).sum(1), steps_per_block)  # (B, s)
        max_steps = block_length if threshold is not None else steps_per_block
        for step in range(max_steps):
            masked = x[:, lo:hi] == mask_id  # (B, b)
            rows = (masked.any(1) & ~finished).nonzero().squeeze(1)  # (R,)
            if rows.numel() == 0:
                break
            xs = x[rows]  # (R, L)
            pos = positions.expand(len(rows), -1)  # (R, b)
            if cfg_scale > 0.0:
                uncond = xs.clone()
                uncond[:, :prompt_len][prompt_valid[rows]] = mask_id
                both = gather_positions(logits_fn, torch.cat([xs, uncond]), torch.cat([pos, pos]), head_only).float()
                logits = classifier_free_guidance(both[: len(rows)], both[len(rows):], cfg_scale)  # (R, b, V)
                row_forwards[rows] += 2
            else:
                logits = gather_positions(logits_fn, xs, pos, head_only).float()  # (R, b, V)
                row_forwards[rows] += 1
            # Never propose the mask token itself: committing it would leave the slot masked.
            logits = logits.index_fill(-1, torch.tensor([mask_id], device=device), -torch.inf)
            proposal = sample_tokens(logits, temperature, generator)  # (R, b)
            if remasking == "low_confidence":
                confidence = torch.softmax(logits, dim=-1).gather(-1, proposal.unsqueeze(-1)).squeeze(-1)  # (R, b)
            else:
                confidence = torch.rand(proposal.shape, generator=generator, device=generator.device if generator else "cpu").to(device)
            row_masked = masked[rows]  # (R, b)
            confidence = torch.where(row_masked, confidence, torch.full_like(confidence, -torch.inf))
            if threshold is not None:
                commit = row_masked & (confidence >= threshold)
                commit |= top_n_mask(confidence, torch.ones(len(rows), dtype=torch.long, device=device))
            else:
                commit = top_n_mask(confidence, quotas[rows, step]) & row_masked
            x[rows, lo:hi] = torch.where(commit, proposal.to(x.dtype), xs[:, lo:hi])
        if early_exit:
            ended = (x[:, lo:hi] == eos_id).all(1) & ~finished  # (B,)
            if ended.any():
                tail = x[ended, hi:]
                x[ended, hi:] = torch.where(tail == mask_id, torch.full_like(tail, eos_id), tail)
                finished |= ended
    return TextSample(tokens=x[:, prompt_len:], row_forwards=row_forwards)
