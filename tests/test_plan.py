"""plan.py: the unrolled DAG. Task names and order per round, dependencies, evaluation every E
rounds and at the end, rollout shard fan-out, store references, and the sub-specs each derived
stage spec carries."""

from __future__ import annotations

import pytest

from maskgrpo.plan import build_plan
from maskgrpo.specs import RunSpec, spec_hash


def plan(num_shards=None, **doc):
    return build_plan(RunSpec.model_validate({"name": "p", **doc}), "run-1", "file:///tmp/s", num_shards=num_shards)


def test_names_and_order_three_rounds_evaluate_every_two():
    calls = plan(rl={"rounds": 3}, evaluate={"every": 2})
    # sft, baseline; 3 rounds of rollout/score/update; evaluate after round 2 (2 % 2 == 0) and
    # after the last round 3; round 1 and 3 % 2 != 0 get none of their own except the end.
    assert [c.name for c in calls] == [
        "sft", "evaluate_0",
        "rollout_1", "score_1", "update_1",
        "rollout_2", "score_2", "update_2", "evaluate_2",
        "rollout_3", "score_3", "update_3", "evaluate_3",
    ]
    assert [c.round for c in calls] == [0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]


@pytest.mark.parametrize("rounds,every,expected", [
    (4, 0, [0, 4]),  # only baseline and end
    (4, 1, [0, 1, 2, 3, 4]),
    (4, 2, [0, 2, 4]),  # end coincides with a multiple: not duplicated
    (5, 2, [0, 2, 4, 5]),
    (0, 0, [0]),  # no RL: the baseline is the whole evaluation
])
def test_evaluation_rounds(rounds, every, expected):
    calls = plan(rl={"rounds": rounds}, evaluate={"every": every})
    assert [c.round for c in calls if c.kind == "evaluate"] == expected
    assert len({c.name for c in calls}) == len(calls)  # names unique


def test_dependencies_are_earlier_and_chain_the_policy():
    calls = plan(rl={"rounds": 2})
    index = {c.name: i for i, c in enumerate(calls)}
    for i, call in enumerate(calls):
        assert all(index[dep] < i for dep in call.after), call.name  # topological order
    after = {c.name: c.after for c in calls}
    assert after == {
        "sft": (), "evaluate_0": ("sft",),
        "rollout_1": ("sft",), "score_1": ("rollout_1",), "update_1": ("score_1",),
        "rollout_2": ("update_1",), "score_2": ("rollout_2",), "update_2": ("score_2",),
        "evaluate_2": ("update_2",),
    }
    spec = {c.name: c.spec for c in calls}
    assert spec["evaluate_0"].policy == "sft/0"
    assert spec["rollout_1"].policy == "sft/0" and spec["update_1"].policy == "sft/0"
    assert spec["rollout_2"].policy == "update/1" and spec["update_2"].policy == "update/1"
    assert spec["evaluate_2"].policy == "update/2"
    assert spec["update_1"].optimizer_from is None and spec["update_2"].optimizer_from == "update/1"
    assert spec["sft"].policy == "builtin:tiny"


def test_shards_fan_out_and_merge():
    calls = plan(num_shards=3, rl={"rounds": 1})
    rollouts = [c for c in calls if c.kind == "rollout"]
    assert [c.name for c in rollouts] == ["rollout_1_s0", "rollout_1_s1", "rollout_1_s2"]
    assert [c.output for c in rollouts] == ["rollout-s0", "rollout-s1", "rollout-s2"]
    assert [c.ref for c in rollouts] == ["rollout-s0/1", "rollout-s1/1", "rollout-s2/1"]
    assert [(c.spec.shard, c.spec.num_shards) for c in rollouts] == [(0, 3), (1, 3), (2, 3)]
    score = next(c for c in calls if c.kind == "score")
    assert score.after == ("rollout_1_s0", "rollout_1_s1", "rollout_1_s2") and score.spec.num_shards == 3
    assert next(c for c in calls if c.kind == "update").spec.num_shards == 3
    # shards default to cluster.rollout_shards; one shard keeps the plain names
    assert [c.name for c in plan(rl={"rounds": 1}, cluster={"rollout_shards": 2}) if c.kind == "rollout"] == [
        "rollout_1_s0", "rollout_1_s1"]
    assert [c.ref for c in plan(rl={"rounds": 1}) if c.kind == "rollout"] == ["rollout/1"]


def test_refs_and_outputs():
    calls = plan(rl={"rounds": 1})
    assert [(c.name, c.output, c.ref) for c in calls] == [
        ("sft", "sft", "sft/0"), ("evaluate_0", "evaluate", "evaluate/0"),
        ("rollout_1", "rollout", "rollout/1"), ("score_1", "score", "score/1"), ("update_1", "update", "update/1"),
        ("evaluate_1", "evaluate", "evaluate/1"),
    ]


def test_derived_specs_carry_the_right_sub_specs():
    run = RunSpec.model_validate({
        "name": "p", "seed": 3, "model": {"tiny": {"hidden_size": 64}}, "task": {"name": "sort", "train_size": 50},
        "reward": {"functions": [{"name": "sort_dense"}]}, "sft": {"steps": 7}, "rl": {"rounds": 2, "beta": 0.01},
        "evaluate": {"size": 9},
    })
    calls = build_plan(run, "run-1", "file:///tmp/s")
    for c in calls:
        assert (c.spec.kind, c.spec.store, c.spec.run_id, c.spec.round, c.spec.data_seed) == (
            c.kind, "file:///tmp/s", "run-1", c.round, 3)
        for part in ("model", "task", "reward", "sft", "rl", "evaluate"):
            if part in type(c.spec).model_fields and not (c.kind == "sft" and part == "reward"):
                assert getattr(c.spec, part) == getattr(run, part), (c.name, part)
    sft = calls[0].spec  # SFT scores only with sft.stop: then it carries the run's reward and evaluate sampler
    assert (sft.reward, sft.sampler) == (None, None)
    doc = run.model_dump(mode="json")
    doc["sft"]["stop"] = {"target_accuracy": 0.5}
    stopped = build_plan(RunSpec.model_validate(doc), "run-1", "file:///tmp/s")[0].spec
    assert (stopped.reward, stopped.sampler) == (run.reward, run.evaluate.sampler)
    kinds = {c.kind: set(type(c.spec).model_fields) for c in calls}
    assert {"sft"} <= kinds["sft"] and "rl" not in kinds["sft"]
    assert {"rl", "model", "task"} <= kinds["rollout"] and "reward" not in kinds["rollout"]
    assert {"reward", "rl", "task"} <= kinds["score"] and "model" not in kinds["score"]
    assert {"rl", "model"} <= kinds["update"] and "reward" not in kinds["update"]
    assert {"evaluate", "reward", "model", "task"} <= kinds["evaluate"] and "rl" not in kinds["evaluate"]
    # seeds: SFT and evaluation use the run seed; round k uses seed * 100003 + k for rollout/score/update
    by_name = {c.name: c.spec for c in calls}
    assert by_name["sft"].seed == 3 and by_name["evaluate_2"].seed == 3
    assert {by_name[f"{k}_2"].seed for k in ("rollout", "score", "update")} == {3 * 100_003 + 2}
    # beta > 0: rollouts also cache the reference (SFT) policy's log-probs
    assert by_name["rollout_1"].reference == "sft/0" and by_name["rollout_2"].reference == "sft/0"
    assert plan(rl={"rounds": 1})[2].spec.reference is None  # beta = 0: no reference


def test_plan_is_deterministic():
    assert plan(rl={"rounds": 2}) == plan(rl={"rounds": 2})


def test_lineage_invalidates_every_stage_downstream_of_a_change():
    """Resume safety: a changed rl.lr changes rollout_1 and everything after it (evaluate_4 too,
    though its own fields are unchanged), while sft and the baseline evaluation keep their hashes."""
    before = build_plan(RunSpec(name="x"), "r", "file:///tmp/s")
    after = build_plan(RunSpec(name="x", rl={"lr": 1e-4}), "r", "file:///tmp/s")
    same = {a.name for a, b in zip(before, after) if spec_hash(a.spec) == spec_hash(b.spec)}
    assert same == {"sft", "evaluate_0"}
    final_eval_before, final_eval_after = before[-1].spec, after[-1].spec
    assert final_eval_before.evaluate == final_eval_after.evaluate  # its own fields are equal...
    assert final_eval_before.lineage != final_eval_after.lineage  # ...its upstream is not
