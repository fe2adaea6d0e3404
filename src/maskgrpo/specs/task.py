"""Where prompts come from (``task``) and how completions are scored (``reward``): names and
params checked against the task and reward registries at validation."""

from __future__ import annotations

from typing import Any

from pydantic import Field, JsonValue, ValidationInfo, field_validator, model_serializer

from maskgrpo.specs._base import _drop_unset, _Spec


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
