"""SPG, wd1 and ESPO (core/objectives.py): literal values on hand-built cases, and gradients
checked against autograd of hand-written references (plain Python loops over the formulas of
the module docstring, written independently of the vectorised code)."""

from __future__ import annotations

import math

import pytest
import torch

from maskgrpo.core.objectives import (
    espo_loss_sum, spg_denominator, spg_loss_sum, spg_sequence_logprobs, wd1_denominator, wd1_loss_sum, wd1_row_weights,
)


def leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


# Two views, two rows, four completion positions. Row 0 answers 3 tokens, row 1 all 4.
LP = [[[-0.5, -1.0, -2.0, -0.3], [-0.7, -0.2, -1.5, -0.9]],
      [[-0.4, -1.2, -0.6, -0.8], [-1.1, -0.3, -0.5, -2.5]]]  # (V, B, N)
MASKS = torch.tensor([[[1, 0, 1, 1], [0, 1, 1, 0]],
                      [[1, 1, 0, 0], [1, 1, 1, 1]]], dtype=torch.bool)
VALID = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)


def spg_reference(lp, masks, valid, adv, bound, beta, omega):
    """The SPG objective, one scalar at a time."""
    views, rows, cols = len(lp), len(lp[0]), len(lp[0][0])
    total, length_sum = 0.0, 0.0
    for b in range(rows):
        length = sum(bool(valid[b, k]) for k in range(cols))
        elbo, q = 0.0, [0.0] * cols
        for v in range(views):
            picked = [k for k in range(cols) if masks[v, b, k] and valid[b, k]]
            elbo = elbo + sum(lp[v][b][k] for k in picked) / len(picked) / views
            t = len(picked) / length
            for k in picked:
                q[k] = q[k] + torch.exp(beta * lp[v][b][k]) / t / views
        logs = [torch.log(q[k]) for k in range(cols) if not isinstance(q[k], float)]
        eubo = sum(logs) / len(logs) / beta
        neg = {"elbo": elbo, "eubo": eubo, "mix": omega * eubo + (1 - omega) * elbo}[bound]
        j = elbo if adv[b] > 0 else neg
        total = total - adv[b] * length * j
        length_sum += length
    return total / length_sum


def test_spg_elbo_is_the_mean_masked_logprob_per_view_literal():
    # row 0 (valid k < 3): view 0 masks k = 0, 2 -> (-0.5 - 2.0) / 2 = -1.25; view 1 masks 0, 1 ->
    # (-0.4 - 1.2) / 2 = -0.8; ELBO = -1.025. Row 1: view 0 k = 1, 2 -> -0.85; view 1 all four ->
    # -4.4 / 4 = -1.1; ELBO = -0.975.
    elbo, negative = spg_sequence_logprobs(torch.tensor(LP), MASKS, VALID, bound="elbo", eubo_beta=1.5, mix_weight=0.5)
    assert torch.allclose(elbo, torch.tensor([-1.025, -0.975]))
    assert torch.equal(negative, elbo)


def test_spg_eubo_literal_one_view():
    # One view, one row, tokens 0 and 2 masked of 3 valid: t = 2/3; q_k = exp(beta l_k) / t;
    # EUBO = mean_k log q_k / beta = mean(l_k) - log(t) / beta = -1.25 + log(1.5) / 1.5.
    lp = torch.tensor([[[-0.5, -1.0, -2.0]]])
    masks = torch.tensor([[[True, False, True]]])
    _, eubo = spg_sequence_logprobs(lp, masks, torch.ones(1, 3, dtype=torch.bool), bound="eubo", eubo_beta=1.5, mix_weight=0.5)
    assert float(eubo) == pytest.approx(-1.25 + math.log(1.5) / 1.5, abs=1e-6)


@pytest.mark.parametrize("bound", ["elbo", "eubo", "mix"])
def test_spg_loss_and_gradient_match_the_reference(bound):
    adv = [0.8, -1.3]  # row 0 positive (ELBO), row 1 negative (the bound)
    lp = leaf(LP)
    total, stats = spg_loss_sum(lp, MASKS, VALID, torch.tensor(adv, dtype=torch.float64), bound=bound, eubo_beta=1.5, mix_weight=0.5)
    loss = total / spg_denominator(VALID)
    loss.backward()
    ref_lp = leaf(LP)
    ref = spg_reference([[[ref_lp[v, b, k] for k in range(4)] for b in range(2)] for v in range(2)], MASKS, VALID, adv,
                        bound, 1.5, 0.5)
    ref.backward()
    assert float(loss) == pytest.approx(float(ref), abs=1e-12)
    assert stats.num_tokens == 7
    assert torch.allclose(lp.grad, ref_lp.grad, atol=1e-12)
    # visible tokens (not masked in any view) and post-answer positions get no gradient
    assert float(lp.grad[:, 0, 3].abs().sum()) == 0.0


def test_spg_mix_is_between_elbo_and_eubo_for_negative_rows():
    lp = torch.tensor(LP)
    adv = torch.tensor([-1.0, -1.0])
    values = {b: float(spg_loss_sum(lp, MASKS, VALID, adv, bound=b)[0]) for b in ("elbo", "eubo", "mix")}
    assert values["mix"] == pytest.approx(0.5 * values["elbo"] + 0.5 * values["eubo"])


def test_wd1_weights_literal():
    # A = [1, 0, -1] in one group: softmax(A) = [e, 1, 1/e] / (e + 1 + 1/e) = [.6652, .2447, .0900];
    # softmax(-A) reversed; w = w+ - w- = [.5752, 0, -.5752]. A second group of one row: 1 - 1 = 0.
    adv = torch.tensor([1.0, 0.0, -1.0, 3.0])
    w = wd1_row_weights(adv, torch.tensor([0, 0, 0, 1]))
    z = math.e + 1 + 1 / math.e
    assert torch.allclose(w, torch.tensor([(math.e - 1 / math.e) / z, 0.0, -(math.e - 1 / math.e) / z, 0.0]), atol=1e-6)
    # psi scales the advantages before the softmax
    assert torch.allclose(wd1_row_weights(adv, torch.tensor([0, 0, 0, 1]), psi=2.0),
                          wd1_row_weights(2 * adv, torch.tensor([0, 0, 0, 1])))


def test_wd1_loss_and_gradient_match_the_reference():
    lp = leaf([[-0.5, -1.0, -2.0], [-0.3, -0.7, -0.1], [-1.5, -0.2, -0.4]])
    valid = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([0.9, -0.2, -0.7], dtype=torch.float64)
    groups = torch.tensor([0, 0, 0])
    total, _ = wd1_loss_sum(lp, valid, wd1_row_weights(adv, groups))
    loss = total / wd1_denominator(groups)
    loss.backward()
    # reference: -sum_i softmax(A)_i S_i + sum_i softmax(-A)_i S_i
    ref_lp = leaf(lp.detach().tolist())
    s = [sum(ref_lp[i, k] for k in range(3) if valid[i, k]) for i in range(3)]
    pos, neg = torch.softmax(adv, 0), torch.softmax(-adv, 0)
    ref = -sum(pos[i] * s[i] for i in range(3)) + sum(neg[i] * s[i] for i in range(3))
    ref.backward()
    assert float(loss) == pytest.approx(float(ref), abs=1e-12)
    assert torch.allclose(lp.grad, ref_lp.grad, atol=1e-12)
    assert float(lp.grad[0, 2]) == 0.0 and float(lp.grad[2, 1]) == 0.0  # past the answer


def test_espo_literal_ratio_clip_and_kl():
    # L_o = 10. Row 0: E - E_old = 1 -> rho = exp(0.1) = 1.10517, A = 1: -min(1.105, 1.105) (inside eps 0.2);
    # row 1: E - E_old = 3 -> rho = exp(0.3) = 1.34986, A = 1: clipped at 1.2 (zero gradient);
    # row 2: E - E_old = -1 -> rho = exp(-0.1) = 0.904837, A = -2: -min(-1.80967, -1.80967) = 1.80967.
    elbo = leaf([-5.0, -4.0, -8.0])
    old = torch.tensor([-6.0, -7.0, -7.0], dtype=torch.float64)
    ref = torch.tensor([-5.5, -4.0, -6.0], dtype=torch.float64)
    adv = torch.tensor([1.0, 1.0, -2.0], dtype=torch.float64)
    total, stats = espo_loss_sum(elbo, old, adv, 10, epsilon=0.2, ref_elbo=ref, beta=0.1)
    kl = [0.25 / 2 / 10, 0.0, 4.0 / 2 / 10]  # (E - E_ref)^2 / 2 / L_o
    expected = -math.exp(0.1) - 1.2 + 2 * math.exp(-0.1) + 0.1 * sum(kl)
    assert float(total) == pytest.approx(expected, abs=1e-9)
    assert stats.clip_fraction == pytest.approx(1 / 3)
    (total / 3).backward()
    # d/dE: -A rho / L_o (unclipped rows) + beta (E - E_ref) / L_o, over 3 rows
    grads = [(-math.exp(0.1) / 10 + 0.1 * 0.5 / 10) / 3, 0.0, (2 * math.exp(-0.1) / 10 + 0.1 * (-2.0) / 10) / 3]
    assert torch.allclose(elbo.grad, torch.tensor(grads, dtype=torch.float64), atol=1e-12)
