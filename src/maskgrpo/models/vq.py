"""VQ image decoders: image codes -> pixels, so rewards can score real images (docs/algorithm.md §1, §6).

Implements:
1. ``VQDecoder``: the protocol MMaDA's MAGVIT-v2 tokenizer follows (its repository's
   ``models/modeling_magvitv2.py``, class ``MAGVITv2``, a diffusers ``ModelMixin``): built with
   ``Class.from_pretrained(folder)``; ``decode_code(codes)`` takes (B, N) code indices (N = 32 x 32
   for 512 px) and returns (B, 3, H, W) float images in [-1, 1].
2. ``load_decoder(class_path, folder, device)``: imports ``"package.module:Class"``, loads it from
   a LOCAL folder (the caller fetches a store URI first: ``maskgrpo.models.loading.local_source``),
   eval mode, on ``device``; cached per (class, folder, device) so a process loads it once.
3. ``decode_images(decoder, codes, batch_size)``: batches under ``torch.no_grad``, then pixels as
   MMaDA converts them: ``clamp((x + 1) / 2, 0, 1) * 255`` truncated to uint8, one RGB
   ``PIL.Image`` per row.

Deviation: MMaDA clamps generated ids into [0, codebook) before decoding (an untrained model can
emit text ids); here codes come from the codebook slice of the logits and are always in range,
so an out-of-range code is an error instead.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["VQDecoder", "import_class", "load_decoder", "decode_images", "to_pil"]


@runtime_checkable
class VQDecoder(Protocol):
    def decode_code(self, codes: torch.Tensor) -> torch.Tensor: ...  # (B, N) long -> (B, 3, H, W) in [-1, 1]


def import_class(class_path: str) -> type:
    """The class named by ``"package.module:Class"``; errors name ``image.decoder.class_path``."""
    module, sep, attr = class_path.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"image.decoder.class_path {class_path!r}: expected 'package.module:Class'")
    try:
        found = getattr(importlib.import_module(module), attr)
    except ImportError as err:
        raise ImportError(f"image.decoder.class_path {class_path!r}: cannot import {module!r} ({err}); "
                          "is the decoder's code installed or on PYTHONPATH?") from None
    except AttributeError:
        raise ImportError(f"image.decoder.class_path {class_path!r}: {module!r} has no {attr!r}") from None
    if not hasattr(found, "from_pretrained") or not hasattr(found, "decode_code"):
        raise TypeError(f"image.decoder.class_path {class_path!r}: needs from_pretrained(folder) and decode_code(codes)")
    return found


@lru_cache(maxsize=2)
def load_decoder(class_path: str, folder: str | Path, device: str = "cpu") -> VQDecoder:
    """``Class.from_pretrained(folder)`` in eval mode on ``device`` (module docstring, 2)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image.decoder.source: no decoder folder at {folder}")
    decoder = import_class(class_path).from_pretrained(str(folder))
    if isinstance(decoder, torch.nn.Module):
        decoder = decoder.to(device).eval()
    return decoder


def _device_of(decoder: Any) -> torch.device:
    if isinstance(decoder, torch.nn.Module):
        for p in decoder.parameters():
            return p.device
    return torch.device("cpu")


def to_pil(images: torch.Tensor) -> list:
    """(B, 3, H, W) in [-1, 1] -> RGB ``PIL.Image``s (MMaDA's conversion, module docstring 3)."""
    from PIL import Image

    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"decode_code must return (B, 3, H, W) images, got shape {tuple(images.shape)}")
    pixels = (torch.clamp((images.float() + 1.0) / 2.0, 0.0, 1.0) * 255.0).to(torch.uint8)  # (B, 3, H, W)
    pixels = pixels.permute(0, 2, 3, 1).contiguous().cpu()  # (B, H, W, 3)
    return [Image.frombytes("RGB", (row.shape[1], row.shape[0]), row.numpy().tobytes()) for row in pixels]


@torch.no_grad()
def decode_images(decoder: VQDecoder, codes: torch.Tensor, batch_size: int = 16, codebook_size: int | None = None) -> list:
    """One RGB ``PIL.Image`` per row of ``codes`` (B, N), decoded ``batch_size`` rows at a time."""
    if codes.ndim != 2:
        raise ValueError(f"codes must be (B, N), got shape {tuple(codes.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or (codebook_size is not None and int(codes.max()) >= codebook_size)):
        raise ValueError(f"image codes outside [0, {codebook_size}): min {int(codes.min())}, max {int(codes.max())}")
    device = _device_of(decoder)
    out: list = []
    for start in range(0, codes.shape[0], batch_size):
        batch = codes[start:start + batch_size].to(device)  # (b, N)
        out += to_pil(decoder.decode_code(batch))
    return out
