"""The native LLaDA/MMaDA classes (models/llada.py) against the official code (test data in
../shared/thirdparty/mmada, shimmed in official_llada.py): tiny random checkpoints with the real
vocabulary (126464; MMaDA 134656) and special ids, built and saved by the official classes, loaded
by the native ones through the project's loader (no remote code).

Tolerances (float32): unpadded logits are required equal to 1e-5 absolute (measured: exactly 0,
the same float operations in the same order); padded rows to 1e-5 (measured 2.7e-7 LLaDA,
3.0e-7 MMaDA: positions counted from the first real token instead of the official absolute
ones; RoPE depends on differences only, so the change is float rounding). bfloat16 weights and
bfloat16 CPU autocast: 2e-2 (measured 0 for both).
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from maskgrpo.core.text_sampler import sample_text
from maskgrpo.models.adapters import adapter_for, load_model
from maskgrpo.models.llada import LLaDAModelLM, MMadaModelLM
from maskgrpo.models.lora import apply_lora, linear_targets

from official_llada import EOS_ID, MASK_ID, build_official, official, write_hub_checkpoint

KINDS = ["llada", "mmada"]


@pytest.fixture(scope="module", params=KINDS)
def pair(request, tmp_path_factory):
    """(kind, official model, native model loaded from the official model's hub-layout folder)."""
    folder = write_hub_checkpoint(tmp_path_factory.mktemp(request.param) / "ckpt", request.param)
    off = official()
    ref = (off.MMadaModelLM if request.param == "mmada" else off.LLaDAModelLM).from_pretrained(folder).eval()
    return request.param, folder, ref, load_model(folder).eval()


def _ids(*shape, seed=0):
    return torch.randint(0, 126000, shape, generator=torch.Generator().manual_seed(seed))


def test_auto_selects_the_native_class_and_ignores_the_checkpoint_code(pair, caplog):
    kind, folder, _, model = pair
    assert json.loads((folder / "config.json").read_text())["auto_map"]  # a hub download's config
    assert adapter_for(folder) == kind
    assert type(model) is (MMadaModelLM if kind == "mmada" else LLaDAModelLM)
    assert "auto_map" not in model.config.to_dict()


def test_unpadded_logits_equal_the_official(pair):
    _, _, ref, model = pair
    x = _ids(3, 24)
    with torch.no_grad():
        a, b = ref(x).logits, model(x).logits
    print(f"unpadded max |dlogit| = {(a - b).abs().max().item():.3g}")
    assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-5


def test_padded_rows_equal_the_official_row_alone_and_padding_is_not_attended(pair):
    """Left-padded batch vs each row run alone by the official model, and vs the official model
    given MMaDA's pairwise attention bias over the same padded batch."""
    _, _, ref, model = pair
    lengths = [24, 17, 9]
    rows = [_ids(1, n, seed=i)[0] for i, n in enumerate(lengths)]
    x = torch.full((3, 24), EOS_ID)
    mask = torch.zeros(3, 24, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, 24 - len(r):], mask[i, 24 - len(r):] = r, 1
    with torch.no_grad():
        native = model(x, attention_mask=mask).logits
        pairwise = (mask[:, :, None] & mask[:, None, :]).bool().unsqueeze(1)
        biased = ref(x, attention_bias=pairwise).logits
        worst = 0.0
        for i, r in enumerate(rows):
            alone = ref(r[None]).logits[0]
            worst = max(worst, (native[i, 24 - len(r):] - alone).abs().max().item())
            worst = max(worst, (native[i, 24 - len(r):] - biased[i, 24 - len(r):]).abs().max().item())
        # changing a pad token changes nothing at the real positions
        y = x.clone()
        y[1:, 0] = 7
        moved = (model(y, attention_mask=mask).logits - native)[:, 7:].abs().max().item()
        # the official forward given only attention_mask adds a causal bias (module docstring of llada.py)
        causal = (ref(x, attention_mask=mask).logits[0, :5] - ref(x[:1]).logits[0, :5]).abs().max().item()
    print(f"padded max |dlogit| = {worst:.3g}")
    assert worst <= 1e-5 and moved == 0.0
    assert causal > 1e-3, "the official mask-only path was expected to be causal"


def test_head_only_logits_are_the_gathered_full_logits(pair):
    _, _, _, model = pair
    x = _ids(2, 16)
    pos = torch.tensor([[3, 15], [0, 7]])
    with torch.no_grad():
        full = model(x).logits
        head = model(x, logits_positions=pos).logits
    assert head.shape == (2, 2, model.config.embedding_size)
    torch.testing.assert_close(head, full.gather(1, pos[..., None].expand(-1, -1, full.shape[-1])), atol=1e-6, rtol=0)


def test_save_pretrained_key_sets_equal_and_reload_loses_nothing(pair, tmp_path):
    from safetensors import safe_open

    _, folder, ref, model = pair
    model.save_pretrained(tmp_path / "native")
    ref.save_pretrained(tmp_path / "official")

    def keys(d):
        with safe_open(str(d / "model.safetensors"), "pt") as f:
            return set(f.keys())

    assert keys(tmp_path / "native") == keys(tmp_path / "official") == keys(folder)
    again, info = type(model).from_pretrained(tmp_path / "native", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    back = type(ref).from_pretrained(tmp_path / "native").eval()  # the official class reads the native save
    x = _ids(2, 12)
    with torch.no_grad():
        assert (back(x).logits - model(x).logits).abs().max().item() <= 1e-5


def test_sampler_tokens_at_temperature_zero_equal_the_official(pair):
    """The project's semi-AR sampler (core/text_sampler.py): native on a left-padded batch with
    the LM head only where needed vs the official model on each prompt alone, full logits."""
    _, _, ref, model = pair
    prompts = [_ids(1, n, seed=10 + n)[0] for n in (7, 5, 3)]
    width = max(len(p) for p in prompts)
    batch = torch.full((len(prompts), width), EOS_ID)
    for i, p in enumerate(prompts):
        batch[i, width - len(p):] = p
    valid = torch.zeros_like(batch, dtype=torch.bool)
    for i, p in enumerate(prompts):
        valid[i, width - len(p):] = True
    kw = dict(gen_length=8, steps=4, block_length=4, mask_id=MASK_ID, eos_id=EOS_ID, temperature=0.0)

    def native_fn(ids, positions):  # Policy.logits: the leading pad run is not attended
        mask = torch.cat([valid.long(), torch.ones(ids.shape[0], ids.shape[1] - width, dtype=torch.long)], dim=1)
        return model(ids, attention_mask=mask, logits_positions=positions).logits

    with torch.no_grad():
        ours = sample_text(native_fn, batch, **kw).tokens
        for i, p in enumerate(prompts):
            theirs = sample_text(lambda ids, _pos: ref(ids).logits, p[None], head_only=False, **kw).tokens
            assert torch.equal(ours[i], theirs[0]), f"prompt {i}: {ours[i].tolist()} != {theirs[0].tolist()}"


def test_bfloat16_weights_match_the_official_in_bfloat16(pair):
    _, folder, ref, _ = pair
    ref = type(ref).from_pretrained(folder, dtype=torch.bfloat16).eval()
    model = load_model(folder, dtype=torch.bfloat16).eval()
    assert model.model.transformer.wte.weight.dtype == torch.bfloat16
    x = _ids(2, 16)
    with torch.no_grad():
        d = (ref(x).logits.float() - model(x).logits.float()).abs().max().item()
    print(f"bfloat16 max |dlogit| = {d:.3g}")
    assert d <= 2e-2


@pytest.mark.parametrize("overrides", [
    dict(block_type="sequential", activation_type="swiglu", mlp_hidden_size=192, n_kv_heads=2),
    dict(layer_norm_type="default", include_bias=True, attention_layer_norm=True, weight_tying=True,
         input_emb_norm=True, scale_logits=True),
], ids=["sequential-swiglu-gqa", "layernorm-bias-qknorm-tied"])
def test_other_official_variants_equal_the_official(overrides):
    """Config variants of the official code, the official weights loaded strictly (the tied
    official model cannot be saved under transformers 5: its ff_out aliases wte undeclared)."""
    from maskgrpo.models.llada import LLaDAConfig

    ref = build_official("llada", seed=2, vocab_size=512, embedding_size=512, **overrides)
    model = LLaDAModelLM(LLaDAConfig(**ref.config.to_dict())).eval()
    state = {k: v for k, v in ref.state_dict().items() if not (overrides.get("weight_tying") and k.endswith("transformer.ff_out.weight"))}
    model.load_state_dict(state, strict=True)
    x = torch.randint(0, 512, (2, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (ref(x).logits - model(x).logits).abs().max().item() <= 1e-5


def test_unsupported_config_is_refused_naming_the_field(tmp_path):
    ref = build_official("llada", vocab_size=512, embedding_size=512)
    ref.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["block_group_size"] = 2
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="block_group_size: 1"):
        load_model(tmp_path / "ckpt")


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    ref = build_official("llada", seed=4, vocab_size=512, embedding_size=512)
    ref.save_pretrained(tmp_path / "ckpt")
    x = torch.randint(0, 512, (2, 10), generator=torch.Generator().manual_seed(5))
    grads = []
    for checkpointing in (False, True):
        model = load_model(tmp_path / "ckpt").train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            assert all(b.gradient_checkpointing for b in model.model.transformer.blocks)
        model(x).logits.logsumexp(-1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5)


def test_lora_all_linear_adapts_every_block_linear_and_not_the_head(tmp_path):
    ref = build_official("llada", vocab_size=512, embedding_size=512)
    ref.save_pretrained(tmp_path / "ckpt")
    model = load_model(tmp_path / "ckpt")
    targets = linear_targets(model)
    assert {"q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj"} <= set(targets)
    assert "ff_out" not in targets and "model.transformer.blocks.1.ff_out" in targets
    peft = apply_lora(model, r=4, alpha=8, dropout=0.0)
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in peft.named_parameters() if ".lora_A" in n}
    assert len(adapted) == 2 * 7 and not any(n.endswith("transformer.ff_out") for n in adapted)


def test_native_load_warns_once_that_checkpoint_code_is_not_run(pair, caplog):
    import maskgrpo.models.adapters as adapters

    kind, folder, _, _ = pair
    adapters._warned_native.clear()
    with caplog.at_level(logging.WARNING, logger="maskgrpo"):
        load_model(folder)
        load_model(folder)
    notes = [r.getMessage() for r in caplog.records if "not executed" in r.getMessage()]
    assert len(notes) == 1 and "modeling_llada.py" in notes[0] and f"model_type {kind!r}" in notes[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="4-bit loading needs CUDA")
def test_4bit_base_with_lora_trains_on_cuda(tmp_path):
    pytest.importorskip("bitsandbytes")
    folder = write_hub_checkpoint(tmp_path / "ckpt", "llada")
    model = load_model(folder, load_in_4bit=True, dtype=torch.bfloat16)
    peft = apply_lora(model, r=4, alpha=8, dropout=0.0)
    x = _ids(2, 12).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        peft(x).logits.float().logsumexp(-1).sum().backward()
    assert all(p.grad is not None for n, p in peft.named_parameters() if p.requires_grad)


def test_bfloat16_autocast_matches_the_official_under_autocast(pair):
    _, _, ref, model = pair
    x = _ids(2, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        d = (ref(x).logits.float() - model(x).logits.float()).abs().max().item()
    print(f"autocast bf16 max |dlogit| = {d:.3g}")
    assert d <= 2e-2


def test_block_kv_cache_protocol(pair):
    """forward_cached (core/kv_cache.py's protocol, from h/cache): the full call equals forward and
    returns each layer's keys/values; a windowed call over an unchanged sequence gives the full
    forward's logits (the cached keys/values are exactly what the full forward computed)."""
    kv_cache = pytest.importorskip("maskgrpo.core.kv_cache", reason="the block KV cache interface (h/cache) is not merged")
    _, _, _, model = pair
    x = _ids(2, 20)
    mask = torch.ones_like(x)
    mask[1, :5] = 0
    pos = torch.arange(8, 20).expand(2, -1)
    with torch.no_grad():
        full = model(x, attention_mask=mask, logits_positions=pos).logits
        logits, cache = model.forward_cached(x, attention_mask=mask, logits_positions=pos)
        assert isinstance(cache, kv_cache.BlockKV) and len(cache.layers) == model.config.n_layers
        assert cache.layers[0][0].shape == (2, model.config.kv_heads, 20, model.config.d_model // model.config.n_heads)
        assert torch.equal(logits, full)
        win, same = model.forward_cached(x, attention_mask=mask, logits_positions=pos[:, 4:8], cache=cache, window=(12, 16))
        assert same is cache
        assert (win - full[:, 4:8]).abs().max().item() <= 1e-5
        y = x.clone()
        y[:, 13] = 5
        moved, _ = model.forward_cached(y, attention_mask=mask, logits_positions=pos[:, 4:8], cache=cache, window=(12, 16))
        assert (moved - win).abs().max().item() > 1e-4  # the window's new token is seen
    with pytest.raises(ValueError, match="together"):
        model.forward_cached(x, cache=cache)


def test_architectures_alone_select_the_native_class(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["MMadaModelLM"]}))
    assert adapter_for(tmp_path) == "mmada"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "lladamoe", "architectures": ["LLaDAMoEModelLM"]}))
    assert adapter_for(tmp_path) == "remote"  # LLaDA-MoE: not implemented natively
