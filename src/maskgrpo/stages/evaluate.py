"""Evaluate: decode held-out prompts (greedy by default) and score them.

The eval split is fixed by the run's data seed, so every evaluation of a run (the baseline after
SFT, every E rounds, the end) sees the same prompts. Accuracy is the fraction of completions
whose total reward reaches ``reward.accuracy_threshold``.

    python -m maskgrpo.stages.evaluate --spec @evaluate.json
"""

from __future__ import annotations

import time

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from maskgrpo.core.text_sampler import sample_text
from maskgrpo.specs import EvaluateSpec, spec_hash
from maskgrpo.stages.common import load_policy, stage_generator, stage_main
from maskgrpo.stages.data import decode, encode_prompts, load_examples
from maskgrpo.stages.score import score_rows
from maskgrpo.store import Store

STAGE = "evaluate"
BATCH_ROWS = 256


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
        return EvaluateResult(**store.open(spec.run_id, STAGE, spec.round).get_json("metrics.json"), skipped=True)
    start = time.perf_counter()
    if spec.image is not None:  # text-to-image (stages/image.py)
        from maskgrpo.stages import image

        rows, forwards_per_completion, files = image.evaluation_rows(spec, store)
    else:
        rows, forwards_per_completion, files = text_evaluation_rows(spec, store)
    _, totals = score_rows(rows, spec.reward, spec.task, spec.image)
    for row, total in zip(rows, totals):
        row["reward"] = total
    rewards = torch.tensor(totals)
    result = EvaluateResult(
        examples=len(rows), accuracy=float((rewards >= spec.reward.accuracy_threshold).float().mean()),
        reward_mean=float(rewards.mean()), forwards_per_completion=forwards_per_completion,
        wall_seconds=time.perf_counter() - start,
    )
    with store.begin(spec.run_id, STAGE, spec.round, digest) as attempt:
        attempt.put_jsonl("samples.jsonl", rows)
        attempt.put_json("metrics.json", result.model_dump(exclude={"skipped"}))
        for name, data in files.items():
            attempt.put_bytes(name, data)
        attempt.commit()
    return result


def text_evaluation_rows(spec: EvaluateSpec, store: Store) -> tuple[list[dict], float, dict[str, bytes]]:
    """(rows to score, model evaluations per completion, no extra files) from the eval sampler."""
    policy = load_policy(store, spec.run_id, spec.policy, spec.model)
    policy.model.eval()
    examples = load_examples(spec.task, "eval", spec.data_seed)[: spec.evaluate.size or spec.task.eval_size]
    s = spec.evaluate.sampler
    tok = policy.tokenizer
    generator = stage_generator(spec.seed, salt=13)
    completions, forwards = [], 0
    for start_row in tqdm(range(0, len(examples), BATCH_ROWS), desc=f"evaluate {spec.round}", leave=False):
        batch = examples[start_row:start_row + BATCH_ROWS]
        ids, valid = encode_prompts(tok, [e.prompt for e in batch])
        out = sample_text(
            policy.logits, ids.to(policy.device), gen_length=s.gen_length, steps=s.steps, block_length=s.block_length,
            mask_id=tok.mask_id, eos_id=tok.eos_id, temperature=s.temperature, cfg_scale=s.cfg_scale,
            prompt_valid=valid.to(policy.device), remasking=s.remasking, threshold=s.threshold, early_exit=s.early_exit,
            generator=generator, cache=s.cache, cached_logits_fn=policy.cached_logits(),
        )
        completions += decode(tok, out.tokens.cpu())
        forwards += int(out.row_forwards.sum())
    rows = [{"prompt": e.prompt, "answer": e.answer, "columns": e.columns, "completion": c} for e, c in zip(examples, completions)]
    return rows, forwards / max(len(rows), 1), {}


def main(argv: list[str] | None = None) -> int:
    return stage_main(STAGE, EvaluateSpec, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
