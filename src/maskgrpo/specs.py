"""Every spec maskgrpo reads: the pipeline document (``RunSpec``) and one spec per stage.

Pydantic v2, frozen, ``extra="forbid"``, a description on every field, cross-field validation.
The same models give the CLI's errors (``maskgrpo validate``), each stage's single JSON input
(KFP components carry one spec string), the Helm values schema and the docs. ``plan.py`` derives
the stage specs from a RunSpec; a stage's spec hash (``spec_hash``) decides whether its committed
output can be reused.

Defaults follow docs/algorithm.md §7 where they are scale-free (epsilon, beta, gamma, mu) and the toy
task of §9 where they are not (model size, lengths, learning rates).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, JsonValue, Tag, ValidationError, ValidationInfo,
                      field_validator, model_serializer, model_validator)

from maskgrpo.store.layout import RUN_ID_PATTERN
from maskgrpo.store.layout import check_run_id as _check_run_id

__all__ = [
    "RunSpec", "SftSpec", "RolloutSpec", "ScoreSpec", "UpdateSpec", "EvaluateSpec", "StageSpec",
    "RetrainSpec", "GateSpecPart", "ResolveSpec", "GateSpec", "PromoteSpec",
    "load_run_spec", "spec_hash", "format_validation_error", "STAGE_SPECS",
]


class _Spec(BaseModel):
    # allow_inf_nan=False: every float field of every spec is finite (NaN/inf are refused).
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


def _drop_defaults(data: Any, spec: BaseModel, *names: str) -> Any:
    """Serialised ``spec`` without the fields ``names`` that hold their default (as _drop_unset)."""
    if isinstance(data, dict):
        for name in names:
            if getattr(spec, name) == type(spec).model_fields[name].get_default(call_default_factory=True):
                data.pop(name, None)
    return data


def _drop_unset(data: Any, spec: BaseModel, *names: str) -> Any:
    """Serialised ``spec`` without the fields ``names`` that are empty/None: a field added later
    leaves the JSON, hence ``spec_hash`` and compiled packages, of documents without it unchanged."""
    if isinstance(data, dict):
        for name in names:
            if not getattr(spec, name):
                data.pop(name, None)
    return data


# --------------------------------------------------------------------------------------------
# Parts of the pipeline document
# --------------------------------------------------------------------------------------------


class TinyModelSpec(_Spec):
    hidden_size: int = Field(128, ge=8, le=16_384, description="Width of the tiny built-in transformer. At most 16,384.")
    num_layers: int = Field(2, ge=1, le=48, description="Transformer blocks of the tiny model.")
    num_heads: int = Field(4, ge=1, le=256, description="Attention heads; must divide hidden_size. At most 256.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout in the tiny model (off in eval mode).")

    @model_validator(mode="after")
    def _heads_divide(self) -> "TinyModelSpec":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        return self


class SpecialTokensSpec(_Spec):
    """Special token ids of a real checkpoint; None = take it from the tokenizer/config."""

    mask_id: int | None = Field(None, ge=0, description="Mask token m (LLaDA/MMaDA: 126336).")
    pad_id: int | None = Field(None, ge=0, description="Padding id for left-padded prompts (LLaDA: 126081, the EOS).")
    eos_id: int | None = Field(None, ge=0, description="End of sequence; fills a completion's tail (LLaDA: 126081).")
    image_token_offset: int | None = Field(None, ge=0, description="Id of VQ code 0 (MMaDA: 126349; token = offset + code).")
    image_codebook_size: int | None = Field(None, ge=1, le=2**20, description="VQ codebook size (MMaDA: 8192). At most 2^20.")
    soi_id: int | None = Field(None, ge=0, description="<|soi|>: start of the image slots (MMaDA).")
    eoi_id: int | None = Field(None, ge=0, description="<|eoi|>: end of the image slots (MMaDA).")
    t2i_id: int | None = Field(None, ge=0, description="<|t2i|>: text-to-image task token (MMaDA).")


class LoraSpec(_Spec):
    r: int = Field(8, ge=1, le=4_096, description="LoRA rank (reference: 128). At most 4,096.")
    alpha: float = Field(16.0, gt=0.0, description="LoRA alpha; the update is scaled by alpha / r (reference: 64).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input (reference: 0.05).")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names (suffixes) that get adapters, or 'all-linear' (every linear but the LM head)."
    )


class DeepSpeedSpec(_Spec):
    enabled: bool = Field(False, description="Run update and SFT under a DeepSpeed engine (launch with torchrun or deepspeed).")
    zero_stage: int = Field(2, ge=0, le=3, description="ZeRO stage 0-3 (reference: 2).")
    gradient_accumulation_steps: int = Field(1, ge=1, le=4_096, description="Micro-batches per optimizer step on each rank. At most 4,096.")
    offload_optimizer: bool = Field(False, description="Keep optimizer state in CPU memory (ZeRO 1-3).")
    offload_params: bool = Field(False, description="Keep parameters in CPU memory (ZeRO 3 only).")
    backend: Literal["auto", "nccl", "gloo"] = Field("auto", description="torch.distributed backend; auto = nccl on CUDA, gloo on CPU.")

    @model_validator(mode="after")
    def _offload(self) -> "DeepSpeedSpec":
        if self.offload_params and self.zero_stage != 3:
            raise ValueError(f"offload_params needs zero_stage 3, got {self.zero_stage}")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
        return self


class ModelSpec(_Spec):
    source: str = Field(
        "builtin:tiny",
        description="'builtin:tiny' (a fresh tiny model sized by `tiny`), or a checkpoint: a local "
        "folder or a store URI in the transformers layout.",
    )
    tiny: TinyModelSpec = Field(default_factory=TinyModelSpec, description="Size of the built-in tiny model.")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Parameter dtype (bfloat16 for GPUs).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where stages run the model; auto = cuda if available.")
    adapter: Literal["auto", "tiny", "llada", "mmada", "bidirectional", "remote"] = Field(
        "auto", description="How to load and call the checkpoint (maskgrpo.models.adapters); auto = from its config's model_type."
    )
    trust_remote_code: bool | dict[str, str] = Field(
        False, description="Run the checkpoint's own modelling code, only for architectures maskgrpo does not implement "
        "(LLaDA/MMaDA load natively): the {file: sha256} pins of its *.py files that `maskgrpo import` prints, "
        "checked before every load; true alone is refused.")
    special_tokens: SpecialTokensSpec = Field(default_factory=SpecialTokensSpec, description="Special ids overriding the tokenizer's.")
    chat_template: bool = Field(False, description="Wrap each prompt in the tokenizer's chat template as one user turn (Instruct models).")
    lora: LoraSpec | None = Field(None, description="Train LoRA adapters instead of every weight (None = full fine-tuning).")
    load_in_4bit: bool = Field(False, description="Load the frozen base in 4 bits (bitsandbytes, CUDA only; needs lora).")
    gradient_checkpointing: bool = Field(False, description="Recompute each block's activations in the backward pass (models that support it: llada, mmada, transformers backbones); trades about one extra forward for activation memory (docs/real-models.md).")
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec, description="DeepSpeed ZeRO for update and SFT.")

    @model_validator(mode="after")
    def _quantized_needs_lora(self) -> "ModelSpec":
        if self.trust_remote_code is True:
            raise ValueError("trust_remote_code: true would run any code the checkpoint holds; set it to the "
                             "{file: sha256} pins printed by `maskgrpo import` (LLaDA/MMaDA need none: they load natively)")
        if isinstance(self.trust_remote_code, dict):
            bad = [k for k, v in self.trust_remote_code.items() if len(v) != 64 or any(c not in "0123456789abcdefABCDEF" for c in v)]
            if bad:
                raise ValueError(f"trust_remote_code.{bad[0]}: expected a sha256 (64 hex digits)")
        if self.load_in_4bit and self.lora is None:
            raise ValueError("load_in_4bit trains nothing without lora: set model.lora")
        if self.lora is not None and self.source == "builtin:tiny":
            raise ValueError("model.lora needs a checkpoint source: adapters are saved without their base, "
                             "and builtin:tiny's random base is never saved")
        return self

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:  # gradient_checkpointing came later: off leaves the JSON unchanged
        return _drop_defaults(handler(self), self, "gradient_checkpointing")


def _registered(kind: str) -> tuple[Any, Any]:
    """The two field validators of a spec naming a task or a reward (``kind``) with its
    ``params``: the name resolves (else the valid names are listed) and the params fit what it
    declares (core/registry.py parameter_error). Imported lazily: only the named entry's module loads."""

    def checks() -> tuple[Any, Any]:
        if kind == "task":
            from maskgrpo.tasks import check_task_name, check_task_params

            return check_task_name, check_task_params
        from maskgrpo.rewards import check_reward_name, check_reward_params

        return check_reward_name, check_reward_params

    def known(cls: Any, name: str) -> str:
        checks()[0](name)
        return name

    def fits(cls: Any, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" in info.data:  # a bad name is reported on its own field
            checks()[1](info.data["name"], params)
        return params

    return field_validator("name")(classmethod(known)), field_validator("params")(classmethod(fits))


class TaskSpec(_Spec):
    name: str = Field("sort", description="Task registry name (maskgrpo.tasks.list_tasks()).")
    params: dict[str, Any] = Field(default_factory=dict, validate_default=True, description="Task parameters, e.g. {length: 6} for sort.")
    train_size: int = Field(2000, ge=1, le=10_000_000, description="Training problems drawn from the task's train split. At most 10,000,000.")
    eval_size: int = Field(200, ge=1, le=1_000_000, description="Held-out problems for evaluation (the task's eval split). At most 1,000,000.")

    _known_name, _params_fit = _registered("task")


class RewardFunctionSpec(_Spec):
    name: str = Field(description="Reward registry name (maskgrpo.rewards.list_rewards()).")
    weight: float = Field(1.0, description="Weight w_f in r = sum_f w_f R_f.")
    params: dict[str, JsonValue] = Field(
        default_factory=dict, validate_default=True,
        description="Keyword arguments bound into every call of the reward, e.g. {url: http://..., timeout: 120} for "
        "'http'. Never a secret: name an environment variable instead (http: headers_env).",
    )

    _known_name, _params_fit = _registered("reward")

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:
        return _drop_unset(handler(self), self, "params")


class RewardSpec(_Spec):
    functions: list[RewardFunctionSpec] = Field(
        default_factory=list, description="Reward functions summed with weights; empty = the task's default reward."
    )
    accuracy_threshold: float = Field(
        1.0, description="A completion counts as correct (accuracy) when its total reward is >= this."
    )


class TextSamplerSpec(_Spec):
    kind: Literal["text"] = Field("text", description="Sampler kind: 'text' (semi-AR low-confidence); must match the run's modality.")
    gen_length: int = Field(16, ge=1, le=16_384, description="Completion length L_o (tokens), EOS-filled after the answer. At most 16,384.")
    steps: int = Field(16, ge=1, le=16_384, description="Denoising steps S over the whole completion. At most 16,384.")
    block_length: int = Field(8, ge=1, le=16_384, description="Semi-AR block length b; must divide gen_length. At most 16,384.")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature tau (0 = greedy).")
    cfg_scale: float = Field(0.0, ge=0.0, description="Classifier-free guidance scale w (0 = off).")
    remasking: Literal["low_confidence", "random"] = Field("low_confidence", description="Which positions to commit each step.")
    threshold: float | None = Field(None, gt=0.0, le=1.0, description="Confidence-threshold parallel decoding (None = fixed quotas).")
    early_exit: bool = Field(False, description="Stop a row once a finished block is all EOS.")
    cache: Literal["none", "prefix", "dual"] = Field(
        "none", description="Block KV cache (Fast-dLLM): 'prefix' reuses the prompt's and finished blocks' keys/values "
        "within a block, 'dual' also the later blocks'; approximate with bidirectional attention (bench/README.md)."
    )

    @model_validator(mode="after")
    def _divisible(self) -> "TextSamplerSpec":
        if self.gen_length % self.block_length:
            raise ValueError(f"block_length ({self.block_length}) must divide gen_length ({self.gen_length})")
        blocks = self.gen_length // self.block_length
        if self.steps % blocks:
            raise ValueError(f"steps ({self.steps}) must be divisible by the number of blocks ({blocks})")
        return self

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:  # 'text' is the default kind: documents without it stay unchanged
        data = handler(self)
        if isinstance(data, dict):
            data.pop("kind", None)
            if self.cache == "none":  # likewise cache 'none' (the field came later)
                data.pop("cache", None)
        return data


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
    sampler: "SamplerSpec" = Field(default_factory=lambda: TextSamplerSpec(), description="Rollout sampler (its kind matches the modality).")

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
    sampler: "SamplerSpec" = Field(
        default_factory=lambda: TextSamplerSpec(temperature=0.0),
        description="Evaluation sampler (its kind matches the modality; text: greedy by default, image: MaskGIT argmax).",
    )
    num_samples: int = Field(16, ge=0, le=1_000, description="Sample completions shown in the report. At most 1,000.")


class ImageSamplerSpec(_Spec):
    kind: Literal["image"] = Field("image", description="Sampler kind: 'image' (over the image slots); must match the run's modality.")
    sampler: Literal["emerge", "maskgit"] = Field("emerge", description="Image sampler: MaskGRPO's emerge (diverse) or MaskGIT cosine (confidence-greedy).")
    steps: int = Field(12, ge=1, le=1_024, description="Denoising steps T over the image slots. At most 1,024.")
    cfg_scale: float = Field(3.0, ge=0.0, description="Classifier-free guidance scale w against the empty prompt (0 = off).")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature of the code draws (0 = argmax); MaskGIT 'mmada': the confidence-noise scale.")
    maskgit: Literal["linear", "mmada"] = Field(
        "linear", description="MaskGIT noise: 'linear' (candidates from softmax(z / tau), argmax at 0; noise tau (1 - r)) or "
                              "'mmada' (MMaDA's t2i_generate: candidates from softmax(z) whatever tau, noise tau_s compounding).")
    float32_count: bool = Field(False, description="MaskGIT: count the masked slots with float32 cosine as MMaDA (N/2 - 1 at r = 2/3).")

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:
        return _drop_defaults(handler(self), self, "maskgit", "float32_count")


class ImageDecoderSpec(_Spec):
    """A VQ decoder turning image codes into pixels for the rewards (maskgrpo.models.vq)."""

    class_path: str = Field(
        pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$",
        description="'package.module:Class' with from_pretrained(folder) and decode_code(codes (B, N)) -> (B, 3, H, W) "
        "in [-1, 1] (MMaDA: its repository's models.modeling_magvitv2:MAGVITv2, importable in the image).",
    )
    source: str = Field(description="The decoder's weights: a local folder or a store URI (imported like a checkpoint).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the decoder runs; auto = cuda if available.")
    batch_size: int = Field(16, ge=1, le=4_096, description="Images decoded per decode_code call. At most 4,096.")


GENEVAL_PROTOCOL = {"temperature": 1.0, "steps": 32, "cfg_scale": 3.5, "maskgit": "mmada"}  # + 4 images per prompt


class ImageSpec(_Spec):
    """Text-to-image settings (modality 'image'; docs/algorithm.md §1, §2.2-2.3, §5)."""

    layout: Literal["tiny", "mmada"] = Field("tiny", description="'tiny': specials and codes appended to the character vocabulary; 'mmada': MMaDA-8B's ids.")
    grid_size: int = Field(8, ge=1, le=256, description="Image side in VQ slots; the image has grid_size^2 slots (MMaDA: 32). At most 256.")
    codebook_size: int = Field(5, ge=2, le=2**20, description="Number of image codes K (toy-geneval: 5 colours; MMaDA: 8192). At most 2^20.")
    text_slots: int = Field(40, ge=4, le=16_384, description="Length of the left-padded text segment (MMaDA: 257). At most 16,384.")
    min_masking_rate: float = Field(0.0, ge=0.0, lt=1.0, description="SFT: masked fraction max(cos(pi u / 2), this) of the image slots.")
    cond_dropout: float = Field(0.1, ge=0.0, le=1.0, description="SFT: probability of training on the empty prompt (makes CFG work).")
    eval_protocol: Literal["pipeline", "geneval"] = Field(
        "pipeline", description="'geneval': the paper's GenEval protocol, which sets evaluate.sampler to temperature 1, "
                                "32 steps, CFG 3.5 (MaskGIT as MMaDA) and 4 images per prompt; 'pipeline': the fields as given.")
    eval_images_per_prompt: int = Field(
        1, ge=1, le=64, description="Images per held-out prompt at evaluation; accuracy is the mean over all of them "
                             "(GenEval's protocol: 4 sampled images per prompt; needs a sampling evaluate sampler). At most 64.",
    )
    decoder: ImageDecoderSpec | None = Field(
        None, description="Decode the codes to PIL images before the rewards see them (None: rewards get the code text).",
    )

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:
        return _drop_defaults(_drop_unset(handler(self), self, "decoder"), self, "eval_protocol")

    @model_validator(mode="after")
    def _mmada(self) -> "ImageSpec":
        if self.layout == "mmada" and self.codebook_size != 8192:
            raise ValueError(f"layout 'mmada' has codebook_size 8192, got {self.codebook_size}")
        return self


def _sampler_kind(value: Any) -> str:
    return value.get("kind", "text") if isinstance(value, dict) else getattr(value, "kind", "text")


# The samplers, one union keyed by ``kind`` (absent: 'text'; an image run fills in 'image').
SamplerSpec = Annotated[
    Union[Annotated[TextSamplerSpec, Tag("text")], Annotated[ImageSamplerSpec, Tag("image")]], Discriminator(_sampler_kind)
]
RlSpec.model_rebuild()
EvalSpecPart.model_rebuild()
IMAGE_SAMPLER_DEFAULTS = {"rl": {}, "evaluate": {"sampler": "maskgit", "temperature": 0.0}}  # emerge rollouts, MaskGIT argmax evaluation


class Toleration(_Spec):
    key: str = Field(description="Taint key.")
    operator: Literal["Equal", "Exists"] = Field("Equal", description="Toleration operator.")
    value: str | None = Field(None, description="Taint value (with Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(None, description="Taint effect.")


class StageResources(_Spec):
    cpu: str = Field("1", description="CPU request and limit (Kubernetes quantity).")
    memory: str = Field("4Gi", description="Memory request and limit.")
    accelerator_type: str | None = Field(None, description="Accelerator resource type, e.g. nvidia.com/gpu.")
    accelerator_count: int = Field(0, ge=0, le=64, description="Accelerators per pod. At most 64.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pod must match.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pod tolerates.")

    @model_validator(mode="after")
    def _accel(self) -> "StageResources":
        if self.accelerator_count and not self.accelerator_type:
            raise ValueError("accelerator_count > 0 needs accelerator_type")
        return self


class ResourcesSpec(_Spec):
    sft: StageResources = Field(default_factory=StageResources, description="SFT pods.")
    rollout: StageResources = Field(default_factory=StageResources, description="Rollout pods (one per shard).")
    score: StageResources = Field(default_factory=StageResources, description="Score pods.")
    update: StageResources = Field(default_factory=StageResources, description="Update pods.")
    evaluate: StageResources = Field(default_factory=StageResources, description="Evaluate pods.")


# The TrainJob dialects runners/kfp/trainer.py can write (docs/cluster.md, section 8).
TrainerApi = Literal["v2.3", "v2.1"]


class ClusterSpec(_Spec):
    image: str = Field("ghcr.io/maskgrpo/maskgrpo:0.1.0", description="Container image of the stages (overridable with --image).")
    store: str = Field("s3://maskgrpo/runs", description="Store URI the cluster run writes to.")
    s3_secret: str = Field("maskgrpo-s3", description="Kubernetes Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and optionally MASKGRPO_S3_ENDPOINT_URL).")
    rollout_shards: int = Field(1, ge=1, le=1_024, description="Parallel rollout tasks per round (ParallelFor), merged by score. At most 1,024.")
    trainer_api: TrainerApi = Field("v2.3", description="Kubeflow Trainer API of the TrainJobs that run updates past one node: 'v2.3' writes runtimePatches (the form since Trainer v2.2), 'v2.1' podTemplateOverrides (Trainer v2.1 only).")
    retries: int = Field(2, ge=0, le=100, description="Retries per stage on failure. At most 100.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Per-stage pod resources.")


RESOLVED_DATA = "resolve:data"  # task.params.path of a retraining tick's snapshot, filled in by stages/resolve.py
CHAMPION_OPTIMIZER = "resolve:champion-optimizer"  # optimizer_from of a tick's first update with retrain.carry_optimizer
GateMetric = Literal["accuracy", "reward", "completion_length"]


class GateGuardSpec(_Spec):
    metric: GateMetric = Field(description="Per-example metric that must not regress: accuracy, reward or completion_length (characters).")
    tolerance: float = Field(0.0, ge=0.0, description="Largest regression of the mean allowed (in the metric's units).")
    higher_is_better: bool = Field(True, description="Direction of the metric (completion_length: usually false).")


class GateSpecPart(_Spec):
    """The promotion gate (core/gate.py): challenger vs champion on the same held-out examples."""

    metric: GateMetric = Field("accuracy", description="Gate metric compared per example (paired).")
    margin: float = Field(0.0, ge=0.0, description="Smallest mean improvement of the gate metric that promotes.")
    guards: list[GateGuardSpec] = Field(default_factory=list, description="Metrics that must not regress beyond their tolerance.")
    confidence: float = Field(0.9, gt=0.5, lt=1.0, description="Level of the paired bootstrap interval; its lower end must exceed 0.")
    resamples: int = Field(2000, ge=100, description="Bootstrap resamples (seeded: the same numbers give the same decision).")
    min_examples: int = Field(20, ge=1, description="Fewer paired examples than this: too few to tell, no promotion.")
    seed: int = Field(0, ge=0, description="Seed of the bootstrap generator.")


class RetrainSpec(_Spec):
    """Scheduled retraining: warm start from the registry's champion, a data snapshot, a gate."""

    model: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", description="Registry model name (store _registry/<name>/).")
    initial_source: str = Field("builtin:tiny", description="model.source of the first tick, while the registry has no champion (SFT runs then).")
    data: str | None = Field(
        None, description="Training data snapshot: a glob of local .jsonl/.parquet files or a store prefix (s3://b/datasets/x/), "
        "resolved per tick to (file, size, sha256); becomes task.params.path.",
    )
    unseen_only: bool = Field(False, description="Train only on snapshot files not in the champion's lineage (file granularity).")
    unseen_rows: bool = Field(
        False, description="Train only on rows (sha256 of the canonical JSON row) not in the champion's lineage: a file that "
        "grew keeps only its new rows; implies unseen_only.")
    sft: bool = Field(False, description="Run SFT on top of a warm start too (default: a warm start skips SFT).")
    carry_optimizer: bool = Field(
        False, description="Start the tick's first update from the champion version's AdamW state (moments and step "
        "count; this tick's lr, betas and weight decay); default: a fresh AdamW each tick.")
    lease_ttl_s: float = Field(6 * 3600.0, gt=0.0, description="Seconds a tick holds the model's retraining lease unless it releases it.")
    gate: GateSpecPart = Field(default_factory=GateSpecPart, description="Promotion gate after the final evaluation.")

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:  # later fields: off leaves the JSON (spec hashes, goldens) unchanged
        return _drop_defaults(handler(self), self, "unseen_rows", "carry_optimizer")


class RunSpec(_Spec):
    """The pipeline document."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63, description="Pipeline name (DNS-1123 label).")
    description: str = Field("", description="What this pipeline does.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seed of every random draw in the run. At most 2^63-1.")
    modality: Literal["text", "image"] = Field("text", description="Modality of the policy's outputs.")
    image: ImageSpec | None = Field(None, description="Text-to-image settings; required with modality 'image', absent otherwise.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="The policy to start from.")
    task: TaskSpec = Field(default_factory=TaskSpec, description="Where prompts come from.")
    reward: RewardSpec = Field(default_factory=RewardSpec, description="How completions are scored.")
    sft: SftSpecPart = Field(default_factory=SftSpecPart, description="SFT warm start.")
    rl: RlSpec = Field(default_factory=RlSpec, description="MaskGRPO rounds.")
    evaluate: EvalSpecPart = Field(default_factory=EvalSpecPart, description="Held-out evaluation.")
    cluster: ClusterSpec = Field(default_factory=ClusterSpec, description="Kubeflow settings (ignored by the local runner).")
    retrain: RetrainSpec | None = Field(None, description="Scheduled retraining: registry warm start, data snapshot, promotion gate.")

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:
        return _drop_unset(handler(self), self, "retrain")

    @model_validator(mode="after")
    def _retrain(self) -> "RunSpec":
        registry = self.model.source.startswith("registry:")
        if registry and (self.retrain is None or not self.model.source.startswith(f"registry:{self.retrain.model}@")):
            raise ValueError(f"model.source {self.model.source!r} needs a retrain section naming the same model")
        if registry and self.retrain.initial_source == "builtin:tiny" and not self.sft.enabled:
            raise ValueError("retrain.initial_source 'builtin:tiny' is untrained: the first tick needs sft.enabled")
        if self.retrain is not None and self.rl.rounds < 1:
            raise ValueError("retrain needs rl.rounds >= 1: the gate compares the last round with the champion")
        return self

    @model_validator(mode="before")
    @classmethod
    def _image_samplers(cls, data: Any) -> Any:
        """An image run's samplers are image samplers unless the document says otherwise."""
        if not isinstance(data, dict) or data.get("modality") != "image":
            return data
        data = dict(data)
        for part, default in IMAGE_SAMPLER_DEFAULTS.items():
            section = data.get(part)
            section = dict(section) if isinstance(section, dict) else ({} if section is None else section)
            if isinstance(section, dict):
                sampler = section.get("sampler")
                if sampler is None:
                    section["sampler"] = {"kind": "image", **default}
                elif isinstance(sampler, dict) and "kind" not in sampler:
                    section["sampler"] = {"kind": "image", **sampler}
            data[part] = section
        return data

    @model_validator(mode="after")
    def _geneval(self) -> "RunSpec":
        """image.eval_protocol 'geneval': the paper's GenEval protocol overrides evaluate.sampler's
        temperature, steps, cfg_scale and MaskGIT noise, and image.eval_images_per_prompt (4)."""
        if self.image is None or self.image.eval_protocol != "geneval":
            return self
        sampler = self.evaluate.sampler.model_copy(update=GENEVAL_PROTOCOL)
        evaluate = self.evaluate.model_copy(update={"sampler": sampler})
        image = self.image.model_copy(update={"eval_images_per_prompt": 4})
        object.__setattr__(self, "evaluate", evaluate)  # frozen specs: set once, inside validation
        object.__setattr__(self, "image", image)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> "RunSpec":
        if self.model.source == "builtin:tiny" and not self.sft.enabled:
            raise ValueError("model.source 'builtin:tiny' is untrained: enable sft or give a checkpoint")
        if (self.modality == "image") != (self.image is not None):
            raise ValueError("modality 'image' needs an image section (and only it may have one)")
        for name, sampler in (("rl.sampler", self.rl.sampler), ("evaluate.sampler", self.evaluate.sampler)):
            if sampler.kind != self.modality:
                raise ValueError(f"{name}: a {sampler.kind} sampler in a {self.modality} run (kind must be {self.modality!r})")
        if self.image is not None and self.image.eval_images_per_prompt > 1 and self.evaluate.sampler.temperature == 0.0:
            raise ValueError("image.eval_images_per_prompt > 1 with evaluate.sampler.temperature 0: every image of a "
                             "prompt would be the same; sample (temperature > 0) or evaluate one image per prompt")
        return self


# --------------------------------------------------------------------------------------------
# Stage specs: what one stage call needs, derived by plan.py
# --------------------------------------------------------------------------------------------


def check_run_id(run_id: str) -> str:
    """``run_id`` when it is valid (the store's grammar, store/layout.py), else ValueError naming
    --run-id: the CLI checks it before any store or orchestrator is touched."""
    try:
        return _check_run_id(run_id)
    except ValueError as err:
        raise ValueError(f"--run-id: {err}") from None


class _StageSpec(_Spec):
    store: str = Field(description="Store root URI (file:// or s3://).")
    run_id: str = Field(pattern=RUN_ID_PATTERN, description="Run identifier; the store prefix of every output (store/layout.py).")
    round: int = Field(0, ge=0, le=100_000, description="Round index (0 for SFT and the baseline evaluation). At most 100,000.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seed of this stage's random draws. At most 2^63-1.")
    data_seed: int = Field(0, ge=0, le=2**63 - 1, description="Seed of the run's fixed train and eval problem sets. At most 2^63-1.")
    policy: str | None = Field(None, description="Store reference 'stage/round' of the input policy checkpoint, or a source for SFT.")
    lineage: str = Field("", description="Hash of the specs of the stages this one depends on (set by the plan): an upstream change invalidates this stage's committed output.")


class SftSpec(_StageSpec):
    kind: Literal["sft"] = Field("sft", description="Stage kind.")
    model: ModelSpec = Field(description="The model to warm-start.")
    task: TaskSpec = Field(description="Training data.")
    sft: SftSpecPart = Field(description="SFT hyperparameters.")
    image: ImageSpec | None = Field(None, description="Text-to-image settings (None: text modality).")


class RolloutSpec(_StageSpec):
    kind: Literal["rollout"] = Field("rollout", description="Stage kind.")
    model: ModelSpec = Field(description="Device and dtype for the policy.")
    task: TaskSpec = Field(description="Prompt source.")
    rl: RlSpec = Field(description="Group size, sampler and estimator settings.")
    reference: str | None = Field(None, description="Store reference of the reference policy (beta > 0).")
    shard: int = Field(0, ge=0, le=1_023, description="This shard's index. At most 1,023.")
    num_shards: int = Field(1, ge=1, le=1_024, description="Shards of the round's prompts. At most 1,024.")
    image: ImageSpec | None = Field(None, description="Text-to-image settings (None: text modality).")


class ScoreSpec(_StageSpec):
    kind: Literal["score"] = Field("score", description="Stage kind.")
    task: TaskSpec = Field(description="The task (default reward).")
    reward: RewardSpec = Field(description="Reward functions and weights.")
    rl: RlSpec = Field(description="Advantage settings.")
    num_shards: int = Field(1, ge=1, le=1_024, description="Rollout shards to merge. At most 1,024.")
    image: ImageSpec | None = Field(
        None, description="Text-to-image settings, set only when image.decoder is (scoring then decodes codes to pixels).",
    )

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:
        return _drop_unset(handler(self), self, "image")


class UpdateSpec(_StageSpec):
    kind: Literal["update"] = Field("update", description="Stage kind.")
    model: ModelSpec = Field(description="Device and dtype for the policy.")
    rl: RlSpec = Field(description="MaskGRPO hyperparameters.")
    optimizer_from: str | None = Field(None, description="Store reference of the previous update (optimizer state), if any.")
    num_shards: int = Field(1, ge=1, le=1_024, description="Rollout shards of this round. At most 1,024.")
    image: ImageSpec | None = Field(None, description="Text-to-image settings (None: text modality).")


class EvaluateSpec(_StageSpec):
    kind: Literal["evaluate"] = Field("evaluate", description="Stage kind.")
    model: ModelSpec = Field(description="Device and dtype for the policy.")
    task: TaskSpec = Field(description="Held-out prompts.")
    reward: RewardSpec = Field(description="Scoring of the evaluation completions.")
    evaluate: EvalSpecPart = Field(description="Evaluation settings.")
    image: ImageSpec | None = Field(None, description="Text-to-image settings (None: text modality).")


class ResolveSpec(_StageSpec):
    kind: Literal["resolve"] = Field("resolve", description="Stage kind.")
    source: str = Field(description="model.source as written (registry:<name>@champion is resolved once, here).")
    retrain: RetrainSpec = Field(description="Registry name, data snapshot, lease.")
    sft_enabled: bool = Field(description="sft.enabled of the document (used when there is no champion yet).")


class GateSpec(_StageSpec):
    kind: Literal["gate"] = Field("gate", description="Stage kind.")
    challenger: str = Field(description="Store reference 'evaluate/<R>' of the challenger's evaluation.")
    champion: str = Field(description="Store reference 'evaluate/0' of the champion's (or the first tick's SFT) evaluation.")
    challenger_policy: str = Field(description="Store reference 'update/<R>' of the challenger's checkpoint.")
    model_name: str = Field(description="Registry model name (the lease is released on a non-promotion).")
    gate: GateSpecPart = Field(description="Gate metric, margin, guards and bootstrap settings.")
    accuracy_threshold: float = Field(description="reward.accuracy_threshold: per-example accuracy = reward >= this.")


class PromoteSpec(_StageSpec):
    kind: Literal["promote"] = Field("promote", description="Stage kind.")
    model_name: str = Field(description="Registry model name.")
    gate_ref: str = Field(description="Store reference 'gate/<R>' of the decision.")
    pipeline_hash: str = Field(description="sha256 of the pipeline document (RunSpec), recorded in the version.")


StageSpec = Annotated[Union[SftSpec, RolloutSpec, ScoreSpec, UpdateSpec, EvaluateSpec, ResolveSpec, GateSpec, PromoteSpec], Field(discriminator="kind")]
STAGE_SPECS: dict[str, type[_StageSpec]] = {
    "sft": SftSpec, "rollout": RolloutSpec, "score": ScoreSpec, "update": UpdateSpec, "evaluate": EvaluateSpec,
    "resolve": ResolveSpec, "gate": GateSpec, "promote": PromoteSpec,
}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def spec_hash(spec: BaseModel) -> str:
    """sha256 of the spec's canonical JSON (sorted keys): equal specs, equal hashes."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def format_validation_error(err: ValidationError, source: str = "") -> str:
    """One line per error: ``<source>: <field.path>: <reason>``."""
    prefix = f"{source}: " if source else ""
    lines = []
    for e in err.errors():
        loc = [p for k, p in enumerate(e["loc"]) if not (k and e["loc"][k - 1] == "sampler" and p in ("text", "image"))]
        path = ".".join(str(p) for p in loc) or "(document)"  # (the sampler union's tag is not a field)
        lines.append(f"{prefix}{path}: {e['msg']}")
    return "\n".join(lines)


def set_dotted(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply one ``--set a.b.c=value`` override to a raw document (value parsed as YAML); an
    integer key indexes a list (``reward.functions.0.params.bonus=1.0``), ``-1`` the last item."""
    keys = dotted.split(".")
    if not all(keys):
        raise ValueError(f"--set {dotted}: empty key")
    node: Any = doc
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[:depth]) or "the document"
        if isinstance(node, list):
            try:
                index = int(key)
                node[index]  # noqa: B018  (IndexError when out of range)
            except ValueError:
                raise ValueError(f"--set {dotted}: {where} is a list: {key!r} is no index") from None
            except IndexError:
                raise ValueError(f"--set {dotted}: {where} has {len(node)} item(s): no index {key}") from None
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                if node.get(key) is None:  # absent or null (model.lora: null): a new mapping
                    node[key] = {}
                node = node[key]
        else:
            raise ValueError(f"--set {dotted}: {where} is not a mapping or a list")


def _yaml_error_line(err: yaml.YAMLError) -> str:
    """One line for a YAML error: what went wrong and where (line, column)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


YAML_MAX_NODES = 100_000


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """``yaml.safe_load`` with alias expansion limited: a document whose aliases would expand to
    more than ``YAML_MAX_NODES`` nodes (a "billion laughs" bomb) is refused before it is built.
    ValueError naming ``source`` for that and for any YAML error (RecursionError included)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        sizes: dict[int, int] = {}

        def size(node: yaml.Node) -> int:  # expanded node count; shared (aliased) nodes memoised
            if id(node) not in sizes:
                sizes[id(node)] = YAML_MAX_NODES + 1  # a cycle counts as too big
                children = node.value if isinstance(node, yaml.SequenceNode) else (
                    [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
                total = 1
                for child in children:
                    total += size(child)
                    if total > YAML_MAX_NODES:
                        break
                sizes[id(node)] = total
            return sizes[id(node)]

        if root is not None and size(root) > YAML_MAX_NODES:
            raise ValueError(f"{source}: YAML aliases expand to more than {YAML_MAX_NODES:,} nodes: refused")
        return None if root is None else loader.construct_document(root)
    except yaml.YAMLError as err:
        raise ValueError(f"{source}: not valid YAML: {_yaml_error_line(err)}") from None
    except RecursionError:
        raise ValueError(f"{source}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def load_run_spec(path: str | Path, overrides: list[str] | None = None) -> RunSpec:
    """Read, override and validate a pipeline document. Raises ValueError with field paths."""
    path = Path(path)
    try:
        doc = load_yaml(path.read_text(), str(path))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such pipeline document") from None
    except OSError as err:  # a directory, unreadable, ...
        raise ValueError(f"{path}: cannot read the pipeline document ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (UTF-8) pipeline document") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a pipeline document is a mapping, got {type(doc).__name__}")
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected dotted.key=value")
        key, raw = item.split("=", 1)
        set_dotted(doc, key.strip(), load_yaml(raw, f"--set {key.strip()}"))
    try:
        return RunSpec.model_validate(doc)
    except ValidationError as err:
        raise ValueError(format_validation_error(err, str(path))) from None
