"""The tiny built-in masked-diffusion model: a real transformers model that round-trips through
save_pretrained / AutoModelForMaskedLM (safetensors, no pickle), head-only logits, and left-padding
invariance."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForMaskedLM

from maskgrpo.models.tiny import TinyMDM, TinyMDMConfig

PAD, EOS, MASK = 0, 1, 2


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors run faster on one intra-op thread (much faster on a loaded 2-core box)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model() -> TinyMDM:
    torch.manual_seed(0)
    config = TinyMDMConfig(vocab_size=40, hidden_size=32, num_layers=2, num_heads=4)
    model = TinyMDM(config).eval()
    with torch.no_grad():  # spread the random weights so logit differences are not all ~0
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model


def ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 40, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_save_and_load_through_auto_classes(model, tmp_path):
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "config.json" in files and "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))]
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, TinyMDMConfig) and config.model_type == "maskgrpo-tiny"
    assert (config.vocab_size, config.hidden_size, config.mask_token_id, config.eos_token_id) == (40, 32, MASK, EOS)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path, use_safetensors=True).eval()
    assert isinstance(loaded, TinyMDM)
    assert loaded.lm_head.weight.data_ptr() == loaded.embed.weight.data_ptr()  # still tied
    x = ids(3, 9)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


def test_state_has_every_weight_after_loading(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_logits_positions_equals_slicing_full_logits(model):
    x = ids(3, 10, seed=1)
    positions = torch.tensor([[0, 4, 9], [3, 3, 2], [9, 8, 7]])
    with torch.no_grad():
        full = model(x).logits  # (B, L, V)
        head_only = model(x, logits_positions=positions).logits  # (B, K, V)
    assert head_only.shape == (3, 3, 40)
    expected = torch.stack([full[b, positions[b]] for b in range(3)])
    assert torch.allclose(head_only, expected, atol=1e-5)


def test_left_padding_does_not_change_a_rows_logits(model):
    # The same 6 real tokens with 0 and with 4 columns of left padding: positions count from the
    # first real token and pads are never attended to, so the real columns' logits agree.
    real = ids(1, 6, seed=2)
    padded = torch.cat([torch.full((1, 4), PAD), real], dim=1)
    with torch.no_grad():
        a = model(real).logits[0]
        b = model(padded).logits[0, 4:]
    assert torch.allclose(a, b, atol=1e-5)
    # ... also inside a batch with rows of other lengths, and with mask tokens in the row.
    masked = real.clone()
    masked[0, 3:] = MASK
    batch = torch.cat([torch.cat([torch.full((1, 2), PAD), masked], 1), ids(1, 8, seed=3)])
    with torch.no_grad():
        alone = model(masked).logits[0]
        together = model(batch).logits[0, 2:]
    assert torch.allclose(alone, together, atol=1e-5)


def test_is_bidirectional(model):
    # Changing the last token changes the first position's logits (no causal mask).
    x = ids(1, 6, seed=4)
    y = x.clone()
    y[0, -1] = 3 if int(x[0, -1]) != 3 else 4
    with torch.no_grad():
        assert not torch.allclose(model(x).logits[0, 0], model(y).logits[0, 0])


def test_explicit_attention_mask_matches_the_pad_default(model):
    x = torch.cat([torch.full((2, 3), PAD), ids(2, 5, seed=5)], dim=1)
    with torch.no_grad():
        default = model(x).logits
        explicit = model(x, attention_mask=(x != PAD).long()).logits
    assert torch.equal(default, explicit)
