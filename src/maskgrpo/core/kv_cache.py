"""The block KV cache a model implements for the text sampler (docs/algorithm.md §2.1, §8; Fast-dLLM).

The semi-AR sampler decodes one block at a time; within a block only the block's tokens change.
A model that implements ``forward_cached`` lets the sampler run one full forward at the start
of each block, keep every layer's keys and values, and then, for the block's remaining steps,
push only a window of the sequence through the network:

- ``prefix``: window = the current block and everything after it; the prompt's and completed
  blocks' keys/values come from the block-start forward.
- ``dual``: window = the current block only; the prefix's and the still-masked later blocks'
  keys/values come from the block-start forward (refreshed at the next block start).

With bidirectional attention this is an approximation (cached positions would have attended to
the block's new tokens); with a model whose prefix representations do not depend on later tokens
``prefix`` is exact (tests/core/test_kv_cache.py).

The model's method (the protocol; models/tiny.py is the reference implementation)::

    forward_cached(input_ids (B, L), attention_mask (B, L) | None, logits_positions (B, K),
                   cache: BlockKV | None = None, window: tuple[int, int] | None = None)
        -> (logits (B, K, V), BlockKV)

1. ``cache=None`` (``window`` None): the model's ordinary forward over all L positions, logits at
   ``logits_positions`` only, plus a ``BlockKV`` holding each layer's keys and values at all L
   positions, as attention consumes them (after rotary embeddings), shape (B, H, L, D).
2. ``cache`` and ``window=(start, end)``: only ``input_ids[:, start:end]`` goes through the
   network (as queries). Each layer attends over all L positions: the cached keys/values outside
   the window and freshly computed ones inside it (``write_window``). ``input_ids`` and
   ``attention_mask`` still span all L positions (position ids and the padding mask come from
   them); ``logits_positions`` lie in [start, end). Returns the (possibly updated) cache.

The sampler never reads logits from anything else than these calls and never hands logits out
(it returns tokens), so importance ratios are unaffected: old log-probs are always full forwards
of the estimator (core/importance.py).

``CachedLogitsFn`` is the sampler's view, with the attention mask already applied, as
``LogitsFn`` is for ``forward`` (core/sampling.py). ``model_cached_logits`` builds one from a
model, or returns None when the model has no ``forward_cached`` (the sampler then falls back to
``cache="none"`` with a warning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

CACHE_MODES = ("none", "prefix", "dual")

Window = Optional[tuple[int, int]]


@dataclass(frozen=True)
class BlockKV:
    """Per-layer (keys, values), each (B, H, L, D): batch first, sequence at dim -2."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    def select(self, rows: torch.Tensor) -> "BlockKV":
        """The cache of a subset of the batch rows (B',) (index into dim 0)."""
        return BlockKV(tuple((k[rows], v[rows]) for k, v in self.layers))


def write_window(cached: torch.Tensor, fresh: torch.Tensor, start: int) -> torch.Tensor:
    """Cached keys (or values) (B, H, L, D) with positions [start, start + W) replaced by ``fresh``
    (B, H, W, D), in place: window slots are recomputed at every windowed call, so nothing needs
    the stale ones. The whole tensor is what the window's queries attend over."""
    cached[..., start:start + fresh.shape[-2], :] = fresh
    return cached


CachedLogitsFn = Callable[[torch.Tensor, torch.Tensor, Optional[BlockKV], Window], tuple[torch.Tensor, BlockKV]]


def supports_block_cache(model: Any) -> bool:
    return callable(getattr(model, "forward_cached", None))


def model_cached_logits(model: Any, attention_mask: Callable[[torch.Tensor], torch.Tensor] | None = None
                        ) -> CachedLogitsFn | None:
    """``(input_ids, positions, cache, window) -> (logits, cache)`` over ``model.forward_cached``,
    with ``attention_mask(input_ids)`` (None: the model's own default); None if the model has none."""
    if not supports_block_cache(model):
        return None

    def cached_logits(input_ids: torch.Tensor, positions: torch.Tensor, cache: BlockKV | None,
                      window: Window) -> tuple[torch.Tensor, BlockKV]:
        mask = None if attention_mask is None else attention_mask(input_ids)
        return model.forward_cached(input_ids, attention_mask=mask, logits_positions=positions, cache=cache,
                                    window=window)

    return cached_logits
