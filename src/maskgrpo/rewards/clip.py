"""CLIP-score reward for text-to-image policies (docs/algorithm.md §6), through transformers' CLIP classes.

Implements:
1. ``ClipScorer(path)``: ``CLIPModel`` + tokenizer from a LOCAL folder (``save_pretrained``
   layout; nothing is downloaded). Images are resized to the vision tower's ``image_size``
   (bicubic) and normalised with CLIP's mean/std here, so a checkpoint without a saved image
   processor still works.
2. Score = max(cos(text embedding, image embedding), 0): torchmetrics' CLIPScore divided by 100
   (Hessel et al. 2021 use 2.5 x the same clipped cosine), computed in batches under no_grad.
3. ``clip_score``: the registered reward. The model folder comes from ``clip_model``: a reward
   parameter (``{name: clip_score, params: {clip_model: <folder or store URI>}}``; a store URI is a
   checkpoint imported with ``import_checkpoint``, fetched into ``$MASKGRPO_CACHE/models``) or a
   column (one folder per row, the first is used), else the ``MASKGRPO_CLIP_MODEL`` environment
   variable; loaded scorers are cached per folder.
   Completions are ``PIL.Image``s or PNG bytes; anything else scores None (skipped in the sum).
"""

from __future__ import annotations

import io
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

__all__ = ["ClipScorer", "clip_score", "CLIP_MEAN", "CLIP_STD", "ENV_VAR"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ENV_VAR = "MASKGRPO_CLIP_MODEL"


def _as_image(completion: Any):
    from PIL import Image

    if isinstance(completion, (bytes, bytearray)):
        return Image.open(io.BytesIO(bytes(completion))).convert("RGB")
    if hasattr(completion, "convert"):
        return completion.convert("RGB")
    return None


class ClipScorer:
    """Text-image similarity with a local CLIP checkpoint."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 32) -> None:
        from transformers import AutoTokenizer, CLIPModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no CLIP checkpoint (config.json) in {path}")
        self.model = CLIPModel.from_pretrained(path).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.device = device
        self.batch_size = batch_size
        self.image_size = self.model.config.vision_config.image_size
        self.max_length = self.model.config.text_config.max_position_embeddings

    def pixels(self, images: list) -> torch.Tensor:
        """(B, 3, S, S) normalised pixel values."""
        from PIL import Image

        size = self.image_size
        arrays = [torch.frombuffer(bytearray(im.resize((size, size), Image.BICUBIC).tobytes()), dtype=torch.uint8)
                  for im in images]
        x = torch.stack(arrays).view(len(images), size, size, 3).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def score(self, prompts: list[str], images: list) -> list[float]:
        """max(cos(text, image), 0) for each (prompt, image) pair."""
        out: list[float] = []
        for start in range(0, len(prompts), self.batch_size):
            texts, ims = prompts[start:start + self.batch_size], images[start:start + self.batch_size]
            tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt").to(self.device)
            text = self.model.get_text_features(**tokens)
            image = self.model.get_image_features(pixel_values=self.pixels(ims).to(self.device))
            text = getattr(text, "pooler_output", text)  # transformers versions differ in the return type
            image = getattr(image, "pooler_output", image)
            cos = torch.nn.functional.cosine_similarity(text.float(), image.float(), dim=-1)
            out += cos.clamp(min=0.0).tolist()
        return out


@lru_cache(maxsize=2)
def _scorer(path: str) -> ClipScorer:
    return ClipScorer(path, device="cuda" if torch.cuda.is_available() else "cpu")


def _local_folder(source: str) -> str:
    """A store URI's committed checkpoint fetched into the cache (models/loading.py,
    ``local_source``); anything else as is."""
    from maskgrpo.models.loading import local_source, parse_store_source

    return source if parse_store_source(source) is None else str(local_source(source, progress=False))


def clip_score(prompts: list[str], completions: list[Any], *, clip_model: str | list[str] | None = None,
               **columns: Any) -> list[float | None]:
    """CLIP score of each image completion against its prompt (None for non-images)."""
    if isinstance(clip_model, str):  # a reward parameter
        path = _local_folder(clip_model)
    else:  # a column, or the environment
        path = (clip_model[0] if clip_model else None) or os.environ.get(ENV_VAR)
    if not path:
        raise ValueError(f"clip_score needs a local CLIP folder: set {ENV_VAR} or pass a clip_model column")
    images = [_as_image(c) for c in completions]
    keep = [k for k, im in enumerate(images) if im is not None]
    scores = _scorer(str(path)).score([prompts[k] for k in keep], [images[k] for k in keep]) if keep else []
    out: list[float | None] = [None] * len(completions)
    for k, s in zip(keep, scores):
        out[k] = s
    return out
