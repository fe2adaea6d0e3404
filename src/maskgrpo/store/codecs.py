"""Bytes <-> Python values for the typed put/get helpers: JSON, JSON lines, safetensors.

Never pickle: tensors travel as safetensors, everything else as UTF-8 JSON.
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads on first tensor use, so `maskgrpo show` stays light
    import torch


def encode_json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=1, allow_nan=False).encode("utf-8")


def encode_jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n"
                   for r in rows).encode("utf-8")


def decode_jsonl(data: bytes) -> list[dict]:
    """Blank lines are skipped; a bad line raises ValueError naming its 1-based number."""
    rows = []
    for i, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise ValueError(f"line {i} is not JSON ({e})") from None
    return rows


def encode_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> bytes:
    import torch
    from safetensors.torch import save as _st_save

    if not isinstance(tensors, dict) or not all(
            isinstance(v, torch.Tensor) for v in tensors.values()):
        raise TypeError("put_tensors needs a dict[str, torch.Tensor]")
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    try:
        return _st_save(cpu, metadata=metadata)
    except RuntimeError:  # tensors sharing storage (views of one buffer): give each its own
        return _st_save({k: v.clone() for k, v in cpu.items()}, metadata=metadata)


def decode_tensors(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as _st_load

    return _st_load(data)


def tensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (8-byte little-endian header size + JSON)."""
    if len(data) < 8:
        raise ValueError("too short to be safetensors")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError("safetensors header size exceeds the data")
    return json.loads(data[8:8 + n]).get("__metadata__", {}) or {}
