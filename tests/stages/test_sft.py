"""stages/sft.py's stopping rule (``sft.stop``): SFT ends at the first check where greedy accuracy on
training prompts reaches the target, the check being the evaluate stage's own scoring; without it
the stage runs ``sft.steps`` and its spec (hence its hash) is unchanged."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from .conftest import TINY_DOC

from maskgrpo.plan import build_plan
from maskgrpo.specs import RunSpec, SftSpec, spec_hash
from maskgrpo.stages import sft
from maskgrpo.store import open_store


def _sft_call(doc: dict, tmp_path):
    run = RunSpec.model_validate(doc)
    store = open_store(f"file://{tmp_path}/store")
    call = next(c for c in build_plan(run, "r", store.uri, 1) if c.kind == "sft")
    return call.spec, store


def _doc(steps: int = 200, **stop) -> dict:
    doc = copy.deepcopy(TINY_DOC)
    doc["sft"]["steps"] = steps
    if stop:
        doc["sft"]["stop"] = stop
    return doc


def test_sft_stops_at_the_first_check_that_reaches_the_target(tmp_path, monkeypatch):
    import maskgrpo.stages.scoring as scoring

    seen = []  # (steps trained, accuracy) at each check, accuracy from the real scoring
    real = scoring.greedy_accuracy

    def spy(policy, modality, examples, sampler, reward, task, seed):
        seen.append((len(examples), real(policy, modality, examples, sampler, reward, task, seed)))
        return seen[-1][1]

    monkeypatch.setattr(scoring, "greedy_accuracy", spy)
    spec, store = _sft_call(_doc(target_accuracy=0.05, check_every=10, check_prompts=32), tmp_path)
    assert spec.sampler.temperature == 0.0 and spec.reward is not None  # the evaluate sampler and the run's reward
    result = sft.run(spec, store)
    assert seen and all(n == 32 for n, _ in seen)
    accuracies = [a for _, a in seen]
    assert accuracies[-1] >= 0.05 and all(a < 0.05 for a in accuracies[:-1])  # stopped at the first success
    assert result.steps == 10 * len(seen) < 200 and result.train_accuracy == accuracies[-1]
    metrics = store.open("r", "sft", 0).get_json("metrics.json")
    assert metrics["steps"] == result.steps and metrics["train_accuracy"] == result.train_accuracy


def test_an_unreachable_target_runs_every_step(tmp_path):
    spec, store = _sft_call(_doc(40, target_accuracy=1.0, check_every=20, check_prompts=8), tmp_path)
    result = sft.run(spec, store)
    assert result.steps == 40 and result.train_accuracy is not None and result.train_accuracy < 1.0


def test_without_stop_the_spec_and_its_hash_are_unchanged(tmp_path):
    spec, _ = _sft_call(_doc(20), tmp_path)
    dumped = spec.model_dump(mode="json")
    assert "stop" not in dumped["sft"] and "reward" not in dumped and "sampler" not in dumped
    assert spec_hash(spec) == spec_hash(SftSpec.model_validate(dumped))
    assert "train_accuracy" not in sft.run(spec, open_store(f"file://{tmp_path}/s2")).model_dump(exclude_none=True)


def test_stop_is_refused_under_deepspeed_and_without_scoring():
    doc = _doc(target_accuracy=0.3)
    doc["model"] = {"deepspeed": {"enabled": True}}
    with pytest.raises(ValidationError, match=r"(?s)sft\.stop.*not supported under model\.deepspeed"):
        RunSpec.model_validate(doc)
    spec = RunSpec.model_validate(_doc(target_accuracy=0.3))
    call = next(c for c in build_plan(spec, "r", "file:///tmp/unused", 1) if c.kind == "sft")
    raw = call.spec.model_dump(mode="json")
    del raw["reward"]
    with pytest.raises(ValidationError, match="sft.stop needs the reward and sampler"):
        SftSpec.model_validate(raw)
