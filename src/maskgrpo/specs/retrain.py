"""Scheduled retraining (``retrain``): the registry model, the data snapshot and the promotion gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from maskgrpo.specs._base import _Spec


RESOLVED_DATA = "resolve:data"  # task.params.path of a retraining tick's snapshot, filled in by stages/resolve.py
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
    sft: bool = Field(False, description="Run SFT on top of a warm start too (default: a warm start skips SFT).")
    lease_ttl_s: float = Field(6 * 3600.0, gt=0.0, description="Seconds a tick holds the model's retraining lease unless it releases it.")
    gate: GateSpecPart = Field(default_factory=GateSpecPart, description="Promotion gate after the final evaluation.")
