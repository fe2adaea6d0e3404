"""core/sft.py: the masked-diffusion SFT objective. Text: LLaDA's t ~ U(eps, 1) noising and the
1/t-weighted CE written out by hand; slots: MaskGIT cosine rates, at least one slot, condition
dropout; the share of a subset of rows sums to the batch loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from maskgrpo.core.sft import sft_loss_share, slot_noise, text_noise
from maskgrpo.models.layout import ImageLayout

LAYOUT = ImageLayout.after_vocab(10, text_slots=4, image_slots=100, codebook_size=4, mask_id=2, pad_id=0, eos_id=1)


def test_text_noise_and_loss_equal_the_hand_written_objective():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(3, 20, (6, 9), generator=g)
    positions = torch.arange(4, 9)
    noise = text_noise(x, positions, 2, 1e-3, torch.Generator().manual_seed(5))
    # the same draws by hand: t first, then the Bernoulli(t) mask
    h = torch.Generator().manual_seed(5)
    t = 1e-3 + (1 - 1e-3) * torch.rand(6, generator=h)
    masked = torch.rand(6, 5, generator=h) < t.unsqueeze(1)
    assert torch.equal(noise.masked, masked) and torch.equal(noise.scale[:, 0], t)
    assert torch.equal(noise.inputs[:, :4], x[:, :4])  # the prompt is never masked
    assert torch.equal(noise.inputs[:, 4:], torch.where(masked, torch.full_like(x[:, 4:], 2), x[:, 4:]))
    logits = torch.randn(6, 5, 20, generator=g)
    loss = sft_loss_share(logits, x[:, 4:], noise, torch.arange(6))
    ce = F.cross_entropy(logits.transpose(1, 2), x[:, 4:], reduction="none")
    expected = sum(float(ce[b, k]) / float(t[b]) for b in range(6) for k in range(5) if masked[b, k]) / (6 * 5)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    halves = sft_loss_share(logits[:3], x[:3, 4:], noise, torch.arange(3)) + sft_loss_share(logits[3:], x[3:, 4:], noise, torch.arange(3, 6))
    assert float(halves) == pytest.approx(float(loss), rel=1e-6)  # shares sum to the batch loss


def test_slot_noise_masks_at_least_the_minimum_rate_and_drops_the_condition():
    g = torch.Generator().manual_seed(0)
    x = LAYOUT.build_sequences([[3, 4]] * 4000, torch.zeros(4000, 100, dtype=torch.long))
    noise = slot_noise(x, LAYOUT.image_positions(), LAYOUT.mask_id, 0.3, 0.1, LAYOUT.unconditional, g)
    noisy, masked = noise.inputs, noise.masked
    rate = masked.float().mean(1)
    assert rate.min() >= 0.3 and bool((noisy[:, LAYOUT.image_start:-1] == 2).eq(masked).all())
    # E[max(cos(pi u / 2), 0.3)]: numerically ~0.666
    u = torch.linspace(0, 1, 100001)
    expected = torch.clamp(torch.cos(math.pi / 2 * u), min=0.3).mean().item()
    assert abs(rate.mean().item() - expected) < 0.02
    dropped = (noisy[:, : LAYOUT.text_slots] == torch.tensor(LAYOUT.text_segment([]))).all(1).float().mean().item()
    assert abs(dropped - 0.1) < 3 * math.sqrt(0.1 * 0.9 / 4000)  # 3 sigma
    assert (noisy[:, -1] == LAYOUT.eoi_id).all() and (noisy[:, LAYOUT.text_slots] == LAYOUT.soi_id).all()
    assert noise.denominator == float(masked.sum()) and bool((noise.scale == 1).all())  # a plain mean, no 1/t


def test_slot_loss_is_the_mean_ce_over_masked_slots_of_the_codebook():
    # logits over 6 ids, codebook = ids 2..4: CE over the slice only; one of two slots masked
    x = torch.tensor([[9, 4, 2]])
    noise = slot_noise(x, torch.tensor([1, 2]), 7, 0.5, 0.0, lambda s: s, torch.Generator().manual_seed(1))
    assert int(noise.masked.sum()) == 1  # round(max(cos, 0.5) * 2) >= 1
    logits = torch.tensor([[[0.0, 0.0, 1.0, 2.0, 3.0, 9.0], [0.0, 0.0, 1.0, 2.0, 3.0, 9.0]]])
    loss = sft_loss_share(logits, x[:, 1:], noise, torch.arange(1), vocab_slice=(2, 3))
    lse = math.log(math.e + math.e ** 2 + math.e ** 3)
    ce = [lse - 3.0, lse - 1.0]  # code 2 (id 4), code 0 (id 2)
    k = int(noise.masked[0].nonzero()[0])
    assert float(loss) == pytest.approx(ce[k], abs=1e-6)
