"""Score: rewards for every completion of a round, and group-relative advantages.

Reads the round's rollout shards (their ``samples.jsonl``), calls each reward function of the
RunSpec (or the task's default reward) with TRL's signature, sums them with their weights
(None/NaN skipped), and computes advantages per prompt group (docs/algorithm.md §4). With
``filter_zero_std`` the rows of groups whose rewards are all equal are marked to be skipped by
the update (dynamic filtering).

The rewards are called through stages/scoring.py (params bound by name; with ``image.decoder``
the image modality decodes the code text to PIL images first).

    python -m maskgrpo.stages.score --spec @score.json
"""

from __future__ import annotations

import time

import torch
from pydantic import BaseModel

from maskgrpo.artifacts import METRICS, SAMPLES, SCORES
from maskgrpo.core.advantages import group_advantages
from maskgrpo.modalities import modality_for
from maskgrpo.plan import rollout_output
from maskgrpo.specs import ScoreSpec, spec_hash
from maskgrpo.stages.main import stage_main
from maskgrpo.stages.scoring import score_rows
from maskgrpo.store import Store

STAGE = "score"


class ScoreResult(BaseModel):
    rows: int
    reward_mean: float
    reward_std: float
    group_std_mean: float
    zero_std_ratio: float
    accuracy: float
    wall_seconds: float
    skipped: bool = False


def run(spec: ScoreSpec, store: Store) -> ScoreResult:
    digest = spec_hash(spec)
    if store.is_done(spec.run_id, STAGE, spec.round, digest):
        return ScoreResult(**store.open(spec.run_id, STAGE, spec.round).get_json(METRICS), skipped=True)
    start = time.perf_counter()
    rows = []
    for shard in range(spec.num_shards):
        rows += store.open(spec.run_id, rollout_output(shard, spec.num_shards), spec.round).get_jsonl(SAMPLES)
    rows.sort(key=lambda r: r["row"])
    if [r["row"] for r in rows] != list(range(len(rows))):
        raise ValueError(f"round {spec.round}: rollout shards do not cover rows 0..{len(rows) - 1} exactly")
    per_fn, totals = score_rows(rows, spec.reward, spec.task, modality_for(spec))
    rewards = torch.tensor(totals, dtype=torch.float32)
    advantages, stats = group_advantages(rewards, spec.rl.group_size, scale=spec.rl.advantage, rank=spec.rl.rank_reward)
    keep = torch.ones_like(rewards, dtype=torch.bool)
    if spec.rl.filter_zero_std:
        keep = stats.nonzero_groups.repeat_interleave(spec.rl.group_size)
    tensors = {"rewards": rewards, "advantages": advantages, "keep": keep}
    for name, values in per_fn.items():
        tensors[f"reward.{name}"] = torch.tensor([float("nan") if v is None else float(v) for v in values])
    result = ScoreResult(
        rows=len(rows), reward_mean=stats.reward_mean, reward_std=stats.reward_std, group_std_mean=stats.group_std_mean,
        zero_std_ratio=stats.zero_std_ratio, accuracy=float((rewards >= spec.reward.accuracy_threshold).float().mean()),
        wall_seconds=time.perf_counter() - start,
    )
    with store.begin(spec.run_id, STAGE, spec.round, digest) as attempt:
        attempt.put_tensors(SCORES, tensors)
        attempt.put_json(METRICS, result.model_dump(exclude={"skipped"}))
        attempt.commit()
    return result


def main(argv: list[str] | None = None) -> int:
    return stage_main(STAGE, ScoreSpec, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
