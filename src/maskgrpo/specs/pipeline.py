"""The pipeline document (``RunSpec``): its sections and the rules that tie them together
(modality and samplers, the GenEval protocol, retraining)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_serializer, model_validator

from maskgrpo.specs._base import _drop_unset, _field_errors, _Spec
from maskgrpo.specs.cluster import ClusterSpec
from maskgrpo.specs.image import GENEVAL_PROTOCOL, ImageSpec
from maskgrpo.specs.model import IMAGE_ID_FIELDS, ModelSpec
from maskgrpo.specs.retrain import RetrainSpec
from maskgrpo.specs.samplers import IMAGE_SAMPLER_DEFAULTS
from maskgrpo.specs.task import RewardSpec, TaskSpec
from maskgrpo.specs.training import EvalSpecPart, RlSpec, SftSpecPart


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
        if self.sft.stop is not None and self.model.deepspeed.enabled:
            raise _field_errors("RunSpec", (("sft", "stop"), "not supported under model.deepspeed (the checks run on "
                                "one process): give sft.steps instead", self.sft.stop.model_dump()))
        from maskgrpo.tasks import task_modality  # lazy, as the task name and params checks

        wants = task_modality(self.task.name)
        if wants is not None and wants != self.modality:
            raise _field_errors("RunSpec", (("task", "name"), f"task {self.task.name!r} makes {wants} prompts "
                                f"(modality {wants!r}); this document's modality is {self.modality!r}", self.task.name))
        for name, sampler in (("rl.sampler", self.rl.sampler), ("evaluate.sampler", self.evaluate.sampler)):
            if sampler.kind != self.modality:
                raise ValueError(f"{name}: a {sampler.kind} sampler in a {self.modality} run (kind must be {self.modality!r})")
        if self.image is not None and self.image.eval_images_per_prompt > 1 and self.evaluate.sampler.temperature == 0.0:
            raise ValueError("image.eval_images_per_prompt > 1 with evaluate.sampler.temperature 0: every image of a "
                             "prompt would be the same; sample (temperature > 0) or evaluate one image per prompt")
        return self

    @model_validator(mode="after")
    def _image_ids(self) -> "RunSpec":
        """model.special_tokens' image ids are read by image.layout 'mmada' only, and must make a
        consistent layout inside MMaDA-8B's vocabulary (models/layout.py ImageLayout.mmada); its
        codebook is image.codebook_size."""
        ids = self.model.special_tokens
        layout_name = self.image.layout if self.image is not None else None
        if layout_name != "mmada":
            why = "a text run has no image layout" if self.image is None else \
                "image.layout 'tiny' appends its ids after the character vocabulary"
            unread = [(("model", "special_tokens", f), f"read only with image.layout 'mmada' ({why})", getattr(ids, f))
                      for f in IMAGE_ID_FIELDS if getattr(ids, f) is not None]
            if unread:
                raise _field_errors("RunSpec", *unread)
            return self
        from maskgrpo.models.layout import ImageLayout, LayoutError  # lazy: torch

        try:
            layout = ImageLayout.mmada(text_slots=self.image.text_slots, image_slots=self.image.grid_size ** 2,
                                       **ids.layout_ids())
        except LayoutError as err:
            field = ids.field_of(err.field)
            where = " (the codebook: image_token_offset + image_codebook_size)" if "codebook ids" in str(err) else ""
            raise _field_errors("RunSpec", (("model", "special_tokens", field), f"{err}{where}", getattr(ids, field))) from None
        if layout.codebook_size != self.image.codebook_size:
            raise _field_errors("RunSpec", (("image", "codebook_size"), f"layout 'mmada' has a codebook of "
                                f"{layout.codebook_size} (model.special_tokens.image_codebook_size, MMaDA: 8192), "
                                f"got {self.image.codebook_size}", self.image.codebook_size))
        return self

    @model_validator(mode="after")
    def _answers_fit(self) -> "RunSpec":
        """Each text sampler's gen_length holds the task's longest answer and its EOS, when the task
        declares that length (tasks/base.py answer_tokens): else every completion would be cut and
        the run would "succeed" with zero reward throughout."""
        if self.modality != "text":
            return self
        from maskgrpo.tasks import answer_tokens  # lazy, as the task name and params checks

        try:
            need = answer_tokens(self.task.name, self.task.params)
        except ValueError as err:  # a parameter value the task refuses
            raise _field_errors("RunSpec", (("task", "params"), str(err), self.task.params)) from None
        short = [((part, "sampler", "gen_length"), f"{sampler.gen_length} is shorter than task {self.task.name}'s "
                  f"{need}-token answers (the longest answer and its EOS)", sampler.gen_length)
                 for part, sampler in (("rl", self.rl.sampler), ("evaluate", self.evaluate.sampler))
                 if need is not None and sampler.gen_length < need]
        if short:
            raise _field_errors("RunSpec", *short)
        return self
