"""SFT warm start: masked-diffusion cross-entropy on (prompt, answer) pairs (ALGORITHM.md §5).

Text (LLaDA/d1 style): t ~ U(eps, 1) per example, each completion token masked with probability
t (the prompt never), loss = sum over masked tokens of CE / t, divided by the number of
completion tokens. ``label_noise`` (toy tasks only, ALGORITHM.md §9) trains a fixed fraction of
the examples on a corrupted answer (two positions swapped, or one character changed), so the
warm start is deliberately mediocre and RL has room to improve it.

    python -m maskgrpo.stages.sft --spec @sft.json
"""

from __future__ import annotations

import random
import time

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from tqdm.auto import tqdm

from maskgrpo.specs import ModelSpec, SftSpec, SftSpecPart, spec_hash
from maskgrpo.stages import distributed
from maskgrpo.stages.distributed import Rank, TorchStepper, local_part
from maskgrpo.stages.common import Policy, load_source_policy, new_tiny_policy, remember_policy, save_policy, stage_generator, stage_main, weight_digest
from maskgrpo.stages.data import completion_length, encode_answers, encode_prompts, load_examples
from maskgrpo.store import Committed, Store
from maskgrpo.tasks import Example

STAGE = "sft"


class SftResult(BaseModel):
    steps: int
    loss_first: float
    loss_last: float
    wall_seconds: float
    weight_digest: str
    skipped: bool = False


def corrupt(answer: str, rng: random.Random) -> str:
    """A plausible wrong answer: swap two differing characters, else change one."""
    chars = list(answer)
    pairs = [(i, j) for i in range(len(chars)) for j in range(i + 1, len(chars)) if chars[i] != chars[j]]
    if pairs:
        i, j = rng.choice(pairs)
        chars[i], chars[j] = chars[j], chars[i]
    elif chars:
        i = rng.randrange(len(chars))
        chars[i] = "0" if chars[i] != "0" else "1"
    return "".join(chars)


def sft_targets(examples: list[Example], label_noise: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [corrupt(e.answer, rng) if rng.random() < label_noise else e.answer for e in examples]


def train_sft(policy: Policy, examples: list[Example], part: SftSpecPart, gen_length: int, seed: int,
              progress: bool = True, model_spec: ModelSpec | None = None, rank: Rank = Rank()) -> list[float]:
    """Train in place; returns the loss of every step.

    Under DeepSpeed (``model_spec.deepspeed``, stages/distributed.py) every rank draws the same
    batch and trains on its slice; each micro-batch's loss is its exact share of the batch loss."""
    tok = policy.tokenizer
    device = policy.device
    prompt_ids, _ = encode_prompts(tok, [e.prompt for e in examples])
    answers = encode_answers(tok, sft_targets(examples, part.label_noise, seed), gen_length)
    data = torch.cat([prompt_ids, answers], dim=1).to(device)  # (D, L)
    prompt_len = prompt_ids.shape[1]
    positions = torch.arange(prompt_len, data.shape[1], device=device)
    generator = stage_generator(seed, salt=1)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=part.lr, weight_decay=part.weight_decay)
    stepper = TorchStepper(policy.model, optimizer, None) if model_spec is None else \
        distributed.make_stepper(policy, optimizer, model_spec, rank, None)
    policy.model.train()
    losses = []
    for _ in tqdm(range(part.steps), desc="sft", disable=not progress, leave=False):
        idx = torch.randint(len(data), (part.batch_size,), generator=generator)
        x = data[idx]  # (B, L)
        target = x[:, prompt_len:]  # (B, L_o)
        t = part.min_t + (1 - part.min_t) * torch.rand(part.batch_size, generator=generator).to(device)  # (B,)
        masked = torch.rand(target.shape, generator=generator).to(device) < t.unsqueeze(1)  # (B, L_o)
        noisy = x.clone()
        noisy[:, prompt_len:] = torch.where(masked, torch.full_like(target, tok.mask_id), target)
        loss = 0.0
        for rows in local_part(torch.arange(len(x), device=device), rank):
            keep = 1.0 if len(rows) else 0.0  # an empty part runs one row with zero weight
            rows = rows if len(rows) else torch.arange(1, device=device)
            logits = policy.logits(noisy[rows], positions.expand(len(rows), -1)).float()  # (b, L_o, V)
            ce = F.cross_entropy(logits.transpose(1, 2), target[rows], reduction="none")  # (b, L_o)
            share = (ce * masked[rows] / t[rows].unsqueeze(1)).sum() * keep / target.numel()
            stepper.backward(share)
            loss += share.detach().item()
        stepper.step()
        losses.append(loss)
    losses = distributed.all_reduce(losses, rank) if losses else losses  # the whole batch's loss on every rank
    distributed.unwrap(policy)
    policy.model.eval()
    return losses


def run(spec: SftSpec, store: Store) -> SftResult:
    digest = spec_hash(spec)
    if store.is_done(spec.run_id, STAGE, 0, digest):
        return SftResult(**store.open(spec.run_id, STAGE, 0).get_json("metrics.json"), skipped=True)
    if spec.image is not None:  # text-to-image (stages/image.py)
        from maskgrpo.stages import image

        return image.run_sft(spec, store, digest)
    start = time.perf_counter()
    examples = load_examples(spec.task, "train", spec.data_seed)
    gen_length = completion_length(spec.task)
    if spec.model.source == "builtin:tiny":
        max_len = max(len(e.prompt) for e in examples) + gen_length
        policy = new_tiny_policy(spec.model, max_len, spec.seed)
    else:
        policy = load_source_policy(spec.model)
    rank = distributed.setup(spec.model)
    losses = train_sft(policy, examples, spec.sft, gen_length, spec.seed, model_spec=spec.model, rank=rank) if spec.sft.enabled else []
    if spec.model.deepspeed.enabled:  # rank 0 writes the gathered weights (stages/distributed.py)
        with distributed.gathered(policy.model, spec.model):
            result = sft_result(policy, losses, start)  # the same on every rank (distributed.py, 4):
            wall = distributed.all_reduce([result.wall_seconds], rank, op="max")[0]
            result = result.model_copy(update={"wall_seconds": wall})
            if rank.is_main:
                commit_sft(spec, store, digest, policy, result, losses)
        distributed.barrier(spec.model)
        return result
    result = sft_result(policy, losses, start)
    remember_policy(commit_sft(spec, store, digest, policy, result, losses), policy)
    return result


def sft_result(policy: Policy, losses: list[float], start: float) -> SftResult:
    """The SFT stage's metrics (shared by the text, DeepSpeed and image paths)."""
    return SftResult(
        steps=len(losses), loss_first=losses[0] if losses else 0.0, loss_last=losses[-1] if losses else 0.0,
        wall_seconds=time.perf_counter() - start, weight_digest=weight_digest(policy.model),
    )


def commit_sft(spec: SftSpec, store: Store, digest: str, policy: Policy, result: SftResult, losses: list[float]) -> Committed:
    """Write the warm-started checkpoint, metrics and loss curve as the committed SFT output."""
    with store.begin(spec.run_id, STAGE, 0, digest) as attempt:
        save_policy(attempt, policy)
        attempt.put_json("metrics.json", result.model_dump(exclude={"skipped"}))
        attempt.put_json("losses.json", losses)
        return attempt.commit()


def main(argv: list[str] | None = None) -> int:
    return stage_main(STAGE, SftSpec, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
