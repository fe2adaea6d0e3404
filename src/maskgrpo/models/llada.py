"""LLaDA and MMaDA as native transformers models: real checkpoints load without remote code.

Written from the LLaDA paper (Nie et al., 2025) and the behaviour of the official modelling code
(Gen-Verse/MMaDA ``modeling_llada.py``, the lineage shipped with GSAI-ML/LLaDA-8B-Instruct); the
tests (tests/models/test_llada.py) load the same weights into both and compare logits. The
parameter names are the official safetensors' (``model.transformer.wte``, ``...blocks.N.q_proj``,
``ff_proj``/``up_proj``/``ff_out``, ``ln_f``, ``model.transformer.ff_out``), so
``LLaDAModelLM.from_pretrained(folder)`` reads a hub download as it is; ``auto_map`` and the
folder's ``*.py`` files are ignored (models/adapters.py warns once).

The config (``model_type="llada"``) takes the official config.json fields with the official
defaults. Supported: ``block_type`` ``llama`` (LLaDA-8B, MMaDA-8B: separate q/k/v, gated MLP) and
``sequential`` (fused ``att_proj``); ``layer_norm_type`` ``rms``/``gemma_rms``/``default``/
``low_precision``; activations ``silu``/``swiglu``/``gelu``/``relu``; grouped-query heads
(``n_kv_heads``), q/k norms, biases, ``input_emb_norm``, ``scale_logits``, ``weight_tying``,
RoPE (``rope_theta``; the official half-rotation layout). Refused with a message naming the field:
ALiBi or learned positions (the official forward refuses them for masked diffusion too) and
``block_group_size > 1`` (other parameter names). LLaDA-MoE (``model_type`` ``lladamoe``) is not
implemented: its feed-forward is a routed expert mixture; it would be one more block class chosen
in ``_block`` plus its config fields; until then it loads only through the pinned remote-code path.

LoRA ("all-linear", models/lora.py) adapts ``q_proj``, ``k_proj``, ``v_proj`` (or ``att_proj``),
``attn_out``, ``ff_proj``, ``up_proj`` and the blocks' ``ff_out``, never the output head
``model.transformer.ff_out`` (same leaf name: the blocks' are named in full).

The calling convention is the project's (models/tiny.py): ``forward(input_ids, attention_mask,
logits_positions)`` returns ``.logits`` (B, K, V) at ``logits_positions`` (B, K) only, or (B, L, V).

Deviations from the official code, on purpose:

- Padding: keys where ``attention_mask`` is 0 are not attended and the attention stays
  bidirectional. The official forward, given an ``attention_mask`` with a zero, adds a *causal*
  bias as well (its ``get_causal_attention_bias`` default, left from the autoregressive OLMo code;
  MMaDA avoids it by passing a pairwise ``attention_bias``). Without padding both are the same.
- Positions count from each row's first real token (left padding does not change a row's
  logits). RoPE depends only on position differences, so this equals the official absolute
  positions up to float rounding.
- No ``generate`` and no autoregressive cache: the project's samplers (core/) drive the model.
  ``forward_cached`` implements the block KV cache protocol of core/kv_cache.py (Fast-dLLM's
  prefix/dual caches; an approximation with bidirectional attention, as for the tiny model).
- Dropout and the activation-checkpointing strategies: dropout as the official (embedding,
  residual, attention); checkpointing is transformers' ``gradient_checkpointing_enable()`` per
  block (the official ``whole_layer`` strategy).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MaskedLMOutput

__all__ = ["LLaDAConfig", "LLaDAModelLM", "MMadaConfig", "MMadaModelLM", "NATIVE_MODEL_TYPES", "llada_8b_config"]

# The official ModelConfig defaults (a config.json that omits a field means these).
_DEFAULTS: dict = dict(
    d_model=768, n_heads=12, n_kv_heads=None, n_layers=12, mlp_ratio=4, mlp_hidden_size=None,
    activation_type="swiglu", block_type="sequential", block_group_size=1, alibi=False, alibi_bias_max=8.0,
    rope=False, rope_full_precision=True, flash_attention=False, attention_dropout=0.1,
    multi_query_attention=None, attention_layer_norm=False, residual_dropout=0.1, embedding_dropout=0.1,
    input_emb_norm=False, layer_norm_type="default", layer_norm_with_affine=True, rms_norm_eps=1e-5,
    attention_layer_norm_with_affine=True, max_sequence_length=1024, rope_theta=10000.0,
    include_qkv_bias=False, include_bias=False, bias_for_layer_norm=None, scale_logits=False,
    vocab_size=50257, embedding_size=50304, weight_tying=True, mask_token_id=50256,
    init_device=None, init_fn="normal", init_std=0.02, init_cutoff_factor=None, precision=None,
)


class LLaDAConfig(PretrainedConfig):
    """LLaDA's config.json, read natively (module docstring); ``auto_map`` is dropped."""

    model_type = "llada"

    def __init__(self, pad_token_id: int | None = 50256, eos_token_id: int | None = 50256, use_cache: bool = False,
                 **kwargs):
        kwargs.pop("auto_map", None)  # never run the checkpoint's code from here
        for name, default in _DEFAULTS.items():
            setattr(self, name, kwargs.pop(name, default))
        kwargs["tie_word_embeddings"] = bool(self.weight_tying)  # transformers ties only what LLaDA ties
        super().__init__(pad_token_id=pad_token_id, eos_token_id=eos_token_id, use_cache=use_cache, **kwargs)

    @property
    def num_attention_heads(self) -> int:
        return self.n_heads

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers

    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def kv_heads(self) -> int:
        if self.multi_query_attention:
            return 1
        return self.n_kv_heads or self.n_heads

    @property
    def mlp_width(self) -> int:
        return self.mlp_hidden_size if self.mlp_hidden_size is not None else self.mlp_ratio * self.d_model

    def check_supported(self) -> None:
        problems = []
        if self.alibi or not self.rope:
            problems.append("rope: true and alibi: false (masked diffusion LLaDA uses RoPE)")
        if self.block_group_size != 1:
            problems.append("block_group_size: 1")
        if self.block_type not in ("llama", "sequential"):
            problems.append("block_type: llama or sequential")
        if self.layer_norm_type not in _NORMS:
            problems.append(f"layer_norm_type: one of {sorted(_NORMS)}")
        if self.activation_type not in _ACTIVATIONS:
            problems.append(f"activation_type: one of {sorted(_ACTIVATIONS)}")
        if self.d_model % self.n_heads or self.n_heads % self.kv_heads:
            problems.append("d_model divisible by n_heads, n_heads by n_kv_heads")
        if problems:
            raise ValueError(f"{self.model_type} config not supported by maskgrpo's native class: needs "
                             + "; ".join(problems))


class MMadaConfig(LLaDAConfig):
    """MMaDA = LLaDA's network with a larger vocabulary (text + image codes); the extra fields
    (``llm_vocab_size``, ``codebook_size``, ``num_vq_tokens``, ...) are kept as they are."""

    model_type = "mmada"

    def __init__(self, **kwargs):  # explicit: transformers 5 would generate a dataclass __init__
        super().__init__(**kwargs)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


class _Norm(nn.Module):
    """The official layer norms: ``rms`` (float32 statistics, scaled in the input dtype),
    ``gemma_rms`` (scale 1 + w), ``default``/``low_precision`` (F.layer_norm)."""

    def __init__(self, config: LLaDAConfig, size: int | None = None, affine: bool | None = None):
        super().__init__()
        self.kind = config.layer_norm_type
        self.shape = (size or config.d_model,)
        self.eps = config.rms_norm_eps if self.kind in ("rms", "gemma_rms") else 1e-5
        affine = config.layer_norm_with_affine if affine is None else affine
        use_bias = config.include_bias if config.bias_for_layer_norm is None else config.bias_for_layer_norm
        self.weight = nn.Parameter(torch.ones(self.shape)) if affine else None
        self.bias = nn.Parameter(torch.zeros(self.shape)) if affine and use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind in ("default", "low_precision"):
            return F.layer_norm(x, self.shape, weight=self.weight, bias=self.bias, eps=self.eps)
        with torch.autocast(enabled=False, device_type=x.device.type):
            x32 = x.float()
            x = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        if self.weight is None:
            return x
        scale = 1 + self.weight if self.kind == "gemma_rms" else self.weight
        return scale * x + self.bias if self.bias is not None else scale * x


_NORMS = {"rms", "gemma_rms", "default", "low_precision"}


def _swiglu(x: torch.Tensor) -> torch.Tensor:
    x, gate = x.chunk(2, dim=-1)
    return F.silu(gate) * x


# name -> (function, output width / input width)
_ACTIVATIONS = {"silu": (F.silu, 1.0), "gelu": (F.gelu, 1.0), "relu": (F.relu, 1.0), "swiglu": (_swiglu, 0.5)}


def _rope(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos) of shape (B, 1, L, head_dim), float32, the official half layout (freqs, freqs)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float) / head_dim))
    freqs = positions.float().unsqueeze(-1) * inv_freq  # (B, L, D/2)
    angles = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)
    return angles.sin(), angles.cos()


def _rotate(t: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    x1, x2 = t.chunk(2, dim=-1)
    return t * cos + torch.cat((-x2, x1), dim=-1) * sin


class _Block(GradientCheckpointingLayer):
    """One transformer block: pre-norm bidirectional attention, then the MLP; ``llama`` has
    separate q/k/v and a gated MLP (``act(ff_proj x) * up_proj x``), ``sequential`` the fused
    ``att_proj`` and ``act(ff_proj x)``."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        d, head = config.d_model, config.d_model // config.n_heads
        self.config = config
        self.n_heads, self.kv_heads, self.head_dim = config.n_heads, config.kv_heads, head
        qkv_bias = bool(config.include_bias or config.include_qkv_bias)
        bias = bool(config.include_bias)
        self.act, multiplier = _ACTIVATIONS[config.activation_type]
        self.attn_norm = _Norm(config)
        self.ff_norm = _Norm(config)
        if config.attention_layer_norm:
            affine = config.attention_layer_norm_with_affine
            self.k_norm = _Norm(config, size=head * self.kv_heads, affine=affine)
            self.q_norm = _Norm(config, affine=affine)
        self.fused = config.block_type == "sequential"
        if self.fused:
            self.fused_dims = (d, self.kv_heads * head, self.kv_heads * head)
            self.att_proj = nn.Linear(d, sum(self.fused_dims), bias=qkv_bias)
        else:
            self.q_proj = nn.Linear(d, d, bias=qkv_bias)
            self.k_proj = nn.Linear(d, self.kv_heads * head, bias=qkv_bias)
            self.v_proj = nn.Linear(d, self.kv_heads * head, bias=qkv_bias)
            self.up_proj = nn.Linear(d, config.mlp_width, bias=bias)
        self.attn_out = nn.Linear(d, d, bias=bias)
        self.ff_proj = nn.Linear(d, config.mlp_width, bias=bias)
        self.ff_out = nn.Linear(int(multiplier * config.mlp_width), d, bias=bias)

    def _drop(self, x: torch.Tensor, p: float) -> torch.Tensor:
        return F.dropout(x, p, self.training) if p > 0 else x

    def _attention(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], key_mask: torch.Tensor | None,
                   cached: tuple[torch.Tensor, torch.Tensor] | None, start: int):
        b, l, d = h.shape
        if self.fused:
            q, k, v = self.att_proj(h).split(self.fused_dims, dim=-1)
        else:
            q, k, v = self.q_proj(h), self.k_proj(h), self.v_proj(h)
        if self.config.attention_layer_norm:
            q, k = self.q_norm(q).to(k.dtype), self.k_norm(k).to(k.dtype)
        q = q.view(b, l, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, D)
        k = k.view(b, l, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, l, self.kv_heads, self.head_dim).transpose(1, 2)
        sin, cos = rope
        if self.config.rope_full_precision:
            q, k = _rotate(q.float(), sin, cos).type_as(q), _rotate(k.float(), sin, cos).type_as(k)
        else:
            q, k = _rotate(q, sin.type_as(q), cos.type_as(q)), _rotate(k, sin.type_as(k), cos.type_as(k))
        if cached is not None:  # the window's keys/values written over the cached ones (core/kv_cache.py)
            cached[0][..., start:start + l, :] = k
            cached[1][..., start:start + l, :] = v
            k, v = cached
        kv = (k, v)
        if self.kv_heads != self.n_heads:
            k = k.repeat_interleave(self.n_heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.n_heads // self.kv_heads, dim=1)
        p = self.config.attention_dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p)
        return self.attn_out(att.transpose(1, 2).reshape(b, l, d)), kv

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], key_mask: torch.Tensor | None,
                cached: tuple[torch.Tensor, torch.Tensor] | None = None, start: int = 0,
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, W, d) -> (x, this layer's (keys, values) (B, kv heads, W or L, D)); with
        ``cached`` the W queries attend over the cached keys/values, [start, start + W) their own."""
        p = self.config.residual_dropout
        att, kv = self._attention(self.attn_norm(x), rope, key_mask, cached, start)
        x = x + self._drop(att, p)
        h = self.ff_norm(x)
        h = self.act(self.ff_proj(h)) if self.fused else self.act(self.ff_proj(h)) * self.up_proj(h)
        return x + self._drop(self.ff_out(h), p), kv


class _Transformer(nn.Module):
    """Holds ``transformer`` (a ModuleDict) so parameter names are ``model.transformer.*``."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        parts = dict(wte=nn.Embedding(config.embedding_size or config.vocab_size, config.d_model),
                     blocks=nn.ModuleList(_Block(config) for _ in range(config.n_layers)),
                     ln_f=_Norm(config))
        if not config.weight_tying:
            parts["ff_out"] = nn.Linear(config.d_model, config.embedding_size or config.vocab_size,
                                        bias=bool(config.include_bias))
        self.transformer = nn.ModuleDict(parts)


class LLaDAModelLM(PreTrainedModel):
    """LLaDA's masked diffusion LM (module docstring)."""

    config_class = LLaDAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["_Block"]
    _supports_sdpa = True

    def __init__(self, config: LLaDAConfig):
        config.check_supported()
        super().__init__(config)
        self.model = _Transformer(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Random init for new models only (checkpoints overwrite it): normal(init_std)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _Norm):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer.wte = value

    def get_output_embeddings(self) -> nn.Module | None:
        return None if self.config.weight_tying else self.model.transformer.ff_out

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        t = self.model.transformer
        x = t.ln_f(x)
        logits = F.linear(x, t.wte.weight) if self.config.weight_tying else t.ff_out(x)
        return logits / math.sqrt(self.config.d_model) if self.config.scale_logits else logits

    def forward(
        self,
        input_ids: torch.Tensor | None = None,  # (B, L)
        attention_mask: torch.Tensor | None = None,  # (B, L) 1 = real token, 0 = padding
        logits_positions: torch.Tensor | None = None,  # (B, K) positions that need logits
        inputs_embeds: torch.Tensor | None = None,  # (B, L, d_model) instead of input_ids
        **_: object,
    ) -> MaskedLMOutput:
        return MaskedLMOutput(logits=self._run(input_ids, attention_mask, logits_positions, inputs_embeds)[0])

    def forward_cached(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       logits_positions: torch.Tensor | None = None, cache=None, window: tuple[int, int] | None = None):
        """The block KV cache protocol of core/kv_cache.py (as models/tiny.py): a full forward that
        also returns every layer's keys/values, or only ``window``'s tokens over ``cache``."""
        from maskgrpo.core.kv_cache import BlockKV

        if (cache is None) != (window is None):
            raise ValueError("forward_cached takes a cache and a window together, or neither")
        logits, layers = self._run(input_ids, attention_mask, logits_positions, None, cache, window)
        return logits, cache if cache is not None else BlockKV(tuple((k.detach().clone(), v.detach().clone())
                                                                     for k, v in layers))

    def _run(self, input_ids, attention_mask, logits_positions, inputs_embeds=None, cache=None, window=None):
        """(logits, per-layer keys/values); ``window`` (start, end): only those tokens, over ``cache``."""
        t, c = self.model.transformer, self.config
        x = t.wte(input_ids) if inputs_embeds is None else inputs_embeds
        b, l = x.shape[:2]
        valid = torch.ones(b, l, dtype=torch.bool, device=x.device) if attention_mask is None else attention_mask.bool()
        start, end = window if window is not None else (0, l)
        x = x[:, start:end]
        if c.input_emb_norm:
            x = x * (c.d_model ** 0.5)
        if c.embedding_dropout > 0:
            x = F.dropout(x, c.embedding_dropout, self.training)
        positions = (valid.long().cumsum(dim=1) - 1).clamp(min=0)  # counted from the first real token
        rope = _rope(positions[:, start:end], c.d_model // c.n_heads, c.rope_theta)
        key_mask = None if bool(valid.all()) else valid[:, None, None, :]  # (B, 1, 1, L) True = attend
        layers = []
        for i, block in enumerate(t.blocks):
            x, kv = block(x, rope, key_mask, None if cache is None else cache.layers[i], start)
            layers.append(kv)
        if logits_positions is not None:
            x = x.gather(1, (logits_positions - start).unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, K, d)
        return self._head(x), layers


class MMadaModelLM(LLaDAModelLM):
    """MMaDA's network: LLaDA's, with MMaDA's config (vocabulary of text + image codes)."""

    config_class = MMadaConfig


def llada_8b_config(**overrides) -> LLaDAConfig:
    """LLaDA-8B-Instruct's config.json fields (4096 wide, 32 layers and heads, MLP 12288, vocabulary
    126464, untied, RMSNorm, RoPE 500000, no dropout): for random-weight benchmarks, no download."""
    fields = dict(d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288, activation_type="silu",
                  block_type="llama", rope=True, rope_theta=500000.0, layer_norm_type="rms", bias_for_layer_norm=False,
                  include_bias=False, weight_tying=False, vocab_size=126464, embedding_size=126464,
                  attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0, max_sequence_length=4096,
                  mask_token_id=126336, eos_token_id=126081, pad_token_id=126081)
    fields.update(overrides)
    return LLaDAConfig(**fields)


NATIVE_MODEL_TYPES = {LLaDAConfig.model_type: LLaDAModelLM, MMadaConfig.model_type: MMadaModelLM}

for _config, _model in ((LLaDAConfig, LLaDAModelLM), (MMadaConfig, MMadaModelLM)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoModelForMaskedLM.register(_config, _model, exist_ok=True)
