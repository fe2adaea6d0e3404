"""AdamW state between rounds: safetensors for the tensors, JSON for the rest (never pickle).

The same files under DeepSpeed (stages/distributed.py, 5), so either path can resume the other.
"""

from __future__ import annotations

from typing import Any

import torch

from maskgrpo.artifacts import OPTIMIZER_META, OPTIMIZER_TENSORS
from maskgrpo.store import Attempt, Committed


def save_optimizer(attempt: Attempt, optimizer: torch.optim.Optimizer) -> None:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    attempt.put_tensors(OPTIMIZER_TENSORS, tensors)
    attempt.put_json(OPTIMIZER_META, {"param_groups": state["param_groups"], "scalars": scalars})


def load_optimizer(committed: Committed, optimizer: torch.optim.Optimizer, *, keep_hyperparameters: bool = False) -> None:
    """The saved state into ``optimizer``; ``keep_hyperparameters``: the saved moments and step
    counts under ``optimizer``'s own lr, betas and weight decay (a retraining tick whose spec
    changed them), instead of the saved ones (the next round of the same run)."""
    own = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    tensors = committed.get_tensors(OPTIMIZER_TENSORS)
    meta = committed.get_json(OPTIMIZER_META)
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, _, key = name.partition(".")
        state.setdefault(int(index), {})[key] = value
    groups = meta["param_groups"]
    for group in groups:  # JSON turns tuples into lists
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    if keep_hyperparameters:
        if len(groups) != len(own):
            raise ValueError(f"{committed.uri}: optimizer state has {len(groups)} parameter groups, this model {len(own)}")
        groups = [{**g, **mine} for g, mine in zip(groups, own)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
