"""Toy GenEval detector rewards (docs/algorithm.md §6 and §9), GenEval-style strict and soft scores.

A completion is an image of the toy world (``maskgrpo.tasks.geneval``): its grid text (one digit
per cell, as the image stages decode it), a ``PIL.Image`` or PNG bytes (read back with the
palette codec). The detector finds connected components per colour and matches shape templates;
each prompt's ``metadata`` (GenEval's ``{tag, include, exclude}``) is then checked:

1. per include item: the number of objects of its class (and colour, when given) equals
   ``count``; with ``position: [rel, j]`` some such object is ``rel`` some object of item j;
2. per exclude item: fewer than ``count`` such objects (GenEval's counting guard);
3. ``clean`` (toy addition): every component is a recognised shape, so stray cells cost reward.

``geneval_strict`` is 1.0 when every check passes, else 0.0 (GenEval's accuracy);
``geneval_soft`` is the mean of the per-check scores (a count check scores
1 - |found - count| / max(found, count)).

>>> meta = {"tag": "colors", "include": [{"class": "bar", "count": 1, "color": "red"}], "prompt": "a red bar"}
>>> good = "1110" + "0000" * 3 + "0" * 48   # a red 1x3 bar in the top-left corner of an 8x8 grid
>>> wrong_colour = good.replace("1", "3")
>>> geneval_strict(["a red bar"] * 2, [good, wrong_colour], metadata=[meta, meta])
[1.0, 0.0]
>>> geneval_soft(["a red bar"], [wrong_colour], metadata=[meta])   # count 0 of 1, clean 1.0
[0.5]
"""

from __future__ import annotations

import math
from statistics import fmean
from typing import Any

from maskgrpo.tasks.geneval import GenEvalMetadata, check_metadata, image_to_grid, png_to_grid, text_to_grid

__all__ = ["geneval_checks", "geneval_strict", "geneval_soft", "to_grid"]

DEFAULT_GRID = 8


def to_grid(completion: Any, grid_size: int | None = None) -> list[list[int]] | None:
    """The code grid of a completion (grid text, PIL image or PNG bytes); None if unreadable."""
    try:
        if isinstance(completion, str):
            side = grid_size or math.isqrt(len(completion))
            return text_to_grid(completion, side)
        if isinstance(completion, (bytes, bytearray)):
            return png_to_grid(bytes(completion), grid_size or DEFAULT_GRID)
        if hasattr(completion, "convert"):  # a PIL image
            return image_to_grid(completion, grid_size or DEFAULT_GRID)
    except (ValueError, OSError):
        return None
    return None


def geneval_checks(completions: list[Any], metadata: list[Any], grid_size: list[int] | None = None) -> list[dict[str, float] | None]:
    """Per-check scores of every completion (None when the completion is not a readable grid)."""
    if len(completions) != len(metadata):
        raise ValueError(f"{len(completions)} completions but {len(metadata)} metadata rows")
    sizes = grid_size or [None] * len(completions)
    out = []
    for k, (completion, meta, size) in enumerate(zip(completions, metadata, sizes)):
        grid = to_grid(completion, size)
        out.append(None if grid is None else check_metadata(GenEvalMetadata.from_json(meta, f"metadata[{k}]"), grid))
    return out


def geneval_strict(prompts: list[str], completions: list[Any], metadata: list[Any], grid_size: list[int] | None = None,
                   **columns: Any) -> list[float]:
    """1.0 when every GenEval check passes, else 0.0 (unreadable completions score 0.0)."""
    return [float(c is not None and all(v == 1.0 for v in c.values())) for c in geneval_checks(completions, metadata, grid_size)]


def geneval_soft(prompts: list[str], completions: list[Any], metadata: list[Any], grid_size: list[int] | None = None,
                 **columns: Any) -> list[float]:
    """Mean of the per-check scores in [0, 1] (unreadable completions score 0.0)."""
    return [fmean(c.values()) if c is not None else 0.0 for c in geneval_checks(completions, metadata, grid_size)]
