"""Image samplers: codebook-only fills, emerge reveal statistics, MaskGIT's cosine counts, CFG,
temperature 0 and errors.

Layout used throughout: 2 text columns, N = 16 image slots (columns 2..17), 1 end column;
vocabulary 24 with the codebook of K = 8 codes at token ids 10..17 (code_offset 10).
"""

from __future__ import annotations

import math

import pytest
import torch

from maskgrpo.core.image_sampler import maskgit_masked_count, maskgit_noise_scales, sample_image

from .conftest import MASK, Recorder, as_logits_fn, tiny_model

VOCAB, OFFSET, K, N = 24, 10, 8, 16
SLOTS = torch.arange(2, 2 + N)


def layout(batch: int, text: int = 5) -> torch.Tensor:
    x = torch.full((batch, 2 + N + 1), MASK)
    x[:, 0], x[:, 1], x[:, -1] = text, 4, 3
    return x


def noisy_codebook_fn(seed: int = 0):
    """Random code logits that depend on the column; huge logits (+100) on non-code tokens
    (including the mask id), which the codebook restriction must ignore."""
    table = torch.randn(2 + N + 1, VOCAB, generator=torch.Generator().manual_seed(seed))
    table[:, :OFFSET] = 100.0
    table[:, OFFSET + K:] = 100.0

    def fn(input_ids, positions):
        full = table.expand(input_ids.shape[0], -1, -1)
        return full.gather(1, positions.unsqueeze(-1).expand(-1, -1, VOCAB))

    return fn, table


def uniform_fn(input_ids, positions):
    return torch.zeros(input_ids.shape[0], positions.shape[1], VOCAB)


def masked_slots_per_call(rec: Recorder) -> list[torch.Tensor]:
    return [(x[:, SLOTS] == MASK) for x in rec.inputs]


@pytest.mark.parametrize("sampler", ["emerge", "maskgit"])
def test_every_slot_filled_with_codebook_tokens_only(sampler):
    fn, _ = noisy_codebook_fn()
    x = layout(6)
    out = sample_image(fn, x, SLOTS, steps=5, mask_id=MASK, code_offset=OFFSET, codebook_size=K, sampler=sampler,
                       generator=torch.Generator().manual_seed(0))
    slots = out.tokens[:, SLOTS]
    assert bool(((slots >= OFFSET) & (slots < OFFSET + K)).all())
    other = torch.ones(x.shape[1], dtype=torch.bool)
    other[SLOTS] = False
    assert torch.equal(out.tokens[:, other], x[:, other])  # text and end columns untouched
    assert out.row_forwards.tolist() == [5] * 6


@pytest.mark.parametrize("sampler", ["emerge", "maskgit"])
def test_tiny_model_with_cfg_fills_every_slot(sampler):
    model = tiny_model(seed=2, vocab_size=VOCAB)
    rec = Recorder(as_logits_fn(model))
    x, uncond = layout(3, text=5), layout(3, text=6)
    out = sample_image(rec, x, SLOTS, steps=4, mask_id=MASK, code_offset=OFFSET, codebook_size=K, sampler=sampler,
                       cfg_scale=3.0, uncond_ids=uncond, generator=torch.Generator().manual_seed(1))
    slots = out.tokens[:, SLOTS]
    assert bool(((slots >= OFFSET) & (slots < OFFSET + K)).all())
    assert out.row_forwards.tolist() == [8] * 3  # 4 steps x (conditional + unconditional)
    for both in rec.inputs:  # (2B, L): the unconditional rows carry the same committed slots
        assert torch.equal(both[:3, SLOTS], both[3:, SLOTS])
        assert both[:3, 0].tolist() == [5] * 3 and both[3:, 0].tolist() == [6] * 3


def test_emerge_reveal_counts_follow_the_cosine_schedule():
    # T = 4: k = kappa(s / 4) = 1, 0.92388, 0.70711, 0.38268, 0. A still-masked slot is revealed
    # at step s with probability (k_t - k_s) / k_t = 0.07612, 0.23463, 0.45880, then 1 at the last
    # step. Over 1000 rows x 16 slots the revealed fraction of the still-masked slots must lie
    # within 5 binomial sigmas of that probability.
    rec = Recorder(uniform_fn)
    out = sample_image(rec, layout(1000), SLOTS, steps=4, mask_id=MASK, code_offset=OFFSET, codebook_size=K,
                       sampler="emerge", generator=torch.Generator().manual_seed(3))
    masks = masked_slots_per_call(rec) + [out.tokens[:, SLOTS] == MASK]
    assert len(rec.inputs) == 4
    kappa = [math.cos(math.pi / 2 * s / 4) for s in range(5)]
    for s in range(3):
        before, after = int(masks[s].sum()), int(masks[s + 1].sum())
        p = (kappa[s] - kappa[s + 1]) / kappa[s]
        revealed = (before - after) / before
        assert abs(revealed - p) <= 5 * math.sqrt(p * (1 - p) / before), (s, revealed, p)
        # and the masked fraction after step s tracks kappa((s + 1) / T) (telescoping product)
        assert abs(after / (1000 * N) - kappa[s + 1]) < 0.02
    assert int(masks[-1].sum()) == 0


def test_emerge_reveal_order_is_random_and_codes_are_full_temperature_samples():
    # With uniform logits each slot's code is uniform over the 8 codes (frequency 1/8 within
    # 5 sigma = 5 sqrt((1/8)(7/8) / 16000) = 0.013) and rows differ in which slots come first.
    rec = Recorder(uniform_fn)
    out = sample_image(rec, layout(1000), SLOTS, steps=4, mask_id=MASK, code_offset=OFFSET, codebook_size=K,
                       sampler="emerge", generator=torch.Generator().manual_seed(4))
    freq = torch.bincount(out.tokens[:, SLOTS].flatten() - OFFSET, minlength=K).double() / (1000 * N)
    assert bool(((freq - 1 / K).abs() < 0.013).all()), freq
    first_revealed = ~masked_slots_per_call(rec)[1]  # (B, N) after step 0
    assert len({tuple(r.tolist()) for r in first_revealed}) > 100


def test_maskgit_keeps_exactly_the_cosine_count_masked():
    # N = 16, T = 4: n_mask = floor(16 cos(pi r / 2)) at r = 1/4, 1/2, 3/4 = floor(14.78),
    # floor(11.31), floor(6.12) = 14, 11, 6, then 0 at the last step. So the four calls see
    # 16, 14, 11 and 6 masked slots in every row, and the output none.
    fn, _ = noisy_codebook_fn(1)
    rec = Recorder(fn)
    out = sample_image(rec, layout(5), SLOTS, steps=4, mask_id=MASK, code_offset=OFFSET, codebook_size=K,
                       sampler="maskgit", generator=torch.Generator().manual_seed(5))
    assert [m.sum(1).tolist() for m in masked_slots_per_call(rec)] == [[16] * 5, [14] * 5, [11] * 5, [6] * 5]
    assert not bool((out.tokens[:, SLOTS] == MASK).any())


def test_maskgit_small_image_commits_at_least_one_per_step():
    # N = 4, T = 8: n_mask = floor(4 cos(pi/16)) = 3 after step 0; floor(4 cos(pi/8)) = 3 capped
    # at undecoded - 1 = 2 after step 1; floor(4 cos(3 pi/16)) = 3 capped at 1 after step 2. At
    # step 3 one slot is left and the cap undecoded - 1 = 0 commits it, so the image is done after
    # 4 of 8 forwards. (MMaDA computes max(1, min(undecoded - 1, n)) and would hold that last slot
    # until the final step; committing it early only saves forwards.)
    slots = torch.arange(2, 6)
    x = torch.full((2, 7), MASK)
    x[:, :2], x[:, -1] = 5, 3
    rec = Recorder(uniform_fn)
    out = sample_image(rec, x, slots, steps=8, mask_id=MASK, code_offset=OFFSET, codebook_size=K, sampler="maskgit",
                       generator=torch.Generator().manual_seed(0))
    counts = [int((s[0, slots] == MASK).sum()) for s in rec.inputs]
    assert counts == [4, 3, 2, 1]
    assert not bool((out.tokens[:, slots] == MASK).any())


def test_maskgit_commits_the_most_confident_at_temperature_zero():
    # One code per slot is preferred; slot i's margin grows with i. At temperature 0 (no score
    # noise) the 2 most confident slots (the last two) are committed first: 16 -> 14 masked.
    table = torch.zeros(2 + N + 1, VOCAB)
    for i, col in enumerate(SLOTS.tolist()):
        table[col, OFFSET + i % K] = 0.1 * (i + 1)

    def fn(input_ids, positions):
        return table.expand(input_ids.shape[0], -1, -1).gather(1, positions.unsqueeze(-1).expand(-1, -1, VOCAB))

    rec = Recorder(fn)
    out = sample_image(rec, layout(1), SLOTS, steps=4, mask_id=MASK, code_offset=OFFSET, codebook_size=K,
                       sampler="maskgit", temperature=0.0)
    after_first = rec.inputs[1][0, SLOTS] != MASK
    assert after_first.nonzero().flatten().tolist() == [14, 15]
    assert (out.tokens[0, SLOTS] - OFFSET).tolist() == [i % K for i in range(N)]  # greedy codes


def test_temperature_zero_is_deterministic():
    # MaskGIT at temperature 0: greedy candidates and no score noise, so the generator is moot.
    # Emerge at temperature 0: the reveal order is still random, but each slot's code is the
    # argmax of its (column-only) logits, so the image is the argmax image.
    model = tiny_model(seed=3, vocab_size=VOCAB, weight_std=0.3)
    fn = as_logits_fn(model)
    kwargs = dict(steps=4, mask_id=MASK, code_offset=OFFSET, codebook_size=K, temperature=0.0)
    a = sample_image(fn, layout(3), SLOTS, sampler="maskgit", generator=torch.Generator().manual_seed(1), **kwargs)
    b = sample_image(fn, layout(3), SLOTS, sampler="maskgit", generator=torch.Generator().manual_seed(2), **kwargs)
    assert torch.equal(a.tokens, b.tokens)
    table_fn, table = noisy_codebook_fn(7)
    c = sample_image(table_fn, layout(3), SLOTS, sampler="emerge", generator=torch.Generator().manual_seed(3), **kwargs)
    argmax = table[SLOTS, OFFSET:OFFSET + K].argmax(-1) + OFFSET
    assert torch.equal(c.tokens[:, SLOTS], argmax.expand(3, -1))


def test_image_cfg_changes_the_choice():
    # Conditional: code 0 at 1.0, code 1 at 0.9; unconditional (text column 6): 1.0 and 0.5.
    # w = 1: (1 + w) z_c - w z_u = 2 - 1 = 1 for code 0 and 1.8 - 0.5 = 1.3 for code 1 -> code 1.
    def fn(input_ids, positions):
        uncond = (input_ids[:, 0] == 6).unsqueeze(1)  # (B, 1)
        logits = torch.full((input_ids.shape[0], positions.shape[1], VOCAB), -10.0)
        logits[:, :, OFFSET] = 1.0
        logits[:, :, OFFSET + 1] = torch.where(uncond, 0.5, 0.9)
        return logits

    kwargs = dict(steps=2, mask_id=MASK, code_offset=OFFSET, codebook_size=K, sampler="maskgit", temperature=0.0)
    guided = sample_image(fn, layout(2, text=5), SLOTS, cfg_scale=1.0, uncond_ids=layout(2, text=6), **kwargs)
    plain = sample_image(fn, layout(2, text=5), SLOTS, **kwargs)
    assert bool((guided.tokens[:, SLOTS] == OFFSET + 1).all())
    assert bool((plain.tokens[:, SLOTS] == OFFSET).all())


def test_image_sampler_errors():
    kwargs = dict(steps=2, mask_id=MASK, code_offset=OFFSET, codebook_size=K)
    with pytest.raises(ValueError, match="'emerge' or 'maskgit'"):
        sample_image(uniform_fn, layout(1), SLOTS, sampler="ancestral", **kwargs)
    with pytest.raises(ValueError, match="uncond_ids"):
        sample_image(uniform_fn, layout(1), SLOTS, cfg_scale=2.0, **kwargs)


def test_mmada_noise_temperature_compounds():
    # tau_s = tau prod_{i <= s} (1 - (i + 1) / T), T = 12: .917, .764, .573, .382, .223, .111, .046, ...
    scales = maskgit_noise_scales(1.0, 12, "mmada")
    assert [round(x, 3) for x in scales[:7]] == [0.917, 0.764, 0.573, 0.382, 0.223, 0.111, 0.046]
    assert scales[-1] == 0.0
    # linear: tau (1 - (s + 1) / T) = 11/12, 10/12, ...; tau = 2 doubles both
    assert maskgit_noise_scales(2.0, 12, "linear")[:3] == pytest.approx([22 / 12, 20 / 12, 18 / 12])
    assert maskgit_noise_scales(2.0, 12, "mmada")[1] == pytest.approx(2 * (11 / 12) * (10 / 12))


def test_float32_count_is_one_less_at_two_thirds():
    # floor(1024 cos(pi/3)): the float64 cosine is 0.5000000000000001 -> 512; MMaDA's float32 -> 511
    assert maskgit_masked_count(1024, 8 / 12) == 512
    assert maskgit_masked_count(1024, 8 / 12, float32=True) == 511
    assert maskgit_masked_count(1024, 3 / 12, float32=True) == maskgit_masked_count(1024, 3 / 12) == 946


def test_mmada_candidates_are_samples_whatever_tau():
    # uniform code logits: with 'linear' at tau 0 every candidate is the argmax (code 0); with
    # 'mmada' the candidates come from softmax(z) (tau only scales the confidence noise), so the
    # codes spread over the codebook.
    kwargs = dict(steps=4, mask_id=MASK, code_offset=OFFSET, codebook_size=K, sampler="maskgit", temperature=0.0)
    linear = sample_image(uniform_fn, layout(8), SLOTS, generator=torch.Generator().manual_seed(0), **kwargs)
    mmada = sample_image(uniform_fn, layout(8), SLOTS, generator=torch.Generator().manual_seed(0), maskgit_noise="mmada", **kwargs)
    assert set((linear.tokens[:, SLOTS] - OFFSET).flatten().tolist()) == {0}
    assert set((mmada.tokens[:, SLOTS] - OFFSET).flatten().tolist()) == set(range(K))
    with pytest.raises(ValueError, match="maskgit_noise"):
        sample_image(uniform_fn, layout(1), SLOTS, maskgit_noise="cosine", **kwargs)
