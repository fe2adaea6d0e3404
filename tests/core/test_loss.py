"""The clipped surrogate with the k3 KL penalty: literal values and gradients, a hand-written
autograd reference, the normalisation and ratio options, and one real update step."""

from __future__ import annotations

import math

import pytest
import torch

from maskgrpo.core.advantages import group_advantages
from maskgrpo.core.importance import (
    EstimatorInput, build_views, cache_logprobs, completion_loss_valid, coverage_weights, estimate_logprobs,
)
from maskgrpo.core.loss import grpo_loss, group_token_weights

from .conftest import EOS, MASK, as_logits_fn, tiny_model


def leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


def test_ratio_one_gives_minus_mean_advantage_over_weighted_tokens():
    # pi = old -> rho = 1, no clipping: loss_k = -A. Weights [[1, 1, 0], [1, 0, 0]], A = [1, -0.5]:
    # token mean (-1 - 1 + 0.5) / 3 = -0.5; sequence mean (-1 + 0.5) / 2 = -0.25.
    pi = leaf([[0.3, -1.0, 2.0], [0.5, 0.1, -0.2]])
    weights = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -0.5])
    loss, stats = grpo_loss(pi, pi.detach(), adv, weights)
    assert loss.item() == pytest.approx(-0.5)
    assert stats.num_tokens == 3 and stats.clip_fraction == 0 and stats.ratio_deviation == 0 and stats.kl == 0
    seq, _ = grpo_loss(pi, pi.detach(), adv, weights, normalization="sequence")
    assert seq.item() == pytest.approx(-0.25)


def test_reinforce_gradient_at_ratio_one():
    # mu = 1: d loss / d l_k = -A_b w_k / sum(w): A = [1, -0.5], 4 unit weights -> [[-1/4] * 2, [1/8] * 2].
    pi = leaf([[0.0, 0.0], [0.0, 0.0]])
    loss, _ = grpo_loss(pi, pi.detach(), torch.tensor([1.0, -0.5]), torch.ones(2, 2))
    loss.backward()
    assert pi.grad.tolist() == [[-0.25, -0.25], [0.125, 0.125]]


def test_clipping_engages_beyond_one_plus_minus_eps_with_the_right_sign():
    # Four one-token rows, eps = 0.2:
    #   A = +1, rho = 1.5: -min(1.5, 1.2)   = -1.2  clipped above, gradient 0
    #   A = -1, rho = 0.5: -min(-0.5, -0.8) =  0.8  clipped below, gradient 0
    #   A = +1, rho = 0.5: -min(0.5, 0.8)   = -0.5  not clipped,   d/dl = -rho A = -0.5
    #   A = -1, rho = 1.5: -min(-1.5, -1.2) =  1.5  not clipped,   d/dl = -rho A = +1.5
    # token mean: (-1.2 + 0.8 - 0.5 + 1.5) / 4 = 0.15; gradients / 4; clip fraction 2 / 4.
    log_ratio = [[math.log(1.5)], [math.log(0.5)], [math.log(0.5)], [math.log(1.5)]]
    pi = leaf(log_ratio)
    old = torch.zeros(4, 1)
    loss, stats = grpo_loss(pi, old, torch.tensor([1.0, -1.0, 1.0, -1.0]), torch.ones(4, 1))
    loss.backward()
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    assert torch.allclose(pi.grad, torch.tensor([[0.0], [0.0], [-0.125], [0.375]]), atol=1e-6)
    assert stats.clip_fraction == 0.5
    assert stats.ratio_deviation == pytest.approx(0.5)


def test_asymmetric_epsilon_high():
    # A = +1, rho = 1.25: clipped at 1.2 with eps 0.2 (gradient 0), not with eps_high 0.28
    # (loss -1.25, gradient -rho A = -1.25).
    pi = leaf([[math.log(1.25)]])
    loss, stats = grpo_loss(pi, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(-1.2) and stats.clip_fraction == 1.0
    pi2 = leaf([[math.log(1.25)]])
    loss2, stats2 = grpo_loss(pi2, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1), epsilon_high=0.28)
    loss2.backward()
    assert loss2.item() == pytest.approx(-1.25) and stats2.clip_fraction == 0.0
    assert pi2.grad.item() == pytest.approx(-1.25)


def test_kl_is_zero_when_reference_equals_policy():
    pi = leaf([[0.2, -0.7], [-1.0, -3.0]])
    adv = torch.tensor([0.5, -2.0])
    plain, _ = grpo_loss(pi, pi.detach() + 0.1, adv, torch.ones(2, 2))
    with_kl, stats = grpo_loss(pi, pi.detach() + 0.1, adv, torch.ones(2, 2), ref_logprobs=pi.detach(), beta=0.5)
    assert stats.kl == 0.0
    assert with_kl.item() == pytest.approx(plain.item())


def test_k3_kl_literal_value_and_gradient():
    # l_ref - l_theta = log 2: KL = e^{log 2} - log 2 - 1 = 2 - 0.693147 - 1 = 0.306853.
    # A = 0, beta = 0.1: loss = 0.0306853; d/dl_theta [e^{ref - l} - (ref - l) - 1] = 1 - e^{ref - l}
    # = 1 - 2 = -1, times beta: -0.1 (the update pulls the policy towards the reference).
    pi = leaf([[0.0]])
    loss, stats = grpo_loss(pi, torch.zeros(1, 1), torch.tensor([0.0]), torch.ones(1, 1),
                            ref_logprobs=torch.tensor([[math.log(2.0)]]), beta=0.1)
    loss.backward()
    assert stats.kl == pytest.approx(2 - math.log(2) - 1)
    assert loss.item() == pytest.approx(0.1 * (2 - math.log(2) - 1))
    assert pi.grad.item() == pytest.approx(-0.1)


def reference_loss(pi, old, ref, adv, weights, beta, eps):
    """Hand-written per-token GRPO loss, token-normalised, one scalar op at a time."""
    total = torch.zeros(())
    for b in range(pi.shape[0]):
        for k in range(pi.shape[1]):
            rho = torch.exp(pi[b, k] - old[b, k])
            objective = torch.minimum(rho * adv[b], torch.clamp(rho, 1 - eps, 1 + eps) * adv[b])
            d = ref[b, k] - pi[b, k]
            total = total + weights[b, k] * (-objective + beta * (torch.exp(d) - d - 1))
    return total / weights.sum()


def test_gradients_match_a_hand_written_reference():
    g = torch.Generator().manual_seed(0)
    pi_values = torch.randn(3, 5, generator=g) * 0.5 - 2.0
    old = pi_values + torch.randn(3, 5, generator=g) * 0.3  # ratios spread both sides of the clip range
    ref = pi_values + torch.randn(3, 5, generator=g) * 0.3
    adv = torch.tensor([1.3, -0.7, 0.4])
    weights = (torch.rand(3, 5, generator=g) > 0.3).float()
    pi_a = pi_values.clone().requires_grad_(True)
    pi_b = pi_values.clone().requires_grad_(True)
    loss_a, stats = grpo_loss(pi_a, old, adv, weights, ref_logprobs=ref, beta=0.04, epsilon=0.2)
    loss_b = reference_loss(pi_b, old, ref, adv, weights, beta=0.04, eps=0.2)
    loss_a.backward()
    loss_b.backward()
    assert loss_a.item() == pytest.approx(loss_b.item(), abs=1e-6)
    assert torch.allclose(pi_a.grad, pi_b.grad, atol=1e-6)
    assert 0 < stats.clip_fraction < 1  # the case exercises both regimes
    assert bool((pi_a.grad[weights == 0] == 0).all())  # unweighted tokens get no gradient


def test_float_loss_weights_and_sequence_normalisation():
    # Weights [[2, 1], [0.5, 0]] (e.g. 1/t), rho = 1, A = [1, 4]:
    #   token:    -(2 * 1 + 1 * 1 + 0.5 * 4) / 3.5 = -5 / 3.5 = -1.428571
    #   sequence: row means -(3 / 3) = -1 and -(2 / 0.5) = -4 -> (-1 - 4) / 2 = -2.5
    pi = leaf([[0.0, 0.0], [0.0, 0.0]])
    weights = torch.tensor([[2.0, 1.0], [0.5, 0.0]])
    adv = torch.tensor([1.0, 4.0])
    assert grpo_loss(pi, pi.detach(), adv, weights)[0].item() == pytest.approx(-5 / 3.5)
    assert grpo_loss(pi, pi.detach(), adv, weights, normalization="sequence")[0].item() == pytest.approx(-2.5)


def test_sequence_normalisation_skips_rows_without_tokens():
    # Row 2 has no loss tokens: it neither contributes nor counts -> -1, not (-1 + 0) / 2.
    pi = leaf([[0.0, 0.0], [0.0, 0.0]])
    weights = torch.tensor([[1, 1], [0, 0]], dtype=torch.bool)
    loss, _ = grpo_loss(pi, pi.detach(), torch.tensor([1.0, 5.0]), weights, normalization="sequence")
    assert loss.item() == pytest.approx(-1.0)


def test_sequence_level_ratio():
    # Weights [1, 1, 0], l - l_old = [0.1, 0.2, 5.0]: one ratio exp(0.1 + 0.2) = 1.349859 (the
    # unweighted 5.0 does not count). A = +1: clipped at 1.2 -> loss -1.2, zero gradient.
    # A = -1: -min(-1.3499, -1.2) = 1.3499 on each of the two weighted tokens (not clipped).
    weights = torch.tensor([[1.0, 1.0, 0.0]])
    rho = math.exp(0.3)
    pi = leaf([[0.1, 0.2, 5.0]])
    loss, stats = grpo_loss(pi, torch.zeros(1, 3), torch.tensor([1.0]), weights, ratio_level="sequence")
    loss.backward()
    assert loss.item() == pytest.approx(-1.2) and stats.clip_fraction == 1.0
    assert pi.grad.tolist() == [[0.0, 0.0, 0.0]]
    pi = leaf([[0.1, 0.2, 5.0]])
    loss, _ = grpo_loss(pi, torch.zeros(1, 3), torch.tensor([-1.0]), weights, ratio_level="sequence")
    loss.backward()
    assert loss.item() == pytest.approx(rho, abs=1e-5)
    # loss = (rho + rho) / 2 and d rho / d l_k = rho w_k, so the gradient is rho w_k.
    assert torch.allclose(pi.grad, torch.tensor([[rho, rho, 0.0]]), atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"normalization": "batch"}, "normalization must be 'token', 'group' or 'sequence'"),
    ({"ratio_level": "block"}, "ratio_level must be 'token' or 'sequence'"),
])
def test_option_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        grpo_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), **kwargs)


def test_one_update_step_changes_every_parameter_and_improves_the_surrogate():
    # Tiny model + maskgrpo estimator + loss + AdamW (no weight decay, so a parameter moves only
    # if it got a gradient). Two prompts x G = 2 completions, rewards [1, 0, 0, 1].
    model = tiny_model(seed=6)
    fn = as_logits_fn(model)
    prompt_len, completion_len, batch = 4, 6, 4
    ids = torch.randint(3, 32, (batch, prompt_len + completion_len), generator=torch.Generator().manual_seed(1))
    ids[:2, :prompt_len] = ids[0, :prompt_len]  # group 1 shares a prompt
    ids[2:, :prompt_len] = ids[2, :prompt_len]  # group 2 shares a prompt
    ids[1, -2:] = EOS
    valid = torch.zeros_like(ids, dtype=torch.bool)
    valid[:, :prompt_len] = True
    inp = EstimatorInput(ids, torch.arange(prompt_len, prompt_len + completion_len), torch.arange(batch), valid,
                         completion_loss_valid(ids[:, prompt_len:], EOS), prompt_len)
    adv, _ = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2)
    seeds = [31, 32]
    model.eval()
    old = cache_logprobs(fn, "maskgrpo", inp, seeds, MASK)  # rollout-time cache (also the reference)
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    views = build_views("maskgrpo", inp, seeds[0], 1, len(seeds), MASK)
    pi = estimate_logprobs(fn, views, inp)
    loss, stats = grpo_loss(pi, old.logprobs[0], adv, old.loss_masks[0], ref_logprobs=old.logprobs[0], beta=0.01)
    assert stats.ratio_deviation < 1e-5  # same weights, same mask: rho = 1 at the first iteration
    loss.backward()
    optimizer.step()
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    assert names  # TinyMDM ties lm_head to the embedding: one shared parameter
    unchanged = [name for name in names if torch.equal(before[name], dict(model.named_parameters())[name])]
    assert unchanged == []
    with torch.no_grad():
        surrogate_before, _ = grpo_loss(pi, old.logprobs[0], adv, old.loss_masks[0])  # -mean(A) at rho = 1
        surrogate_after, _ = grpo_loss(estimate_logprobs(fn, views, inp), old.logprobs[0], adv, old.loss_masks[0])
    assert surrogate_after.item() < surrogate_before.item()  # the surrogate moved the right way


def test_group_normalisation_literal_43_49_42_33():
    # Four prompt groups of two rows with 20+23, 25+24, 21+21, 16+17 = 43, 49, 42, 33 loss tokens;
    # rho = 1 so loss_k = -A of the row: A = -0.5, 0.2, -0.4, -0.1 per group -> per-token losses
    # 0.5, -0.2, 0.4, 0.1. Group mean: (0.5 - 0.2 + 0.4 + 0.1) / 4 = 0.2; minibatch token mean:
    # (43 * 0.5 - 49 * 0.2 + 42 * 0.4 + 33 * 0.1) / 167 = 31.8 / 167 = 0.190419.
    counts = [20, 23, 25, 24, 21, 21, 16, 17]
    weights = torch.zeros(8, 30, dtype=torch.bool)
    for row, n in enumerate(counts):
        weights[row, :n] = True
    adv = torch.tensor([-0.5, -0.5, 0.2, 0.2, -0.4, -0.4, -0.1, -0.1])
    groups = torch.arange(8) // 2
    pi = leaf(torch.zeros(8, 30).tolist())
    token, _ = grpo_loss(pi, pi.detach(), adv, weights)
    group, _ = grpo_loss(pi, pi.detach(), adv, weights, normalization="group", group_ids=groups)
    assert token.item() == pytest.approx(31.8 / 167, abs=1e-6)
    assert group.item() == pytest.approx(0.2, abs=1e-6)
    # the update's route: group token weights (each group sums to 1) with the token mean, split in
    # two parts rescaled by their share of the denominator, gives the same loss and gradient
    gw = group_token_weights(weights, groups)
    assert torch.allclose(gw.sum(dim=1).view(4, 2).sum(dim=1), torch.ones(4))
    pi2 = leaf(torch.zeros(8, 30).tolist())
    total = 0.0
    for part in (slice(0, 3), slice(3, 8)):
        loss, _ = grpo_loss(pi2[part], pi2[part].detach(), adv[part], gw[part])
        total = total + loss * (gw[part].sum() / gw.sum())
    total.backward()
    group.backward()
    assert float(total) == pytest.approx(0.2, abs=1e-6)
    assert torch.allclose(pi2.grad, pi.grad, atol=1e-7)
    with pytest.raises(ValueError, match="group_ids"):
        grpo_loss(pi, pi.detach(), adv, weights, normalization="group")


def test_both_clip_fractions_literal():
    # eps = 0.2, one token per row:
    #   A = +1, rho = 1.5: clipped region (min keeps 1.2 A): clip_fraction; rho A = 1.5 > 1.2: not in clip_ratio
    #   A = -1, rho = 1.5: rho A = -1.5 < clip A = -1.2: out of range, min keeps rho A: clip_ratio only
    #   A = +1, rho = 0.5: rho A = 0.5 < 0.8: clip_ratio only
    #   A = +1, rho = 1.1: inside the range: neither
    log_ratio = [[math.log(1.5)], [math.log(1.5)], [math.log(0.5)], [math.log(1.1)]]
    _, stats = grpo_loss(leaf(log_ratio), torch.zeros(4, 1), torch.tensor([1.0, -1.0, 1.0, 1.0]), torch.ones(4, 1))
    assert stats.clip_fraction == 0.25
    assert stats.clip_ratio == 0.5


def test_sequence_ratio_uses_the_one_over_t_weights():
    # One row, masked tokens k = 0, 1 with l_theta - l_old = 0.05 and 0.1, t = 0.75 -> 1/t = 4/3:
    # log rho = 4/3 * 0.15 = 0.2 -> rho = exp(0.2) = 1.2214 > 1.2 with A = +1: clipped (loss -1.2, gradient 0).
    # Without the weights log rho = 0.15 -> rho = 1.1618: not clipped, loss -1.1618.
    pi = leaf([[0.05, 0.1, 0.3]])
    weights = torch.tensor([[1.0, 1.0, 0.0]])
    loss, stats = grpo_loss(pi, torch.zeros(1, 3), torch.tensor([1.0]), weights, ratio_level="sequence",
                            sequence_weights=torch.tensor([4 / 3]))
    assert loss.item() == pytest.approx(-1.2, abs=1e-6) and stats.clip_fraction == 1.0
    plain, _ = grpo_loss(pi, torch.zeros(1, 3), torch.tensor([1.0]), weights, ratio_level="sequence")
    assert plain.item() == pytest.approx(-math.exp(0.15), abs=1e-6)


def test_coverage_weighting_reproduces_the_official_compute_loss():
    # mu = 3 masks over 4 completion tokens: coverage counts [2, 0, 2, 3]. The official loss of
    # iteration j: sum_k (per-token loss_k * count_k) / sum_k count_k, with per-token losses at
    # every position (visible ones included). rho = 1: loss_k = -A = -0.7 -> -0.7; gradients
    # -A count_k / 7 = [-0.2, 0, -0.2, -0.3].
    masked = torch.tensor([[[1, 0, 1, 1]], [[0, 0, 1, 1]], [[1, 0, 0, 1]]], dtype=torch.bool)
    counts = coverage_weights(masked)
    assert counts.tolist() == [[2.0, 0.0, 2.0, 3.0]]
    pi = leaf([[-0.3, -1.0, -0.2, -2.0]])
    loss, stats = grpo_loss(pi, pi.detach(), torch.tensor([0.7]), counts)
    loss.backward()
    assert loss.item() == pytest.approx(-0.7) and stats.num_tokens == 7
    assert torch.allclose(pi.grad, torch.tensor([[-0.2, 0.0, -0.2, -0.3]]))
