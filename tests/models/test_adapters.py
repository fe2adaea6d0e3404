"""Model adapters (models/adapters.py): a tiny LlamaForCausalLM as the bidirectional test double
of the 8B models' interface, a checkpoint of an architecture maskgrpo does not implement with its
own modelling code, loaded through pinned ``trust_remote_code`` offline (models/remote_code.py:
a swapped or unpinned file is refused), and the 4-bit option's error without bitsandbytes.
LLaDA/MMaDA themselves load natively: tests/models/test_llada.py."""

from __future__ import annotations

import importlib.util
import json
import textwrap

import pytest
import torch
from transformers import LlamaConfig

from pydantic import ValidationError

from maskgrpo.models.adapters import (
    BidirectionalLM, RemoteCodeLM, adapter_for, llada_8b_config, load_model, random_model,
)
from maskgrpo.models.remote_code import CodePinError, code_digests
from maskgrpo.specs import ModelSpec


def tiny_llama(seed: int = 0) -> BidirectionalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    return random_model(config)


def test_generic_adapter_is_bidirectional():
    """Changing the LAST token changes the logits at the FIRST position: no causal mask."""
    model = tiny_llama()
    x = torch.tensor([[5, 6, 7, 8, 9, 10]])
    y = x.clone()
    y[0, -1] = 11
    a = model(x, attention_mask=torch.ones_like(x)).logits[0, 0]
    b = model(y, attention_mask=torch.ones_like(y)).logits[0, 0]
    assert (a - b).abs().max() > 1e-3, "a causal model would give identical first-position logits"


def test_generic_adapter_ignores_left_padding_and_serves_only_given_positions():
    """Row [p, p, p, x1..x6] gives x's logits (to float32 rounding, measured ~6e-8), and
    ``logits_positions`` returns exactly those columns: the core's LogitsFn contract."""
    model = tiny_llama()
    x = torch.tensor([[5, 6, 7, 8, 9, 10]])
    full = model(x, attention_mask=torch.ones_like(x)).logits  # (1, 6, V)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], dim=1)  # pad id 0
    mask = (padded != 0).long()
    out = model(padded, attention_mask=mask).logits  # (1, 9, V)
    torch.testing.assert_close(out[:, 3:], full, atol=1e-5, rtol=0)
    pos = torch.tensor([[4, 8]])
    head_only = model(padded, attention_mask=mask, logits_positions=pos).logits  # (1, 2, V)
    assert head_only.shape == (1, 2, 40)
    torch.testing.assert_close(head_only, out[:, [4, 8]], atol=1e-6, rtol=0)


def test_save_and_load_round_trip_through_auto(tmp_path):
    model = tiny_llama()
    model.save_pretrained(tmp_path / "ckpt")
    assert adapter_for(tmp_path / "ckpt") == "bidirectional"  # model_type llama
    again = load_model(tmp_path / "ckpt")
    assert isinstance(again, BidirectionalLM)
    x = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(again(x).logits, model(x).logits, atol=0, rtol=0)


def test_unknown_adapter_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model adapter 'gpt'.*bidirectional.*llada.*mmada.*remote.*tiny"):
        adapter_for(tmp_path, "gpt")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        adapter_for(tmp_path)


# A checkpoint maskgrpo does not implement (model_type "lladamoe", as LLaDA-MoE's): its own config
# and modelling code via auto_map, a forward(input_ids, attention_mask) with logits everywhere.
REMOTE_CONFIG = '''
from transformers import PretrainedConfig

class FakeLLaDAConfig(PretrainedConfig):
    model_type = "lladamoe"
    def __init__(self, vocab_size=30, d_model=16, mask_token_id=29, **kw):
        self.vocab_size, self.d_model, self.mask_token_id = vocab_size, d_model, mask_token_id
        super().__init__(**kw)
'''
REMOTE_MODEL = '''
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput
from .configuration_fake import FakeLLaDAConfig

class FakeLLaDAModelLM(PreTrainedModel):
    config_class = FakeLLaDAConfig
    def __init__(self, config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.mix = nn.Linear(config.d_model, config.d_model)
        self.ff_out = nn.Linear(config.d_model, config.vocab_size)
        self.post_init()
    def forward(self, input_ids, attention_mask=None, **kw):
        h = self.wte(input_ids)
        w = torch.ones(input_ids.shape, dtype=h.dtype) if attention_mask is None else attention_mask.to(h.dtype)
        ctx = (h * w[..., None]).sum(1, keepdim=True) / w.sum(1, keepdim=True)[..., None]
        return CausalLMOutput(logits=self.ff_out(h + self.mix(ctx)))
'''


@pytest.fixture
def remote_checkpoint(tmp_path):
    """Code files + a config.json naming them; weights built by transformers from that code."""
    from transformers import AutoConfig, AutoModel

    folder = tmp_path / "fake-llada"
    folder.mkdir()
    (folder / "configuration_fake.py").write_text(textwrap.dedent(REMOTE_CONFIG))
    (folder / "modeling_fake.py").write_text(textwrap.dedent(REMOTE_MODEL))
    auto_map = {"AutoConfig": "configuration_fake.FakeLLaDAConfig", "AutoModel": "modeling_fake.FakeLLaDAModelLM"}
    (folder / "config.json").write_text(json.dumps({"model_type": "lladamoe", "auto_map": auto_map}))
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    AutoModel.from_config(config, trust_remote_code=True).save_pretrained(folder)
    return folder


def test_remote_code_checkpoint_needs_pinned_trust_remote_code(remote_checkpoint):
    assert adapter_for(remote_checkpoint) == "remote"
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_model(remote_checkpoint)
    with pytest.raises(CodePinError, match=r"must pin the code files") as refused:
        load_model(remote_checkpoint, trust_remote_code=True)
    # the document field by default; the merge/export commands ask for the flag's wording
    assert str(refused.value).endswith(": model.trust_remote_code must pin the code files as {file: sha256} "
                                       "(printed by `maskgrpo import`); true alone would run any code")
    assert refused.value.for_flag() == str(refused.value).replace("model.trust_remote_code", "--trust-remote-code")
    with pytest.raises(ValidationError, match=r"trust_remote_code: true would run any code"):
        ModelSpec(source=str(remote_checkpoint), trust_remote_code=True)


def test_remote_code_checkpoint_loads_with_pins_and_serves_positions(remote_checkpoint):
    pins = code_digests(remote_checkpoint)
    assert sorted(pins) == ["configuration_fake.py", "modeling_fake.py"]
    assert ModelSpec(source=str(remote_checkpoint), trust_remote_code=pins).trust_remote_code == pins
    model = load_model(remote_checkpoint, trust_remote_code=pins)
    assert isinstance(model, RemoteCodeLM)
    assert type(model.backbone).__name__ == "FakeLLaDAModelLM"  # the checkpoint's own class
    x = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]])
    full = model(x, attention_mask=torch.ones_like(x)).logits  # (2, 4, 30)
    pos = torch.tensor([[0, 3], [1, 2]])
    got = model(x, attention_mask=torch.ones_like(x), logits_positions=pos).logits
    torch.testing.assert_close(got, torch.stack([full[0, [0, 3]], full[1, [1, 2]]]), atol=0, rtol=0)


def test_a_swapped_or_unpinned_code_file_is_refused_naming_it(remote_checkpoint, tmp_path):
    pins = code_digests(remote_checkpoint)
    marker = tmp_path / "ran"
    evil = f"open({str(marker)!r}, 'w').write('x')\n"
    modeling = remote_checkpoint / "modeling_fake.py"
    modeling.write_text(evil + modeling.read_text())  # swapped in the bucket after import
    with pytest.raises(CodePinError, match=r"modeling_fake.py: sha256 [0-9a-f]{64} differs from the pinned"):
        load_model(remote_checkpoint, trust_remote_code=pins)
    (remote_checkpoint / "helper.py").write_text(evil)  # a new file nobody pinned
    with pytest.raises(CodePinError, match=r"helper.py: code file not pinned"):
        load_model(remote_checkpoint, trust_remote_code={**pins, "modeling_fake.py": code_digests(remote_checkpoint)["modeling_fake.py"]})
    assert not marker.exists()  # nothing of it ran


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.is_available(),
                    reason="bitsandbytes and CUDA present: 4-bit loads for real")
def test_4bit_without_bitsandbytes_or_cuda_is_a_clear_error(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "ckpt")
    with pytest.raises(RuntimeError, match=r"load_in_4bit .* needs (bitsandbytes|a CUDA device)"):
        load_model(tmp_path / "ckpt", load_in_4bit=True)


def test_llada_8b_shape_has_about_8_billion_parameters():
    """4096 wide, 32 layers, MLP 12288, vocab 126464, untied: 32*(4*4096^2 + 3*4096*12288)
    + 2*126464*4096 (+ norms) = 8.02e9."""
    c = llada_8b_config()
    params = c.num_hidden_layers * (4 * c.hidden_size**2 + 3 * c.hidden_size * c.intermediate_size) \
        + 2 * c.vocab_size * c.hidden_size
    assert 7.9e9 < params < 8.1e9


def test_import_prints_the_pins_that_load_the_remote_code(remote_checkpoint, tmp_path, capsys):
    from maskgrpo.cli import main

    assert main(["import", str(remote_checkpoint), f"file://{tmp_path}/models/fake"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if "trust_remote_code:" in l)
    pins = json.loads(line.split("trust_remote_code:", 1)[1])
    assert pins == code_digests(remote_checkpoint)
    assert isinstance(load_model(remote_checkpoint, trust_remote_code=pins), RemoteCodeLM)


def test_pins_must_be_sha256_digests(tmp_path):
    with pytest.raises(ValidationError, match=r"trust_remote_code.modeling_x.py: expected a sha256"):
        ModelSpec(source=str(tmp_path), trust_remote_code={"modeling_x.py": "abc"})
