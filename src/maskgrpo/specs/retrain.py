"""Scheduled retraining (``retrain``): the registry model, the data snapshot and the promotion gate."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_serializer

from maskgrpo.specs._base import _Spec, _drop_defaults


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
