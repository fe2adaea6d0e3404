"""Every spec maskgrpo reads: the pipeline document (``RunSpec``) and one spec per stage.

Pydantic v2, frozen, ``extra="forbid"``, a description on every field, cross-field validation.
The same models give the CLI's errors (``maskgrpo validate``), each stage's single JSON input
(KFP components carry one spec string), the Helm values schema and the docs. ``plan.py`` derives
the stage specs from a RunSpec; a stage's spec hash (``spec_hash``) decides whether its committed
output can be reused.

Defaults follow docs/algorithm.md §7 where they are scale-free (epsilon, beta, gamma, mu) and the toy
task of §9 where they are not (model size, lengths, learning rates).

One module per concern; every name is importable from here (``from maskgrpo.specs import X``):

- ``_base``: the strict frozen base model, ``_drop_defaults`` / ``_drop_unset`` (a field added later
  leaves the JSON, hence spec hashes, of documents without it unchanged), ``spec_hash``
- ``model``: ``model`` (source, tiny size, special tokens, LoRA, DeepSpeed)
- ``task``: ``task`` and ``reward`` (names and params checked against their registries)
- ``samplers``: the text and image samplers, one union keyed by ``kind``
- ``image``: the ``image`` section (layout, SFT noising, GenEval protocol, VQ decoder)
- ``training``: ``sft``, ``rl`` (with the SPG and wd1 options) and ``evaluate``
- ``cluster``: ``cluster`` (Kubeflow image, store, shards, TrainJob dialect, pod resources)
- ``retrain``: ``retrain`` (registry model, data snapshot, promotion gate)
- ``pipeline``: ``RunSpec``, the document, and its cross-section rules
- ``stages``: one spec per stage (``STAGE_SPECS``), the run-id check
- ``document``: reading a document (bounded YAML, ``--set``, one line per validation error)
"""

from maskgrpo.specs._base import spec_hash
from maskgrpo.specs.cluster import ClusterSpec, ResourcesSpec, StageResources, Toleration, TrainerApi
from maskgrpo.specs.document import YAML_MAX_NODES, format_validation_error, load_run_spec, load_yaml, set_dotted
from maskgrpo.specs.image import GENEVAL_PROTOCOL, ImageDecoderSpec, ImageSpec
from maskgrpo.specs.model import DeepSpeedSpec, LoraSpec, ModelSpec, SpecialTokensSpec, TinyModelSpec
from maskgrpo.specs.pipeline import RunSpec
from maskgrpo.specs.retrain import CHAMPION_OPTIMIZER, RESOLVED_DATA, GateGuardSpec, GateMetric, GateSpecPart, RetrainSpec
from maskgrpo.specs.samplers import IMAGE_SAMPLER_DEFAULTS, ImageSamplerSpec, SamplerSpec, TextSamplerSpec
from maskgrpo.specs.stages import (STAGE_SPECS, EvaluateSpec, GateSpec, PromoteSpec, ResolveSpec, RolloutSpec,
                                   ScoreSpec, SftSpec, StageSpec, UpdateSpec, check_run_id)
from maskgrpo.specs.task import RewardFunctionSpec, RewardSpec, TaskSpec
from maskgrpo.specs.training import EvalSpecPart, RlSpec, SftSpecPart, SftStopSpec, SpgOptions, Wd1Options

__all__ = [
    # the document and how it is read
    "RunSpec", "load_run_spec", "load_yaml", "set_dotted", "format_validation_error", "spec_hash", "YAML_MAX_NODES",
    # its sections
    "ModelSpec", "TinyModelSpec", "SpecialTokensSpec", "LoraSpec", "DeepSpeedSpec",
    "TaskSpec", "RewardSpec", "RewardFunctionSpec",
    "SamplerSpec", "TextSamplerSpec", "ImageSamplerSpec", "IMAGE_SAMPLER_DEFAULTS",
    "ImageSpec", "ImageDecoderSpec", "GENEVAL_PROTOCOL",
    "SftSpecPart", "SftStopSpec", "RlSpec", "SpgOptions", "Wd1Options", "EvalSpecPart",
    "ClusterSpec", "ResourcesSpec", "StageResources", "Toleration", "TrainerApi",
    "RetrainSpec", "GateSpecPart", "GateGuardSpec", "GateMetric", "RESOLVED_DATA", "CHAMPION_OPTIMIZER",
    # the stage specs
    "StageSpec", "STAGE_SPECS", "SftSpec", "RolloutSpec", "ScoreSpec", "UpdateSpec", "EvaluateSpec",
    "ResolveSpec", "GateSpec", "PromoteSpec", "check_run_id",
]
