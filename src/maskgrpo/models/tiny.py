"""A tiny bidirectional masked-diffusion transformer, as a real transformers ``PreTrainedModel``.

It has its own registered config (``model_type="maskgrpo-tiny"``), so ``save_pretrained`` /
``from_pretrained`` (safetensors) and the ``AutoModelForMaskedLM`` classes work offline, and the
stages load it through the same path that serves LLaDA/MMaDA checkpoints.

Architecture: token embeddings, pre-norm transformer blocks with full (bidirectional) attention
and rotary position embeddings, final RMSNorm, an LM head tied to the embeddings. Positions are
counted from the first non-padding token, so left padding does not change a row's logits (the
result is invariant to how prompts are padded within a batch). No time input (LLaDA-style).
``logits_positions`` (B, K) runs the LM head only at those positions.

Block KV cache (core/kv_cache.py): ``forward_cached`` is ``forward`` that also returns every
layer's keys/values, or, given them and a window, runs only the window's tokens and attends over
the cached keys/values outside it. ``attention_bias`` is the one place the attention mask is
built (a test subclass makes the model prefix-causal by overriding it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForMaskedLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from maskgrpo.core.kv_cache import BlockKV, Window, write_window


class TinyMDMConfig(PretrainedConfig):
    model_type = "maskgrpo-tiny"

    def __init__(
        self,
        vocab_size: int = 64,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4,  # MLP width = int(mlp_ratio * hidden_size)
        max_position_embeddings: int = 512,
        dropout: float = 0.0,
        rope_theta: float = 10000.0,
        mask_token_id: int = 2,
        eos_token_id: int = 1,
        pad_token_id: int = 0,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.max_position_embeddings = max_position_embeddings
        self.dropout = dropout
        self.rope_theta = rope_theta
        self.mask_token_id = mask_token_id
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(pad_token_id=pad_token_id, eos_token_id=eos_token_id, **kwargs)


def _rope(positions: torch.Tensor, dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim))
    angles = positions.float().unsqueeze(-1) * inv_freq  # (B, L, dim/2)
    return angles.cos().unsqueeze(1), angles.sin().unsqueeze(1)  # (B, 1, L, dim/2)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class _Block(nn.Module):
    def __init__(self, config: TinyMDMConfig):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_heads
        self.norm1 = nn.RMSNorm(h)
        self.qkv = nn.Linear(h, 3 * h, bias=False)
        self.proj = nn.Linear(h, h, bias=False)
        self.norm2 = nn.RMSNorm(h)
        m = int(config.mlp_ratio * h)
        self.fc1 = nn.Linear(h, m, bias=False)
        self.fc2 = nn.Linear(m, h, bias=False)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], attn_bias: torch.Tensor | None,
                cached: tuple[torch.Tensor, torch.Tensor] | None = None, start: int = 0,
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, W, h) -> (x, (keys, values) (B, H, W or L, D)); with ``cached`` the W queries
        attend over the cached keys/values, positions [start, start + W) replaced by their own."""
        b, l, h = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, l, 3, self.num_heads, h // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = _rotate(q, *rope), _rotate(k, *rope)  # (B, H, W, D)
        if cached is not None:
            k, v = write_window(cached[0], k, start), write_window(cached[1], v, start)  # (B, H, L, D)
        p = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=p)
        x = x + F.dropout(self.proj(att.transpose(1, 2).reshape(b, l, h)), p, self.training)
        return x + F.dropout(self.fc2(F.gelu(self.fc1(self.norm2(x)))), p, self.training), (k, v)


class TinyMDM(PreTrainedModel):
    config_class = TinyMDMConfig
    base_model_prefix = "tiny"
    _tied_weights_keys = {"lm_head.weight": "embed.weight"}

    def __init__(self, config: TinyMDMConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.num_layers))
        self.norm = nn.RMSNorm(config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def attention_bias(self, valid: torch.Tensor, queries: torch.Tensor) -> torch.Tensor | None:
        """Additive attention bias (B, 1, W or 1, L) for the query positions ``queries`` (W,) over
        all L keys: padding keys are not attended; None when nothing is masked."""
        if bool(valid.all()):
            return None
        bias = torch.zeros(valid.shape, dtype=torch.float32, device=valid.device)
        return bias.masked_fill(~valid, float("-inf"))[:, None, None, :]  # (B, 1, 1, L)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L)
        attention_mask: torch.Tensor | None = None,  # (B, L) 1 = real token, 0 = padding
        logits_positions: torch.Tensor | None = None,  # (B, K) positions that need logits
        **_: object,
    ) -> MaskedLMOutput:
        return MaskedLMOutput(logits=self._run(input_ids, attention_mask, logits_positions, None, None, False)[0])

    def forward_cached(
        self,
        input_ids: torch.Tensor,  # (B, L)
        attention_mask: torch.Tensor | None = None,  # (B, L)
        logits_positions: torch.Tensor | None = None,  # (B, K), inside the window
        cache: BlockKV | None = None,
        window: Window = None,  # (start, end) with a cache
    ) -> tuple[torch.Tensor, BlockKV]:
        """The block KV cache protocol of core/kv_cache.py: a full forward that returns every
        layer's keys/values, or only ``window``'s tokens over ``cache``."""
        if (cache is None) != (window is None):
            raise ValueError("forward_cached takes a cache and a window together, or neither")
        logits, layers = self._run(input_ids, attention_mask, logits_positions, cache, window, cache is None)
        return logits, cache if cache is not None else BlockKV(tuple(layers))

    def _run(self, input_ids, attention_mask, logits_positions, cache: BlockKV | None, window: Window, keep: bool):
        """(logits, per-layer keys/values: own copies, detached, when ``keep``)."""
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        valid = attention_mask.bool()
        start, end = window if window is not None else (0, input_ids.shape[1])
        positions = (valid.long().cumsum(dim=1) - 1).clamp(min=0)  # counted from the first real token
        head_dim = self.config.hidden_size // self.config.num_heads
        rope = _rope(positions[:, start:end], head_dim, self.config.rope_theta)
        attn_bias = self.attention_bias(valid, torch.arange(start, end, device=input_ids.device))
        x = self.embed(input_ids[:, start:end])
        layers = []
        for i, block in enumerate(self.blocks):
            x, (k, v) = block(x, rope, attn_bias, None if cache is None else cache.layers[i], start)
            if keep:
                layers.append((k.detach().clone(), v.detach().clone()))
        if logits_positions is not None:
            index = (logits_positions - start).unsqueeze(-1).expand(-1, -1, x.shape[-1])  # (B, K, H)
            x = x.gather(1, index)
        return self.lm_head(self.norm(x)), layers


AutoConfig.register(TinyMDMConfig.model_type, TinyMDMConfig)
AutoModelForMaskedLM.register(TinyMDMConfig, TinyMDM)
