"""Token sequences as the policy reads them (docs/algorithm.md §1): left-padded prompt batches and
EOS-filled completions. Shared by every tokenizer (the toy character one and Hugging Face's).

>>> left_pad([[5, 6], [7]], pad_id=0).tolist()
[[5, 6], [0, 7]]
>>> eos_filled([5, 6], eos_id=1, length=4)
[5, 6, 1, 1]
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["left_pad", "eos_filled"]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, length: int | None = None,
             labels: Sequence[str] | None = None) -> torch.Tensor:
    """(B, L) long tensor, each row right-aligned after ``pad_id``s; ``length`` None = the longest.

    A row longer than ``length`` -> ValueError naming it by ``labels[b]`` (e.g. its text)."""
    longest = max((len(r) for r in rows), default=0)
    length = longest if length is None else length
    for b, row in enumerate(rows):
        if len(row) > length:
            label = repr(labels[b][:60]) if labels is not None else f"row {b}"
            raise ValueError(f"{label} has {len(row)} tokens, longer than length={length}")
    out = torch.full((len(rows), length), pad_id, dtype=torch.long)  # (B, L)
    for b, row in enumerate(rows):
        if len(row):
            out[b, length - len(row):] = torch.as_tensor(list(row), dtype=torch.long)
    return out


def eos_filled(ids: Sequence[int], eos_id: int, length: int, label: str | None = None) -> list[int]:
    """``ids`` + EOS, then EOS up to ``length`` (the unused tail of a completion is EOS).

    Too long for one EOS -> ValueError naming ``label``."""
    if len(ids) + 1 > length:
        name = repr(label[:60]) if label is not None else "completion"
        raise ValueError(f"completion {name} needs {len(ids) + 1} tokens (text + EOS), more than length={length}")
    return list(ids) + [eos_id] * (length - len(ids))
