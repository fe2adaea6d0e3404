"""Modalities: what differs between text and text-to-image runs, behind one interface.

The stages own the flow (skip check, policy loading, LoRA and the reference, DeepSpeed, commit);
a ``Modality`` (modalities/base.py) owns only what differs between the modalities: encoding a
batch, the SFT noising, sampling, decoding, the estimator's data, reward inputs, report files
and the vocabulary slice. One registry picks the implementation: ``modality_for(spec)`` returns
the image modality when the stage spec carries an ``image`` section, else the text one.

    text   modalities/text.py   left-padded prompts, EOS-filled completions, semi-AR sampler
    image  modalities/image.py  the MMaDA sequence layout, MaskGIT SFT, emerge/MaskGIT samplers,
                                VQ-decoded rewards, a PNG grid in the evaluation output
"""

from __future__ import annotations

from typing import Any

from maskgrpo.core.registry import LazyRegistry

from .base import Generated, Modality, SftData

__all__ = ["MODALITIES", "Generated", "Modality", "SftData", "get_modality", "modality_for"]

MODALITIES = LazyRegistry("modality", {
    "text": "maskgrpo.modalities.text:TextModality",
    "image": "maskgrpo.modalities.image:ImageModality",
})


def get_modality(image: Any = None, task: Any = None, special_tokens: Any = None) -> Modality:
    """The image modality for an ImageSpec, else the text one (``task``: the TaskSpec, if any;
    ``special_tokens``: the model's SpecialTokensSpec, whose ids image.layout 'mmada' reads)."""
    return MODALITIES.load("text" if image is None else "image")(image=image, task=task, special_tokens=special_tokens)


def modality_for(spec: Any) -> Modality:
    """The modality of a stage spec: 'image' when it carries an ``image`` section, else 'text'."""
    model = getattr(spec, "model", None)
    return get_modality(getattr(spec, "image", None), getattr(spec, "task", None), getattr(model, "special_tokens", None))
