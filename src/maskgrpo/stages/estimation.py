"""What rollout stores for the estimators and update reads back: the data, not the modality.

A rollout's tensors hold, beside the sequences and the cached log-probs, everything
``core.importance.EstimatorInput`` needs (``estimator_tensors``): the target positions, the
prompt-valid and loss-valid masks, the AR ramp start (-1: unordered image slots), the vocabulary
slice (absent: all of it) and the mask id. ``estimator_input`` rebuilds the input of any rows
from them, so the update needs neither the tokenizer nor the modality.
"""

from __future__ import annotations

import torch

from maskgrpo.core.importance import EstimatorInput, estimator_config as core_estimator_config, get_estimator
from maskgrpo.specs import RlSpec
from maskgrpo.stages.seeds import Salt, stage_generator

# Per-round tensors (the same in every shard): taken from shard 0, not concatenated.
ROUND_CONSTANTS = ("mask_seeds", "prompt_length", "target_positions", "ramp_start", "vocab_slice", "mask_id")


def mask_seeds(seed: int, num_iterations: int) -> list[int]:
    """The mu mask seeds S_1..S_mu of a round (shared by every shard and by the update)."""
    g = stage_generator(seed, Salt.MASK_SEEDS)
    return torch.randint(0, 2**62, (num_iterations,), generator=g).tolist()


def estimator_config(rl: RlSpec):
    """The estimator's typed config from its own options block (``rl.spg``, ``rl.wd1``) or from
    the RlSpec fields of the same names (others: defaults)."""
    block = getattr(rl, rl.estimator, None)
    if block is not None:
        return core_estimator_config(rl.estimator, **block.model_dump())
    fields = get_estimator(rl.estimator).config.__dataclass_fields__
    return core_estimator_config(rl.estimator, **{f: getattr(rl, f) for f in fields if f in RlSpec.model_fields})


def estimator_tensors(inp: EstimatorInput, mask_id: int) -> dict[str, torch.Tensor]:
    out = {
        "input_ids": inp.input_ids.cpu(), "target_positions": inp.target_positions.cpu(),
        "prompt_valid": inp.prompt_valid.cpu(), "loss_valid": inp.loss_valid.cpu(),
        "ramp_start": torch.tensor([-1 if inp.ramp_start is None else inp.ramp_start]),
        "mask_id": torch.tensor([mask_id]),
    }
    if inp.vocab_slice is not None:
        out["vocab_slice"] = torch.tensor(list(inp.vocab_slice))
    return out


def estimator_input(data: dict[str, torch.Tensor], rows: torch.Tensor, device: torch.device) -> EstimatorInput:
    """The EstimatorInput of ``rows`` of a round's data (``load_round``)."""
    ramp = int(data["ramp_start"][0])
    vocab = tuple(int(v) for v in data["vocab_slice"]) if "vocab_slice" in data else None
    return EstimatorInput(
        input_ids=data["input_ids"][rows].to(device), target_positions=data["target_positions"].to(device),
        row_ids=data["row_ids"][rows].to(device), prompt_valid=data["prompt_valid"][rows].to(device),
        loss_valid=data["loss_valid"][rows].to(device), ramp_start=None if ramp < 0 else ramp, vocab_slice=vocab,
    )
