"""SFT warm start: masked-diffusion cross-entropy on (prompt, answer) pairs (docs/algorithm.md, "SFT warm start").

The objective is core/sft.py's, the noising the modality's: text masks each completion token
with probability t ~ U(eps, 1) and weights its CE by 1/t (LLaDA); images mask a MaskGIT cosine
fraction of the slots and drop the condition with probability ``image.cond_dropout``.
``label_noise`` (toy tasks only, docs/algorithm.md, "The toy task") trains a fixed fraction of
the examples on a corrupted answer (two positions swapped, or one character changed), so the
warm start is deliberately mediocre and RL has room to improve it. With LoRA the trained
adapters are merged into the base and fresh ones added before the commit (stages/policy.py, 2);
a LoRA warm start from a champion's adapters with SFT off keeps those adapters trainable (no merge).
``sft.stop`` ends SFT at the first check (every ``check_every`` steps) where the evaluation
sampler's accuracy on the first ``check_prompts`` training prompts reaches ``target_accuracy``:
a mediocre start whatever the seed's learning speed (SFT accuracy jumps sharply on the toys).
Not in the papers (they SFT for a fixed budget); not under DeepSpeed.

    python -m maskgrpo.stages.sft --spec @sft.json
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from maskgrpo.artifacts import LOSSES, METRICS
from maskgrpo.core.sft import sft_loss_share
from maskgrpo.modalities import Modality, modality_for
from maskgrpo.specs import ModelSpec, SftSpec, SftSpecPart, spec_hash
from maskgrpo.stages import distributed
from maskgrpo.stages.data import load_examples
from maskgrpo.stages.distributed import Rank, TorchStepper, local_part
from maskgrpo.stages.main import stage_main
from maskgrpo.stages.policy import Policy, fold_lora, remember_policy, save_policy, start_policy, weight_digest
from maskgrpo.stages.seeds import Salt, stage_generator
from maskgrpo.store import Committed, Store
from maskgrpo.tasks import Example

log = logging.getLogger("maskgrpo")

STAGE = "sft"


class SftResult(BaseModel):
    steps: int
    loss_first: float
    loss_last: float
    wall_seconds: float
    weight_digest: str
    train_accuracy: float | None = None  # with sft.stop: the last check's accuracy on training prompts
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


def train_sft(policy: Policy, modality: Modality, examples: list[Example], part: SftSpecPart, seed: int,
              progress: bool = True, model_spec: ModelSpec | None = None, rank: Rank = Rank(),
              stop: Callable[[int], bool] | None = None) -> list[float]:
    """Train in place; returns the loss of every step. ``stop(steps)`` is asked every
    ``part.stop.check_every`` steps; True ends training there (``part.steps`` is the most).

    Under DeepSpeed (``model_spec.deepspeed``, stages/distributed.py) every rank draws the same
    batch and trains on its slice; each micro-batch's loss is its exact share of the batch loss."""
    tok = policy.tokenizer
    device = policy.device
    data = modality.sft_data(tok, examples, sft_targets(examples, part.label_noise, seed))
    inputs = data.inputs.to(device)  # (D, L)
    positions = data.target_positions.to(device)  # (N,)
    generator = stage_generator(seed, Salt.SFT_BATCHES)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=part.lr, weight_decay=part.weight_decay)
    stepper = TorchStepper(policy.model, optimizer, None) if model_spec is None else \
        distributed.make_stepper(policy, optimizer, model_spec, rank, None)
    policy.model.train()
    losses = []
    for _ in tqdm(range(part.steps), desc=f"sft ({modality.name})", disable=not progress, leave=False):
        idx = torch.randint(len(inputs), (part.batch_size,), generator=generator)
        x = inputs[idx]  # (B, L)
        noise = modality.sft_noise(tok, x, data, part, generator)
        targets = x[:, positions]  # (B, N)
        loss = 0.0
        for rows in local_part(torch.arange(len(x), device=device), rank):
            keep = 1.0 if len(rows) else 0.0  # an empty part runs one row with zero weight
            rows = rows if len(rows) else torch.arange(1, device=device)
            logits = policy.logits(noise.inputs[rows], positions.expand(len(rows), -1))  # (b, N, V)
            share = sft_loss_share(logits, targets[rows], noise, rows, data.vocab_slice) * keep
            stepper.backward(share)
            loss += share.detach().item()
        stepper.step()
        losses.append(loss)
        if stop is not None and len(losses) % part.stop.check_every == 0 and stop(len(losses)):
            break
    losses = distributed.all_reduce(losses, rank) if losses else losses  # the whole batch's loss on every rank
    distributed.unwrap(policy)
    policy.model.eval()
    return losses


def run(spec: SftSpec, store: Store) -> SftResult:
    digest = spec_hash(spec)
    if store.is_done(spec.run_id, STAGE, 0, digest):
        return SftResult(**store.open(spec.run_id, STAGE, 0).get_json(METRICS), skipped=True)
    start = time.perf_counter()
    modality = modality_for(spec)
    examples = load_examples(spec.task, "train", spec.data_seed)
    policy = start_policy(spec.model, lambda tok: modality.tiny_shape(tok, examples), spec.seed)
    rank = distributed.setup(spec.model)
    checks: list[float] = []
    losses = train_sft(policy, modality, examples, spec.sft, spec.seed, model_spec=spec.model, rank=rank,
                       stop=stopping_check(spec, policy, modality, examples, checks)) if spec.sft.enabled else []
    # a LoRA warm start that trains nothing here keeps the champion's adapters trainable (no fold)
    fold = (lambda p: p) if policy.continued and not losses else (lambda p: fold_lora(p, spec.model, spec.seed))
    if spec.model.deepspeed.enabled:  # rank 0 writes the gathered weights (stages/distributed.py)
        with distributed.gathered(policy.model, spec.model):
            policy = fold(policy)
            result = sft_result(policy, losses, start)  # the same on every rank (distributed.py, 4):
            wall = distributed.all_reduce([result.wall_seconds], rank, op="max")[0]
            result = result.model_copy(update={"wall_seconds": wall})
            if rank.is_main:
                commit_sft(spec, store, digest, policy, result, losses)
        distributed.barrier(spec.model)
        return result
    policy = fold(policy)
    result = sft_result(policy, losses, start, checks)
    remember_policy(commit_sft(spec, store, digest, policy, result, losses), policy)
    return result


def stopping_check(spec: SftSpec, policy: Policy, modality: Modality, examples: list[Example],
                   checks: list[float]) -> Callable[[int], bool] | None:
    """With ``sft.stop``: the check ``train_sft`` asks, greedy accuracy on the first
    ``check_prompts`` training examples (appended to ``checks``) against the target; else None."""
    stop = spec.sft.stop
    if stop is None:
        return None
    from maskgrpo.stages.scoring import greedy_accuracy

    probe = examples[: stop.check_prompts]

    def reached(steps: int) -> bool:
        checks.append(greedy_accuracy(policy, modality, probe, spec.sampler, spec.reward, spec.task, spec.seed))
        log.info("sft: %d steps, accuracy %.3f on %d training prompts (target %.3f)", steps, checks[-1], len(probe),
                 stop.target_accuracy)
        return checks[-1] >= stop.target_accuracy

    return reached


def sft_result(policy: Policy, losses: list[float], start: float, checks: list[float] = ()) -> SftResult:
    return SftResult(
        steps=len(losses), loss_first=losses[0] if losses else 0.0, loss_last=losses[-1] if losses else 0.0,
        wall_seconds=time.perf_counter() - start, weight_digest=weight_digest(policy.model),
        train_accuracy=checks[-1] if checks else None,
    )


def commit_sft(spec: SftSpec, store: Store, digest: str, policy: Policy, result: SftResult, losses: list[float]) -> Committed:
    """Write the warm-started checkpoint, metrics and loss curve as the committed SFT output."""
    with store.begin(spec.run_id, STAGE, 0, digest) as attempt:
        save_policy(attempt, policy)
        attempt.put_json(METRICS, result.model_dump(exclude={"skipped"}, exclude_none=True))
        attempt.put_json(LOSSES, losses)
        return attempt.commit()


def main(argv: list[str] | None = None) -> int:
    return stage_main(STAGE, SftSpec, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
