"""Text-to-image settings (``image``): the sequence layout, SFT noising, the evaluation protocol and
the VQ decoder for the rewards."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_serializer

from maskgrpo.specs._base import _drop_defaults, _drop_unset, _Spec


class ImageDecoderSpec(_Spec):
    """A VQ decoder turning image codes into pixels for the rewards (maskgrpo.models.vq)."""

    class_path: str = Field(
        pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$",
        description="'package.module:Class' with from_pretrained(folder) and decode_code(codes (B, N)) -> (B, 3, H, W) "
        "in [-1, 1] (MMaDA: its repository's models.modeling_magvitv2:MAGVITv2, importable in the image).",
    )
    source: str = Field(description="The decoder's weights: a local folder or a store URI (imported like a checkpoint).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the decoder runs; auto = cuda if available.")
    batch_size: int = Field(16, ge=1, le=4_096, description="Images decoded per decode_code call. At most 4,096.")


GENEVAL_PROTOCOL = {"temperature": 1.0, "steps": 32, "cfg_scale": 3.5, "maskgit": "mmada"}  # + 4 images per prompt


class ImageSpec(_Spec):
    """Text-to-image settings (modality 'image'; docs/algorithm.md §1, §2.2-2.3, §5)."""

    layout: Literal["tiny", "mmada"] = Field("tiny", description="'tiny': specials and codes appended to the character vocabulary; 'mmada': MMaDA-8B's ids.")
    grid_size: int = Field(8, ge=1, le=256, description="Image side in VQ slots; the image has grid_size^2 slots (MMaDA: 32). At most 256.")
    codebook_size: int = Field(5, ge=2, le=2**20, description="Number of image codes K (toy-geneval: 5 colours; MMaDA: 8192). At most 2^20.")
    text_slots: int = Field(40, ge=4, le=16_384, description="Length of the left-padded text segment (MMaDA: 257). At most 16,384.")
    min_masking_rate: float = Field(0.0, ge=0.0, lt=1.0, description="SFT: masked fraction max(cos(pi u / 2), this) of the image slots.")
    cond_dropout: float = Field(0.1, ge=0.0, le=1.0, description="SFT: probability of training on the empty prompt (makes CFG work).")
    eval_protocol: Literal["pipeline", "geneval"] = Field(
        "pipeline", description="'geneval': the paper's GenEval protocol, which sets evaluate.sampler to temperature 1, "
                                "32 steps, CFG 3.5 (MaskGIT as MMaDA) and 4 images per prompt; 'pipeline': the fields as given.")
    eval_images_per_prompt: int = Field(
        1, ge=1, le=64, description="Images per held-out prompt at evaluation; accuracy is the mean over all of them "
                             "(GenEval's protocol: 4 sampled images per prompt; needs a sampling evaluate sampler). At most 64.",
    )
    decoder: ImageDecoderSpec | None = Field(
        None, description="Decode the codes to PIL images before the rewards see them (None: rewards get the code text).",
    )

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:
        return _drop_defaults(_drop_unset(handler(self), self, "decoder"), self, "eval_protocol")

