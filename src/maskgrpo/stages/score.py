"""Score: rewards for every completion of a round, and group-relative advantages.

Reads the round's rollout shards (their ``samples.jsonl``), calls each reward function of the
RunSpec (or the task's default reward) with TRL's signature, sums them with their weights
(None/NaN skipped), and computes advantages per prompt group (ALGORITHM.md §4). With
``filter_zero_std`` the rows of groups whose rewards are all equal are marked to be skipped by
the update (dynamic filtering).

Each function's ``params`` are bound as keyword arguments (``maskgrpo.rewards.bind_reward``); a
param named like a reward column is an error. A name used twice (two ``http`` servers) keeps its
name for the first use and ``<name>.<index>`` for the others in the per-function scores. When the
spec carries ``image.decoder``, image completions (code text) are decoded to RGB ``PIL.Image``s
with that decoder (``maskgrpo.models.vq``) and the rewards receive the images; otherwise they get
the code text, exactly as before.

    python -m maskgrpo.stages.score --spec @score.json
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from pydantic import BaseModel

from maskgrpo.core.advantages import group_advantages
from maskgrpo.plan import rollout_output
from maskgrpo.rewards import bind_reward, combine
from maskgrpo.specs import ImageSpec, RewardSpec, ScoreSpec, TaskSpec, spec_hash
from maskgrpo.stages.common import stage_main
from maskgrpo.stages.data import reward_columns
from maskgrpo.stages.rollout import SAMPLES_FILE
from maskgrpo.store import Store
from maskgrpo.tasks import get_task

STAGE = "score"
SCORES_FILE = "scores.safetensors"


class ScoreResult(BaseModel):
    rows: int
    reward_mean: float
    reward_std: float
    group_std_mean: float
    zero_std_ratio: float
    accuracy: float
    wall_seconds: float
    skipped: bool = False


def reward_functions(reward: RewardSpec, task: TaskSpec) -> list[tuple[str, float, dict]]:
    """(name, weight, params) of each reward function: the spec's, or the task's default."""
    if reward.functions:
        return [(f.name, f.weight, dict(f.params)) for f in reward.functions]
    return [(get_task(task.name, **task.params).reward, 1.0, {})]


def decode_completions(completions: list[str], image: ImageSpec) -> list:
    """Code-text completions as RGB PIL images through ``image.decoder`` (models/vq.py)."""
    from maskgrpo.models.loading import parse_store_source
    from maskgrpo.models.vq import decode_images, load_decoder
    from maskgrpo.stages.common import local_source
    from maskgrpo.stages.image import text_to_codes

    spec = image.decoder
    if parse_store_source(spec.source) is None and not Path(spec.source).is_dir():
        raise FileNotFoundError(f"image.decoder.source {spec.source!r} is neither a store URI nor a folder")
    device = spec.device if spec.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    decoder = load_decoder(spec.class_path, str(local_source(spec.source)), device)
    slots = image.grid_size * image.grid_size
    codes = torch.tensor([text_to_codes(c, slots, image.codebook_size) for c in completions], dtype=torch.long)  # (B, N)
    return decode_images(decoder, codes, spec.batch_size, codebook_size=image.codebook_size)


def score_rows(rows: list[dict], reward: RewardSpec, task: TaskSpec,
               image: ImageSpec | None = None) -> tuple[dict[str, list], list[float]]:
    """Per-function rewards (None kept) and the weighted totals for rows of samples.jsonl."""
    prompts = [r["prompt"] for r in rows]
    completions = [r["completion"] for r in rows]
    if image is not None and image.decoder is not None and rows:
        completions = decode_completions(completions, image)
    columns = reward_columns(rows)
    per_fn, weights = {}, []
    for k, (name, weight, params) in enumerate(reward_functions(reward, task)):
        clash = sorted(set(params) & (set(columns) | {"prompts", "completions"}))
        if clash:
            raise ValueError(f"reward.functions[{k}] ({name}): params {clash} clash with the reward columns {sorted(columns)}")
        label = name if name not in per_fn else f"{name}.{k}"
        per_fn[label] = bind_reward(name, params)(prompts, completions, **columns)
        weights.append(weight)
    return per_fn, combine(list(per_fn.values()), weights)


def run(spec: ScoreSpec, store: Store) -> ScoreResult:
    digest = spec_hash(spec)
    if store.is_done(spec.run_id, STAGE, spec.round, digest):
        return ScoreResult(**store.open(spec.run_id, STAGE, spec.round).get_json("metrics.json"), skipped=True)
    start = time.perf_counter()
    rows = []
    for shard in range(spec.num_shards):
        rows += store.open(spec.run_id, rollout_output(shard, spec.num_shards), spec.round).get_jsonl(SAMPLES_FILE)
    rows.sort(key=lambda r: r["row"])
    if [r["row"] for r in rows] != list(range(len(rows))):
        raise ValueError(f"round {spec.round}: rollout shards do not cover rows 0..{len(rows) - 1} exactly")
    per_fn, totals = score_rows(rows, spec.reward, spec.task, spec.image)
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
        attempt.put_tensors(SCORES_FILE, tensors)
        attempt.put_json("metrics.json", result.model_dump(exclude={"skipped"}))
        attempt.commit()
    return result


def main(argv: list[str] | None = None) -> int:
    return stage_main(STAGE, ScoreSpec, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
