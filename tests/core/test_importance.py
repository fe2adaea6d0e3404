"""Importance estimators: each estimator's per-token log-prob equals a direct computation
(mask built by hand, full forward, log_softmax, gather) on a tiny model; chunking, caching,
the coupled combination, vocabulary slices and loss masks."""

from __future__ import annotations

import math

import pytest
import torch

from maskgrpo.core.importance import (
    SpgConfig,
    ESTIMATORS,
    EstimatorInput,
    MaskGrpoConfig,
    UniGrpoConfig,
    build_views,
    cache_logprobs,
    completion_loss_valid,
    estimate_logprobs,
    estimator_config,
    get_estimator,
    token_logprobs,
    union_loss_mask,
    views_per_iteration,
)
from maskgrpo.core.masks import ar_like_mask, coupled_masks, d1_mask, random_slot_mask
from maskgrpo.core.schedules import maskgrpo_mask_rate

from .conftest import EOS, MASK, PAD, as_logits_fn, tiny_model

P, LO, MU = 4, 6, 3
COMPLETION = torch.arange(P, P + LO)


def text_input(batch: int = 4, seed: int = 0) -> EstimatorInput:
    """Rows with 0..3 columns of left padding and completions whose EOS (if any) is mid-way."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 32, (batch, P + LO), generator=g)
    pads = torch.arange(batch) % 4  # (B,)
    prompt_valid = torch.zeros(batch, P + LO, dtype=torch.bool)
    prompt_valid[:, :P] = torch.arange(P).unsqueeze(0) >= pads.unsqueeze(1)
    ids[:, :P][~prompt_valid[:, :P]] = PAD
    for b in range(batch):
        eos_at = (b * 2) % (LO + 1)  # 0, 2, 4, 6 (6: no EOS)
        ids[b, P + eos_at:] = EOS
    completion = ids[:, P:]
    return EstimatorInput(ids, COMPLETION, torch.arange(batch) + 10, prompt_valid, completion_loss_valid(completion, EOS), P)


def direct_logprobs(model, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hand-built: x_masked = where(mask, MASK, x); log_softmax of the full logits; pick the
    clean token at each completion column. (B, LO)."""
    x_masked = torch.where(mask, torch.full_like(input_ids, MASK), input_ids)
    with torch.no_grad():
        logp = torch.log_softmax(model(x_masked).logits.float(), dim=-1)  # (B, L, V), full logits
    out = torch.empty(input_ids.shape[0], LO)
    for b in range(input_ids.shape[0]):
        for k in range(LO):
            out[b, k] = logp[b, P + k, input_ids[b, P + k]]
    return out


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=4)


def estimate(model, name, inp, seed, j, **options):
    views = build_views(name, inp, seed, j, MU, MASK, estimator_config(name, **options))
    with torch.no_grad():
        return views, estimate_logprobs(as_logits_fn(model), views, inp)


@pytest.mark.parametrize("j", [1, 3])
def test_maskgrpo_equals_direct_computation(model, j):
    inp = text_input()
    views, est = estimate(model, "maskgrpo", inp, 77, j, min_mask_rate=0.6)
    mask = ar_like_mask(77, inp.row_ids, P, LO, maskgrpo_mask_rate(j, MU, 0.6))  # (B, L)
    masked = mask[:, P:]
    expected = torch.where(masked, direct_logprobs(model, inp.input_ids, mask), torch.zeros(()))
    assert torch.allclose(est, expected, atol=1e-5)
    assert torch.equal(views.loss_mask, masked & inp.loss_valid)  # scored tokens stop at the first EOS


def test_maskgrpo_sequence_span_equals_direct_computation(model):
    inp = text_input()
    views, est = estimate(model, "maskgrpo", inp, 5, 2, ar_span="sequence")
    mask = ar_like_mask(5, inp.row_ids, P, LO, maskgrpo_mask_rate(2, MU, 0.6), span="sequence",
                        unpadded_prompt_lengths=inp.prompt_valid[:, :P].sum(1))
    expected = torch.where(mask[:, P:], direct_logprobs(model, inp.input_ids, mask), torch.zeros(()))
    assert torch.allclose(est, expected, atol=1e-5)


def test_d1_equals_direct_computation(model):
    inp = text_input()
    views, est = estimate(model, "d1", inp, 3, 1)
    mask = d1_mask(3, inp.row_ids, inp.prompt_valid[:, :P], LO)
    assert bool(mask[:, P:].all())
    assert torch.allclose(est, direct_logprobs(model, inp.input_ids, mask), atol=1e-5)
    assert torch.equal(views.loss_mask, inp.loss_valid)  # every completion token up to the first EOS


def test_unigrpo_equals_direct_computation(model):
    inp = text_input(batch=8)
    views, est = estimate(model, "unigrpo", inp, 11, 1)
    mask = views.inputs[0] == MASK
    assert not bool(mask[:, :P].any())  # prompt never masked
    expected = torch.where(mask[:, P:], direct_logprobs(model, inp.input_ids, mask), torch.zeros(()))
    assert torch.allclose(est, expected, atol=1e-5)
    # t ~ U(0, 1) per row: different rows get different rates (not all rows mask alike).
    assert len(set(mask[:, P:].sum(1).tolist())) > 1


def test_coupled_equals_direct_computation(model):
    # l_k = 1/2 [l_full + (l_M / t if k in M else l_notM / (1 - t))], written out per token.
    inp = text_input()
    _, est = estimate(model, "coupled", inp, 8, 1)
    t, m = coupled_masks(8, inp.row_ids, P, LO)
    full = torch.zeros_like(m)
    full[:, P:] = True
    lp_full = direct_logprobs(model, inp.input_ids, full)
    lp_m = direct_logprobs(model, inp.input_ids, m)
    lp_not = direct_logprobs(model, inp.input_ids, full & ~m)
    expected = torch.empty(4, LO)
    for b in range(4):
        tb = float(t[b])
        assert 0.2 <= tb <= 0.8
        for k in range(LO):
            half = lp_m[b, k] / tb if m[b, P + k] else lp_not[b, k] / (1 - tb)
            expected[b, k] = 0.5 * (lp_full[b, k] + half)
    assert torch.allclose(est, expected, atol=1e-5)


def test_coupled_coefficients_literal():
    # coef[0] = 1/2 everywhere; coef[1] = 1/(2t) on M, 0 off it; coef[2] = 1/(2(1 - t)) off M.
    inp = text_input()
    views = build_views("coupled", inp, 8, 1, 1, MASK)
    t, m = coupled_masks(8, inp.row_ids, P, LO)
    in_m = m[:, P:].float()
    assert views.inputs.shape == (3, 4, P + LO) and views.coef.shape == (3, 4, LO)
    assert bool((views.coef[0] == 0.5).all())
    assert torch.allclose(views.coef[1], in_m * 0.5 / t.unsqueeze(1))
    assert torch.allclose(views.coef[2], (1 - in_m) * 0.5 / (1 - t.unsqueeze(1)))
    # Each token's weights on the two partial views: exactly one of them is non-zero.
    assert bool(((views.coef[1] > 0) ^ (views.coef[2] > 0)).all())


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_chunk_rows_does_not_change_results(model, name):
    inp = text_input(batch=6)
    views = build_views(name, inp, 21, 2, MU, MASK)
    fn = as_logits_fn(model)
    with torch.no_grad():
        one = estimate_logprobs(fn, views, inp, chunk_rows=1)
        four = estimate_logprobs(fn, views, inp, chunk_rows=4)
        all_rows = estimate_logprobs(fn, views, inp, chunk_rows=64)
    assert torch.allclose(one, all_rows, atol=1e-6) and torch.allclose(four, all_rows, atol=1e-6)


def test_estimates_do_not_depend_on_the_batch_split(model):
    # Rows 10..13 scored together equal rows 10..11 and 12..13 scored apart (same row ids).
    inp = text_input()
    _, whole = estimate(model, "maskgrpo", inp, 4, 2)
    halves = []
    for rows in (slice(0, 2), slice(2, 4)):
        part = EstimatorInput(inp.input_ids[rows], COMPLETION, inp.row_ids[rows], inp.prompt_valid[rows], inp.loss_valid[rows], P)
        halves.append(estimate(model, "maskgrpo", part, 4, 2)[1])
    assert torch.allclose(whole, torch.cat(halves), atol=1e-6)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_cache_logprobs_shapes_and_per_iteration_values(model, name):
    inp = text_input()
    seeds = [101, 102, 103]
    fn = as_logits_fn(model)
    cached = cache_logprobs(fn, name, inp, seeds, MASK)
    assert cached.logprobs.shape == (MU, 4, LO) and cached.logprobs.dtype == torch.float32
    assert cached.loss_masks.shape == (MU, 4, LO) and cached.loss_masks.dtype == torch.bool
    assert cached.masked.shape == (MU, 4, LO)
    for j, seed in enumerate(seeds, start=1):
        views = build_views(name, inp, seed, j, MU, MASK)
        with torch.no_grad():
            assert torch.allclose(cached.logprobs[j - 1], estimate_logprobs(fn, views, inp), atol=1e-6)
        assert torch.equal(cached.loss_masks[j - 1], views.loss_mask)


def test_maskgrpo_cached_masks_grow_with_the_iteration():
    # r_j = 0.6 + 0.4 j / 3 = 0.733, 0.867, 0.999: the masked fraction over 400 rows x 6 tokens
    # lies within 5 sigma (<= 5 * 0.5 / sqrt(2400) = 0.051) of r_j.
    batch = 400
    ids = torch.randint(3, 32, (batch, P + LO), generator=torch.Generator().manual_seed(0))
    valid = torch.ones(batch, P + LO, dtype=torch.bool)
    inp = EstimatorInput(ids, COMPLETION, torch.arange(batch), valid, torch.ones(batch, LO, dtype=torch.bool), P)
    zeros = lambda x, pos: torch.zeros(x.shape[0], pos.shape[1], 32)  # noqa: E731 (only masks matter here)
    cached = cache_logprobs(zeros, "maskgrpo", inp, [1, 2, 3], MASK)
    for j in range(3):
        rate = maskgrpo_mask_rate(j + 1, 3, 0.6)
        assert abs(float(cached.masked[j].float().mean()) - rate) < 0.051
    # uniform logits over 32 tokens: every scored token has log-prob log(1/32)
    assert torch.allclose(cached.logprobs[cached.masked], torch.tensor(-math.log(32.0)))


def test_token_logprobs_vocab_slice_literal():
    # Logits [0, 0, 1, 2, 3, 0] over 6 ids; codebook = ids 2..4 (offset 2, size 3). Target id 4 =
    # code 2: log softmax over [1, 2, 3] at 3 = 3 - log(e + e^2 + e^3) = 3 - 3.40761 = -0.40761.
    row = torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0, 0.0])

    def fn(ids, positions):
        return row.expand(ids.shape[0], positions.shape[1], -1)

    lp = token_logprobs(fn, torch.zeros(1, 3, dtype=torch.long), torch.tensor([1, 2]), torch.tensor([[4, 2]]),
                        vocab_slice=(2, 3))
    assert lp[0, 0].item() == pytest.approx(3 - math.log(math.e + math.e**2 + math.e**3), abs=1e-6)
    assert lp[0, 1].item() == pytest.approx(1 - math.log(math.e + math.e**2 + math.e**3), abs=1e-6)
    full = token_logprobs(fn, torch.zeros(1, 3, dtype=torch.long), torch.tensor([1]), torch.tensor([[4]]))
    assert full[0, 0].item() == pytest.approx(3 - math.log(3 + math.e + math.e**2 + math.e**3), abs=1e-6)


@pytest.mark.parametrize("name", ["maskgrpo", "unigrpo"])
def test_image_estimators_mask_only_slots_and_score_codes_only(name):
    # Image layout: 2 text columns, 12 slots holding codes (ids 10..17), 1 end column.
    vocab, offset, size, batch = 24, 10, 8, 5
    slots = torch.arange(2, 14)
    g = torch.Generator().manual_seed(1)
    ids = torch.full((batch, 15), 3)
    ids[:, slots] = offset + torch.randint(0, size, (batch, 12), generator=g)
    inp = EstimatorInput(ids, slots, torch.arange(batch), torch.zeros(batch, 15, dtype=torch.bool),
                         torch.ones(batch, 12, dtype=torch.bool), ramp_start=None, vocab_slice=(offset, size))
    model = tiny_model(seed=5, vocab_size=vocab)
    config = MaskGrpoConfig(min_mask_rate=0.8) if name == "maskgrpo" else UniGrpoConfig()
    views = build_views(name, inp, 9, 2, 4, MASK, config)
    mask = views.inputs[0] == MASK  # (B, L)
    outside = torch.ones(15, dtype=torch.bool)
    outside[slots] = False
    assert not bool(mask[:, outside].any())
    if name == "maskgrpo":  # r_2 = 0.8 + 0.2 * 2 / 4 = 0.9 i.i.d. over the slots
        expected_mask = random_slot_mask(9, inp.row_ids, views.inputs[0] != -1, 0.9) & ~outside
        assert torch.equal(mask, expected_mask)
    with torch.no_grad():
        est = estimate_logprobs(as_logits_fn(model), views, inp)
        logits = model(views.inputs[0]).logits[:, slots, offset:offset + size]  # (B, 12, 8)
        direct = torch.log_softmax(logits, -1).gather(-1, (ids[:, slots] - offset).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(est, torch.where(mask[:, slots], direct, torch.zeros(())), atol=1e-5)


def test_completion_loss_valid_stops_at_the_first_eos():
    # Up to and including the first EOS (id 1); everything after it is padding.
    completion = torch.tensor([[5, 1, 1, 1], [5, 6, 7, 8], [1, 5, 1, 6]])
    assert completion_loss_valid(completion, EOS).tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [True, False, False, False],
    ]


def test_union_loss_mask_literal():
    masked = torch.tensor([[[True, False, False, False]], [[False, False, True, False]]])  # (mu=2, B=1, N=4)
    assert union_loss_mask(masked).tolist() == [[True, False, True, False]]


def test_registry_errors_and_view_counts():
    with pytest.raises(ValueError, match="unknown estimator 'ppo'; valid: coupled, d1, espo, maskgrpo, random, spg, unigrpo, wd1"):
        get_estimator("ppo")
    names = ("coupled", "d1", "maskgrpo", "unigrpo", "random", "spg", "wd1", "espo")
    assert [views_per_iteration(n) for n in names] == [3, 1, 1, 1, 1, 2, 1, 2]
    assert views_per_iteration("spg", SpgConfig(num_views=3)) == 3


def test_text_estimators_need_the_completion_last():
    inp = text_input()
    bad = inp._replace(target_positions=torch.arange(P - 1, P - 1 + LO))
    with pytest.raises(ValueError, match="completion to occupy the last columns"):
        build_views("maskgrpo", bad, 1, 1, MU, MASK)


@pytest.mark.parametrize("name", ["d1", "coupled", "spg", "wd1", "espo"])
def test_text_only_estimators_refuse_image_slots(name):
    inp = text_input()._replace(ramp_start=None)
    with pytest.raises(ValueError, match=f"estimator '{name}' needs a text completion .*support: maskgrpo, random, unigrpo"):
        build_views(name, inp, 1, 1, MU, MASK)


def test_configs_are_typed_and_strict():
    inp = text_input()
    assert estimator_config("maskgrpo", min_mask_rate=0.7) == MaskGrpoConfig(min_mask_rate=0.7, ar_span="completion")
    with pytest.raises(ValueError, match="estimator 'd1' takes prompt_mask_prob; got min_mask_rate"):
        estimator_config("d1", min_mask_rate=0.7)
    with pytest.raises(ValueError, match="estimator 'unigrpo' takes no options; got t_low"):
        estimator_config("unigrpo", t_low=0.1)
    with pytest.raises(ValueError, match="estimator 'd1' takes a D1Config, got MaskGrpoConfig"):
        build_views("d1", inp, 1, 1, MU, MASK, MaskGrpoConfig())
    with pytest.raises(AttributeError):  # frozen
        MaskGrpoConfig().min_mask_rate = 0.1  # type: ignore[misc]


def test_random_estimator_is_bernoulli_r_j_over_the_completion_only():
    # the paper's "seeded masks" step: r_j = 0.6 + 0.4 j / mu; prompt never masked; 1/t = 1/r_j
    rows = 2000
    ids = torch.randint(3, 32, (rows, P + LO))
    inp = EstimatorInput(ids, COMPLETION, torch.arange(rows), torch.ones(rows, P + LO, dtype=torch.bool),
                         torch.ones(rows, LO, dtype=torch.bool), P)
    for j in (1, 3):
        views = build_views("random", inp, 9, j, MU, MASK)
        rate = maskgrpo_mask_rate(j, MU, 0.6)
        masked = views.inputs[0] == MASK
        assert not masked[:, :P].any()
        per_position = masked[:, P:].double().mean(0)  # no ramp: every position at r_j
        assert torch.all((per_position - rate).abs() < 5 * math.sqrt(rate * (1 - rate) / rows))
        assert torch.allclose(views.elbo_weight, torch.full((rows,), 1 / rate))


def test_elbo_weights_of_the_estimators():
    inp = text_input()
    assert torch.equal(build_views("d1", inp, 1, 1, MU, MASK).elbo_weight, torch.ones(4))
    assert torch.allclose(build_views("maskgrpo", inp, 1, 2, MU, MASK).elbo_weight, torch.full((4,), 1 / maskgrpo_mask_rate(2, MU, 0.6)))
    uni = build_views("unigrpo", inp, 5, 1, MU, MASK)
    t = 1 / uni.elbo_weight  # the row's t; its mask rate over many columns would match it
    assert bool(((t > 0) & (t <= 1)).all()) and len(set(t.tolist())) == 4


def test_spg_views_block_structure():
    # L_o = 6, block 2 -> 3 blocks; every view: earlier blocks clean, the chosen block partly
    # masked (>= 1 answer token), later blocks and post-EOS positions masked; the prompt masked
    # only at real tokens. coef = masked / views.
    inp = text_input(batch=4)
    views = build_views("spg", inp, 3, 1, MU, MASK, SpgConfig(block_length=2, num_views=2, prompt_mask_prob=0.5))
    assert views.inputs.shape == (2, 4, P + LO)
    for v in range(2):
        for b in range(4):
            m = (views.inputs[v, b, P:] == MASK).tolist()
            length = int(inp.loss_valid[b].sum())
            first = m.index(True)  # the first masked completion column
            block = first // 2
            assert not any(m[:block * 2])  # earlier blocks clean
            assert all(m[(block + 1) * 2:]) and all(m[length:])  # later blocks, post-answer
            assert first < length  # the chosen block lies in the answer
            prompt_masked = views.inputs[v, b, :P] == MASK
            assert not (prompt_masked & ~inp.prompt_valid[b, :P]).any()
    assert torch.equal(views.coef, (views.inputs[:, :, P:] == MASK).float() / 2)


def test_espo_views_are_an_elbo_with_its_complement():
    # two views: M (x masked of L_o) and its complement; coef 1/(2t) on M, 1/(2 (L_o/(L_o+1) - t)) off it
    inp = text_input(batch=4)
    views = build_views("espo", inp, 8, 1, MU, MASK)
    m = views.inputs[0, :, P:] == MASK
    assert torch.equal(views.inputs[1, :, P:] == MASK, ~m)
    assert not (views.inputs[:, :, :P] == MASK).any()
    t = m.sum(1).float() / (LO + 1)
    for b in range(4):
        if m[b].any():
            assert torch.allclose(views.coef[0, b][m[b]], 0.5 / t[b])
        if (~m[b]).any():
            assert torch.allclose(views.coef[1, b][~m[b]], 0.5 / (LO / (LO + 1) - t[b]))
        assert float(views.coef[0, b][~m[b]].abs().sum()) == 0 and float(views.coef[1, b][m[b]].abs().sum()) == 0
    assert bool(views.loss_mask.all())


def test_coverage_scoring_reads_visible_tokens_too(model):
    # cache_logprobs(visible=True): every completion position carries the model's log-prob under
    # the iteration's masked input (visible positions included); ``masked`` keeps the mask itself.
    inp = text_input()
    seeds = [4, 5, 6]
    cached = cache_logprobs(as_logits_fn(model), "maskgrpo", inp, seeds, MASK, visible=True)
    plain = cache_logprobs(as_logits_fn(model), "maskgrpo", inp, seeds, MASK)
    assert torch.equal(cached.masked, plain.masked)
    for j, seed in enumerate(seeds, start=1):
        mask = ar_like_mask(seed, inp.row_ids, P, LO, maskgrpo_mask_rate(j, 3, 0.6))
        direct = direct_logprobs(model, inp.input_ids, mask)
        assert torch.allclose(cached.logprobs[j - 1], direct, atol=1e-5)
        visible = ~mask[:, P:]
        assert bool((cached.logprobs[j - 1][visible] != 0).all())
        assert float(plain.logprobs[j - 1][visible].abs().sum()) == 0.0
    with pytest.raises(ValueError, match="single-view"):
        cache_logprobs(as_logits_fn(model), "coupled", inp, seeds, MASK, visible=True)
    masks_only = cache_logprobs(None, "wd1", inp, seeds, MASK)
    assert masks_only.logprobs.numel() == 0 and masks_only.masked.shape == (3, 4, LO)


def test_official_ramp_in_the_estimator_uses_each_rows_prompt():
    # ar_span 'sequence': the row's unpadded prompt length (prompt_valid) sets the ramp
    inp = text_input()
    views = build_views("maskgrpo", inp, 5, 2, MU, MASK, MaskGrpoConfig(ar_span="sequence"))
    unpadded = inp.prompt_valid[:, :P].sum(1)
    mask = ar_like_mask(5, inp.row_ids, P, LO, maskgrpo_mask_rate(2, MU, 0.6), span="sequence", unpadded_prompt_lengths=unpadded)
    assert torch.equal(views.inputs[0] == MASK, mask)
