"""Update: mu MaskGRPO iterations per minibatch of the round's rollouts (docs/algorithm.md §3-§4).

For each minibatch (rows shuffled with the round seed), iteration j = 1..mu is its j-th
optimizer step: the estimator rebuilds mask j from the stored seed S_j and the rows' global ids,
so the new log-probs use exactly the mask the old ones were cached with; the loss is the clipped
surrogate (+ k3 KL with beta > 0) over the iteration's loss tokens ("current"), the union of all
mu masks ("union") or their coverage counts ("coverage", the official weighting); estimators with
their own objective (spg, wd1, espo: core/objectives.py) minimise that instead, each sum divided
by its denominator over the whole minibatch, so any split into parts gives the minibatch loss.
Each part (a rank's micro-batch) runs a forward and a backward per chunk of
``rl.logprob_chunk_rows`` model rows, so the update's peak memory follows the chunk, not the
minibatch (``rows_per_chunk``; bench/update_memory.py). AdamW state carries over between rounds (stored beside the checkpoint; under
DeepSpeed too, stages/distributed.py). Modality-blind: the estimator's input comes from the data
the rollout stored (stages/estimation.py), not from the modality.

    python -m maskgrpo.stages.update --spec @update.json
"""

from __future__ import annotations

import time
from statistics import fmean

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from maskgrpo.artifacts import METRICS, OPTIMIZER_META, OPTIMIZER_TENSORS, ROLLOUT, SCORES
from maskgrpo.core import objectives
from maskgrpo.core.importance import (
    MaskViews, build_views, coverage_weights, get_estimator, score_visible, union_loss_mask, view_logprobs,
    views_per_iteration,
)
from maskgrpo.core.loss import LossStats, grpo_loss, group_token_weights
from maskgrpo.plan import rollout_output
from maskgrpo.specs import CHAMPION_OPTIMIZER, RlSpec, UpdateSpec, spec_hash
from maskgrpo.stages import distributed
from maskgrpo.stages.estimation import ROUND_CONSTANTS, estimator_config, estimator_input
from maskgrpo.stages.main import stage_main
from maskgrpo.stages.optimizer import load_optimizer, save_optimizer
from maskgrpo.stages.policy import Policy, load_policy, parse_ref, remember_policy, save_policy, weight_digest
from maskgrpo.stages.seeds import Salt, stage_generator
from maskgrpo.stages.distributed import Rank, Stepper, TorchStepper, local_part
from maskgrpo.stages.retrain import read_resolved
from maskgrpo.store import Committed, Store

STAGE = "update"


class UpdateResult(BaseModel):
    optimizer_steps: int
    loss: float
    clip_fraction: float
    clip_ratio: float = 0.0  # the official mean(rho A < clip(rho) A); clip_fraction: the clipped region
    kl: float
    ratio_deviation: float
    grad_norm: float
    forwards_per_completion: float
    wall_seconds: float
    weight_digest: str
    optimize_seconds: float = 0.0  # forwards, backwards and optimizer steps
    store_seconds: float = 0.0  # loading policy, optimizer and round; writing them (the commit not counted)
    skipped: bool = False


def load_round(store: Store, spec: UpdateSpec) -> dict[str, torch.Tensor]:
    """The round's rollout shards concatenated in row order, with the score's advantages."""
    parts = [store.open(spec.run_id, rollout_output(s, spec.num_shards), spec.round).get_tensors(ROLLOUT)
             for s in range(spec.num_shards)]
    rows = {key: torch.cat([p[key] for p in parts], dim=1 if parts[0][key].dim() == 3 else 0)
            for key in parts[0] if key not in ROUND_CONSTANTS}
    order = rows["row_ids"].argsort()
    data = {key: value[:, order] if value.dim() == 3 else value[order] for key, value in rows.items()}
    data.update({key: parts[0][key] for key in ROUND_CONSTANTS if key in parts[0]})
    scores = store.open(spec.run_id, "score", spec.round).get_tensors(SCORES)
    data["advantages"], data["keep"] = scores["advantages"], scores["keep"]
    return data


def _denominator(weights: torch.Tensor, normalization: str) -> torch.Tensor:
    """What grpo_loss divides by: loss tokens ('token'; 'group' arrives as group token weights)
    or sequences with a loss token."""
    return weights.sum() if normalization in ("token", "group") else (weights.sum(dim=1) > 0).sum()


def minibatch_weights(data: dict[str, torch.Tensor], rl: RlSpec, mb: torch.Tensor, j: int) -> torch.Tensor:
    """Iteration j's loss weights of the minibatch rows ``mb`` (B, N): the iteration's masked tokens
    ('current'), the union of the mu masks ('union') or their coverage counts ('coverage');
    'group' normalisation folds each prompt group's token mean into the weights."""
    if rl.loss_tokens == "coverage":
        weights = coverage_weights(data["masked"][:, mb])
    elif rl.loss_tokens == "union":
        weights = union_loss_mask(data["masked"][:, mb])
    else:
        weights = data["loss_masks"][j - 1][mb]
    if rl.normalization == "group":
        weights = group_token_weights(weights, data["row_ids"][mb] // rl.group_size)
    return weights


def objective_denominator(rl: RlSpec, data: dict[str, torch.Tensor], mb: torch.Tensor) -> torch.Tensor:
    """What a core/objectives.py loss sum is divided by over the whole minibatch ``mb``."""
    name = get_estimator(rl.estimator).objective
    if name == "spg":
        return objectives.spg_denominator(data["loss_valid"][mb])
    if name == "wd1":
        return objectives.wd1_denominator(data["row_ids"][mb] // rl.group_size)
    return objectives.espo_denominator(len(mb))


def objective_loss(rl: RlSpec, config: object, views: MaskViews, lp: torch.Tensor, inp, weights: torch.Tensor,
                   data: dict[str, torch.Tensor], sub: torch.Tensor, j: int, row_weights: torch.Tensor) -> tuple[torch.Tensor, LossStats]:
    """The loss sum of a core/objectives.py objective on rows ``sub``; lp: (V, B, N) per-view
    log-probs; row_weights: wd1's (w+ - w-) of these rows (computed over the minibatch)."""
    name = get_estimator(rl.estimator).objective
    device = lp.device
    live = (weights.sum(dim=1) > 0).to(lp.dtype)  # (B,) an empty part's stand-in row counts 0
    advantages = data["advantages"][sub].to(device) * live
    if name == "spg":
        return objectives.spg_loss_sum(lp, views.coef > 0, inp.loss_valid, advantages, bound=config.bound,
                                       eubo_beta=config.eubo_beta, mix_weight=config.mix_weight)
    estimate = (views.coef * lp).sum(dim=0)  # (B, N)
    if name == "wd1":
        return objectives.wd1_loss_sum(estimate, inp.loss_valid, row_weights.to(device) * live)
    elbo = (estimate * views.loss_mask).sum(dim=1)  # (B,) ESPO's sequence ELBO
    old = data["old_logprobs"][j - 1][sub].to(device).sum(dim=1)
    ref = data["ref_logprobs"][j - 1][sub].to(device).sum(dim=1) if "ref_logprobs" in data else None
    return objectives.espo_loss_sum(elbo, old, advantages, estimate.shape[1], epsilon=rl.epsilon, ref_elbo=ref, beta=rl.beta)


def rows_per_chunk(rl: RlSpec, config: object) -> int:
    """Minibatch rows per backward: ``logprob_chunk_rows`` model rows over the estimator's V views
    (at least one row), so a backward holds the logits of at most max(V, logprob_chunk_rows) rows."""
    return max(1, rl.logprob_chunk_rows // views_per_iteration(rl.estimator, config))


def _chunk_backward(policy: Policy, stepper: Stepper, rl: RlSpec, config: object, data: dict[str, torch.Tensor],
                    mb: torch.Tensor, mb_weights: torch.Tensor, piece: torch.Tensor, total: torch.Tensor,
                    wd1_weights: torch.Tensor, seed: int, j: int, mask_id: int, objective: str, device: torch.device,
                    last: bool) -> tuple[LossStats, float | None, int]:
    """Forward and backward of the rows ``piece`` (indices into ``mb``; empty: one zero-weight
    row) as their exact share of the minibatch loss (``total``: its denominator, computed over the
    whole minibatch, like the weights); returns the stats, their weight in ``merge_stats`` and V."""
    sub = mb[piece] if len(piece) else mb[:1]
    inp = estimator_input(data, sub, device)
    weights = (mb_weights[piece] if len(piece) else torch.zeros_like(mb_weights[:1])).to(device)
    views = build_views(rl.estimator, inp, seed, j, rl.num_iterations, mask_id, config)
    if rl.loss_tokens == "coverage":
        views = score_visible(views)
    lp = view_logprobs(policy.logits, views, inp, chunk_rows=rl.logprob_chunk_rows)  # (V, B, N)
    if objective != "grpo":
        loss_sum, s = objective_loss(rl, config, views, lp, inp, weights, data, sub, j,
                                     wd1_weights[piece] if len(piece) else torch.zeros(1))
        stepper.backward(loss_sum / total, last=last)
        weight = None if objective == "wd1" else s.num_tokens  # wd1's loss stat is a sum, the others' means
    else:
        ref = data["ref_logprobs"][j - 1][sub].to(device) if "ref_logprobs" in data else None
        loss, s = grpo_loss(
            (views.coef * lp).sum(dim=0), data["old_logprobs"][j - 1][sub].to(device),
            data["advantages"][sub].to(device), weights, ref_logprobs=ref, beta=rl.beta, epsilon=rl.epsilon,
            normalization="token" if rl.normalization == "group" else rl.normalization,
            ratio_level=rl.ratio_level, sequence_weights=views.elbo_weight,
        )
        part_denominator = _denominator(weights, rl.normalization)
        stepper.backward(loss * (part_denominator / total), last=last)
        weight = float(part_denominator)
    return s, weight, views.inputs.shape[0]


def merge_stats(shares: list[tuple[LossStats, float | None]]) -> LossStats:
    """The stats of a micro-batch from those of its chunks: ``loss`` averaged by each chunk's
    weight (its loss denominator; None: the stat is a sum, so summed), the token-weighted rest by
    the chunks' token counts, so one chunk or many report the same numbers."""
    if len(shares) == 1:
        return shares[0][0]
    tokens = sum(s.num_tokens for s, _ in shares)
    summed = shares[0][1] is None
    loss_weight = 0.0 if summed else sum(w for _, w in shares)

    def mean(field: str) -> float:
        return sum(getattr(s, field) * s.num_tokens for s, _ in shares) / tokens if tokens else 0.0

    loss = (sum(s.loss for s, _ in shares) if summed
            else sum(s.loss * w for s, w in shares) / loss_weight if loss_weight else 0.0)
    return LossStats(loss=loss, clip_fraction=mean("clip_fraction"), kl=mean("kl"),
                     ratio_deviation=mean("ratio_deviation"), num_tokens=tokens, clip_ratio=mean("clip_ratio"))


def optimize(policy: Policy, optimizer: torch.optim.Optimizer, data: dict[str, torch.Tensor], rl: RlSpec, seed: int,
             progress: bool = True, stepper: Stepper | None = None,
             rank: Rank = Rank(), chunk_backward: bool = True) -> UpdateResult:
    """Run the round's optimizer steps in place; returns the averaged stats (digest left empty).

    ``stepper``/``rank`` (stages/distributed.py): this process's slice of every minibatch, in
    micro-batches whose losses are their exact shares of the minibatch loss. Each micro-batch
    runs a forward and a backward per chunk of rows (``rows_per_chunk``), so only one chunk's
    logits and activations are alive at a time: the loss is a sum of per-row terms over
    denominators computed once over the minibatch, so the gradient is the same (up to float
    summation order). ``chunk_backward`` False: one backward per micro-batch (the old path, kept
    for bench/update_memory.py)."""
    started = time.perf_counter()
    stepper = stepper or TorchStepper(policy.model, optimizer, rl.grad_clip)
    device = policy.device
    seeds = data["mask_seeds"].tolist()
    mask_id = int(data["mask_id"][0])
    rows = data["keep"].nonzero().squeeze(1)
    rows = rows[torch.randperm(len(rows), generator=stage_generator(seed, Salt.MINIBATCH_ORDER))]
    config = estimator_config(rl)
    objective = get_estimator(rl.estimator).objective
    chunk = rows_per_chunk(rl, config) if chunk_backward else None
    policy.model.train()
    stats, grad_norms, forwards = [], [], 0
    minibatches = [rows[i:i + rl.minibatch_size] for i in range(0, len(rows), rl.minibatch_size)]
    bar = tqdm(total=len(minibatches) * rl.num_iterations, desc="update", disable=not progress, leave=False)
    for mb in minibatches:
        wd1_weights = torch.zeros(len(mb))
        if objective == "wd1":
            wd1_weights = objectives.wd1_row_weights(data["advantages"][mb], data["row_ids"][mb] // rl.group_size, config.psi)
        for j in range(1, rl.num_iterations + 1):
            bar.update(1)
            mb_weights = minibatch_weights(data, rl, mb, j)
            if not mb_weights.any():
                continue
            total = _denominator(mb_weights, rl.normalization) if objective == "grpo" else objective_denominator(rl, data, mb)
            for part in local_part(torch.arange(len(mb)), rank):
                # an empty part still runs one row with zero weight: every rank joins the collectives
                pieces = list(torch.split(part, chunk)) if chunk and len(part) else [part]
                shares = []
                for c, piece in enumerate(pieces):
                    s, weight, views = _chunk_backward(policy, stepper, rl, config, data, mb, mb_weights, piece, total,
                                                       wd1_weights, seeds[j - 1], j, mask_id, objective, device,
                                                       last=c == len(pieces) - 1)
                    forwards += views * len(piece)
                    shares.append((s, weight))
                if len(part):
                    stats.append(merge_stats(shares))
            grad_norms.append(stepper.step())
    bar.close()
    policy.model.eval()
    fields = ("loss", "clip_fraction", "clip_ratio", "kl", "ratio_deviation")
    if rank.world_size == 1:
        means = {f: fmean(getattr(s, f) for s in stats) if stats else 0.0 for f in fields}
    else:  # the mean over every rank's parts, the same on all ranks (distributed.py, 4)
        *sums, count, forwards = distributed.all_reduce([sum(getattr(s, f) for s in stats) for f in fields]
                                                        + [len(stats), forwards], rank)
        means = {f: total / count if count else 0.0 for f, total in zip(fields, sums)}
    return UpdateResult(
        optimizer_steps=len(grad_norms), **means, grad_norm=fmean(grad_norms) if grad_norms else 0.0,
        forwards_per_completion=forwards / max(len(rows), 1), wall_seconds=0.0, weight_digest="",
        optimize_seconds=time.perf_counter() - started,
    )


def make_optimizer(policy: Policy, rl: RlSpec) -> torch.optim.AdamW:
    return torch.optim.AdamW(policy.model.parameters(), lr=rl.lr, betas=rl.betas, weight_decay=rl.weight_decay)


def optimizer_source(store: Store, spec: UpdateSpec) -> tuple[Committed | None, bool]:
    """(the committed output whose AdamW state this update starts from, whether it is another
    tick's): the previous round's update; with ``retrain.carry_optimizer`` the first round's is
    the champion version's checkpoint (pinned, store/registry.py), none while there is no champion."""
    if not spec.optimizer_from:
        return None, False
    if spec.optimizer_from != CHAMPION_OPTIMIZER:
        return store.open(spec.run_id, *parse_ref(spec.optimizer_from)), False
    resolved = read_resolved(store, spec.run_id)
    if resolved["champion"] is None:
        return None, False
    committed = store.registry(resolved["model"]).checkpoint(resolved["champion"])
    if OPTIMIZER_TENSORS not in committed.files():
        raise ValueError(f"retrain.carry_optimizer: champion v{resolved['champion']} of {resolved['model']!r} "
                         f"({committed.uri}) has no optimizer state")
    return committed, True


def run(spec: UpdateSpec, store: Store) -> UpdateResult:
    digest = spec_hash(spec)
    if store.is_done(spec.run_id, STAGE, spec.round, digest):
        return UpdateResult(**store.open(spec.run_id, STAGE, spec.round).get_json(METRICS), skipped=True)
    start = time.perf_counter()
    rank = distributed.setup(spec.model)
    policy = load_policy(store, spec.run_id, spec.policy, spec.model, mutable=True)
    optimizer = make_optimizer(policy, spec.rl)
    deepspeed = spec.model.deepspeed.enabled
    previous, across_ticks = optimizer_source(store, spec)
    if previous is not None and not deepspeed:
        load_optimizer(previous, optimizer, keep_hyperparameters=across_ticks)
    stepper = distributed.make_stepper(policy, optimizer, spec.model, rank, spec.rl.grad_clip)
    if previous is not None and deepspeed:  # into the ZeRO partitions (distributed.py, 5)
        stepper.import_optimizer(previous.get_tensors(OPTIMIZER_TENSORS))
    data = load_round(store, spec)
    loaded = time.perf_counter() - start
    result = optimize(policy, optimizer, data, spec.rl, spec.seed, stepper=stepper, rank=rank)
    if deepspeed:
        state = stepper.export_optimizer(keep=rank.is_main)  # collective: every rank
        distributed.unwrap(policy)
        return _commit_distributed(spec, store, policy, result, rank, digest, start, state, loaded)
    result = result.model_copy(update={"weight_digest": weight_digest(policy.model)})
    with store.begin(spec.run_id, STAGE, spec.round, digest) as attempt:
        writing = time.perf_counter()
        save_policy(attempt, policy)
        save_optimizer(attempt, optimizer)
        end = time.perf_counter()  # wall: the stage up to its metrics (the commit itself is not counted)
        result = result.model_copy(update={"wall_seconds": end - start, "store_seconds": loaded + (end - writing)})
        attempt.put_json(METRICS, result.model_dump(exclude={"skipped"}))
        committed = attempt.commit()
    remember_policy(committed, policy)
    return result


def _commit_distributed(spec: UpdateSpec, store: Store, policy: Policy, result: UpdateResult, rank: Rank,
                        digest: str, start: float, state: tuple[dict[str, torch.Tensor], dict],
                        loaded: float) -> UpdateResult:
    """Rank 0 writes the (gathered) weights and the assembled AdamW state; the others wait.
    ``store_seconds``: the loads only (``loaded``; the gathered write is inside the wall)."""
    with distributed.gathered(policy.model, spec.model):
        # timings: the slowest rank's, so every rank reports the same metrics (KFP outputs)
        wall, optimize, loads = distributed.all_reduce([time.perf_counter() - start, result.optimize_seconds, loaded],
                                                       rank, op="max")
        result = result.model_copy(update={"wall_seconds": wall, "optimize_seconds": optimize, "store_seconds": loads,
                                           "weight_digest": weight_digest(policy.model)})
        if rank.is_main:
            with store.begin(spec.run_id, STAGE, spec.round, digest) as attempt:
                save_policy(attempt, policy)
                attempt.put_tensors(OPTIMIZER_TENSORS, state[0])
                attempt.put_json(OPTIMIZER_META, state[1])
                attempt.put_json(METRICS, result.model_dump(exclude={"skipped"}))
                attempt.commit()
    distributed.barrier(spec.model)
    return result


def main(argv: list[str] | None = None) -> int:
    return stage_main(STAGE, UpdateSpec, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
