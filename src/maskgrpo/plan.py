"""RunSpec -> the ordered stage calls: the DAG, declared once (docs/design.md, "The DAG").

    sft -> evaluate_0 (baseline)
        -> rollout_1 [x shards] -> score_1 -> update_1 -> rollout_2 -> ... -> update_R -> evaluate_R
    with evaluate_k after update_k every E rounds.

Rounds are unrolled here (KFP v2 has no loops over changing state). Every stage spec carries the
hash of its dependencies' specs (``lineage``), so a stage's spec hash changes whenever anything
upstream of it changes. Every stage's output location
is a pure function of (run_id, stage name, round), so a call names its inputs by reference
(``"update/3"``) and any runner, local or KFP, finds them in the store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from .specs import (
    CHAMPION_OPTIMIZER, RESOLVED_DATA, EvaluateSpec, GateSpec, PromoteSpec, ResolveSpec, RolloutSpec, RunSpec, ScoreSpec, SftSpec, UpdateSpec, spec_hash,
)


@dataclass(frozen=True)
class StageCall:
    """One node of the DAG."""

    name: str  # unique task name, e.g. "rollout_3" or "rollout_3_s1"
    kind: str  # sft | rollout | score | update | evaluate | resolve | gate | promote
    output: str  # store stage folder: "sft", "rollout", "rollout-s1", "score", ...
    round: int
    spec: SftSpec | RolloutSpec | ScoreSpec | UpdateSpec | EvaluateSpec | ResolveSpec | GateSpec | PromoteSpec
    after: tuple[str, ...]  # names of the calls this one waits for

    @property
    def ref(self) -> str:
        """Store reference of this call's output: '<output>/<round>'."""
        return f"{self.output}/{self.round}"


def rollout_output(shard: int, num_shards: int) -> str:
    return "rollout" if num_shards == 1 else f"rollout-s{shard}"


def build_plan(run: RunSpec, run_id: str, store: str, num_shards: int | None = None) -> list[StageCall]:
    """The stage calls of ``run`` in an order that respects every dependency."""
    shards = run.cluster.rollout_shards if num_shards is None else num_shards
    common = dict(store=store, run_id=run_id, data_seed=run.seed)
    calls: list[StageCall] = []
    document_hash = spec_hash(run)
    if run.retrain is not None:
        calls.append(resolve_call(run, common))
        run = retrain_task(run)

    sft = StageCall("sft", "sft", "sft", 0,
                    SftSpec(**common, seed=run.seed, policy=run.model.source, model=run.model, task=run.task, sft=run.sft,
                            image=run.image, **({"reward": run.reward, "sampler": run.evaluate.sampler}
                                                if run.sft.stop is not None else {})), tuple(c.name for c in calls))
    calls.append(sft)

    def evaluate(round_: int, policy: StageCall) -> StageCall:
        spec = EvaluateSpec(**common, round=round_, seed=run.seed, policy=policy.ref, model=run.model, task=run.task,
                            reward=run.reward, evaluate=run.evaluate, image=run.image)
        return StageCall(f"evaluate_{round_}", "evaluate", "evaluate", round_, spec, (policy.name,))

    calls.append(evaluate(0, sft))
    policy, previous_update = sft, None
    reference = sft.ref if run.rl.beta > 0 else None
    carry = run.retrain is not None and run.retrain.carry_optimizer  # the champion's AdamW state into update_1
    for k in range(1, run.rl.rounds + 1):
        round_seed = run.seed * 100_003 + k
        rollouts = []
        for shard in range(shards):
            spec = RolloutSpec(**common, round=k, seed=round_seed, policy=policy.ref, model=run.model, task=run.task,
                               rl=run.rl, reference=reference, shard=shard, num_shards=shards, image=run.image)
            name = f"rollout_{k}" if shards == 1 else f"rollout_{k}_s{shard}"
            rollouts.append(StageCall(name, "rollout", rollout_output(shard, shards), k, spec, (policy.name,)))
        calls.extend(rollouts)
        score = StageCall(f"score_{k}", "score", "score", k,
                          ScoreSpec(**common, round=k, seed=round_seed, task=run.task, reward=run.reward, rl=run.rl,
                                    num_shards=shards, image=run.image if run.image and run.image.decoder else None),
                          tuple(r.name for r in rollouts))
        calls.append(score)
        update = StageCall(f"update_{k}", "update", "update", k,
                           UpdateSpec(**common, round=k, seed=round_seed, policy=policy.ref, model=run.model, rl=run.rl,
                                      optimizer_from=previous_update.ref if previous_update else (CHAMPION_OPTIMIZER if carry else None), num_shards=shards,
                                      image=run.image),
                           (score.name,))
        calls.append(update)
        policy = previous_update = update
        if k == run.rl.rounds or (run.evaluate.every and k % run.evaluate.every == 0):
            calls.append(evaluate(k, update))
    if run.retrain is not None:
        calls += gate_calls(run, common, calls, document_hash)
    return with_lineage(calls)


def resolve_call(run: RunSpec, common: dict) -> StageCall:
    """Retraining: the first call pins the champion and the data snapshot (stages/resolve.py)."""
    spec = ResolveSpec(**common, seed=run.seed, source=run.model.source, retrain=run.retrain, sft_enabled=run.sft.enabled)
    return StageCall("resolve", "resolve", "resolve", 0, spec, ())


def retrain_task(run: RunSpec) -> RunSpec:
    """With ``retrain.data`` the task reads the tick's snapshot, written by resolve (placeholder path)."""
    if run.retrain is None or not run.retrain.data:
        return run
    task = run.task.model_copy(update={"params": {**run.task.params, "path": RESOLVED_DATA}})
    return run.model_copy(update={"task": task})


def gate_calls(run: RunSpec, common: dict, calls: list[StageCall], document_hash: str) -> list[StageCall]:
    """Retraining: gate (last evaluation vs evaluate_0) -> promote (docs/cluster.md, scheduled retraining)."""
    final = next(c for c in reversed(calls) if c.kind == "evaluate")
    baseline = next(c for c in calls if c.kind == "evaluate")
    policy = next(c for c in reversed(calls) if c.kind == "update")
    rounds = run.rl.rounds
    gate = StageCall("gate", "gate", "gate", rounds,
                     GateSpec(**common, round=rounds, seed=run.seed, challenger=final.ref, champion=baseline.ref,
                              challenger_policy=policy.ref, model_name=run.retrain.model, gate=run.retrain.gate,
                              accuracy_threshold=run.reward.accuracy_threshold),
                     (final.name, baseline.name))
    promote = StageCall("promote", "promote", "promote", rounds,
                        PromoteSpec(**common, round=rounds, seed=run.seed, model_name=run.retrain.model, gate_ref=gate.ref,
                                    pipeline_hash=document_hash),
                        (gate.name,))
    return [gate, promote]


def with_lineage(calls: list[StageCall]) -> list[StageCall]:
    """Stamp each spec with the hash of its dependencies' specs (which carry theirs): a Merkle
    chain, so changing any upstream stage (say rl.lr on --resume) changes the spec hash of every
    stage downstream and none of them reuses a stale committed output."""
    stamped: dict[str, StageCall] = {}
    for call in calls:
        parents = ",".join(spec_hash(stamped[name].spec) for name in call.after)
        lineage = hashlib.sha256(parents.encode()).hexdigest()[:16] if call.after else ""
        stamped[call.name] = replace(call, spec=call.spec.model_copy(update={"lineage": lineage}))
    return list(stamped.values())
