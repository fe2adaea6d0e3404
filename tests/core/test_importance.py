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
    mask = ar_like_mask(5, inp.row_ids, P, LO, maskgrpo_mask_rate(2, MU, 0.6), span="sequence")
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
