"""stages/policy.py: `model.gradient_checkpointing` reaches the loaded model and leaves the
gradients unchanged (native LLaDA, tiny random weights)."""

from __future__ import annotations

import pytest
import torch

from maskgrpo.models.llada import LLaDAConfig, LLaDAModelLM
from maskgrpo.specs import ModelSpec
from maskgrpo.stages.policy import load_base_model


def _checkpoint(tmp_path):
    config = LLaDAConfig(d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=64, block_type="llama",
                         rope=True, alibi=False, layer_norm_type="rms", activation_type="silu", include_bias=False,
                         vocab_size=64, embedding_size=64, max_sequence_length=32, mask_token_id=63,
                         attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0)
    torch.manual_seed(0)
    LLaDAModelLM(config).save_pretrained(tmp_path / "ckpt")
    return str(tmp_path / "ckpt")


def test_gradient_checkpointing_is_applied_and_gradients_are_unchanged(tmp_path):
    source = _checkpoint(tmp_path)
    x = torch.randint(0, 63, (2, 12), generator=torch.Generator().manual_seed(1))
    grads = []
    for on in (False, True):
        model = load_base_model(ModelSpec(source=source, adapter="llada", device="cpu", gradient_checkpointing=on)).train()
        assert model.is_gradient_checkpointing is on
        model(x).logits.logsumexp(-1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-6), name  # recomputation is exact up to float reordering


def test_a_model_without_checkpointing_support_is_refused(tmp_path, monkeypatch):
    source = _checkpoint(tmp_path)
    monkeypatch.setattr(LLaDAModelLM, "supports_gradient_checkpointing", False)
    with pytest.raises(ValueError, match="model.gradient_checkpointing"):
        load_base_model(ModelSpec(source=source, adapter="llada", device="cpu", gradient_checkpointing=True))
