"""The stages. Each is ``run(spec, store) -> Result`` plus ``python -m maskgrpo.stages.<kind>``.

    sft       masked-diffusion SFT warm start (or pass a checkpoint through)
    rollout   sample G completions per prompt, cache old/reference log-probs for the mu masks
    score     rewards and group-relative advantages
    update    mu MaskGRPO iterations per minibatch; writes the next policy
    evaluate  greedy decoding on held-out prompts, accuracy and reward
    resolve   retraining: pin the registry champion and the data snapshot of a tick
    gate      retraining: challenger vs champion, paired bootstrap, promote or not
    promote   retraining: register the challenger, move the champion alias by CAS
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

STAGES: dict[str, str] = {
    "sft": "maskgrpo.stages.sft:run",
    "rollout": "maskgrpo.stages.rollout:run",
    "score": "maskgrpo.stages.score:run",
    "update": "maskgrpo.stages.update:run",
    "evaluate": "maskgrpo.stages.evaluate:run",
    "resolve": "maskgrpo.stages.resolve:run",
    "gate": "maskgrpo.stages.gate:run",
    "promote": "maskgrpo.stages.promote:run",
}


def get_stage(kind: str) -> Callable[..., Any]:
    """The ``run`` function of a stage kind; unknown -> ValueError listing the kinds."""
    try:
        module, _, attr = STAGES[kind].partition(":")
    except KeyError:
        raise ValueError(f"unknown stage {kind!r}; valid: {', '.join(STAGES)}") from None
    return getattr(importlib.import_module(module), attr)
