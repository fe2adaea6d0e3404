"""LoRA (models/lora.py): only adapters train; the reference policy is the same network with
adapters disabled and equals the network below them exactly; checkpoints hold adapters only;
merged weights give the adapter model's logits; a whole tiny run with LoRA through the stages,
whose reference is the SFT policy (the SFT adapters are merged before the RL adapters)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig

from maskgrpo.models.adapters import load_model, random_model
from maskgrpo.models.lora import apply_lora, is_lora, linear_targets, merge_adapters, reference_logits
from maskgrpo.models.tiny import TinyMDM, TinyMDMConfig
from maskgrpo.plan import build_plan
from maskgrpo.specs import ModelSpec, RunSpec
from maskgrpo.stages import get_stage
from maskgrpo.stages.policy import load_policy
from maskgrpo.stages.policy import reference_logits as policy_reference_logits
from maskgrpo.store import open_store


def tiny_base(seed: int = 0) -> TinyMDM:
    torch.manual_seed(seed)
    return TinyMDM(TinyMDMConfig(vocab_size=24, hidden_size=32, num_heads=4))


def one_step(model: torch.nn.Module, lr: float = 1e-2) -> None:
    """One AdamW step of masked-token cross-entropy on a fixed batch."""
    x = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])
    noisy = x.clone()
    noisy[:, 3:] = 2  # mask id 2
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    logits = model(noisy, logits_positions=torch.tensor([[3, 4, 5]] * 2)).logits  # (2, 3, V)
    F.cross_entropy(logits.transpose(1, 2), x[:, 3:]).backward()
    opt.step()


def test_all_linear_means_every_linear_but_the_head():
    assert linear_targets(tiny_base()) == ["fc1", "fc2", "proj", "qkv"]  # lm_head excluded
    cfg = LlamaConfig(vocab_size=24, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    assert linear_targets(random_model(cfg)) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_after_a_step_disabled_adapters_give_the_base_and_enabled_ones_do_not():
    base = tiny_base()
    frozen = copy.deepcopy(base)  # the base's logits, from a separate copy
    model = apply_lora(base, r=4, alpha=8.0, dropout=0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    one_step(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable and all("lora_" in n for n in trainable)
    assert {n for n in trainable if "lora_B" in n} <= changed  # every B moved off its zero init

    x = torch.tensor([[3, 2, 2, 6, 2, 8]])
    logits_fn = lambda ids, pos=None: model(ids, logits_positions=pos).logits  # noqa: E731
    ref = reference_logits(model, logits_fn)
    expected = frozen(x).logits
    torch.testing.assert_close(ref(x), expected, atol=0, rtol=0)  # bit-identical: same weights, adapters off
    assert (logits_fn(x) - expected).abs().max() > 1e-4  # the adapters do change the policy
    assert (logits_fn(x) - ref(x)).abs().max() > 1e-4  # and are back on after the context


def test_checkpoint_holds_adapters_only_and_merge_equals_the_adapter_model(tmp_path):
    cfg = LlamaConfig(vocab_size=24, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4)
    torch.manual_seed(0)
    random_model(cfg).save_pretrained(tmp_path / "base")
    model = apply_lora(load_model(tmp_path / "base"), r=4, alpha=16.0, dropout=0.05, base_source=str(tmp_path / "base"))
    one_step(model)
    model.eval()
    model.save_pretrained(tmp_path / "adapter")
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert len(saved) == 2 * 7 * 2 and all("lora_" in k for k in saved)  # 2 layers x 7 linears x (A, B)
    # r (in + out) per linear: q,k,v,o 4*(32+32) = 256 each; gate,up,down 4*(32+64) = 384 each
    assert sum(t.numel() for t in saved.values()) == 2 * (4 * 256 + 3 * 384)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tmp_path / "base") and config["r"] == 4

    merge_adapters(tmp_path / "adapter", tmp_path / "merged")  # base from the adapter config
    merged = load_model(tmp_path / "merged")
    assert not is_lora(merged)
    x = torch.tensor([[3, 4, 2, 2, 7, 8], [0, 0, 5, 2, 9, 1]])
    mask = (x != 0).long()
    # merged W + (alpha/r) B A in float32: equal up to summation order, measured ~1e-6
    torch.testing.assert_close(merged(x, attention_mask=mask).logits, model(x, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)


def test_merge_names_a_missing_adapter_or_base(tmp_path):
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        merge_adapters(tmp_path, tmp_path / "out")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "s3://b/models/x"}))
    with pytest.raises(ValueError, match="must be a local checkpoint folder"):
        merge_adapters(tmp_path, tmp_path / "out")


def test_lora_needs_a_saved_base():
    with pytest.raises(ValueError, match="model.lora needs a checkpoint source"):
        ModelSpec(lora={"r": 4})


@pytest.mark.slow
def test_stages_with_lora_store_adapters_and_reference_is_the_sft_policy(tmp_path, monkeypatch):
    """SFT (adapters trained), rollout, score, update on sort-4 from a tiny Llama folder and a
    character tokenizer (the one of test_loading.py)."""
    from test_loading import write_checkpoint

    monkeypatch.setenv("MASKGRPO_CACHE", str(tmp_path / "cache"))
    base = write_checkpoint(tmp_path / "base")
    doc = {
        "name": "lora", "seed": 0,
        "model": {"source": str(base), "device": "cpu", "special_tokens": {"mask_id": 2},
                  "lora": {"r": 4, "alpha": 8.0, "target_modules": ["q_proj", "v_proj"]}},
        "task": {"name": "sort", "params": {"length": 4}, "train_size": 64, "eval_size": 4},
        "reward": {"functions": [{"name": "sort_dense"}]},
        "sft": {"steps": 2, "batch_size": 8, "lr": 1e-2},
        "rl": {"rounds": 1, "prompts_per_round": 2, "group_size": 4, "minibatch_size": 8, "num_iterations": 2,
               "lr": 1e-2, "sampler": {"gen_length": 8, "steps": 8, "block_length": 8}},
        "evaluate": {"sampler": {"gen_length": 8, "steps": 8, "block_length": 8, "temperature": 0.0}},
    }
    store = open_store(f"file://{tmp_path}/runs")
    calls = build_plan(RunSpec.model_validate(doc), "r", store.uri, num_shards=1)
    for c in calls:
        get_stage(c.kind)(c.spec, store)
    names = {Path(f).name for f in store.open("r", "update", 1).files()}
    assert "adapter_model.safetensors" in names and "model.safetensors" not in names
    spec = calls[-1].spec.model
    policy = load_policy(store, "r", "update/1", spec)
    assert is_lora(policy.model)
    sft = load_policy(store, "r", "sft/0", spec)  # the SFT policy: base + SFT adapters merged + fresh (B = 0) ones
    plain = load_model(base)  # the pre-SFT base, loaded on its own
    x = torch.tensor([[0, 0, 3, 4, 5, 2, 2, 2]])
    mask = ((x != 0).cumsum(1) > 0).long()
    reference = policy_reference_logits(policy)(x)
    torch.testing.assert_close(reference, sft.logits(x), atol=1e-6, rtol=1e-6)
    assert (reference - plain(x, attention_mask=mask).logits).abs().max() > 1e-4  # not the base: SFT moved it
    assert (policy.logits(x) - reference).abs().max() > 1e-5  # the RL adapters moved the policy
    # ``maskgrpo merge`` folds the SFT chain and the RL adapters: the merged model is the policy
    local = store.open("r", "update", 1).get_dir("checkpoint", tmp_path / "ckpt")
    merged = load_model(merge_adapters(local, tmp_path / "merged"))
    torch.testing.assert_close(merged(x, attention_mask=mask).logits, policy.logits(x), atol=1e-5, rtol=1e-5)
