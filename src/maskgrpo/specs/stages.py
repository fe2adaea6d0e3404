"""Stage specs: what one stage call needs, derived from the RunSpec by plan.py. Each stage's single
JSON input (KFP components carry one spec string); its ``spec_hash`` decides reuse."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_serializer, model_validator

from maskgrpo.specs._base import _drop_unset, _Spec
from maskgrpo.specs.image import ImageSpec
from maskgrpo.specs.samplers import SamplerSpec
from maskgrpo.specs.model import ModelSpec
from maskgrpo.specs.retrain import GateSpecPart, RetrainSpec
from maskgrpo.specs.task import RewardSpec, TaskSpec
from maskgrpo.specs.training import EvalSpecPart, RlSpec, SftSpecPart
from maskgrpo.store.layout import RUN_ID_PATTERN
from maskgrpo.store.layout import check_run_id as _check_run_id


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
    reward: RewardSpec | None = Field(None, description="With sft.stop: how the checks score (the run's reward).")
    sampler: SamplerSpec | None = Field(None, description="With sft.stop: the checks' sampler (the run's evaluate.sampler).")

    @model_serializer(mode="wrap")
    def _serialise(self, handler: Any) -> Any:
        return _drop_unset(handler(self), self, "reward", "sampler")

    @model_validator(mode="after")
    def _stop_needs_scoring(self) -> "SftSpec":
        if self.sft.stop is not None and (self.reward is None or self.sampler is None):
            raise ValueError("sft.stop needs the reward and sampler its checks score with")
        if self.sft.stop is not None and self.model.deepspeed.enabled:
            raise ValueError("sft.stop is not supported under model.deepspeed (the checks run on one process): "
                             "give sft.steps instead")
        return self


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
