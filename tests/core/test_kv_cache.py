"""The block KV cache (core/kv_cache.py, models/tiny.py forward_cached) and the sampler's
``cache`` option: windowed forwards equal full forwards on an unchanged sequence; on a
prefix-causal model ``prefix`` and ``dual`` give exactly the tokens of ``none`` (with padding, CFG,
threshold decoding, early exit, temperature); the cache is rebuilt at every block start and
follows the rows as they drop out; on a bidirectional SFT'd tiny model the approximation is
measured against a stated bound; a model without the protocol falls back with a warning."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from maskgrpo.core.kv_cache import model_cached_logits, supports_block_cache
from maskgrpo.core.text_sampler import sample_text
from maskgrpo.models.tiny import TinyMDM, TinyMDMConfig

from .conftest import EOS, MASK, PAD, Recorder, as_logits_fn, tiny_model

VOCAB = 32


class PrefixCausalTiny(TinyMDM):
    """TinyMDM whose position i attends only to keys j <= i (and always to itself, so a padding
    query has a key): no position depends on later tokens, which makes the prefix (and, since a
    block never sees the positions after it, the dual) cache exact. Built for this test only."""

    def attention_bias(self, valid, queries):
        keys = torch.arange(valid.shape[1], device=valid.device)
        allowed = valid[:, None, :] & (keys[None, None, :] <= queries[None, :, None])  # (B, W, L)
        allowed |= keys[None, None, :] == queries[None, :, None]
        bias = torch.zeros(allowed.shape, dtype=torch.float32, device=valid.device)
        return bias.masked_fill(~allowed, float("-inf"))[:, None]  # (B, 1, W, L)


def causal_model(seed: int = 0, weight_std: float = 0.5) -> PrefixCausalTiny:
    torch.manual_seed(seed)
    model = PrefixCausalTiny(TinyMDMConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4,
                                           mask_token_id=MASK, eos_token_id=EOS, pad_token_id=PAD))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, weight_std)
    return model.eval()


def padded_prompts(lengths: list[int], width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = [torch.cat([torch.full((width - n,), PAD), torch.randint(3, VOCAB, (n,), generator=g)]) for n in lengths]
    return torch.stack(rows)


def both_fns(model):
    return as_logits_fn(model), model_cached_logits(model)


# ---- the model side of the protocol -------------------------------------------------------------

def test_full_cached_forward_is_the_forward_and_returns_every_layers_keys_values(confident_model):
    ids = padded_prompts([4, 7, 2], 9)
    pos = torch.tensor([[3, 4], [8, 0], [5, 5]])
    logits, kv = confident_model.forward_cached(ids, logits_positions=pos)
    assert torch.equal(logits, confident_model(ids, logits_positions=pos).logits)
    assert len(kv.layers) == 2
    assert all(k.shape == v.shape == (3, 4, 9, 8) for k, v in kv.layers)  # (B, H, L, D)


@pytest.mark.parametrize("window", [(5, 12), (5, 8), (8, 12), (0, 12)])
def test_windowed_forward_over_an_unchanged_sequence_equals_the_full_forward(confident_model, window):
    # Same tokens everywhere: the cached keys/values outside the window are exactly what the full
    # forward would compute, so the window's logits equal the full forward's (left padding included).
    ids = torch.cat([padded_prompts([5, 3, 1], 5), torch.randint(3, VOCAB, (3, 7))], dim=1)  # (3, 12)
    start, end = window
    pos = torch.arange(start, end).expand(3, -1)
    _, kv = confident_model.forward_cached(ids, logits_positions=pos)
    windowed, _ = confident_model.forward_cached(ids, logits_positions=pos, cache=kv, window=window)
    assert torch.allclose(windowed, confident_model(ids, logits_positions=pos).logits, atol=1e-5)


def test_cache_select_and_protocol_errors(confident_model):
    ids = padded_prompts([4, 4, 4], 6)
    pos = torch.arange(6).expand(3, -1)
    _, kv = confident_model.forward_cached(ids, logits_positions=pos)
    picked = kv.select(torch.tensor([2, 0]))
    assert torch.equal(picked.layers[1][0], kv.layers[1][0][[2, 0]])
    with pytest.raises(ValueError, match="cache and a window together"):
        confident_model.forward_cached(ids, logits_positions=pos, window=(0, 6))
    assert supports_block_cache(confident_model) and not supports_block_cache(torch.nn.Linear(2, 2))
    assert model_cached_logits(torch.nn.Linear(2, 2)) is None


# ---- exactness on a prefix-causal model ---------------------------------------------------------

CASES = {
    "greedy": dict(),
    "temperature": dict(temperature=0.8),
    "threshold": dict(threshold=0.5),
    "early_exit+threshold": dict(threshold=0.5, early_exit=True),
    "cfg": dict(cfg_scale=1.5),
    "cfg+threshold+temperature": dict(cfg_scale=1.0, threshold=0.5, temperature=0.7, early_exit=True),
}


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("case", list(CASES))
def test_cache_gives_the_tokens_of_no_cache_on_a_prefix_causal_model(mode, case):
    model = causal_model(seed=3)
    fn, cached = both_fns(model)
    prompts = padded_prompts([6, 3, 5, 1, 6], 6, seed=1)
    kwargs = dict(gen_length=12, steps=12, block_length=4, mask_id=MASK, eos_id=EOS, prompt_valid=prompts != PAD,
                  **CASES[case])
    none = sample_text(fn, prompts, generator=torch.Generator().manual_seed(0), **kwargs)
    fast = sample_text(fn, prompts, cache=mode, cached_logits_fn=cached, generator=torch.Generator().manual_seed(0),
                       **kwargs)
    assert torch.equal(fast.tokens, none.tokens)
    assert torch.equal(fast.row_forwards, none.row_forwards)
    if "threshold" in case:  # rows finished their blocks at different steps: the cache followed them
        assert len(set(none.row_forwards.tolist())) > 1, none.row_forwards


def test_bidirectional_tiny_is_not_prefix_causal(confident_model):
    # The control: on the ordinary (bidirectional) tiny model the cache is an approximation, and
    # on this random confident model it changes some tokens (so the exact test above can fail).
    fn, cached = both_fns(confident_model)
    prompts = padded_prompts([6, 3, 5, 1, 6], 6, seed=1)
    kwargs = dict(gen_length=12, steps=6, block_length=4, mask_id=MASK, eos_id=EOS)
    none = sample_text(fn, prompts, **kwargs).tokens
    assert not torch.equal(sample_text(fn, prompts, cache="dual", cached_logits_fn=cached, **kwargs).tokens, none)


# ---- invalidation, windows, CFG branches --------------------------------------------------------

class CacheRecorder:
    """Wraps a CachedLogitsFn; records (rows, window, the cache passed, the cache returned)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[tuple[int, tuple[int, int] | None, object, object]] = []
        self.inputs: list[torch.Tensor] = []

    def __call__(self, input_ids, positions, cache, window):
        logits, kv = self.inner(input_ids, positions, cache, window)
        self.calls.append((input_ids.shape[0], window, cache, kv))
        self.inputs.append(input_ids.clone())
        return logits, kv


@pytest.mark.parametrize("mode, window_of", [("prefix", lambda lo, hi, total: (lo, total)),
                                             ("dual", lambda lo, hi, total: (lo, hi))])
def test_cache_is_rebuilt_at_every_block_start_and_used_within_the_block(confident_model, mode, window_of):
    # 3 blocks x 3 steps: per block one full forward (no cache, no window) that creates a cache,
    # then 2 windowed calls on exactly that block's cache.
    rec = CacheRecorder(model_cached_logits(confident_model))
    prompt_len, total = 5, 17
    sample_text(as_logits_fn(confident_model), padded_prompts([5, 2], prompt_len), gen_length=12, steps=9,
                block_length=4, mask_id=MASK, eos_id=EOS, cache=mode, cached_logits_fn=rec)
    assert len(rec.calls) == 9
    created = []
    for block in range(3):
        lo, hi = prompt_len + 4 * block, prompt_len + 4 * (block + 1)
        first, *rest = rec.calls[3 * block:3 * block + 3]
        assert first[1] is None and first[2] is None  # invalidated: a fresh full forward
        created.append(first[3])
        for call in rest:
            assert call[1] == window_of(lo, hi, total)
            assert call[2] is first[3]  # this block's cache, not an earlier one
    assert len({id(c) for c in created}) == 3
    # Within a block the cached prefix is unchanged while the window's tokens are committed.
    assert torch.equal(rec.inputs[4][:, :9], rec.inputs[3][:, :9])
    assert not torch.equal(rec.inputs[4][:, 9:13], rec.inputs[3][:, 9:13])


def test_cfg_caches_both_branches(confident_model):
    # Every call, full or windowed, carries the conditional rows then the same rows with the real
    # prompt tokens masked (padding stays padding); the windowed ones reuse that 2R-row cache.
    rec = CacheRecorder(model_cached_logits(confident_model))
    prompts = padded_prompts([4, 2], 4)
    out = sample_text(as_logits_fn(confident_model), prompts, gen_length=8, steps=4, block_length=4, mask_id=MASK,
                      eos_id=EOS, cfg_scale=1.0, prompt_valid=prompts != PAD, cache="dual", cached_logits_fn=rec)
    assert [c[0] for c in rec.calls] == [4] * 4
    assert [c[1] is None for c in rec.calls] == [True, False, True, False]
    for x in rec.inputs:
        assert torch.equal(x[:2, :4], prompts)
        assert x[2:, :4].tolist() == [[MASK] * 4, [PAD, PAD, MASK, MASK]]
    assert out.row_forwards.tolist() == [8, 8]


def test_model_without_the_protocol_falls_back_to_no_cache_with_a_warning(confident_model):
    fn = as_logits_fn(confident_model)
    kwargs = dict(gen_length=8, steps=4, block_length=4, mask_id=MASK, eos_id=EOS)
    with pytest.warns(UserWarning, match="no block KV cache"):
        fell_back = sample_text(fn, padded_prompts([3, 4], 4), cache="dual", **kwargs)
    assert torch.equal(fell_back.tokens, sample_text(fn, padded_prompts([3, 4], 4), **kwargs).tokens)
    with pytest.raises(ValueError, match="cache must be one of none, prefix, dual"):
        sample_text(fn, padded_prompts([3], 4), cache="suffix", **kwargs)
    with warnings.catch_warnings():  # with the protocol: no warning
        warnings.simplefilter("error")
        sample_text(fn, padded_prompts([3], 4), cache="dual", cached_logits_fn=model_cached_logits(confident_model),
                    **kwargs)


# ---- the approximation on a bidirectional SFT'd tiny model ---------------------------------------

SORT_PROMPT, SORT_GEN = 8, 12  # 8 random digits -> the digits sorted, then EOS


def sort_batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    digits = torch.randint(3, 13, (n, SORT_PROMPT), generator=g)
    target = torch.full((n, SORT_GEN), EOS)
    target[:, :SORT_PROMPT] = digits.sort(dim=1).values
    return digits, target


@pytest.fixture(scope="module")
def sft_sort_model() -> TinyMDM:
    """A bidirectional 2 x 64 TinyMDM trained 150 steps with the masked-diffusion SFT objective on
    8-digit sorting (docs/algorithm.md §5): a policy with real structure, not random weights."""
    torch.manual_seed(0)
    model = TinyMDM(TinyMDMConfig(vocab_size=16, hidden_size=64, num_layers=2, num_heads=4,
                                  mask_token_id=MASK, eos_token_id=EOS, pad_token_id=PAD))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        prompts, target = sort_batch(64, g)
        t = torch.rand(64, 1, generator=g) * 0.999 + 1e-3
        masked = torch.rand(target.shape, generator=g) < t
        logits = model(torch.cat([prompts, target.masked_fill(masked, MASK)], 1)).logits[:, SORT_PROMPT:]
        ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        loss = (ce * masked / t).sum() / target.numel()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


class GapRecorder:
    """A CachedLogitsFn that, at every windowed call, also runs the full forward on the same
    sequence and records |log p_cached - log p_full| of the greedy token at the masked positions."""

    def __init__(self, model):
        self.model, self.inner = model, model_cached_logits(model)
        self.gaps: list[torch.Tensor] = []

    def __call__(self, input_ids, positions, cache, window):
        logits, kv = self.inner(input_ids, positions, cache, window)
        if cache is not None:
            full = self.model(input_ids, logits_positions=positions).logits
            masked = input_ids.gather(1, positions) == MASK  # (B, b)
            token = full.argmax(-1, keepdim=True)
            gap = (logits.log_softmax(-1).gather(-1, token) - full.log_softmax(-1).gather(-1, token)).squeeze(-1).abs()
            self.gaps.append(gap[masked])
        return logits, kv


@pytest.mark.slow  # the SFT fixture: ~12-20 s on a loaded 2-core machine
@pytest.mark.parametrize("mode, min_agreement, max_mean_gap", [("prefix", 0.90, 0.08), ("dual", 0.88, 0.08)])
def test_cache_approximation_on_the_bidirectional_sft_model(sft_sort_model, mode, min_agreement, max_mean_gap):
    # Greedy, 64 prompts, 3 blocks of 4 in 12 steps. Measured (CPU, 1 thread): the SFT'd policy
    # gets 26% of the sorted digits right (chance ~10%); tokens equal to no cache: prefix 0.948,
    # dual 0.936; |log p_cached - log p_full| of the greedy token at masked positions: mean 0.032
    # / 0.040 nats, p99 0.30 / 0.43, max 1.0 / 1.1. Bounds stated here: agreement >= 0.90 / 0.88,
    # mean gap <= 0.08 nats, and > 0 (the approximation is real on a bidirectional model).
    prompts, target = sort_batch(64, torch.Generator().manual_seed(1))
    kwargs = dict(gen_length=SORT_GEN, steps=12, block_length=4, mask_id=MASK, eos_id=EOS)
    none = sample_text(as_logits_fn(sft_sort_model), prompts, **kwargs).tokens
    assert float((none[:, :SORT_PROMPT] == target[:, :SORT_PROMPT]).float().mean()) > 0.2  # it has learnt something
    rec = GapRecorder(sft_sort_model)
    fast = sample_text(as_logits_fn(sft_sort_model), prompts, cache=mode, cached_logits_fn=rec, **kwargs).tokens
    gaps = torch.cat(rec.gaps)
    agreement = float((fast == none).float().mean())
    assert agreement >= min_agreement, agreement
    assert 0.0 < float(gaps.mean()) <= max_mean_gap, float(gaps.mean())
