"""The official LLaDA/MMaDA code (../shared/thirdparty/mmada, Gen-Verse/MMaDA, MIT) as test data,
and tiny checkpoints laid out like a hub download (config.json with auto_map, the official .py
files, safetensors, a tokenizer with the real vocabulary size and special ids).

The official files are imported as a package without running their ``__init__.py`` (it imports the
VQ model's extra dependencies). They need three transformers-5 shims (thirdparty/README.md),
applied here by subclassing and never in the files: ``post_init()`` at the end of
``__init__``, ``tie_weights(*args, **kwargs)``, and ``use_cache`` defaulting to False.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
OFFICIAL = SHARED / "thirdparty" / "mmada" / "models"
PACKAGE = "_official_mmada"

VOCAB = 126464  # LLaDA-8B's vocabulary (embedding_size)
MMADA_VOCAB = 126464 + 8192  # MMaDA-8B: text vocabulary + the 8192 MAGVIT-v2 codes
MASK_ID, EOS_ID, PAD_ID = 126336, 126081, 126081  # LLaDA's <|mdm_mask|>, <|endoftext|> (pad = eos)
EOT_ID = 126348  # <|eot_id|>, the chat template's end of turn


def official():
    """The shimmed official classes as a namespace (skips when ../shared is absent)."""
    if not (OFFICIAL / "modeling_llada.py").is_file():
        pytest.skip(f"official LLaDA/MMaDA code not present at {OFFICIAL} (../shared)")
    if PACKAGE not in sys.modules:
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = [str(OFFICIAL)]
        sys.modules[PACKAGE] = pkg
    llada = importlib.import_module(f"{PACKAGE}.modeling_llada")
    mmada = importlib.import_module(f"{PACKAGE}.modeling_mmada")
    config = importlib.import_module(f"{PACKAGE}.configuration_llada")
    _reregister_native()  # the official files register "llada"/"mmada" with the Auto classes too
    return types.SimpleNamespace(LLaDAModelLM=_shimmed(llada.LLaDAModelLM), MMadaModelLM=_shimmed(mmada.MMadaModelLM),
                                 LLaDAConfig=llada.LLaDAConfig, MMadaConfig=mmada.MMadaConfig, ModelConfig=config.ModelConfig)


_SHIMS: dict = {}


def _shimmed(cls):
    if cls in _SHIMS:
        return _SHIMS[cls]

    def __init__(self, config, *args, **kwargs):
        cls.__init__(self, config, *args, **kwargs)
        self.post_init()  # shim 1

    def tie_weights(self, *args, **kwargs):  # shim 2
        return cls.tie_weights(self)

    def forward(self, *args, **kwargs):
        kwargs.setdefault("use_cache", False)  # shim 3
        return cls.forward(self, *args, **kwargs)

    shim = type(cls.__name__, (cls,), {"__init__": __init__, "tie_weights": tie_weights, "forward": forward,
                                       "__module__": cls.__module__})
    _SHIMS[cls] = shim
    return shim


def _reregister_native() -> None:
    import maskgrpo.models.llada as native
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    for c, m in ((native.LLaDAConfig, native.LLaDAModelLM), (native.MMadaConfig, native.MMadaModelLM)):
        AutoConfig.register(c.model_type, c, exist_ok=True)
        AutoModel.register(c, m, exist_ok=True)
        AutoModelForMaskedLM.register(c, m, exist_ok=True)


def llada_fields(**overrides) -> dict:
    """LLaDA-8B-Instruct's config.json fields at a tiny width (the real vocabulary and ids)."""
    off = official()
    fields = dataclasses.asdict(off.ModelConfig())
    fields.update(
        d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=96, mlp_ratio=4, activation_type="silu",
        block_type="llama", rope=True, rope_theta=500000.0, rope_full_precision=True, layer_norm_type="rms",
        rms_norm_eps=1e-5, bias_for_layer_norm=False, include_bias=False, include_qkv_bias=False, weight_tying=False,
        vocab_size=VOCAB, embedding_size=VOCAB, attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
        max_sequence_length=4096, mask_token_id=MASK_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        init_fn="mitchell", init_device="cpu", precision="amp_bf16",
    )
    fields.update(overrides)
    return {k: (v.value if hasattr(v, "value") else v) for k, v in fields.items()}


def build_official(kind: str = "llada", seed: int = 0, **overrides) -> torch.nn.Module:
    """A random official model (weights drawn by the official init)."""
    off = official()
    torch.manual_seed(seed)
    if kind == "mmada":
        fields = llada_fields(vocab_size=MMADA_VOCAB, embedding_size=MMADA_VOCAB, **overrides)
        config = off.MMadaConfig(**fields, llm_vocab_size=VOCAB, codebook_size=8192, num_vq_tokens=1024,
                                 num_new_special_tokens=0, architectures=["MMadaModelLM"])
        return off.MMadaModelLM(config, init_params=True).eval()
    return off.LLaDAModelLM(off.LLaDAConfig(**llada_fields(**overrides)), init_params=True).eval()


def real_vocab_tokenizer():
    """A fast tokenizer with LLaDA's vocabulary size and special ids: one token per character for
    the toy/GSM8K text (ids 0..), reserved fillers, and LLaDA's special tokens at their ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(chars)}
    specials = {EOS_ID: "<|endoftext|>", 126080: "<|startoftext|>", MASK_ID: "<|mdm_mask|>", EOT_ID: "<|eot_id|>",
                126346: "<|start_header_id|>", 126347: "<|end_header_id|>"}
    for i in range(len(chars), VOCAB):
        vocab[specials.get(i, f"<|reserved_{i}|>")] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|reserved_200|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    template = ("{{ '<|startoftext|>' }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n'"
                " + m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
                "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", mask_token="<|mdm_mask|>",
                                   additional_special_tokens=list(specials.values()))
    fast.chat_template = template
    return fast


CODE = {"llada": ["configuration_llada.py", "modeling_llada.py"],
        "mmada": ["configuration_llada.py", "modeling_llada.py", "modeling_mmada.py", "sampling.py"]}


def write_hub_checkpoint(folder: Path, kind: str = "llada", seed: int = 0, **overrides) -> Path:
    """A checkpoint folder laid out as a hub download of LLaDA-8B-Instruct / MMaDA-8B-Base, at
    tiny width: official weights, config.json with auto_map, the official .py files, tokenizer."""
    model = build_official(kind, seed, **overrides)
    model.save_pretrained(folder)
    for name in CODE[kind]:
        shutil.copy2(OFFICIAL / name, folder / name)
    config = json.loads((folder / "config.json").read_text())
    module = "modeling_mmada.MMadaModelLM" if kind == "mmada" else "modeling_llada.LLaDAModelLM"
    conf = "modeling_mmada.MMadaConfig" if kind == "mmada" else "configuration_llada.LLaDAConfig"
    config["auto_map"] = {"AutoConfig": conf, "AutoModel": module, "AutoModelForCausalLM": module}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    real_vocab_tokenizer().save_pretrained(folder)
    return folder
