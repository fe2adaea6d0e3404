"""Kubeflow settings (``cluster``): image, store, shards, the TrainJob dialect, retries and per-stage
pod resources. The local runner ignores them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from maskgrpo.specs._base import _Spec


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
