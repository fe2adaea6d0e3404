"""Rollout: sample G completions per prompt and cache the old (and reference) log-probs.

1. The round's prompts are drawn from the task's train split with the round seed; shard s of S
   takes every S-th group, so shards partition the round and row ids stay global.
2. The modality samples them (text: the semi-AR low-confidence sampler; images: emerge or
   MaskGIT over the image slots, docs/algorithm.md, "Rollouts") with ``rl.sampler``.
3. With the same weights, in eval mode, the estimator's per-token log-probs under all mu seeded
   masks are computed and stored (``old_logprobs``), and with beta > 0 the reference policy's
   (``ref_logprobs``): with LoRA the same network with its adapters disabled (= the SFT policy,
   stages/policy.py, 2), else the committed ``reference`` policy. The mu mask seeds are drawn
   from the round seed, so every shard and the update stage rebuild identical masks.
4. Beside them the rollout stores what the estimator reads (``ESTIMATOR_KEYS``: target
   positions, prompt-valid and loss-valid masks, the AR ramp start or -1 for image slots, the
   vocabulary slice, the mask id), so the update is modality-blind.

    python -m maskgrpo.stages.rollout --spec @rollout.json
"""

from __future__ import annotations

import time

import torch
from pydantic import BaseModel

from maskgrpo.artifacts import METRICS, ROLLOUT, SAMPLES
from maskgrpo.core.importance import EstimatorInput, cache_logprobs, get_estimator, views_per_iteration
from maskgrpo.modalities import modality_for
from maskgrpo.plan import rollout_output
from maskgrpo.specs import RlSpec, RolloutSpec, spec_hash
from maskgrpo.stages.data import load_examples
from maskgrpo.stages.estimation import estimator_config, estimator_tensors, mask_seeds
from maskgrpo.stages.main import stage_main
from maskgrpo.stages.policy import is_lora_policy, load_policy, reference_logits
from maskgrpo.stages.seeds import Salt, stage_generator
from maskgrpo.store import Store
from maskgrpo.tasks import Example

STAGE = "rollout"


class RolloutResult(BaseModel):
    rows: int
    forwards_per_completion: float
    logprob_forwards_per_completion: float = 0.0  # old (+ reference) log-prob passes; 0 for spg and wd1
    completion_length_mean: float
    wall_seconds: float
    generate_seconds: float = 0.0  # sampling the completions
    logprob_seconds: float = 0.0  # the old (and reference) log-prob passes
    store_seconds: float = 0.0  # loading the policy, writing the rollout (the commit itself not counted)
    skipped: bool = False


def round_prompts(train: list[Example], rl: RlSpec, seed: int, shard: int, num_shards: int) -> tuple[list[Example], list[int]]:
    """This shard's prompts and their group indices within the round."""
    order = torch.randperm(len(train), generator=stage_generator(seed, Salt.ROUND_PROMPTS)).tolist()
    chosen = [order[i % len(order)] for i in range(rl.prompts_per_round)]
    groups = list(range(shard, rl.prompts_per_round, num_shards))
    return [train[chosen[g]] for g in groups], groups


def run(spec: RolloutSpec, store: Store) -> RolloutResult:
    output = rollout_output(spec.shard, spec.num_shards)
    digest = spec_hash(spec)
    if store.is_done(spec.run_id, output, spec.round, digest):
        return RolloutResult(**store.open(spec.run_id, output, spec.round).get_json(METRICS), skipped=True)
    start = time.perf_counter()
    rl = spec.rl
    modality = modality_for(spec)
    policy = load_policy(store, spec.run_id, spec.policy, spec.model)
    loaded = time.perf_counter()
    policy.model.eval()
    tok = policy.tokenizer
    train = load_examples(spec.task, "train", spec.data_seed)
    examples, groups = round_prompts(train, rl, spec.seed, spec.shard, spec.num_shards)
    repeated = [e for e in examples for _ in range(rl.group_size)]
    width = modality.prompt_width(tok, [e.prompt for e in train])  # fixed: shards concatenate
    generated = modality.generate(policy.logits, tok, [e.prompt for e in repeated], rl.sampler,
                                  stage_generator(spec.seed + spec.shard, Salt.SAMPLING), device=policy.device, width=width,
                                  cached_logits_fn=policy.cached_logits())
    generated_at = time.perf_counter()
    input_ids = generated.input_ids
    row_ids = torch.tensor([g * rl.group_size + i for g in groups for i in range(rl.group_size)])
    inp = modality.estimator_input(tok, input_ids, generated.prompt_length, row_ids.to(input_ids.device))
    seeds = mask_seeds(spec.seed, rl.num_iterations)
    mask_id = modality.mask_id(tok)
    config = estimator_config(rl)
    visible = rl.loss_tokens == "coverage"  # the official weighting scores visible tokens too
    needs_old = get_estimator(rl.estimator).needs_old  # spg, wd1: ratio-free, no old-policy forwards
    old = cache_logprobs(policy.logits if needs_old else None, rl.estimator, inp, seeds, mask_id,
                         chunk_rows=rl.logprob_chunk_rows, config=config, visible=visible)
    tensors = {
        **estimator_tensors(inp, mask_id), "row_ids": row_ids, "mask_seeds": torch.tensor(seeds, dtype=torch.int64),
        "prompt_length": torch.tensor([generated.prompt_length]),
        "loss_masks": old.loss_masks.cpu(), "masked": old.masked.cpu(),
    }
    if needs_old:
        tensors["old_logprobs"] = old.logprobs.cpu()
    reference_fn = _reference(spec, store, policy) if rl.beta > 0 and needs_old else None
    if reference_fn is not None:
        ref = cache_logprobs(reference_fn, rl.estimator, inp, seeds, mask_id, chunk_rows=rl.logprob_chunk_rows, config=config,
                             visible=visible)
        tensors["ref_logprobs"] = ref.logprobs.cpu()
    logprob_seconds = time.perf_counter() - generated_at
    passes = ("old_logprobs" in tensors) + ("ref_logprobs" in tensors)
    logprob_forwards = views_per_iteration(rl.estimator, config) * rl.num_iterations * passes
    completions = modality.decode(tok, input_ids, generated.prompt_length)
    samples = [
        {"row": int(r), "group": g, "prompt": e.prompt, "answer": e.answer, "columns": e.columns, "completion": c}
        for r, g, e, c in zip(row_ids.tolist(), [g for g in groups for _ in range(rl.group_size)], repeated, completions)
    ]
    result = RolloutResult(
        rows=len(samples), forwards_per_completion=generated.forwards_per_row, logprob_forwards_per_completion=logprob_forwards,
        completion_length_mean=float(inp.loss_valid.sum(1).float().mean()), wall_seconds=0.0,
        generate_seconds=generated_at - loaded, logprob_seconds=logprob_seconds,
    )
    with store.begin(spec.run_id, output, spec.round, digest) as attempt:
        writing = time.perf_counter()
        attempt.put_tensors(ROLLOUT, tensors, metadata={"policy": spec.policy or "", "estimator": rl.estimator,
                                                        "modality": modality.name})
        attempt.put_jsonl(SAMPLES, samples)
        end = time.perf_counter()  # wall: the stage up to its metrics (the commit itself is not counted)
        result = result.model_copy(update={"wall_seconds": end - start, "store_seconds": (loaded - start) + (end - writing)})
        attempt.put_json(METRICS, result.model_dump(exclude={"skipped"}))
        attempt.commit()
    return result


def _reference(spec: RolloutSpec, store: Store, policy):
    """The reference policy's LogitsFn: LoRA adapters disabled (the SFT policy, no second model),
    else the committed ``spec.reference`` policy; None when the run has neither."""
    if is_lora_policy(policy):
        return reference_logits(policy)
    if spec.reference is None:
        return None
    reference = load_policy(store, spec.run_id, spec.reference, spec.model)
    reference.model.eval()
    return reference.logits


def main(argv: list[str] | None = None) -> int:
    return stage_main(STAGE, RolloutSpec, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
