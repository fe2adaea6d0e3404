"""A TEST DOUBLE of MMaDA's MAGVIT-v2 decoder (its weights cannot be downloaded here), shared by
tests/models/test_vq.py and tests/stages/test_image_stages.py.

It has MAGVITv2's interface (``from_pretrained(folder)``, ``decode_code(codes (B, N)) -> (B, 3, H,
W)`` in [-1, 1]) and paints each code as a ``cell x cell`` block of the toy GenEval palette, so a
decoded image is readable by the toy detector rewards and the arithmetic is visible.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from maskgrpo.tasks.geneval import PALETTE

CLASS_PATH = f"{__name__}:PaletteDecoder"


class PaletteDecoder(torch.nn.Module):
    """Test double of MAGVITv2 (module docstring). Config: ``palette.json`` in the folder."""

    calls: list = []  # batch sizes of decode_code calls, for the batching test

    def __init__(self, colours: list, cell: int) -> None:
        super().__init__()
        rgb = torch.tensor(colours, dtype=torch.float32)  # (K, 3) in 0..255
        self.register_buffer("table", rgb / 127.5 - 1.0)  # (K, 3) in [-1, 1]
        self.cell = cell

    @classmethod
    def from_pretrained(cls, folder: str) -> "PaletteDecoder":
        doc = json.loads((Path(folder) / "palette.json").read_text())
        return cls(doc["colours"], doc["cell"])

    def decode_code(self, codes: torch.Tensor) -> torch.Tensor:
        type(self).calls.append(codes.shape[0])
        side = int(codes.shape[1] ** 0.5)
        x = self.table[codes].view(codes.shape[0], side, side, 3).permute(0, 3, 1, 2)  # (B, 3, side, side)
        return x.repeat_interleave(self.cell, dim=2).repeat_interleave(self.cell, dim=3)  # (B, 3, H, W)


def write_palette_decoder(folder: Path, cell: int = 4) -> Path:
    """A decoder folder: code k -> the toy palette's k-th colour, ``cell`` px per code."""
    folder.mkdir(parents=True, exist_ok=True)
    colours = [list(PALETTE[name][1]) for name in PALETTE]
    (folder / "palette.json").write_text(json.dumps({"colours": colours, "cell": cell}))
    return folder
