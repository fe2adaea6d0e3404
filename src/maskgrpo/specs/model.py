"""The policy to start from (``model``): its source, size, dtype and device, special token ids,
LoRA, DeepSpeed."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_serializer, model_validator

from maskgrpo.specs._base import _drop_defaults, _Spec


class TinyModelSpec(_Spec):
    hidden_size: int = Field(128, ge=8, le=16_384, description="Width of the tiny built-in transformer. At most 16,384.")
    num_layers: int = Field(2, ge=1, le=48, description="Transformer blocks of the tiny model.")
    num_heads: int = Field(4, ge=1, le=256, description="Attention heads; must divide hidden_size. At most 256.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout in the tiny model (off in eval mode).")

    @model_validator(mode="after")
    def _heads_divide(self) -> "TinyModelSpec":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        return self


# SpecialTokensSpec field -> the ImageLayout field it sets (models/layout.py) with image.layout 'mmada'.
_LAYOUT_FIELDS = {"mask_id": "mask_id", "pad_id": "pad_id", "eos_id": "eos_id", "image_token_offset": "code_offset",
                  "image_codebook_size": "codebook_size", "soi_id": "soi_id", "eoi_id": "eoi_id", "t2i_id": "t2i_id"}
IMAGE_ID_FIELDS = ("image_token_offset", "image_codebook_size", "soi_id", "eoi_id", "t2i_id")  # read only by 'mmada'


class SpecialTokensSpec(_Spec):
    """Special token ids of a real checkpoint; None = take it from the tokenizer/config (image ids: MMaDA-8B's)."""

    mask_id: int | None = Field(None, ge=0, description="Mask token m (LLaDA/MMaDA: 126336).")
    pad_id: int | None = Field(None, ge=0, description="Padding id for left-padded prompts (LLaDA: 126081, the EOS).")
    eos_id: int | None = Field(None, ge=0, description="End of sequence; fills a completion's tail (LLaDA: 126081).")
    image_token_offset: int | None = Field(None, ge=0, description="Id of VQ code 0 (MMaDA: 126349; token = offset + code).")
    image_codebook_size: int | None = Field(None, ge=1, le=2**20, description="VQ codebook size (MMaDA: 8192). At most 2^20.")
    soi_id: int | None = Field(None, ge=0, description="<|soi|>: start of the image slots (MMaDA: 126084).")
    eoi_id: int | None = Field(None, ge=0, description="<|eoi|>: end of the image slots (MMaDA: 126085).")
    t2i_id: int | None = Field(None, ge=0, description="<|t2i|>: text-to-image task token (MMaDA: 126088).")

    def layout_ids(self) -> dict[str, int]:
        """The ids set here, by the ImageLayout field they set (image.layout 'mmada')."""
        return {_LAYOUT_FIELDS[k]: v for k, v in self if k in _LAYOUT_FIELDS and v is not None}

    def field_of(self, layout_field: str) -> str:
        """The field of this spec to blame for an inconsistent ImageLayout field: the one that sets
        it when set, else the codebook placement that moved onto MMaDA's default."""
        named = [k for k, v in _LAYOUT_FIELDS.items() if v == layout_field and getattr(self, k) is not None]
        moved = [k for k in ("image_token_offset", "image_codebook_size") if getattr(self, k) is not None]
        return (named or moved or [k for k, v in _LAYOUT_FIELDS.items() if v == layout_field] or ["image_token_offset"])[0]


class LoraSpec(_Spec):
    r: int = Field(8, ge=1, le=4_096, description="LoRA rank (reference: 128). At most 4,096.")
    alpha: float = Field(16.0, gt=0.0, description="LoRA alpha; the update is scaled by alpha / r (reference: 64).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input (reference: 0.05).")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names (suffixes) that get adapters, or 'all-linear' (every linear but the LM head)."
    )


class DeepSpeedSpec(_Spec):
    enabled: bool = Field(False, description="Run update and SFT under a DeepSpeed engine (launch with torchrun or deepspeed).")
    zero_stage: int = Field(2, ge=0, le=3, description="ZeRO stage 0-3 (reference: 2).")
    gradient_accumulation_steps: int = Field(1, ge=1, le=4_096, description="Micro-batches per optimizer step on each rank. At most 4,096.")
    offload_optimizer: bool = Field(False, description="Keep optimizer state in CPU memory (ZeRO 1-3).")
    offload_params: bool = Field(False, description="Keep parameters in CPU memory (ZeRO 3 only).")
    backend: Literal["auto", "nccl", "gloo"] = Field("auto", description="torch.distributed backend; auto = nccl on CUDA, gloo on CPU.")

    @model_validator(mode="after")
    def _offload(self) -> "DeepSpeedSpec":
        if self.offload_params and self.zero_stage != 3:
            raise ValueError(f"offload_params needs zero_stage 3, got {self.zero_stage}")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
        return self


class ModelSpec(_Spec):
    source: str = Field(
        "builtin:tiny",
        description="'builtin:tiny' (a fresh tiny model sized by `tiny`), or a checkpoint: a local "
        "folder or a store URI in the transformers layout.",
    )
    tiny: TinyModelSpec = Field(default_factory=TinyModelSpec, description="Size of the built-in tiny model.")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Parameter dtype (bfloat16 for GPUs).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where stages run the model; auto = cuda if available.")
    adapter: Literal["auto", "tiny", "llada", "mmada", "bidirectional", "remote"] = Field(
        "auto", description="How to load and call the checkpoint (maskgrpo.models.adapters); auto = from its config's model_type."
    )
    trust_remote_code: bool | dict[str, str] = Field(
        False, description="Run the checkpoint's own modelling code, only for architectures maskgrpo does not implement "
        "(LLaDA/MMaDA load natively): the {file: sha256} pins of its *.py files that `maskgrpo import` prints, "
        "checked before every load; true alone is refused.")
    special_tokens: SpecialTokensSpec = Field(default_factory=SpecialTokensSpec, description="Special ids overriding the tokenizer's.")
    chat_template: bool = Field(False, description="Wrap each prompt in the tokenizer's chat template as one user turn (Instruct models).")
    lora: LoraSpec | None = Field(None, description="Train LoRA adapters instead of every weight (None = full fine-tuning).")
    load_in_4bit: bool = Field(False, description="Load the frozen base in 4 bits (bitsandbytes, CUDA only; needs lora).")
    gradient_checkpointing: bool = Field(False, description="Recompute each block's activations in the backward pass (models that support it: llada, mmada, transformers backbones); trades about one extra forward for activation memory (docs/real-models.md).")
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec, description="DeepSpeed ZeRO for update and SFT.")

    @model_validator(mode="after")
    def _quantized_needs_lora(self) -> "ModelSpec":
        if self.trust_remote_code is True:
            raise ValueError("trust_remote_code: true would run any code the checkpoint holds; set it to the "
                             "{file: sha256} pins printed by `maskgrpo import` (LLaDA/MMaDA need none: they load natively)")
        if isinstance(self.trust_remote_code, dict):
            bad = [k for k, v in self.trust_remote_code.items() if len(v) != 64 or any(c not in "0123456789abcdefABCDEF" for c in v)]
            if bad:
                raise ValueError(f"trust_remote_code.{bad[0]}: expected a sha256 (64 hex digits)")
        if self.load_in_4bit and self.lora is None:
            raise ValueError("load_in_4bit trains nothing without lora: set model.lora")
        if self.lora is not None and self.source == "builtin:tiny":
            raise ValueError("model.lora needs a checkpoint source: adapters are saved without their base, "
                             "and builtin:tiny's random base is never saved")
        return self

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:  # gradient_checkpointing came later: off leaves the JSON unchanged
        return _drop_defaults(handler(self), self, "gradient_checkpointing")
