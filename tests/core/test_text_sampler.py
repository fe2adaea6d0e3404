"""The semi-autoregressive text sampler (LLaDA) and its options: quotas, committed tokens,
batch invariance, head-only logits, threshold decoding, early exit, CFG and errors."""

from __future__ import annotations

import pytest
import torch

from maskgrpo.core.sampling import classifier_free_guidance, gather_positions, sample_tokens, step_quotas, top_n_mask
from maskgrpo.core.text_sampler import sample_text

from .conftest import EOS, MASK, PAD, Recorder, as_logits_fn, tiny_model

VOCAB = 32


def table_fn(table: torch.Tensor):
    """A LogitsFn whose logits depend only on the column: table (L, V) -> (B, L or K, V)."""

    def fn(input_ids, positions):
        full = table.expand(input_ids.shape[0], -1, -1)
        if positions is None:
            return full
        return full.gather(1, positions.unsqueeze(-1).expand(-1, -1, table.shape[1]))

    return fn


def confident_table(length: int, prompt_len: int, margin: float = 20.0, eos_from: int | None = None) -> torch.Tensor:
    """Column k prefers token 3 + (k mod 5) by ``margin`` nats (EOS from completion index eos_from)."""
    table = torch.zeros(length, VOCAB)
    for k in range(length):
        token = 3 + (k % 5)
        if eos_from is not None and k - prompt_len >= eos_from:
            token = EOS
        table[k, token] = margin
    return table


def prompts(batch: int, prompt_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, prompt_len), generator=torch.Generator().manual_seed(seed))


def completion_masks_per_call(rec: Recorder, prompt_len: int) -> list[torch.Tensor]:
    return [(x[:, prompt_len:] == MASK) for x in rec.inputs]


# ---- primitives -------------------------------------------------------------------------------

def test_step_quotas_literal():
    # M = 5, s = 3: floor(5/3) = 1 each, and 5 mod 3 = 2 extra for the first two steps -> 2, 2, 1.
    # M = 8: 2 each + 2 extra -> 3, 3, 2.  M = 0: nothing.  Each row sums to M.
    quotas = step_quotas(torch.tensor([5, 8, 0]), 3)
    assert quotas.tolist() == [[2, 2, 1], [3, 3, 2], [0, 0, 0]]


def test_top_n_mask_literal():
    scores = torch.tensor([[0.1, 0.9, 0.5, -torch.inf], [0.3, 0.2, 0.1, 0.0]])
    assert top_n_mask(scores, torch.tensor([2, 0])).tolist() == [[False, True, True, False], [False] * 4]


def test_cfg_combination_literal():
    # z = z_u + (w + 1)(z_c - z_u): z_c = [1, 3], z_u = [2, 0], w = 2 -> [2 - 3, 0 + 9] = [-1, 9].
    z = classifier_free_guidance(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.0]), 2.0)
    assert z.tolist() == [-1.0, 9.0]
    # w = 0 is the conditional logits.
    assert classifier_free_guidance(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.0]), 0.0).tolist() == [1.0, 3.0]


def test_sample_tokens_greedy_and_temperature_statistics():
    logits = torch.log(torch.tensor([0.1, 0.6, 0.3]))
    assert int(sample_tokens(logits, 0.0, None)) == 1
    # At tau = 1, argmax(z + g) is a sample from softmax(z) = (0.1, 0.6, 0.3): 20000 draws,
    # frequencies within 5 sigma = 5 sqrt(p (1 - p) / 20000) <= 0.018.
    draws = sample_tokens(logits.expand(20000, 3), 1.0, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).double() / 20000
    assert torch.allclose(freq, torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64), atol=0.018)


def test_gather_positions_head_only_equals_full_then_slice(confident_model):
    fn = as_logits_fn(confident_model)
    ids = prompts(3, 10)
    pos = torch.tensor([[2, 5], [0, 9], [7, 7]])
    full = fn(ids, None)
    sliced = torch.stack([full[b, pos[b]] for b in range(3)])
    assert torch.allclose(gather_positions(fn, ids, pos, head_only=True), sliced, atol=1e-5)
    assert torch.equal(gather_positions(fn, ids, pos, head_only=False), sliced)


# ---- quotas and commitment ---------------------------------------------------------------------

def test_commits_exactly_the_quota_per_step_within_the_current_block(confident_model):
    # gen 8, block 4, 6 steps -> 2 blocks of 3 steps; M = 4 per block -> quotas 2, 1, 1.
    # Masked completion tokens seen by the 6 calls: 8, 6, 5 (block 1), 4, 2, 1 (block 2); then 0.
    rec = Recorder(as_logits_fn(confident_model))
    out = sample_text(rec, prompts(3, 5), gen_length=8, steps=6, block_length=4, mask_id=MASK, eos_id=EOS,
                      temperature=1.0, generator=torch.Generator().manual_seed(0))
    counts = [m.sum(1).tolist() for m in completion_masks_per_call(rec, 5)]
    assert counts == [[8] * 3, [6] * 3, [5] * 3, [4] * 3, [2] * 3, [1] * 3]
    assert not bool((out.tokens == MASK).any())
    assert out.row_forwards.tolist() == [6, 6, 6]
    # While block 1 is decoded, block 2 stays fully masked.
    for m in completion_masks_per_call(rec, 5)[:3]:
        assert bool(m[:, 4:].all())


def test_committed_tokens_never_change(confident_model):
    rec = Recorder(as_logits_fn(confident_model))
    out = sample_text(rec, prompts(4, 6), gen_length=12, steps=12, block_length=4, mask_id=MASK, eos_id=EOS,
                      temperature=1.0, generator=torch.Generator().manual_seed(1))
    states = [x[:, 6:] for x in rec.inputs] + [out.tokens]
    for before, after in zip(states, states[1:]):
        committed = before != MASK
        assert torch.equal(after[committed], before[committed])
    assert torch.equal(rec.inputs[-1][:, :6], prompts(4, 6))  # the prompt is never touched


def test_steps_equal_to_gen_length_commit_one_token_per_step(confident_model):
    rec = Recorder(as_logits_fn(confident_model))
    sample_text(rec, prompts(2, 4), gen_length=8, steps=8, block_length=8, mask_id=MASK, eos_id=EOS)
    counts = [int(m[0].sum()) for m in completion_masks_per_call(rec, 4)]
    assert counts == [8, 7, 6, 5, 4, 3, 2, 1]


def test_low_confidence_commits_the_most_confident_first():
    # Column confidence rises to the right (margins 1..8 nats over one rival): with one token
    # per step the rightmost column is committed first, then leftwards.
    prompt_len, gen = 2, 8
    table = torch.zeros(prompt_len + gen, VOCAB)
    for k in range(gen):
        table[prompt_len + k, 3] = 1.0 + k
    rec = Recorder(table_fn(table))
    out = sample_text(rec, prompts(1, prompt_len), gen_length=gen, steps=gen, block_length=gen, mask_id=MASK, eos_id=EOS)
    masks = completion_masks_per_call(rec, prompt_len) + [out.tokens == MASK]
    order = [int((a & ~b).nonzero()[0, 1]) for a, b in zip(masks, masks[1:])]
    assert order == [7, 6, 5, 4, 3, 2, 1, 0]
    assert out.tokens.tolist() == [[3] * gen]


def test_random_remasking_keeps_quotas():
    table = confident_table(12, 4)
    rec = Recorder(table_fn(table))
    out = sample_text(rec, prompts(2, 4), gen_length=8, steps=4, block_length=8, mask_id=MASK, eos_id=EOS,
                      remasking="random", generator=torch.Generator().manual_seed(0))
    assert [int(m[0].sum()) for m in completion_masks_per_call(rec, 4)] == [8, 6, 4, 2]
    assert torch.equal(out.tokens[0], table[4:].argmax(-1))


# ---- batch invariance and head-only ------------------------------------------------------------

def test_greedy_is_batch_size_invariant(confident_model):
    fn = as_logits_fn(confident_model)
    batch = prompts(6, 7, seed=3)
    kwargs = dict(gen_length=8, steps=8, block_length=4, mask_id=MASK, eos_id=EOS)
    together = sample_text(fn, batch, **kwargs).tokens
    alone = torch.cat([sample_text(fn, batch[i:i + 1], **kwargs).tokens for i in range(6)])
    split = torch.cat([sample_text(fn, batch[:2], **kwargs).tokens, sample_text(fn, batch[2:], **kwargs).tokens])
    assert torch.equal(together, alone)
    assert torch.equal(together, split)


def test_greedy_is_invariant_to_left_padding(confident_model):
    # Prompts of 3..7 real tokens left-padded to 7: each row equals the row sampled alone,
    # unpadded (the tiny model counts positions from the first real token and ignores pads).
    fn = as_logits_fn(confident_model)
    kwargs = dict(gen_length=8, steps=8, block_length=4, mask_id=MASK, eos_id=EOS)
    raw = [prompts(1, n, seed=10 + n)[0] for n in (3, 5, 7, 4)]
    padded = torch.stack([torch.cat([torch.full((7 - len(p),), PAD), p]) for p in raw])
    together = sample_text(fn, padded, **kwargs).tokens
    for i, p in enumerate(raw):
        assert torch.equal(together[i], sample_text(fn, p.unsqueeze(0), **kwargs).tokens[0]), i


@pytest.mark.parametrize("temperature, threshold", [(0.0, None), (0.8, None), (0.8, 0.1)])
def test_head_only_gives_identical_tokens(confident_model, temperature, threshold):
    # With a threshold, rows hold different numbers of masks in a step (logits at the most any
    # row needs, scattered back): still the full-logits tokens, generator draws included.
    fn = as_logits_fn(confident_model)
    kwargs = dict(gen_length=8, steps=4, block_length=4, mask_id=MASK, eos_id=EOS, temperature=temperature,
                  threshold=threshold)
    a = sample_text(fn, prompts(5, 6), head_only=True, generator=torch.Generator().manual_seed(4), **kwargs)
    b = sample_text(fn, prompts(5, 6), head_only=False, generator=torch.Generator().manual_seed(4), **kwargs)
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.row_forwards, b.row_forwards)
    if threshold is not None:
        assert len(set(a.row_forwards.tolist())) > 1  # measured [4, 3, 4, 4, 2]


def test_head_only_asks_for_the_current_blocks_masked_positions_only():
    # 2 steps per 4-token block, quota 2; equal confidences commit the leftmost first, so the
    # second step of each block needs logits at its last two columns only.
    rec = Recorder(table_fn(confident_table(12, 4)))
    sample_text(rec, prompts(2, 4), gen_length=8, steps=4, block_length=4, mask_id=MASK, eos_id=EOS)
    assert [p[0].tolist() for p in rec.positions] == [[4, 5, 6, 7], [6, 7], [8, 9, 10, 11], [10, 11]]
    rec_full = Recorder(table_fn(confident_table(12, 4)))
    sample_text(rec_full, prompts(2, 4), gen_length=8, steps=4, block_length=4, mask_id=MASK, eos_id=EOS,
                head_only=False)
    assert rec_full.positions == [None] * 4


# ---- threshold decoding and early exit ---------------------------------------------------------

def test_threshold_decoding_on_a_confident_model_uses_one_forward_per_block():
    # Every column's top token has probability e^20 / (e^20 + 31) ~ 1 >= 0.9, so each block is
    # committed in one forward: 2 forwards instead of the plain sampler's 8 (= steps).
    table = confident_table(12, 4)
    kwargs = dict(gen_length=8, steps=8, block_length=4, mask_id=MASK, eos_id=EOS)
    plain = sample_text(table_fn(table), prompts(3, 4), **kwargs)
    fast = sample_text(table_fn(table), prompts(3, 4), threshold=0.9, **kwargs)
    assert plain.row_forwards.tolist() == [8, 8, 8]
    assert fast.row_forwards.tolist() == [2, 2, 2]
    assert torch.equal(plain.tokens, fast.tokens)


def test_threshold_decoding_below_the_threshold_is_the_plain_sampler():
    # Uniform logits: confidence 1/32 < 0.9 everywhere, so every step commits its quota (2 of a
    # 4-token block in 2 steps): masked counts 8, 6, 4, 2, exactly steps = 4 forwards (the
    # plain sampler's, not one token per step), and the plain sampler's tokens.
    rec = Recorder(table_fn(torch.zeros(12, VOCAB)))
    kwargs = dict(gen_length=8, steps=4, block_length=4, mask_id=MASK, eos_id=EOS)
    out = sample_text(rec, prompts(2, 4), threshold=0.9, **kwargs)
    assert [int(m[0].sum()) for m in completion_masks_per_call(rec, 4)] == [8, 6, 4, 2]
    assert out.row_forwards.tolist() == [4, 4]
    assert torch.equal(out.tokens, sample_text(table_fn(torch.zeros(12, VOCAB)), prompts(2, 4), **kwargs).tokens)


def test_threshold_commits_max_of_quota_and_positions_above():
    # One 8-token block in 4 steps (quota 2 a step). Columns 0-2 are certain (20 nats), the
    # rest uniform: step 1 commits the 3 above the threshold (more than the quota 2), then the
    # quota: masked counts 8, 5, 3, 1 -> 4 forwards; never more than steps.
    table = torch.zeros(12, VOCAB)
    table[4:7, 5] = 20.0
    rec = Recorder(table_fn(table))
    out = sample_text(rec, prompts(1, 4), gen_length=8, steps=4, block_length=8, mask_id=MASK, eos_id=EOS,
                      threshold=0.9)
    assert [int(m[0].sum()) for m in completion_masks_per_call(rec, 4)] == [8, 5, 3, 1]
    assert out.row_forwards.tolist() == [4]
    assert out.tokens[0, :3].tolist() == [5, 5, 5]


@pytest.mark.parametrize("seed", range(3))
def test_threshold_on_a_low_confidence_policy_never_exceeds_steps(seed):
    # A random tiny model over a 512-token vocabulary at temperature 1: its confidences are about
    # 1/512, far below 0.9 (nothing passes), so threshold decoding takes exactly steps forwards and
    # gives the plain sampler's tokens (same generator draws).
    fn = as_logits_fn(tiny_model(seed=seed, vocab_size=512))
    kwargs = dict(gen_length=16, steps=8, block_length=4, mask_id=MASK, eos_id=EOS, temperature=1.0)
    plain = sample_text(fn, prompts(4, 5, seed), generator=torch.Generator().manual_seed(seed), **kwargs)
    high = sample_text(fn, prompts(4, 5, seed), threshold=0.9, generator=torch.Generator().manual_seed(seed), **kwargs)
    assert high.row_forwards.tolist() == [8] * 4
    assert torch.equal(high.tokens, plain.tokens)
    # Spread-out weights, greedy: top probabilities 0.05-0.3, so at 0.08 some positions pass and
    # some do not: fewer forwards in total (measured 24-26 of 32), never more than steps per row.
    fn = as_logits_fn(tiny_model(seed=seed, vocab_size=512, weight_std=0.3))
    low = sample_text(fn, prompts(4, 5, seed), threshold=0.08, **{**kwargs, "temperature": 0.0})
    assert bool((low.row_forwards <= 8).all()) and int(low.row_forwards.sum()) < 32
    assert not bool((low.tokens == MASK).any())


def test_threshold_decoding_with_random_model_commits_at_least_one(confident_model):
    # One row at a time so consecutive calls follow one row: every forward commits >= 1 token,
    # and a block never needs more forwards than its steps (2 per block here).
    fn = as_logits_fn(confident_model)
    for seed in range(4):
        rec = Recorder(fn)
        out = sample_text(rec, prompts(1, 5, seed=seed), gen_length=8, steps=4, block_length=4, mask_id=MASK,
                          eos_id=EOS, threshold=0.5, temperature=1.0, generator=torch.Generator().manual_seed(seed))
        counts = [int(m.sum()) for m in completion_masks_per_call(rec, 5)] + [int((out.tokens == MASK).sum())]
        assert all(a - b >= 1 for a, b in zip(counts, counts[1:])), counts
        assert counts[-1] == 0
        assert 2 <= int(out.row_forwards) <= 4


def test_early_exit_fills_eos_after_an_all_eos_block():
    # Block 1 (completion columns 0..3) is content, everything after is EOS with certainty.
    # Without early exit: 4 blocks x 2 steps = 8 forwards. With it: block 2 comes out all EOS,
    # the remaining blocks 3-4 are filled with EOS and skipped: 2 blocks x 2 steps = 4 forwards.
    prompt_len = 3
    table = confident_table(prompt_len + 16, prompt_len, eos_from=4)
    kwargs = dict(gen_length=16, steps=8, block_length=4, mask_id=MASK, eos_id=EOS)
    plain = sample_text(table_fn(table), prompts(2, prompt_len), **kwargs)
    early = sample_text(table_fn(table), prompts(2, prompt_len), early_exit=True, **kwargs)
    assert plain.row_forwards.tolist() == [8, 8]
    assert early.row_forwards.tolist() == [4, 4]
    assert torch.equal(plain.tokens, early.tokens)
    assert early.tokens[0, 4:].tolist() == [EOS] * 12


def test_early_exit_is_per_row():
    # Row 0's prompt starts with token 3 and it answers EOS at once; row 1 writes content
    # everywhere. Row 0 takes 1 block of forwards (2), row 1 all of them (8).
    prompt_len = 2

    def fn(input_ids, positions):
        logits = torch.zeros(input_ids.shape[0], positions.shape[1], VOCAB)
        logits[:, :, 5] = 20.0
        logits[input_ids[:, 0] == 3, :, 5] = 0.0
        logits[input_ids[:, 0] == 3, :, EOS] = 20.0
        return logits

    out = sample_text(fn, torch.tensor([[3, 4], [4, 4]]), gen_length=16, steps=8, block_length=4, mask_id=MASK,
                      eos_id=EOS, early_exit=True)
    assert out.row_forwards.tolist() == [2, 8]
    assert out.tokens.tolist() == [[EOS] * 16, [5] * 16]


# ---- classifier-free guidance -------------------------------------------------------------------

def test_cfg_changes_the_choice_and_masks_only_real_prompt_tokens():
    # Conditional logits prefer token 3 (1.0 vs 0.9); unconditional (prompt masked) prefer it more
    # (1.0 vs 0.5). With w = 1: z(3) = 1 + 2 (1 - 1) = 1, z(4) = 0.5 + 2 (0.9 - 0.5) = 1.3 -> 4.
    # Without guidance the sampler picks 3.
    def fn(input_ids, positions):
        uncond = (input_ids[:, :3] == MASK).any(1)  # (B,)
        logits = torch.full((input_ids.shape[0], positions.shape[1], VOCAB), -10.0)
        logits[:, :, 3] = 1.0
        logits[:, :, 4] = torch.where(uncond, 0.5, 0.9).unsqueeze(1)
        return logits

    prompt = torch.tensor([[PAD, 7, 8], [9, 7, 8]])
    valid = prompt != PAD
    rec = Recorder(fn)
    kwargs = dict(gen_length=4, steps=2, block_length=4, mask_id=MASK, eos_id=EOS, prompt_valid=valid)
    guided = sample_text(rec, prompt, cfg_scale=1.0, **kwargs)
    assert guided.tokens.tolist() == [[4] * 4, [4] * 4]
    assert guided.row_forwards.tolist() == [4, 4]  # 2 steps x (conditional + unconditional)
    first = rec.inputs[0]  # (2B, L): conditional rows then unconditional rows
    assert torch.equal(first[:2, :3], prompt)
    assert first[2:, :3].tolist() == [[PAD, MASK, MASK], [MASK, MASK, MASK]]  # padding stays padding
    plain = sample_text(fn, prompt, **kwargs)
    assert plain.tokens.tolist() == [[3] * 4, [3] * 4]


# ---- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(gen_length=8, steps=4, block_length=3), "block_length 3 must divide gen_length 8"),
    (dict(gen_length=8, steps=5, block_length=4), "steps 5 must be divisible by the number of blocks 2"),
    (dict(gen_length=8, steps=4, block_length=4, remasking="entropy"), "remasking"),
])
def test_sampler_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_text(table_fn(torch.zeros(12, VOCAB)), prompts(1, 4), mask_id=MASK, eos_id=EOS, **kwargs)


def test_never_proposes_the_mask_token():
    # A model that puts almost all mass on the mask id (50 nats) must still fill every slot:
    # the mask token is excluded, so the runner-up token 3 is chosen, and the quotas hold.
    table = torch.zeros(12, VOCAB)
    table[:, MASK] = 50.0
    table[:, 3] = 1.0
    rec = Recorder(table_fn(table))
    out = sample_text(rec, prompts(2, 4), gen_length=8, steps=4, block_length=8, mask_id=MASK, eos_id=EOS,
                      temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert not bool((out.tokens == MASK).any())
    assert [int(m[0].sum()) for m in completion_masks_per_call(rec, 4)] == [8, 6, 4, 2]
    greedy = sample_text(table_fn(table), prompts(2, 4), gen_length=8, steps=4, block_length=8, mask_id=MASK,
                         eos_id=EOS)
    assert greedy.tokens.tolist() == [[3] * 8] * 2
