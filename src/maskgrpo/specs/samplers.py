"""The samplers (``rl.sampler``, ``evaluate.sampler``): one union keyed by ``kind``, text or image."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, model_serializer, model_validator

from maskgrpo.specs._base import _drop_defaults, _Spec


class TextSamplerSpec(_Spec):
    kind: Literal["text"] = Field("text", description="Sampler kind: 'text' (semi-AR low-confidence); must match the run's modality.")
    gen_length: int = Field(16, ge=1, le=16_384, description="Completion length L_o (tokens), EOS-filled after the answer. At most 16,384.")
    steps: int = Field(16, ge=1, le=16_384, description="Denoising steps S over the whole completion. At most 16,384.")
    block_length: int = Field(8, ge=1, le=16_384, description="Semi-AR block length b; must divide gen_length. At most 16,384.")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature tau (0 = greedy).")
    cfg_scale: float = Field(0.0, ge=0.0, description="Classifier-free guidance scale w (0 = off).")
    remasking: Literal["low_confidence", "random"] = Field("low_confidence", description="Which positions to commit each step.")
    threshold: float | None = Field(None, gt=0.0, le=1.0, description="Confidence-threshold parallel decoding (None = fixed quotas).")
    early_exit: bool = Field(False, description="Stop a row once a finished block is all EOS.")
    cache: Literal["none", "prefix", "dual"] = Field(
        "none", description="Block KV cache (Fast-dLLM): 'prefix' reuses the prompt's and finished blocks' keys/values "
        "within a block, 'dual' also the later blocks'; approximate with bidirectional attention (bench/README.md)."
    )

    @model_validator(mode="after")
    def _divisible(self) -> "TextSamplerSpec":
        if self.gen_length % self.block_length:
            raise ValueError(f"block_length ({self.block_length}) must divide gen_length ({self.gen_length})")
        blocks = self.gen_length // self.block_length
        if self.steps % blocks:
            raise ValueError(f"steps ({self.steps}) must be divisible by the number of blocks ({blocks})")
        return self

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:  # 'text' is the default kind: documents without it stay unchanged
        data = handler(self)
        if isinstance(data, dict):
            data.pop("kind", None)
            if self.cache == "none":  # likewise cache 'none' (the field came later)
                data.pop("cache", None)
        return data


class ImageSamplerSpec(_Spec):
    kind: Literal["image"] = Field("image", description="Sampler kind: 'image' (over the image slots); must match the run's modality.")
    sampler: Literal["emerge", "maskgit"] = Field("emerge", description="Image sampler: MaskGRPO's emerge (diverse) or MaskGIT cosine (confidence-greedy).")
    steps: int = Field(12, ge=1, le=1_024, description="Denoising steps T over the image slots. At most 1,024.")
    cfg_scale: float = Field(3.0, ge=0.0, description="Classifier-free guidance scale w against the empty prompt (0 = off).")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature of the code draws (0 = argmax); MaskGIT 'mmada': the confidence-noise scale.")
    maskgit: Literal["linear", "mmada"] = Field(
        "linear", description="MaskGIT noise: 'linear' (candidates from softmax(z / tau), argmax at 0; noise tau (1 - r)) or "
                              "'mmada' (MMaDA's t2i_generate: candidates from softmax(z) whatever tau, noise tau_s compounding).")
    float32_count: bool = Field(False, description="MaskGIT: count the masked slots with float32 cosine as MMaDA (N/2 - 1 at r = 2/3).")

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:
        return _drop_defaults(handler(self), self, "maskgit", "float32_count")


def _sampler_kind(value: Any) -> str:
    return value.get("kind", "text") if isinstance(value, dict) else getattr(value, "kind", "text")


# The samplers, one union keyed by ``kind`` (absent: 'text'; an image run fills in 'image').
SamplerSpec = Annotated[
    Union[Annotated[TextSamplerSpec, Tag("text")], Annotated[ImageSamplerSpec, Tag("image")]], Discriminator(_sampler_kind)
]
IMAGE_SAMPLER_DEFAULTS = {"rl": {}, "evaluate": {"sampler": "maskgit", "temperature": 0.0}}  # emerge rollouts, MaskGIT argmax evaluation
