"""The stages. Each is ``run(spec, store) -> Result`` plus ``python -m maskgrpo.stages.<kind>``.

    sft       masked-diffusion SFT warm start (or pass a checkpoint through)
    rollout   sample G completions per prompt, cache old/reference log-probs for the mu masks
    score     rewards and group-relative advantages
    update    mu MaskGRPO iterations per minibatch; writes the next policy
    evaluate  held-out sampling (greedy by default), accuracy and reward
    resolve   retraining: pin the registry champion and the data snapshot of a tick
    gate      retraining: challenger vs champion, paired bootstrap, promote or not
    promote   retraining: register the challenger, move the champion alias by CAS

No stage module imports another (tests/test_architecture.py); what they share lives in the
helper modules: policy.py (policies, LoRA, checkpoints), data.py (examples), estimation.py (the
estimator's stored data), scoring.py (rewards), seeds.py, optimizer.py, main.py, distributed.py,
outputs.py, retrain.py (a retraining tick's resolution). What differs between text and images is the modality's (maskgrpo.modalities).
"""

from __future__ import annotations

from typing import Any, Callable

from maskgrpo.core.registry import LazyRegistry

STAGE_MODULES = ("sft", "rollout", "score", "update", "evaluate", "resolve", "gate", "promote")
STAGES = LazyRegistry("stage", {kind: f"maskgrpo.stages.{kind}:run" for kind in STAGE_MODULES})


def get_stage(kind: str) -> Callable[..., Any]:
    """The ``run`` function of a stage kind; unknown -> ValueError listing the kinds."""
    return STAGES.load(kind)


def run_stage(kind: str, spec: Any, store: Any) -> Any:
    """Run stage ``kind`` on ``spec``, after applying the run's committed retraining resolution
    (stages/retrain.py ``resolved_spec``: a pinned champion and data snapshot; other specs pass
    unchanged). The local runners' executors call this; ``stage_main`` (stages/main.py) does the same with its own ``run``."""
    from maskgrpo.stages.retrain import resolved_spec

    return get_stage(kind)(resolved_spec(spec, store), store)
