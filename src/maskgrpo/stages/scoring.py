"""Rewards for rows of samples.jsonl: the score stage's and the evaluate stage's one rule.

Each function's ``params`` are bound as keyword arguments (``maskgrpo.rewards.bind_reward``); a
param named like a reward column is an error. A name used twice (two ``http`` servers) keeps its
name for the first use and ``<name>.<index>`` for the others. The completions reach the rewards
through the modality (``Modality.reward_inputs``: text as is; image codes decoded to PIL images
when the spec has ``image.decoder``).
"""

from __future__ import annotations

from typing import Any

from maskgrpo.modalities import Modality, get_modality
from maskgrpo.rewards import bind_reward, combine
from maskgrpo.specs import RewardSpec, TaskSpec
from maskgrpo.stages.data import reward_columns
from maskgrpo.tasks import get_task


def reward_functions(reward: RewardSpec, task: TaskSpec) -> list[tuple[str, float, dict]]:
    """(name, weight, params) of each reward function: the spec's, or the task's default."""
    if reward.functions:
        return [(f.name, f.weight, dict(f.params)) for f in reward.functions]
    return [(get_task(task.name, **task.params).reward, 1.0, {})]


def score_rows(rows: list[dict], reward: RewardSpec, task: TaskSpec,
               modality: Modality | None = None) -> tuple[dict[str, list], list[float]]:
    """Per-function rewards (None kept) and the weighted totals for rows of samples.jsonl."""
    prompts = [r["prompt"] for r in rows]
    modality = modality or get_modality(task=task)
    completions: list[Any] = modality.reward_inputs([r["completion"] for r in rows])
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


def greedy_accuracy(policy: Any, modality: Any, examples: list, sampler: Any, reward: RewardSpec, task: TaskSpec,
                    seed: int) -> float:
    """Share of ``examples`` whose sample from ``sampler`` (the evaluation sampler: greedy) scores
    >= ``reward.accuracy_threshold``, scored as the evaluate stage scores (SFT's stopping check,
    bench/ablation.py's SFT-to-target)."""
    from maskgrpo.stages.seeds import Salt, stage_generator

    was_training = policy.model.training
    policy.model.eval()
    generated = modality.generate(policy.logits, policy.tokenizer, [e.prompt for e in examples], sampler,
                                  stage_generator(seed, Salt.EVALUATION), device=policy.device, progress=False)
    completions = modality.decode(policy.tokenizer, generated.input_ids, generated.prompt_length)
    rows = [{"prompt": e.prompt, "answer": e.answer, "columns": e.columns, "completion": c} for e, c in zip(examples, completions)]
    _, totals = score_rows(rows, reward, task, modality)
    policy.model.train(was_training)
    return sum(t >= reward.accuracy_threshold for t in totals) / len(totals)
