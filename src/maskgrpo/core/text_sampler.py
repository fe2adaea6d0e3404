"""Semi-autoregressive low-confidence remasking sampler for text (LLaDA; docs/algorithm.md §2.1).

The completion of length L_o is decoded in K = L_o / b blocks, left to right, s = S / K steps per
block. At each step the model proposes a token at every masked position of the current block
(a Gumbel-max sample at temperature tau, noise in float64), scores it by its probability at
temperature 1, and commits the n_i most confident; committed tokens never change.

Options beyond the reference (all off by default, so the default is LLaDA's sampler):
1. ``remasking="random"``: commit random masked positions instead of the most confident.
2. ``threshold``: confidence-threshold parallel decoding; each step commits every masked position
   of the block whose confidence is >= threshold, or the step's quota n_i of the most confident
   ones if that is more (max(quota, positions above the threshold)). So a block never takes more
   than its s steps: the forward count never exceeds the plain sampler's (exactly ``steps``, and
   the plain sampler's tokens, when nothing passes), and is lower when the model is confident.
   Deviation from Fast-dLLM, whose floor is one token per step (up to ``gen_length`` forwards).
3. ``early_exit``: once a row's finished block is all EOS, the rest of its completion is EOS
   (the answer has ended) and the row takes part in no further forwards.
4. ``head_only`` (default True): the LM head runs only at the current block's still-masked
   positions (the most any row of the batch has); the logits are scattered back into the block,
   so sampling draws the same noise and the tokens are those of full logits followed by slicing,
   for less work.
5. ``cache`` (Fast-dLLM's block KV cache, core/kv_cache.py; needs ``cached_logits_fn``):
   ``"prefix"``: the first step of each block is a full forward that also returns every layer's
   keys/values; the block's other steps run only the block and the positions after it, over the
   cached keys/values of the prompt and the completed blocks. ``"dual"``: those steps run only
   the block, over cached keys/values of the prefix and of the still-masked later blocks. The
   cache is rebuilt at every block start (and follows the rows as finished ones drop out); CFG
   caches both branches. Exact when the prefix does not attend to later tokens; with
   bidirectional attention an approximation (token agreement and log-likelihood gap measured in
   tests/core/test_kv_cache.py and bench/README.md). A model without ``forward_cached`` (no
   ``cached_logits_fn``) falls back to ``"none"`` with a warning. Implies head-only logits.

Rows that have nothing left to decode are dropped from the forward batch.

RL guard: the sampler returns tokens only, never its (possibly cached, approximate) logits. The
old and reference log-probs of a rollout are computed afterwards by the estimator with full
forwards (core/importance.py ``cache_logprobs``, called by stages/rollout.py), and the update
recomputes the new ones the same way, so the importance ratios compare like with like whatever
the sampler's cache or threshold settings; the sampler only changes which completions are drawn.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

from .kv_cache import CACHE_MODES, BlockKV, CachedLogitsFn
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
    cache: str = "none",
    cached_logits_fn: CachedLogitsFn | None = None,
) -> TextSample:
    """Sample completions for a batch of prompts; see the module docstring for the options."""
    if remasking not in ("low_confidence", "random"):
        raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
    if cache != "none" and cached_logits_fn is None:
        warnings.warn(f"sampler cache={cache!r}: the model has no block KV cache (forward_cached); using 'none'",
                      stacklevel=2)
        cache = "none"
    num_blocks = _validate(gen_length, steps, block_length)
    steps_per_block = steps // num_blocks
    batch, prompt_len = prompt_ids.shape
    device = prompt_ids.device
    x = torch.cat([prompt_ids, torch.full((batch, gen_length), mask_id, dtype=prompt_ids.dtype, device=device)], dim=1)
    if cfg_scale > 0.0 and prompt_valid is None:
        prompt_valid = torch.ones_like(prompt_ids, dtype=torch.bool)
    row_forwards = torch.zeros(batch, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)

    cfg = cfg_scale > 0.0
    total = prompt_len + gen_length
    for block in range(num_blocks):
        lo, hi = prompt_len + block * block_length, prompt_len + (block + 1) * block_length
        window = (lo, total) if cache == "prefix" else (lo, hi)
        quotas = step_quotas((x[:, lo:hi] == mask_id).sum(1), steps_per_block)  # (B, s)
        kv: BlockKV | None = None  # invalidated at every block start
        for step in range(steps_per_block):
            masked = x[:, lo:hi] == mask_id  # (B, b)
            rows = (masked.any(1) & ~finished).nonzero().squeeze(1)  # (R,)
            if rows.numel() == 0:
                break
            xs = x[rows]  # (R, L)
            inputs = xs
            if cfg:  # conditional rows, then the same rows with the real prompt tokens masked
                uncond = xs.clone()
                uncond[:, :prompt_len][prompt_valid[rows]] = mask_id
                inputs = torch.cat([xs, uncond])
            row_masked = masked[rows]  # (R, b)
            # Logits only where a row still has a mask: its masked columns first, in order.
            order = (~row_masked).to(torch.int8).argsort(dim=1, stable=True)[:, : int(row_masked.sum(1).max())]  # (R, K)
            pos = (lo + order).repeat(2, 1) if cfg else lo + order  # (R or 2R, K)
            if cache == "none":
                out = gather_positions(logits_fn, inputs, pos, head_only)
            elif kv is None:  # block start: a full forward that fills the cache
                out, kv = cached_logits_fn(inputs, pos, None, None)
                kv_rows = rows
            else:
                if not torch.equal(rows, kv_rows):  # rows that finished the block left the batch
                    keep = torch.searchsorted(kv_rows, rows)
                    kv = kv.select(torch.cat([keep, keep + len(kv_rows)]) if cfg else keep)
                    kv_rows = rows
                out, kv = cached_logits_fn(inputs, pos, kv, window)
            out = out.float()  # (R or 2R, K, V)
            logits = classifier_free_guidance(out[: len(rows)], out[len(rows):], cfg_scale) if cfg else out
            index = order.unsqueeze(-1).expand(-1, -1, logits.shape[-1])  # back to block columns (R, b, V)
            logits = torch.zeros(len(rows), block_length, logits.shape[-1], device=device).scatter_(1, index, logits)
            row_forwards[rows] += 2 if cfg else 1
            # Never propose the mask token itself: committing it would leave the slot masked.
            logits = logits.index_fill(-1, torch.tensor([mask_id], device=device), -torch.inf)
            proposal = sample_tokens(logits, temperature, generator)  # (R, b)
            if remasking == "low_confidence":
                confidence = torch.softmax(logits, dim=-1).gather(-1, proposal.unsqueeze(-1)).squeeze(-1)  # (R, b)
            else:
                confidence = torch.rand(proposal.shape, generator=generator, device=generator.device if generator else "cpu").to(device)
            confidence = torch.where(row_masked, confidence, torch.full_like(confidence, -torch.inf))
            quota = quotas[rows, step]  # (R,)
            if threshold is not None:  # max(quota, positions above the threshold): the top that many
                quota = torch.maximum(quota, (confidence >= threshold).sum(1))
            commit = top_n_mask(confidence, quota) & row_masked
            x[rows, lo:hi] = torch.where(commit, proposal.to(x.dtype), xs[:, lo:hi])
        if early_exit:
            ended = (x[:, lo:hi] == eos_id).all(1) & ~finished  # (B,)
            if ended.any():
                tail = x[ended, hi:]
                x[ended, hi:] = torch.where(tail == mask_id, torch.full_like(tail, eos_id), tail)
                finished |= ended
    return TextSample(tokens=x[:, prompt_len:], row_forwards=row_forwards)
