"""One tiny end-to-end run per estimator/objective (and per official-reproduction option): the
stages called directly against a file:// store, every run of the module under one run id so the
SFT warm start and the baseline evaluation are computed once (their specs do not depend on the
estimator) and every RL stage is recomputed (its spec does).

Checks what each objective promises at the stage level: the update trains (weights move, the loss
is finite), ratio-free objectives (spg, wd1) store no old log-probs and spend no rollout forwards
on them, and the update's forwards per completion are views x mu."""

from __future__ import annotations

import math

import pytest
import torch

from maskgrpo.core.importance import views_per_iteration
from maskgrpo.plan import build_plan
from maskgrpo.specs import RunSpec
from maskgrpo.stages import get_stage
from maskgrpo.artifacts import ROLLOUT as ROLLOUT_FILE
from maskgrpo.stages.estimation import estimator_config
from maskgrpo.stages.policy import load_policy, weight_digest
from maskgrpo.store import open_store

from .conftest import TINY_DOC

RUN_ID = "estimators"
MU = 2


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return open_store(f"file://{tmp_path_factory.mktemp('estimator-runs') / 'runs'}")


def run_with(store, **rl) -> tuple[RunSpec, dict]:
    doc = {**TINY_DOC, "rl": {**TINY_DOC["rl"], "num_iterations": MU, **rl}}
    run = RunSpec.model_validate(doc)
    results = {call.name: get_stage(call.kind)(call.spec, store) for call in build_plan(run, RUN_ID, store.uri, 1)}
    return run, results


@pytest.mark.slow
@pytest.mark.parametrize("rl", [
    {"estimator": "d1"}, {"estimator": "random"}, {"estimator": "unigrpo"}, {"estimator": "maskgrpo"},
    {"estimator": "coupled"}, {"estimator": "spg", "spg": {"block_length": 4}}, {"estimator": "wd1"},
    {"estimator": "espo"},
    {"estimator": "maskgrpo", "loss_tokens": "coverage", "normalization": "group", "ar_span": "sequence"},
    {"estimator": "maskgrpo", "ratio_level": "sequence"},
], ids=lambda rl: "-".join(str(v) for v in rl.values() if not isinstance(v, dict)))
def test_estimator_trains_end_to_end(store, rl):
    run, results = run_with(store, **rl)
    update, rollout = results["update_1"], results["rollout_1"]
    assert update.optimizer_steps == MU and not update.skipped
    assert math.isfinite(update.loss) and 0.0 <= update.clip_ratio <= 1.0
    sft = load_policy(store, RUN_ID, "sft/0", run.model)
    assert update.weight_digest != weight_digest(sft.model)  # the objective moved the weights
    views = views_per_iteration(run.rl.estimator, estimator_config(run.rl))
    assert update.forwards_per_completion == pytest.approx(views * MU)
    tensors = store.open(RUN_ID, "rollout", 1).get_tensors(ROLLOUT_FILE)
    if run.rl.estimator in ("spg", "wd1"):  # ratio-free: no old-policy pass at rollout time
        assert "old_logprobs" not in tensors and rollout.logprob_forwards_per_completion == 0
    else:
        assert tensors["old_logprobs"].shape[0] == MU
        assert rollout.logprob_forwards_per_completion == views * MU
    if run.rl.loss_tokens == "coverage":  # old log-probs at every completion position
        assert bool((tensors["old_logprobs"] != 0).all())


def test_the_sft_and_baseline_are_shared_across_estimators(store):
    _, results = run_with(store, estimator="d1")
    assert results["sft"].skipped and results["evaluate_0"].skipped
    assert not results["update_1"].skipped
    assert torch.is_tensor(store.open(RUN_ID, "rollout", 1).get_tensors(ROLLOUT_FILE)["masked"])
