"""Evaluate: sample held-out prompts with the eval sampler (greedy by default) and score them.

The eval split is fixed by the run's data seed, so every evaluation of a run (the baseline after
SFT, every E rounds, the end) sees the same prompts. The modality samples ``eval_repeats``
completions per prompt (images: ``image.eval_images_per_prompt``, GenEval's protocol draws 4;
text: one) and may add report files (images: a PNG grid). Accuracy is the fraction of
completions whose total reward reaches ``reward.accuracy_threshold``.

    python -m maskgrpo.stages.evaluate --spec @evaluate.json
"""

from __future__ import annotations

import time

import torch
from pydantic import BaseModel

from maskgrpo.artifacts import METRICS, SAMPLES
from maskgrpo.modalities import modality_for
from maskgrpo.specs import EvaluateSpec, spec_hash
from maskgrpo.stages.data import load_examples
from maskgrpo.stages.main import stage_main
from maskgrpo.stages.policy import load_policy
from maskgrpo.stages.scoring import score_rows
from maskgrpo.stages.seeds import Salt, stage_generator
from maskgrpo.store import Store

STAGE = "evaluate"


class EvaluateResult(BaseModel):
    examples: int
    accuracy: float
    reward_mean: float
    forwards_per_completion: float
    wall_seconds: float
    skipped: bool = False


def run(spec: EvaluateSpec, store: Store) -> EvaluateResult:
    digest = spec_hash(spec)
    if store.is_done(spec.run_id, STAGE, spec.round, digest):
        return EvaluateResult(**store.open(spec.run_id, STAGE, spec.round).get_json(METRICS), skipped=True)
    start = time.perf_counter()
    modality = modality_for(spec)
    policy = load_policy(store, spec.run_id, spec.policy, spec.model)
    policy.model.eval()
    examples = load_examples(spec.task, "eval", spec.data_seed)[: spec.evaluate.size or spec.task.eval_size]
    repeated = [e for e in examples for _ in range(modality.eval_repeats)]  # prompt-major: a prompt's samples are adjacent
    generated = modality.generate(policy.logits, policy.tokenizer, [e.prompt for e in repeated], spec.evaluate.sampler,
                                  stage_generator(spec.seed, Salt.EVALUATION), device=policy.device, progress=False,
                                  cached_logits_fn=policy.cached_logits())
    completions = modality.decode(policy.tokenizer, generated.input_ids, generated.prompt_length)
    rows = [{"prompt": e.prompt, "answer": e.answer, "columns": e.columns, "completion": c} for e, c in zip(repeated, completions)]
    _, totals = score_rows(rows, spec.reward, spec.task, modality)
    for row, total in zip(rows, totals):
        row["reward"] = total
    rewards = torch.tensor(totals)
    result = EvaluateResult(
        examples=len(rows), accuracy=float((rewards >= spec.reward.accuracy_threshold).float().mean()),
        reward_mean=float(rewards.mean()), forwards_per_completion=generated.forwards_per_row,
        wall_seconds=time.perf_counter() - start,
    )
    with store.begin(spec.run_id, STAGE, spec.round, digest) as attempt:
        attempt.put_jsonl(SAMPLES, rows)
        attempt.put_json(METRICS, result.model_dump(exclude={"skipped"}))
        for name, data in modality.report_files(rows, spec.evaluate.num_samples).items():
            attempt.put_bytes(name, data)
        attempt.commit()
    return result


def main(argv: list[str] | None = None) -> int:
    return stage_main(STAGE, EvaluateSpec, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
