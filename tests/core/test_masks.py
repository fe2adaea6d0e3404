"""Seeded masks: per-position statistics, prompt/padding rules, batch-split invariance.

Statistical checks use a fixed seed and a tolerance of 5 binomial standard deviations,
sqrt(p (1 - p) / n), so a correct implementation fails with probability < 1e-6 per check.
"""

from __future__ import annotations

import math

import pytest
import torch

from maskgrpo.core.importance import CoupledConfig, EstimatorInput, coupled_views
from maskgrpo.core.masks import (
    ar_like_keep_prob,
    ar_like_mask,
    bernoulli_completion_mask,
    coupled_masks,
    d1_mask,
    random_slot_mask,
    row_seed,
    row_uniforms,
)

ROWS = 4000


def binomial_tol(p: torch.Tensor | float, n: int, sigmas: float = 5.0) -> torch.Tensor:
    """sigmas * sqrt(p (1 - p) / n), with a floor for p at 0 or 1 (then the check is exact)."""
    p = torch.as_tensor(p, dtype=torch.float64)
    return sigmas * torch.sqrt(p * (1 - p) / n) + 1e-9


def test_row_seed_is_deterministic_and_separates_rows_streams_and_seeds():
    assert row_seed(7, 3) == row_seed(7, 3)
    assert len({row_seed(7, r) for r in range(1000)}) == 1000
    assert row_seed(7, 3, stream=0) != row_seed(7, 3, stream=1)
    assert row_seed(7, 3) != row_seed(8, 3)
    assert 0 <= row_seed(2**70, 2**65) < 2**63


def test_row_uniforms_are_uniform():
    u = row_uniforms(11, torch.arange(ROWS), 8)  # 32000 draws
    assert u.shape == (ROWS, 8) and u.dtype == torch.float32
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    # mean of U(0,1) = 1/2, std of the mean = sqrt(1/12) / sqrt(32000) = 0.0016; 5 sigma = 0.008.
    assert abs(float(u.mean()) - 0.5) < 0.008


def test_ar_like_keep_prob_literal():
    # r = 0.75, L_o = 5: u_n = n / 4 = 0, .25, .5, .75, 1 and kappa_n = min(1, 2 * 0.25 * (1 - u_n))
    # = 0.5, 0.375, 0.25, 0.125, 0: masking probabilities 0.5 .. 1, mean 3.75 / 5 = 0.75 = r.
    keep = ar_like_keep_prob(0.75, prompt_len=3, completion_len=5)
    assert torch.allclose(keep, torch.tensor([0.5, 0.375, 0.25, 0.125, 0.0]))
    assert float(1 - keep.mean()) == pytest.approx(0.75)


def test_ar_like_keep_prob_below_half_masks_more_than_r():
    # r = 0.3: 2 * 0.7 * (1 - u) = 1.4, 1.05, 0.7, 0.35, 0 -> clamped to 1, 1, 0.7, 0.35, 0:
    # masked fraction (0 + 0 + 0.3 + 0.65 + 1) / 5 = 0.39 > 0.3 (exactness holds only for r >= 0.5).
    keep = ar_like_keep_prob(0.3, prompt_len=3, completion_len=5)
    assert torch.allclose(keep, torch.tensor([1.0, 1.0, 0.7, 0.35, 0.0]))
    assert float(1 - keep.mean()) == pytest.approx(0.39)


def test_ar_like_sequence_span_literal_and_masks_more():
    # The official ramp: P = 3, L_o = 5, L = 8, r = 0.75; completion token n sits at p = 3 + n and
    # keep(p) = min(1, 0.5 (1 - (p - 1) / (L - 2))) = 0.5 (1 - (2 + n) / 6) = 0.5 * 4/6, 3/6, 2/6, 1/6, 0.
    keep = ar_like_keep_prob(0.75, prompt_len=3, completion_len=5, span="sequence")
    assert torch.allclose(keep, 0.5 * torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0]) / 6)
    paper = ar_like_keep_prob(0.75, prompt_len=3, completion_len=5)
    assert bool((keep <= paper).all()) and float(keep.sum()) < float(paper.sum())
    with pytest.raises(ValueError, match="ar_span"):
        ar_like_keep_prob(0.75, 3, 5, span="prompt")


def test_ar_like_sequence_span_uses_each_rows_unpadded_length():
    # P = 20 real prompt tokens (padded to 60), L_o = 40, r = 0.6: L = 60, the first completion token
    # is at p = 20: keep = min(1, 0.8 (1 - 19 / 58)) = 0.8 * 39 / 58 = 0.53793; last (p = 59): 0.
    # The padded width would give p = 60, L = 100: 0.8 (1 - 59 / 98) = 0.31837 (masks more).
    keep = ar_like_keep_prob(0.6, torch.tensor([20, 60]), 40, span="sequence")  # (2, 40)
    assert keep.shape == (2, 40)
    assert float(keep[0, 0]) == pytest.approx(0.8 * 39 / 58, abs=1e-6)
    assert float(keep[1, 0]) == pytest.approx(0.8 * 39 / 98, abs=1e-6)
    assert float(keep[0, -1]) == 0.0 and float(keep[1, -1]) == 0.0
    # the masked fraction of the row's completion: mean(1 - keep) over p = 20..59
    expected = 1 - sum(min(1.0, 0.8 * (1 - (p - 1) / 58)) for p in range(20, 60)) / 40
    assert float(1 - keep[0].double().mean()) == pytest.approx(expected, abs=1e-6)
    # ar_like_mask takes the per-row lengths: row 0 (unpadded 20) keeps more than row 1 (60)
    rows = torch.arange(ROWS)
    lengths = torch.where(rows % 2 == 0, 20, 60)
    mask = ar_like_mask(4, rows, 60, 40, 0.6, span="sequence", unpadded_prompt_lengths=lengths)[:, 60:]
    rate_short, rate_long = mask[0::2].double().mean(0), mask[1::2].double().mean(0)
    assert torch.all((rate_short - (1 - keep[0].double())).abs() < binomial_tol(1 - keep[0], ROWS // 2))
    assert torch.all((rate_long - (1 - keep[1].double())).abs() < binomial_tol(1 - keep[1], ROWS // 2))


def test_ar_like_mask_per_position_rate_matches_formula():
    # Empirical masking frequency at each of 16 completion positions over 4000 rows must match
    # 1 - min(1, 2 (1 - r)(1 - u_n)) within 5 binomial sigmas (at most 5 * 0.5 / sqrt(4000) = 0.04).
    prompt_len, completion_len = 4, 16
    for rate in (0.3, 0.7):
        mask = ar_like_mask(123, torch.arange(ROWS), prompt_len, completion_len, rate)
        freq = mask[:, prompt_len:].double().mean(0)  # (L_o,)
        u = torch.arange(completion_len, dtype=torch.float64) / (completion_len - 1)
        expected = 1 - torch.clamp(2 * (1 - rate) * (1 - u), max=1.0)
        assert bool(((freq - expected).abs() <= binomial_tol(expected, ROWS)).all()), (rate, freq, expected)


@pytest.mark.parametrize("rate", [0.5, 0.6, 0.8, 0.999])
def test_ar_like_mean_masked_fraction_equals_rate(rate):
    # For r >= 0.5 the expected masked fraction is exactly r (mean of 1 - u_n over the
    # positions is 1/2); the empirical mean over 4000 x 16 tokens lies within 5 sigma of it
    # (sigma <= 0.5 / sqrt(64000) = 0.002, a conservative bound for correlated positions too).
    prompt_len, completion_len = 4, 16
    keep = ar_like_keep_prob(rate, prompt_len, completion_len)
    assert float(1 - keep.double().mean()) == pytest.approx(rate, abs=1e-6)
    mask = ar_like_mask(5, torch.arange(ROWS), prompt_len, completion_len, rate)
    assert abs(float(mask[:, prompt_len:].double().mean()) - rate) < 5 * 0.5 / math.sqrt(ROWS * completion_len)


def test_ar_like_sequence_span_masks_more_empirically():
    rows = torch.arange(ROWS)
    paper = ar_like_mask(9, rows, 8, 16, 0.6)[:, 8:].float().mean()
    reference = ar_like_mask(9, rows, 8, 16, 0.6, span="sequence")[:, 8:].float().mean()
    assert float(paper) == pytest.approx(0.6, abs=0.01)
    assert float(reference) > float(paper) + 0.1  # the ramp over p = 8..23 of L = 24 keeps at most 0.8 (1 - 7/22)


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.999])
def test_ar_like_last_token_always_masked_and_prompt_never(rate):
    mask = ar_like_mask(3, torch.arange(500), 6, 10, rate)
    assert mask.shape == (500, 16)
    assert bool(mask[:, -1].all())  # kappa = 0 at u = 1 whatever r is
    assert not bool(mask[:, :6].any())


def test_bernoulli_completion_mask_rate_and_prompt():
    mask = bernoulli_completion_mask(17, torch.arange(ROWS), 5, 8, 0.3)
    assert not bool(mask[:, :5].any())
    # 32000 completion tokens at p = 0.3: sigma = sqrt(0.21 / 32000) = 0.0026.
    assert abs(float(mask[:, 5:].double().mean()) - 0.3) <= float(binomial_tol(0.3, ROWS * 8))


def test_bernoulli_completion_mask_per_row_rate():
    # A (B,) rate gives each row its own rate: rows at 0 mask nothing, rows at 1 everything.
    rate = torch.tensor([0.0, 1.0, 0.0, 1.0])
    mask = bernoulli_completion_mask(1, torch.arange(4), 2, 6, rate)
    assert mask[:, 2:].sum(1).tolist() == [0, 6, 0, 6]


def test_d1_mask_prompt_rate_on_valid_tokens_only():
    # 4000 rows with left padding of 0..5 columns out of P = 12; completion fully masked.
    prompt_len, completion_len = 12, 4
    pads = torch.arange(ROWS) % 6  # (B,)
    valid = torch.arange(prompt_len).unsqueeze(0) >= pads.unsqueeze(1)  # (B, P)
    mask = d1_mask(21, torch.arange(ROWS), valid, completion_len)
    assert mask.shape == (ROWS, prompt_len + completion_len)
    assert bool(mask[:, prompt_len:].all())
    assert not bool(mask[:, :prompt_len][~valid].any())  # padding never masked
    n_valid = int(valid.sum())
    rate = float(mask[:, :prompt_len][valid].double().mean())
    assert abs(rate - 0.15) <= float(binomial_tol(0.15, n_valid)), rate


def test_random_slot_mask_touches_only_maskable_slots_at_rate():
    # Image layout: 3 text columns, 16 slots, 1 end token; slots masked at r = 0.8.
    maskable = torch.zeros(ROWS, 20, dtype=torch.bool)
    maskable[:, 3:19] = True
    mask = random_slot_mask(4, torch.arange(ROWS), maskable, 0.8)
    assert not bool(mask[~maskable].any())
    assert abs(float(mask[maskable].double().mean()) - 0.8) <= float(binomial_tol(0.8, ROWS * 16))


def _all_masks(seed: int, row_ids: torch.Tensor) -> list[torch.Tensor]:
    valid = torch.ones(len(row_ids), 5, dtype=torch.bool)
    valid[:, 0] = row_ids % 2 == 0
    maskable = torch.zeros(len(row_ids), 13, dtype=torch.bool)
    maskable[:, 5:] = True
    t, coupled = coupled_masks(seed, row_ids, 5, 8)
    return [
        ar_like_mask(seed, row_ids, 5, 8, 0.7),
        ar_like_mask(seed, row_ids, 5, 8, 0.7, span="sequence"),
        bernoulli_completion_mask(seed, row_ids, 5, 8, 0.4),
        d1_mask(seed, row_ids, valid, 8),
        random_slot_mask(seed, row_ids, maskable, 0.5),
        coupled,
        t.unsqueeze(1),
    ]


def test_masks_do_not_depend_on_the_batch_split():
    # Rows 0..7 at once equal rows 0..2 and rows 3..7 drawn in two calls (and in reverse order):
    # each row's mask depends on (seed, row id) only.
    whole = _all_masks(99, torch.arange(8))
    first, second = _all_masks(99, torch.arange(3)), _all_masks(99, torch.arange(3, 8))
    reversed_ = _all_masks(99, torch.arange(7, -1, -1))
    for w, a, b, r in zip(whole, first, second, reversed_):
        assert torch.equal(w, torch.cat([a, b]))
        assert torch.equal(w, r.flip(0))


def test_different_seeds_give_different_masks():
    for a, b in zip(_all_masks(1, torch.arange(64)), _all_masks(2, torch.arange(64))):
        assert not torch.equal(a, b)


def test_coupled_t_range_and_mask_rate_follows_t():
    t, mask = coupled_masks(8, torch.arange(ROWS), 4, 32)
    assert float(t.min()) >= 0.2 and float(t.max()) <= 0.8
    # t ~ U(0.2, 0.8): mean 0.5, std 0.6 / sqrt(12) = 0.173, std of the mean 0.0027 -> tol 0.014.
    assert abs(float(t.mean()) - 0.5) < 0.014
    assert not bool(mask[:, :4].any())
    # Per-row masked fraction tracks that row's t: the mean of (fraction - t) is 0 within
    # 5 * sqrt(0.25 / (4000 * 32)) = 0.007.
    frac = mask[:, 4:].double().mean(1)
    assert abs(float((frac - t.double()).mean())) < 0.007
    assert float(torch.corrcoef(torch.stack([frac, t.double()]))[0, 1]) > 0.8


def test_coupled_views_masks_are_complementary():
    # The coupled estimator's views: completion fully masked, M, and its complement: M and
    # not-M partition the completion, and neither touches the prompt.
    batch, prompt_len, completion_len, mask_id = 6, 3, 8, 2
    ids = torch.randint(3, 30, (batch, prompt_len + completion_len), generator=torch.Generator().manual_seed(0))
    inp = EstimatorInput(
        input_ids=ids,
        target_positions=torch.arange(prompt_len, prompt_len + completion_len),
        row_ids=torch.arange(batch),
        prompt_valid=torch.ones(batch, prompt_len + completion_len, dtype=torch.bool),
        loss_valid=torch.ones(batch, completion_len, dtype=torch.bool),
        ramp_start=prompt_len,
    )
    views = coupled_views(inp, seed=5, iteration=1, num_iterations=1, mask_id=mask_id, config=CoupledConfig())
    full, m, not_m = (v == mask_id for v in views.inputs)  # (B, L) each
    assert bool(full[:, prompt_len:].all()) and not bool(full[:, :prompt_len].any())
    assert not bool((m & not_m).any())
    assert torch.equal(m | not_m, full)
    _, expected_m = coupled_masks(5, torch.arange(batch), prompt_len, completion_len)
    assert torch.equal(m, expected_m)
