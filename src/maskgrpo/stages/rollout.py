"""Rollout: sample G completions per prompt and cache the old (and reference) log-probs.

1. The round's prompts are drawn from the task's train split with the round seed; shard s of S
   takes every S-th group, so shards partition the round and row ids stay global.
2. Text completions come from the semi-AR low-confidence sampler (ALGORITHM.md §2.1) at the
   rollout temperature.
3. With the same weights, in eval mode, the estimator's per-token log-probs under all mu seeded
   masks are computed and stored (``old_logprobs``), and with beta > 0 the reference policy's
   (``ref_logprobs``). The mu mask seeds are drawn from the round seed, so every shard and the
   update stage rebuild identical masks.

    python -m maskgrpo.stages.rollout --spec @rollout.json
"""

from __future__ import annotations

import time

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from maskgrpo.core.importance import (
    EstimatorInput, cache_logprobs, completion_loss_valid, estimator_config, get_estimator, views_per_iteration,
)
from maskgrpo.core.text_sampler import sample_text
from maskgrpo.plan import rollout_output
from maskgrpo.specs import RlSpec, RolloutSpec, spec_hash
from maskgrpo.stages.common import Policy, load_policy, reference_logits, stage_generator, stage_main
from maskgrpo.stages.data import decode, encode_prompts, load_examples
from maskgrpo.store import Store
from maskgrpo.tasks import Example

STAGE = "rollout"
ROLLOUT_FILE = "rollout.safetensors"
SAMPLES_FILE = "samples.jsonl"
SAMPLE_BATCH_ROWS = 256


class RolloutResult(BaseModel):
    rows: int
    forwards_per_completion: float
    logprob_forwards_per_completion: float = 0.0  # old (+ reference) log-prob passes; 0 for wd1 / spg
    completion_length_mean: float
    wall_seconds: float
    skipped: bool = False


def mask_seeds(seed: int, num_iterations: int) -> list[int]:
    """The mu mask seeds S_1..S_mu of a round (shared by every shard and by the update)."""
    g = stage_generator(seed, salt=7)
    return torch.randint(0, 2**62, (num_iterations,), generator=g).tolist()


def round_prompts(train: list[Example], rl: RlSpec, seed: int, shard: int, num_shards: int) -> tuple[list[Example], list[int]]:
    """This shard's prompts and their group indices within the round."""
    order = torch.randperm(len(train), generator=stage_generator(seed, salt=3)).tolist()
    chosen = [order[i % len(order)] for i in range(rl.prompts_per_round)]
    groups = list(range(shard, rl.prompts_per_round, num_shards))
    return [train[chosen[g]] for g in groups], groups


def estimator_options(rl: RlSpec):
    """The estimator's typed config from the RlSpec fields of the same names, or from its own
    options block (``rl.spg``, ``rl.wd1``); others: defaults."""
    fields = get_estimator(rl.estimator).config.__dataclass_fields__
    block = getattr(rl, rl.estimator, None)
    values = block.model_dump() if block is not None else {f: getattr(rl, f) for f in fields if f in RlSpec.model_fields}
    return estimator_config(rl.estimator, **values)


def completion_valid(input_ids: torch.Tensor, prompt_len: int, eos_id: int) -> torch.Tensor:
    """(B, L_o) bool: completion tokens up to and including the first EOS."""
    return completion_loss_valid(input_ids[:, prompt_len:], eos_id)


def estimator_input(input_ids: torch.Tensor, prompt_len: int, row_ids: torch.Tensor, pad_id: int, eos_id: int) -> EstimatorInput:
    completion = input_ids[:, prompt_len:]  # (B, L_o)
    prompt_valid = input_ids != pad_id
    prompt_valid[:, prompt_len:] = False
    return EstimatorInput(
        input_ids=input_ids,
        target_positions=torch.arange(prompt_len, input_ids.shape[1], device=input_ids.device),
        row_ids=row_ids,
        prompt_valid=prompt_valid,
        loss_valid=completion_loss_valid(completion, eos_id),
        ramp_start=prompt_len,
    )


def generate(policy: Policy, prompts: list[str], rl: RlSpec, seed: int, prompt_len: int | None = None,
             progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Sample G completions per prompt (prompt-major rows). Returns (input_ids (B, L), P, forwards/completion)."""
    tok = policy.tokenizer
    repeated = [p for p in prompts for _ in range(rl.group_size)]
    prompt_ids, valid = encode_prompts(tok, repeated, prompt_len)
    prompt_ids, valid = prompt_ids.to(policy.device), valid.to(policy.device)
    generator = stage_generator(seed, salt=5)
    s = rl.sampler
    policy.model.eval()
    chunks, forwards = [], 0
    for start in tqdm(range(0, len(repeated), SAMPLE_BATCH_ROWS), desc="rollout", disable=not progress, leave=False):
        rows = slice(start, start + SAMPLE_BATCH_ROWS)
        out = sample_text(
            policy.logits, prompt_ids[rows], gen_length=s.gen_length, steps=s.steps, block_length=s.block_length,
            mask_id=tok.mask_id, eos_id=tok.eos_id, temperature=s.temperature, cfg_scale=s.cfg_scale,
            prompt_valid=valid[rows], remasking=s.remasking, threshold=s.threshold, early_exit=s.early_exit,
            generator=generator,
        )
        chunks.append(out.tokens)
        forwards += int(out.row_forwards.sum())
    completions = torch.cat(chunks)
    return torch.cat([prompt_ids, completions], dim=1), prompt_ids.shape[1], forwards / max(len(repeated), 1)


def run(spec: RolloutSpec, store: Store) -> RolloutResult:
    output = rollout_output(spec.shard, spec.num_shards)
    digest = spec_hash(spec)
    if store.is_done(spec.run_id, output, spec.round, digest):
        return RolloutResult(**store.open(spec.run_id, output, spec.round).get_json("metrics.json"), skipped=True)
    if spec.image is not None:  # text-to-image (stages/image.py)
        from maskgrpo.stages import image

        return image.run_rollout(spec, store, output, digest)
    start = time.perf_counter()
    rl = spec.rl
    policy = load_policy(store, spec.run_id, spec.policy, spec.model)
    train = load_examples(spec.task, "train", spec.data_seed)
    examples, groups = round_prompts(train, rl, spec.seed, spec.shard, spec.num_shards)
    width = policy.tokenizer.encode_batch_left_padded([e.prompt for e in train]).shape[1]  # fixed: shards concatenate
    input_ids, prompt_len, forwards = generate(policy, [e.prompt for e in examples], rl, spec.seed + spec.shard, width)
    row_ids = torch.tensor([g * rl.group_size + i for g in groups for i in range(rl.group_size)])
    inp = estimator_input(input_ids, prompt_len, row_ids.to(input_ids.device), policy.pad_id, policy.eos_id)
    seeds = mask_seeds(spec.seed, rl.num_iterations)
    options = estimator_options(rl)
    visible = rl.loss_tokens == "coverage"  # the official weighting scores visible tokens too
    needs_old = get_estimator(rl.estimator).needs_old  # wd1, spg: ratio-free, no old-policy forwards
    old = cache_logprobs(policy.logits if needs_old else None, rl.estimator, inp, seeds, policy.mask_id,
                         chunk_rows=rl.logprob_chunk_rows, config=options, visible=visible)
    tensors = {
        "input_ids": input_ids.cpu(), "row_ids": row_ids, "mask_seeds": torch.tensor(seeds, dtype=torch.int64),
        "prompt_length": torch.tensor([prompt_len]), "loss_masks": old.loss_masks.cpu(), "masked": old.masked.cpu(),
    }
    if needs_old:
        tensors["old_logprobs"] = old.logprobs.cpu()
    if rl.beta > 0 and needs_old and (spec.model.lora is not None or spec.reference is not None):
        if spec.model.lora is not None:  # the base with adapters disabled: no second model in memory
            reference_fn = reference_logits(policy)
        else:
            reference = load_policy(store, spec.run_id, spec.reference, spec.model)
            reference.model.eval()
            reference_fn = reference.logits
        ref = cache_logprobs(reference_fn, rl.estimator, inp, seeds, policy.mask_id, chunk_rows=rl.logprob_chunk_rows,
                             config=options, visible=visible)
        tensors["ref_logprobs"] = ref.logprobs.cpu()
    logprob_forwards = views_per_iteration(rl.estimator, options) * rl.num_iterations * (("old_logprobs" in tensors) + ("ref_logprobs" in tensors))
    completions = decode(policy.tokenizer, input_ids[:, prompt_len:].cpu())
    samples = [
        {"row": int(r), "group": g, "prompt": e.prompt, "answer": e.answer, "columns": e.columns, "completion": c}
        for (g, e), r, c in zip(((g, e) for g, e in zip(groups, examples) for _ in range(rl.group_size)), row_ids.tolist(), completions)
    ]
    result = RolloutResult(
        rows=len(samples), forwards_per_completion=forwards, logprob_forwards_per_completion=logprob_forwards,
        completion_length_mean=float(inp.loss_valid.sum(1).float().mean()), wall_seconds=time.perf_counter() - start,
    )
    with store.begin(spec.run_id, output, spec.round, digest) as attempt:
        attempt.put_tensors(ROLLOUT_FILE, tensors, metadata={"policy": spec.policy or "", "estimator": rl.estimator})
        attempt.put_jsonl(SAMPLES_FILE, samples)
        attempt.put_json("metrics.json", result.model_dump(exclude={"skipped"}))
        attempt.commit()
    return result


def main(argv: list[str] | None = None) -> int:
    return stage_main(STAGE, RolloutSpec, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
