"""The run's three phases: the SFT warm start (``sft``), the MaskGRPO rounds (``rl``, with the
options of the estimators that bring their own objective) and held-out evaluation (``evaluate``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_serializer, model_validator

from maskgrpo.specs._base import _drop_defaults, _Spec
from maskgrpo.specs.samplers import SamplerSpec, TextSamplerSpec


class SftStopSpec(_Spec):
    """SFT to a mediocre start: stop at the first check where the evaluation sampler's accuracy on
    training prompts reaches a target (``sft.steps`` is then the most steps)."""

    target_accuracy: float = Field(gt=0.0, le=1.0, description="Stop once this share of the checked training prompts "
                                   "scores >= reward.accuracy_threshold with evaluate.sampler.")
    check_every: int = Field(50, ge=1, le=1_000_000, description="Steps between checks. At most 1,000,000.")
    check_prompts: int = Field(128, ge=1, le=100_000, description="The first N training prompts are checked (never "
                               "held-out ones). At most 100,000.")


class SftSpecPart(_Spec):
    enabled: bool = Field(True, description="Warm-start with masked-diffusion SFT; false passes model.source through.")
    steps: int = Field(300, ge=0, le=10_000_000, description="Optimizer steps. At most 10,000,000.")
    batch_size: int = Field(64, ge=1, le=65_536, description="Examples per step. At most 65,536.")
    lr: float = Field(1e-3, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    min_t: float = Field(1e-3, gt=0.0, lt=1.0, description="Lower end eps of t ~ U(eps, 1).")
    label_noise: float = Field(
        0.0, ge=0.0, le=1.0,
        description="Fraction of training targets replaced by a corrupted answer, to stop SFT at a "
        "mediocre policy that RL can improve (toy tasks; docs/algorithm.md §9).",
    )
    stop: SftStopSpec | None = Field(None, description="Stop SFT early at a target accuracy on training prompts "
                                     "(a start RL can improve, whatever the seed's learning speed); None: run sft.steps.")

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:
        return _drop_defaults(handler(self), self, "stop")


class SpgOptions(_Spec):
    """SPG (rl.estimator 'spg'; core/objectives.py): defaults of its GSM8K recipe."""

    block_length: int = Field(32, ge=1, description="Mask block length b (divides the completion length).")
    num_views: int = Field(2, ge=1, description="num_t: Monte Carlo block masks per iteration.")
    min_t: float = Field(0.0, ge=0.0, le=1.0, description="Lowest fraction of the chosen block that is masked.")
    max_t: float = Field(1.0, ge=0.0, le=1.0, description="Highest fraction of the chosen block that is masked.")
    prompt_mask_prob: float = Field(0.15, ge=0.0, lt=1.0, description="Prompt tokens masked with this probability.")
    bound: Literal["mix", "eubo", "elbo"] = Field("mix", description="Likelihood bound for negative-advantage sequences.")
    eubo_beta: float = Field(1.5, gt=0.0, description="beta of the evidence upper bound.")
    mix_weight: float = Field(0.5, ge=0.0, le=1.0, description="omega: mix = omega EUBO + (1 - omega) ELBO.")


class Wd1Options(_Spec):
    """wd1 (rl.estimator 'wd1'; core/objectives.py)."""

    prompt_mask_prob: float = Field(0.15, ge=0.0, lt=1.0, description="d1's prompt masking probability of the one-step estimate.")
    psi: float = Field(1.0, gt=0.0, description="Temperature of the group weights softmax(psi A).")


class RlSpec(_Spec):
    rounds: int = Field(4, ge=0, le=100_000, description="Rollout -> score -> update rounds (unrolled in the plan). At most 100,000.")
    prompts_per_round: int = Field(32, ge=1, le=65_536, description="Prompts sampled per round. At most 65,536.")
    group_size: int = Field(8, ge=2, le=1_024, description="Completions per prompt G (>= 2 for a group baseline). At most 1,024.")
    estimator: Literal["maskgrpo", "d1", "unigrpo", "coupled", "random", "spg", "wd1", "espo"] = Field(
        "maskgrpo", description="Importance estimator; spg, wd1 and espo bring their own objectives (core/objectives.py).")
    num_iterations: int = Field(4, ge=1, le=64, description="mu: optimizer steps per minibatch, each with its own seeded mask. At most 64.")
    min_mask_rate: float = Field(0.6, ge=0.0, lt=1.0, description="gamma: lowest mask rate of MaskGRPO's schedule (0.6 text, 0.8 images).")
    ar_span: Literal["completion", "sequence"] = Field("completion", description="Span of the AR-like ramp; 'sequence' reproduces the reference code.")
    minibatch_size: int = Field(64, ge=1, le=65_536, description="Completions per optimizer minibatch. At most 65,536.")
    lr: float = Field(3e-4, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas.")
    grad_clip: float = Field(1.0, gt=0.0, description="Gradient-norm clip.")
    epsilon: float = Field(0.2, gt=0.0, lt=1.0, description="PPO clip range eps.")
    beta: float = Field(0.0, ge=0.0, description="KL coefficient to the reference (SFT) policy; 0 skips reference log-probs.")
    advantage: Literal["std", "none"] = Field("std", description="Group normalisation: (r - mean)/std or d1's r - mean.")
    rank_reward: bool = Field(False, description="Replace rewards by in-group ranks first.")
    filter_zero_std: bool = Field(False, description="Drop groups whose rewards are all equal (dynamic filtering).")
    loss_tokens: Literal["current", "union", "coverage"] = Field(
        "current", description="'current': tokens masked at this iteration; 'union': any of the mu masks; 'coverage': the "
                               "official weighting (each token counted by the number of masks covering it, visible tokens scored).")
    normalization: Literal["token", "sequence", "group"] = Field(
        "token", description="Token mean over the minibatch, per-sequence mean, or 'group': token mean per prompt group, then the mean over groups (official).")
    ratio_level: Literal["token", "sequence"] = Field("token", description="Per-token ratios, or one per sequence.")
    logprob_chunk_rows: int = Field(64, ge=1, le=65_536, description="Rows per chunk when computing log-probs (bounds memory). At most 65,536.")
    spg: SpgOptions = Field(default_factory=SpgOptions, description="Options of the 'spg' estimator.")
    wd1: Wd1Options = Field(default_factory=Wd1Options, description="Options of the 'wd1' estimator.")
    sampler: SamplerSpec = Field(default_factory=lambda: TextSamplerSpec(), description="Rollout sampler (its kind matches the modality).")

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:
        return _drop_defaults(handler(self), self, "spg", "wd1")

    @model_validator(mode="after")
    def _batches(self) -> "RlSpec":
        total = self.prompts_per_round * self.group_size
        if self.minibatch_size > total:
            raise ValueError(f"minibatch_size ({self.minibatch_size}) exceeds the completions per round ({total})")
        return self


class EvalSpecPart(_Spec):
    every: int = Field(0, ge=0, le=100_000, description="Evaluate every E rounds (0 = only after SFT and at the end). At most 100,000.")
    size: int | None = Field(None, ge=1, le=1_000_000, description="Held-out prompts to evaluate (None = task.eval_size). At most 1,000,000.")
    sampler: SamplerSpec = Field(
        default_factory=lambda: TextSamplerSpec(temperature=0.0),
        description="Evaluation sampler (its kind matches the modality; text: greedy by default, image: MaskGIT argmax).",
    )
    num_samples: int = Field(16, ge=0, le=1_000, description="Sample completions shown in the report. At most 1,000.")
