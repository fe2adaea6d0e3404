"""Importance estimators: per-token log-probs of completions under seeded masks (docs/algorithm.md §3).

A masked diffusion model has no left-to-right factorisation, so GRPO's per-token ratio
pi_theta / pi_old is replaced by a masked-reconstruction log-prob evaluated on a seeded mask. For
iteration j of a rollout batch the estimator turns (seed S_j, rate r_j) into one or more *views*:
masked copies of the clean sequences, with coefficients that combine their per-token log-probs
l_v into the estimate  l_k = sum_v coef[v, k] * l_v,k,  and the tokens that enter the loss.

Estimators (``ESTIMATORS``, chosen by name; each takes its own frozen config dataclass):
1. ``d1``: prompt tokens masked with p = 0.15, completion fully masked (diffu-GRPO).
2. ``unigrpo``: completion masked i.i.d. Bernoulli(t), t ~ U(0, 1) per row from the seed
   (UniGRPO); image slots (``ramp_start`` None) likewise.
3. ``maskgrpo``: rate r_j = min(gamma + (1 - gamma) j / mu, 0.999); text: the AR-like fading-out
   mask (``ar_span`` completion | sequence); images: i.i.d. Bernoulli(r_j) over image slots.
4. ``coupled``: DiffuCoder's three passes, completion fully masked, M ~ Bernoulli(t) and its
   complement, t ~ U(0.2, 0.8): l_k = 1/2 [l_full + (l_M / t if k in M else l_notM / (1 - t))].
5. ``random``: the paper's "seeded masks" ablation step (the official ``remasking random``):
   completion masked i.i.d. Bernoulli(r_j) with MaskGRPO's r_j schedule, prompt never masked.
6. ``spg``, ``wd1``, ``espo``: the views of the objectives in ``core/objectives.py`` (each with
   its own loss, selected through ``Estimator.objective``): SPG's block-wise masks, wd1's d1-style
   one-step masks (no old log-probs: ``Estimator.needs_old`` False), ESPO's count mask and its
   complement (an ELBO with 1/t and 1/(L/(L+1) - t) weights).

``MaskViews.elbo_weight`` (B,) is the 1/t of each row's view (1/r_j, 1/t, 1 for a fully masked
completion): the sequence-level ratio exp(sum_k (1/t)(l_theta - l_old)) uses it.
``score_visible`` (the official loss weighting, docs/algorithm.md §10) scores every completion
position of a single-view estimator: masked positions give masked-reconstruction log-probs,
visible ones the model's log-prob of the visible token.

Loss tokens ("current", the default): the tokens the view masks, restricted to the completion up
to and including its first EOS (all completion tokens for d1 and coupled). The reference code's
``union`` weighting (all tokens masked by any of the mu masks, post-EOS padding kept) is
``union_loss_mask``.

Log-probs are float32, computed only at the target positions and in row chunks, so memory stays
bounded: never full-vocabulary logits for every position of all mu * B sequences at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from .masks import (
    ar_like_mask, bernoulli_completion_mask, block_random_masks, count_masks, coupled_masks, d1_mask, random_slot_mask,
    row_uniforms,
)
from .sampling import LogitsFn
from .schedules import maskgrpo_mask_rate


class EstimatorInput(NamedTuple):
    """Everything an estimator reads: data only, no modality names.

    ``ramp_start`` is the column where a text completion starts (the origin of the AR-like ramp
    and the prompt/completion boundary of d1 and coupled); the targets are then exactly the last
    columns ``ramp_start..L-1``. ``None`` means unordered target slots (image codes): masks are
    i.i.d. over the target positions and estimators that need a prompt/completion split refuse.
    ``vocab_slice`` (offset, size) restricts the softmax to a slice of the vocabulary (the image
    codebook); ``None`` is the full vocabulary.
    """

    input_ids: torch.Tensor  # (B, L) clean sequences [prompt, completion] (or the image layout)
    target_positions: torch.Tensor  # (N,) columns whose tokens are scored (completion or image slots)
    row_ids: torch.Tensor  # (B,) global row ids (their index in the rollout)
    prompt_valid: torch.Tensor  # (B, L) bool: real (non-padding) conditioning tokens
    loss_valid: torch.Tensor  # (B, N) bool: target tokens that may enter the loss
    ramp_start: int | None  # text: first completion column; None: image slots
    vocab_slice: tuple[int, int] | None = None  # (offset, size) of the scored vocabulary


class MaskViews(NamedTuple):
    inputs: torch.Tensor  # (V, B, L) masked copies of the sequences
    coef: torch.Tensor  # (V, B, N) float32: l_k = sum_v coef[v, k] * l_v,k
    loss_mask: torch.Tensor  # (B, N) bool: tokens entering the loss at this iteration
    elbo_weight: torch.Tensor | None = None  # (B,) 1/t of the row's view (sequence-level ratio)


@dataclass(frozen=True)
class D1Config:
    prompt_mask_prob: float = 0.15  # p: probability that a (non-padding) prompt token is masked


@dataclass(frozen=True)
class UniGrpoConfig:
    pass  # t ~ U(0, 1) per row from the seed: nothing to choose


@dataclass(frozen=True)
class MaskGrpoConfig:
    min_mask_rate: float = 0.6  # gamma in r_j = gamma + (1 - gamma) j / mu
    ar_span: str = "completion"  # the AR-like ramp over the completion (paper) or the whole sequence


@dataclass(frozen=True)
class CoupledConfig:
    t_low: float = 0.2  # t ~ U(t_low, t_high) per row
    t_high: float = 0.8


@dataclass(frozen=True)
class RandomConfig:
    min_mask_rate: float = 0.6  # gamma of the r_j schedule (as maskgrpo)


@dataclass(frozen=True)
class SpgConfig:
    """SPG (facebookresearch/SPG, GSM8K recipe): block_random masks, 2 Monte Carlo views, the
    mixture bound. prompt_mask_prob: the d1 recipe's 0.15 (the trainer's default is 0.3)."""

    block_length: int = 32  # b: the mask blocks (divides the completion length)
    num_views: int = 2  # num_t: Monte Carlo masks per iteration
    min_t: float = 0.0  # fraction of the chosen block masked: c ~ U{max(m min_t, 1) .. m max_t}
    max_t: float = 1.0
    prompt_mask_prob: float = 0.15  # prompt tokens masked with this probability
    bound: str = "mix"  # negative-advantage likelihood: "eubo", "mix" or "elbo"
    eubo_beta: float = 1.5  # beta of the upper bound
    mix_weight: float = 0.5  # omega: mix = omega EUBO + (1 - omega) ELBO

    def __post_init__(self) -> None:
        if self.bound not in ("eubo", "mix", "elbo"):
            raise ValueError(f"spg bound must be 'eubo', 'mix' or 'elbo', got {self.bound!r}")


@dataclass(frozen=True)
class Wd1Config:
    prompt_mask_prob: float = 0.15  # d1's one-step estimate: prompt masked with p, completion fully
    psi: float = 1.0  # temperature of the weights softmax(psi A) within a group


@dataclass(frozen=True)
class EspoConfig:
    pass  # the count mask and its complement: nothing to choose (clip: rl.epsilon, KL: rl.beta)


def completion_loss_valid(completion: torch.Tensor, eos_id: int) -> torch.Tensor:
    """True up to and including the first EOS of each row; (B, L_o) -> (B, L_o) bool."""
    is_eos = (completion == eos_id).long()
    eos_before = is_eos.cumsum(dim=1) - is_eos  # number of EOS strictly before k
    return eos_before == 0


def _apply(input_ids: torch.Tensor, mask: torch.Tensor, mask_id: int) -> torch.Tensor:
    return torch.where(mask, torch.full_like(input_ids, mask_id), input_ids)


def _single_view(inp: EstimatorInput, mask: torch.Tensor, mask_id: int, loss_all_valid: bool) -> MaskViews:
    masked_targets = mask[:, inp.target_positions]  # (B, N)
    loss_mask = inp.loss_valid if loss_all_valid else masked_targets & inp.loss_valid
    return MaskViews(
        inputs=_apply(inp.input_ids, mask, mask_id).unsqueeze(0),
        coef=masked_targets.float().unsqueeze(0),
        loss_mask=loss_mask,
    )


def _text_shape(inp: EstimatorInput, name: str) -> tuple[int, int]:
    if inp.ramp_start is None:
        raise ValueError(f"estimator {name!r} needs a text completion (ramp_start); image slots support: "
                         f"{', '.join(n for n, e in sorted(ESTIMATORS.items()) if e.slots)}")
    prompt_len, completion_len = inp.ramp_start, inp.target_positions.numel()
    if int(inp.target_positions[0]) != prompt_len or prompt_len + completion_len != inp.input_ids.shape[1]:
        raise ValueError("text estimators expect the completion to occupy the last columns")
    return prompt_len, completion_len


def _target_maskable(inp: EstimatorInput) -> torch.Tensor:
    maskable = torch.zeros_like(inp.input_ids, dtype=torch.bool)
    maskable[:, inp.target_positions] = True
    return maskable  # (B, L)


def d1_views(inp: EstimatorInput, seed: int, iteration: int, num_iterations: int, mask_id: int,
             config: D1Config) -> MaskViews:
    prompt_len, completion_len = _text_shape(inp, "d1")
    mask = d1_mask(seed, inp.row_ids, inp.prompt_valid[:, :prompt_len], completion_len, config.prompt_mask_prob)
    return _with_elbo_weight(_single_view(inp, mask, mask_id, loss_all_valid=True), 1.0)


def unigrpo_views(inp: EstimatorInput, seed: int, iteration: int, num_iterations: int, mask_id: int,
                  config: UniGrpoConfig) -> MaskViews:
    rate = row_uniforms(seed, inp.row_ids, 1, stream=2)[:, 0].clamp(min=1e-3)  # (B,)
    if inp.ramp_start is None:
        u = row_uniforms(seed, inp.row_ids, inp.input_ids.shape[1])  # (B, L)
        mask = (u < rate.unsqueeze(1)) & _target_maskable(inp)
    else:
        prompt_len, completion_len = _text_shape(inp, "unigrpo")
        mask = bernoulli_completion_mask(seed, inp.row_ids, prompt_len, completion_len, rate)
    views = _single_view(inp, mask.to(inp.input_ids.device), mask_id, loss_all_valid=False)
    return _with_elbo_weight(views, 1.0 / rate.to(inp.input_ids.device))


def _scheduled_views(inp: EstimatorInput, seed: int, rate: float, mask_id: int, text_mask: Callable[[int, int], torch.Tensor]) -> MaskViews:
    """One view at the scheduled rate r_j: i.i.d. over image slots, ``text_mask(P, L_o)`` for text; 1/t = 1/r_j."""
    if inp.ramp_start is None:
        mask = random_slot_mask(seed, inp.row_ids, _target_maskable(inp), rate)
    else:
        mask = text_mask(*_text_shape(inp, "text"))
    return _with_elbo_weight(_single_view(inp, mask.to(inp.input_ids.device), mask_id, loss_all_valid=False), 1.0 / rate)


def maskgrpo_views(inp: EstimatorInput, seed: int, iteration: int, num_iterations: int, mask_id: int,
                   config: MaskGrpoConfig) -> MaskViews:
    rate = maskgrpo_mask_rate(iteration, num_iterations, config.min_mask_rate)
    unpadded = inp.prompt_valid[:, :inp.ramp_start].sum(dim=1) if inp.ramp_start is not None else None  # (B,) own prompt
    return _scheduled_views(inp, seed, rate, mask_id, lambda prompt_len, completion_len: ar_like_mask(
        seed, inp.row_ids, prompt_len, completion_len, rate, config.ar_span, unpadded))


def random_views(inp: EstimatorInput, seed: int, iteration: int, num_iterations: int, mask_id: int,
                 config: RandomConfig) -> MaskViews:
    rate = maskgrpo_mask_rate(iteration, num_iterations, config.min_mask_rate)
    return _scheduled_views(inp, seed, rate, mask_id, lambda prompt_len, completion_len: bernoulli_completion_mask(
        seed, inp.row_ids, prompt_len, completion_len, rate))


def _with_elbo_weight(views: MaskViews, inv_t: float | torch.Tensor) -> MaskViews:
    batch = views.inputs.shape[1]
    weight = torch.as_tensor(inv_t, dtype=torch.float32, device=views.coef.device).expand(batch).clone()  # (B,)
    return views._replace(elbo_weight=weight)


def coupled_views(inp: EstimatorInput, seed: int, iteration: int, num_iterations: int, mask_id: int,
                  config: CoupledConfig) -> MaskViews:
    prompt_len, completion_len = _text_shape(inp, "coupled")
    t, mask = coupled_masks(seed, inp.row_ids, prompt_len, completion_len, config.t_low, config.t_high)
    mask = mask.to(inp.input_ids.device)
    t = t.to(inp.input_ids.device).unsqueeze(1)  # (B, 1)
    full = _target_maskable(inp)
    complement = full & ~mask
    in_m = mask[:, inp.target_positions].float()  # (B, N)
    inputs = torch.stack([_apply(inp.input_ids, m, mask_id) for m in (full, mask, complement)])  # (3, B, L)
    coef = torch.stack([torch.full_like(in_m, 0.5), 0.5 * in_m / t, 0.5 * (1.0 - in_m) / (1.0 - t)])  # (3, B, N)
    return _with_elbo_weight(MaskViews(inputs=inputs, coef=coef, loss_mask=inp.loss_valid), 1.0)  # 1/t in coef


def spg_views(inp: EstimatorInput, seed: int, iteration: int, num_iterations: int, mask_id: int,
              config: SpgConfig) -> MaskViews:
    """SPG's num_views block-wise masks (masks.block_random_masks), prompt tokens masked with
    prompt_mask_prob; coef = masked / views (the plain mean, for logging only: the SPG loss reads
    the views' log-probs and masks itself, core/objectives.py)."""
    prompt_len, completion_len = _text_shape(inp, "spg")
    device = inp.input_ids.device
    lengths = inp.loss_valid.sum(dim=1).cpu()  # (B,) up to and including the first EOS
    masks = block_random_masks(seed, inp.row_ids, prompt_len, lengths, completion_len, config.block_length,
                               config.num_views, config.min_t, config.max_t).to(device)  # (V, B, L)
    prompt_u = torch.stack([row_uniforms(seed, inp.row_ids, prompt_len, stream=6 + v) for v in range(config.num_views)])
    prompt_masks = (prompt_u.to(device) < config.prompt_mask_prob) & inp.prompt_valid[:, :prompt_len]  # (V, B, P)
    masks[:, :, :prompt_len] = prompt_masks
    in_target = masks[:, :, inp.target_positions].float()  # (V, B, N)
    inputs = torch.stack([_apply(inp.input_ids, m, mask_id) for m in masks])
    return MaskViews(inputs=inputs, coef=in_target / config.num_views, loss_mask=inp.loss_valid)


def wd1_views(inp: EstimatorInput, seed: int, iteration: int, num_iterations: int, mask_id: int,
              config: Wd1Config) -> MaskViews:
    """wd1's likelihood approximation: d1's one-step mask (prompt p, completion fully masked)."""
    _text_shape(inp, "wd1")
    return d1_views(inp, seed, iteration, num_iterations, mask_id, D1Config(config.prompt_mask_prob))


def espo_views(inp: EstimatorInput, seed: int, iteration: int, num_iterations: int, mask_id: int,
               config: EspoConfig) -> MaskViews:
    """ESPO's ELBO with its variance-reducing complement: x ~ U{0..L_o} positions masked (M),
    t = x / (L_o + 1); l_k = 1/2 [l_M,k / t if k in M else l_notM,k / (L_o / (L_o + 1) - t)].
    Summed over every completion position (post-EOS padding included, as the official code), it is
    the sequence ELBO; loss tokens: all completion positions."""
    prompt_len, completion_len = _text_shape(inp, "espo")
    t, mask = count_masks(seed, inp.row_ids, prompt_len, completion_len)
    device = inp.input_ids.device
    mask, t = mask.to(device), t.to(device).unsqueeze(1)  # (B, L), (B, 1)
    complement = _target_maskable(inp) & ~mask
    in_m = mask[:, inp.target_positions].float()  # (B, N)
    rest = completion_len / (completion_len + 1) - t
    coef = torch.stack([0.5 * in_m / t.clamp(min=1e-8), 0.5 * (1.0 - in_m) / rest.clamp(min=1e-8)])  # (2, B, N)
    inputs = torch.stack([_apply(inp.input_ids, m, mask_id) for m in (mask, complement)])
    return MaskViews(inputs=inputs, coef=coef, loss_mask=torch.ones_like(inp.loss_valid))


class Estimator(NamedTuple):
    views: Callable[..., MaskViews]  # (inp, seed, iteration, num_iterations, mask_id, config) -> views
    config: type  # its frozen config dataclass; ``config()`` is the default
    forwards: int  # model forwards per sequence per iteration (= views; 0: config.num_views)
    slots: bool  # also defined for unordered target slots (ramp_start None)
    objective: str = "grpo"  # the loss: "grpo" (core/loss.py) or one of core/objectives.py
    needs_old: bool = True  # False: the objective is ratio-free, rollout caches no old log-probs


ESTIMATORS: dict[str, Estimator] = {
    "d1": Estimator(d1_views, D1Config, forwards=1, slots=False),
    "unigrpo": Estimator(unigrpo_views, UniGrpoConfig, forwards=1, slots=True),
    "maskgrpo": Estimator(maskgrpo_views, MaskGrpoConfig, forwards=1, slots=True),
    "coupled": Estimator(coupled_views, CoupledConfig, forwards=3, slots=False),
    "random": Estimator(random_views, RandomConfig, forwards=1, slots=True),
    "spg": Estimator(spg_views, SpgConfig, forwards=0, slots=False, objective="spg", needs_old=False),
    "wd1": Estimator(wd1_views, Wd1Config, forwards=1, slots=False, objective="wd1", needs_old=False),
    "espo": Estimator(espo_views, EspoConfig, forwards=2, slots=False, objective="espo"),
}


def get_estimator(name: str) -> Estimator:
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; valid: {', '.join(sorted(ESTIMATORS))}") from None


def views_per_iteration(name: str, config: object | None = None) -> int:
    """Model forwards per sequence per iteration (coupled needs three, SPG its num_views)."""
    estimator = get_estimator(name)
    return estimator.forwards or (config or estimator.config()).num_views


def estimator_config(name: str, **values: object):
    """``name``'s config from field values; a field the config does not declare is an error."""
    config = get_estimator(name).config
    known = set(config.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"estimator {name!r} takes {', '.join(sorted(known)) or 'no options'}; got {', '.join(unknown)}")
    return config(**values)


def token_logprobs(
    logits_fn: LogitsFn,
    inputs: torch.Tensor,  # (B, L)
    target_positions: torch.Tensor,  # (N,)
    targets: torch.Tensor,  # (B, N) token ids
    *,
    chunk_rows: int = 64,
    vocab_slice: tuple[int, int] | None = None,  # (offset, size): image codes
) -> torch.Tensor:
    """l_k = log softmax(f(inputs))[k, targets_k] at the target positions, float32; (B, N)."""
    out = []
    for start in range(0, inputs.shape[0], chunk_rows):
        rows = slice(start, start + chunk_rows)
        positions = target_positions.expand(inputs[rows].shape[0], -1)  # (c, N)
        logits = logits_fn(inputs[rows], positions).float()  # (c, N, V)
        tgt = targets[rows]
        if vocab_slice is not None:
            offset, size = vocab_slice
            logits = logits[..., offset:offset + size]
            tgt = tgt - offset
        picked = logits.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (c, N)
        out.append(picked - torch.logsumexp(logits, dim=-1))
    return torch.cat(out)


def view_logprobs(logits_fn: LogitsFn, views: MaskViews, inp: EstimatorInput, *, chunk_rows: int = 64) -> torch.Tensor:
    """Per-view log-probs l_v of every target token; (V, B, N)."""
    targets = inp.input_ids[:, inp.target_positions]  # (B, N)
    return torch.stack([token_logprobs(logits_fn, inputs, inp.target_positions, targets, chunk_rows=chunk_rows,
                                       vocab_slice=inp.vocab_slice) for inputs in views.inputs])


def estimate_logprobs(logits_fn: LogitsFn, views: MaskViews, inp: EstimatorInput, *, chunk_rows: int = 64) -> torch.Tensor:
    """The estimator's per-token log-prob sum_v coef_v * l_v for every target token; (B, N)."""
    return (views.coef * view_logprobs(logits_fn, views, inp, chunk_rows=chunk_rows)).sum(dim=0)


def score_visible(views: MaskViews) -> MaskViews:
    """The official loss weighting's scoring: every target position of the (single) view counts
    with coefficient 1, masked or visible (visible tokens keep their real log-probs, gradient
    included). Multi-view estimators have no such reading and refuse."""
    if views.inputs.shape[0] != 1:
        raise ValueError("loss_tokens 'coverage' needs a single-view estimator (d1, unigrpo, maskgrpo, random)")
    return views._replace(coef=torch.ones_like(views.coef))


def build_views(name: str, inp: EstimatorInput, seed: int, iteration: int, num_iterations: int, mask_id: int,
                config: object | None = None) -> MaskViews:
    """Views of ``name`` for iteration ``iteration`` (1-based) of ``num_iterations``.

    ``config``: an instance of the estimator's config class (None: its defaults)."""
    estimator = get_estimator(name)
    if config is None:
        config = estimator.config()
    elif type(config) is not estimator.config:
        raise ValueError(f"estimator {name!r} takes a {estimator.config.__name__}, got {type(config).__name__}")
    return estimator.views(inp, seed, iteration, num_iterations, mask_id, config)


class CachedLogprobs(NamedTuple):
    logprobs: torch.Tensor  # (mu, B, N) float32 estimator log-probs per iteration
    loss_masks: torch.Tensor  # (mu, B, N) bool "current" loss tokens per iteration
    masked: torch.Tensor  # (mu, B, N) bool tokens any view of the iteration scores (for "union")


@torch.no_grad()
def cache_logprobs(
    logits_fn: LogitsFn | None, name: str, inp: EstimatorInput, seeds: list[int], mask_id: int, *,
    chunk_rows: int = 64, config: object | None = None, visible: bool = False,
) -> CachedLogprobs:
    """Log-probs for all mu seeded masks at once (rollout time: old and reference policies).

    The old-policy pass runs in eval mode with the rollout weights; the caller sets the mode.
    ``visible``: score every completion position (``score_visible``), for the official loss
    weighting. ``logits_fn`` None: only the masks (a ratio-free objective needs no log-probs;
    ``logprobs`` is then empty).
    """
    num_iterations = len(seeds)
    logprobs, loss_masks, masked = [], [], []
    for j, seed in enumerate(seeds, start=1):
        views = build_views(name, inp, seed, j, num_iterations, mask_id, config)
        loss_masks.append(views.loss_mask)
        masked.append((views.coef != 0).any(dim=0))  # the mask itself, before visible scoring
        if logits_fn is not None:
            views = score_visible(views) if visible else views
            logprobs.append(estimate_logprobs(logits_fn, views, inp, chunk_rows=chunk_rows))
    stacked = torch.stack(logprobs) if logprobs else torch.zeros(0)
    return CachedLogprobs(stacked, torch.stack(loss_masks), torch.stack(masked))


def union_loss_mask(masked: torch.Tensor) -> torch.Tensor:
    """The reference code's weighting: tokens masked by any of the mu masks, post-EOS padding
    kept (reproduction only); (mu, B, N) -> (B, N) bool."""
    return masked.any(dim=0)


def coverage_weights(masked: torch.Tensor) -> torch.Tensor:
    """The official ``compute_loss`` weighting (docs/algorithm.md §10): each completion token
    counts as many times as the mu masks cover it, post-EOS padding included;
    (mu, B, N) bool -> (B, N) float32 counts in 0..mu."""
    return masked.float().sum(dim=0)
