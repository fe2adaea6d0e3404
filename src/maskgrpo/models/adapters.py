"""Model adapters: load a checkpoint folder and call it as the core's ``LogitsFn`` wants.

Every adapter returns an ``nn.Module`` with one calling convention, the one the tiny model has:
``model(input_ids (B, L), attention_mask (B, L), logits_positions (B, K) | None) -> .logits``
(B, K, V) or (B, L, V), and ``save_pretrained(path)``. Chosen by name from a registry of lazy
import strings (docs/design.md, "Style"); ``auto`` picks by the checkpoint config's ``model_type``:

1. ``tiny``: the built-in ``maskgrpo-tiny`` model (models/tiny.py), loaded as it is.
2. ``bidirectional``: any transformers ``*ForCausalLM`` (Llama, Qwen2, Mistral, ...) made
   bidirectional: its decoder gets an explicit 4-D float attention mask that is zero everywhere
   except at padding keys, so no causal mask is applied (docs/design.md, "Toolchain", transformers 5.24).
   Positions count from the first real token (left padding does not change a row's logits) and
   the LM head runs only at ``logits_positions``. It is the test double of the 8B models'
   interface and a real option for any such backbone.
3. ``llada`` / ``mmada``: LLaDA and MMaDA checkpoints (a hub download as it is) through maskgrpo's
   native classes (models/llada.py): no remote code, LM head only at ``logits_positions``. The
   checkpoint's ``auto_map`` and ``*.py`` files are ignored; a warning says so once per process.
4. ``remote``: the explicit exception for architectures maskgrpo does not implement (LLaDA-MoE):
   the checkpoint's own code through ``trust_remote_code``, allowed only when
   ``trust_remote_code`` pins every ``*.py`` file's sha256 (models/remote_code.py, checked before
   each load). Logits at every position are computed, then gathered.

Options for all: ``dtype`` (bfloat16 on GPUs), ``load_in_4bit`` (bitsandbytes NF4, CUDA only,
for a frozen base under LoRA; a clear error when bitsandbytes or CUDA is missing).
``random_model`` builds a LLaDA-8B-shaped (or any-shaped) generic model with random weights and
no download, for benchmarks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput

from maskgrpo.core.registry import LazyRegistry

__all__ = [
    "ADAPTERS", "BidirectionalLM", "RemoteCodeLM", "adapter_for", "load_model", "llada_8b_config", "random_model",
]

log = logging.getLogger("maskgrpo")

# name -> "module:function(path, dtype, trust_remote_code, quantization_config) -> nn.Module"
ADAPTERS: dict[str, str] = {
    "tiny": "maskgrpo.models.adapters:load_tiny",
    "bidirectional": "maskgrpo.models.adapters:load_bidirectional",
    "llada": "maskgrpo.models.adapters:load_native",
    "mmada": "maskgrpo.models.adapters:load_native",
    "remote": "maskgrpo.models.adapters:load_remote_code",
}
_NATIVE_TYPES = {"llada": "llada", "mmada": "mmada"}  # model_type -> adapter (models/llada.py)
_NATIVE_ARCHITECTURES = {"LLaDAModelLM": "llada", "MMadaModelLM": "mmada"}
_REMOTE_TYPES = {"llada_moe", "lladamoe"}  # known, not implemented natively: remote code with pins
_warned_native: list[str] = []  # the once-per-process "code not executed" warning


def _positions_from_mask(valid: torch.Tensor) -> torch.Tensor:
    """Position ids counted from each row's first real token (left padding invariant)."""
    return (valid.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, L)


def _gather(x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    if positions is None:
        return x
    return x.gather(1, positions.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, K, D)


class BidirectionalLM(nn.Module):
    """A transformers causal LM run with full (bidirectional) attention; see module docstring 2."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L)
        attention_mask: torch.Tensor | None = None,  # (B, L) 1 = real token
        logits_positions: torch.Tensor | None = None,  # (B, K)
        **_: object,
    ) -> MaskedLMOutput:
        valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        embed = self.backbone.get_input_embeddings()
        dtype = embed.weight.dtype if embed.weight.is_floating_point() else torch.float32
        bias = torch.zeros(valid.shape, dtype=dtype, device=input_ids.device)
        bias = bias.masked_fill(~valid, torch.finfo(dtype).min)[:, None, None, :]  # (B, 1, 1, L)
        bias = bias.expand(-1, 1, input_ids.shape[1], -1)  # (B, 1, L, L): 4-D = used as given, no causal mask
        hidden = self.backbone.base_model(
            input_ids=input_ids, attention_mask=bias, position_ids=_positions_from_mask(valid), use_cache=False,
        ).last_hidden_state  # (B, L, H)
        return MaskedLMOutput(logits=self.backbone.get_output_embeddings()(_gather(hidden, logits_positions)))

    def save_pretrained(self, path: str | Path, **kwargs) -> None:
        self.backbone.save_pretrained(path, **kwargs)


class RemoteCodeLM(nn.Module):
    """A checkpoint's own modelling code (LLaDA/MMaDA); logits gathered after the forward."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                logits_positions: torch.Tensor | None = None, **_: object) -> MaskedLMOutput:
        logits = self.backbone(input_ids, attention_mask=attention_mask).logits  # (B, L, V)
        return MaskedLMOutput(logits=_gather(logits, logits_positions))

    def save_pretrained(self, path: str | Path, **kwargs) -> None:
        self.backbone.save_pretrained(path, **kwargs)


def load_tiny(path: Path, dtype: torch.dtype, trust_remote_code: bool, quantization_config=None) -> nn.Module:
    from transformers import AutoModelForMaskedLM

    import maskgrpo.models.tiny  # noqa: F401  (registers maskgrpo-tiny with the Auto classes)

    if quantization_config is not None:
        raise ValueError("load_in_4bit is for large checkpoints; the tiny model cannot be quantized")
    return AutoModelForMaskedLM.from_pretrained(path, dtype=dtype)


def load_bidirectional(path: Path, dtype: torch.dtype, trust_remote_code, quantization_config=None) -> nn.Module:
    from transformers import AutoModelForCausalLM

    from maskgrpo.models.remote_code import RemoteCodeError, remote_code_allowed

    backbone = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, quantization_config=quantization_config,
                                                    trust_remote_code=remote_code_allowed(path, trust_remote_code))
    return BidirectionalLM(backbone)


def load_native(path: Path, dtype: torch.dtype, trust_remote_code, quantization_config=None) -> nn.Module:
    """A LLaDA/MMaDA checkpoint through models/llada.py; its own code is never run."""
    from maskgrpo.models.llada import NATIVE_MODEL_TYPES

    config = _config(path)
    name = _NATIVE_TYPES.get(config.get("model_type", ""))
    if name is None:
        name = next((_NATIVE_ARCHITECTURES[a] for a in config.get("architectures") or [] if a in _NATIVE_ARCHITECTURES), "llada")
    code = sorted(p.name for p in Path(path).glob("*.py"))
    if (code or "auto_map" in config or trust_remote_code) and not _warned_native:
        _warned_native.append(str(path))
        log.warning("%s: model_type %r loads with maskgrpo's native class (maskgrpo.models.llada); the checkpoint's "
                    "own code (%s) is not executed%s", path, name, ", ".join(code) or "auto_map",
                    " and model.trust_remote_code is ignored" if trust_remote_code else "")
    model, info = NATIVE_MODEL_TYPES[name].from_pretrained(path, dtype=dtype, quantization_config=quantization_config,
                                                           output_loading_info=True)
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ValueError(f"{path}: not a {name} checkpoint of the layout maskgrpo implements: {len(missing)} weights "
                         f"missing, e.g. {missing[:3]}")
    return model


def load_remote_code(path: Path, dtype: torch.dtype, trust_remote_code, quantization_config=None) -> nn.Module:
    from transformers import AutoModel

    from maskgrpo.models.remote_code import RemoteCodeError, remote_code_allowed

    if not trust_remote_code:
        raise RemoteCodeError(f"{path}: the remote adapter runs the checkpoint's own modelling code; {{set}} "
                              "the {file: sha256} pins `maskgrpo import` printed (read that code first)")
    if not remote_code_allowed(path, trust_remote_code):
        raise FileNotFoundError(f"{path}: the remote adapter needs the checkpoint's *.py files; the folder has none")
    backbone = AutoModel.from_pretrained(path, dtype=dtype, trust_remote_code=True,
                                         quantization_config=quantization_config)
    return RemoteCodeLM(backbone)


def _config(path: Path) -> dict:
    try:
        return json.loads((Path(path) / "config.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is not a transformers checkpoint: no config.json") from None


def adapter_for(path: str | Path, adapter: str = "auto") -> str:
    """The adapter name for a checkpoint folder (``auto`` reads config.json's model_type)."""
    if adapter != "auto":
        if adapter not in ADAPTERS:
            raise ValueError(f"unknown model adapter {adapter!r}; choose one of {sorted(ADAPTERS)} or 'auto'")
        return adapter
    config = _config(Path(path))
    model_type = config.get("model_type", "")
    if model_type == "maskgrpo-tiny":
        return "tiny"
    if model_type in _NATIVE_TYPES:
        return _NATIVE_TYPES[model_type]
    native = [_NATIVE_ARCHITECTURES[a] for a in config.get("architectures") or [] if a in _NATIVE_ARCHITECTURES]
    if native:
        return native[0]
    return "remote" if model_type in _REMOTE_TYPES else "bidirectional"


def _quantization(load_in_4bit: bool, path: Path):
    if not load_in_4bit:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise RuntimeError(f"model.load_in_4bit for {path} needs bitsandbytes: pip install bitsandbytes "
                           "(a CUDA machine), or set load_in_4bit: false") from None
    if not torch.cuda.is_available():
        raise RuntimeError(f"model.load_in_4bit for {path} needs a CUDA device; none is available")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)


def load_model(path: str | Path, *, adapter: str = "auto", dtype: torch.dtype = torch.float32,
               trust_remote_code: bool | Mapping[str, str] = False, load_in_4bit: bool = False) -> nn.Module:
    """Load the checkpoint folder ``path`` through its adapter (see the module docstring).

    ``trust_remote_code``: False, or the ``{file: sha256}`` pins of the folder's code files
    (models/remote_code.py); only the ``remote`` and ``bidirectional`` adapters run code."""
    path = Path(path)
    name = adapter_for(path, adapter)
    loader: Callable[..., nn.Module] = LazyRegistry("adapter", ADAPTERS).load(name)  # core/registry.py
    return loader(path, dtype, trust_remote_code, _quantization(load_in_4bit, path))


def llada_8b_config(**overrides) -> "transformers.LlamaConfig":  # noqa: F821
    """A LlamaConfig with LLaDA-8B's shapes (4096 wide, 32 layers, 32 heads, MLP 12288, vocab
    126464, no GQA): the generic adapter on it costs what LLaDA-8B costs per token."""
    from transformers import LlamaConfig

    shape = dict(vocab_size=126464, hidden_size=4096, intermediate_size=12288, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                 rope_theta=500000.0, tie_word_embeddings=False)
    shape.update(overrides)
    return LlamaConfig(**shape)


def random_model(config, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> BidirectionalLM:
    """A generic bidirectional model with random weights built directly on ``device`` (no download)."""
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        backbone = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return BidirectionalLM(backbone.eval())
