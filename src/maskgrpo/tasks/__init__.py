"""Prompt sources chosen by name: toy generators and file datasets (docs/design.md, "Style").

``get_task(name, **params)`` resolves a lazy ``"module:attr"`` import string from ``_TASKS`` or a
third-party plugin registered under the entry-point group ``maskgrpo.tasks`` (built-in names win),
then calls it with ``params``. Unknown names fail listing the valid ones.
"""

from __future__ import annotations

from typing import Any

from maskgrpo.core.registry import LazyRegistry, parameter_error
from maskgrpo.tasks.base import Example, Task, collate_columns, split_of
from maskgrpo.tasks.tokenizer import DEFAULT_CHARS, CharTokenizer

__all__ = [
    "CharTokenizer",
    "DEFAULT_CHARS",
    "Example",
    "Task",
    "answer_tokens",
    "check_task_name",
    "check_task_params",
    "collate_columns",
    "get_task",
    "list_tasks",
    "split_of",
    "task_modality",
]

ENTRY_POINT_GROUP = "maskgrpo.tasks"

_TASKS: dict[str, str] = {
    "sort": "maskgrpo.tasks.toy:SortTask",
    "add": "maskgrpo.tasks.toy:AddTask",
    "chain": "maskgrpo.tasks.toy:ChainTask",
    "countdown-lite": "maskgrpo.tasks.toy:CountdownLiteTask",
    "sudoku-4x4": "maskgrpo.tasks.toy:Sudoku4x4Task",
    "toy-geneval": "maskgrpo.tasks.geneval:ToyGenEvalTask",
    "gsm8k": "maskgrpo.tasks.files:GSM8KTask",
    "math500": "maskgrpo.tasks.files:Math500Task",
    "countdown": "maskgrpo.tasks.files:CountdownFileTask",
    "sudoku": "maskgrpo.tasks.files:SudokuFileTask",
    "prompt-answer": "maskgrpo.tasks.files:PromptAnswerFileTask",
    "geneval": "maskgrpo.tasks.geneval_files:GenEvalFileTask",
}


_REGISTRY = LazyRegistry("task", _TASKS, ENTRY_POINT_GROUP)


def list_tasks() -> list[str]:
    """Every task name: built-in and plugins, sorted."""
    return _REGISTRY.names()


def check_task_name(name: str) -> None:
    """ValueError listing the valid names when ``name`` is no registered task."""
    if name not in _TASKS and name not in _REGISTRY.names():
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(_REGISTRY.names())}")


def check_task_params(name: str, params: dict[str, Any]) -> None:
    """ValueError when ``name`` is no registered task (listing the valid names) or when ``params``
    do not fit its constructor (naming the parameter; the same check as reward parameters,
    ``maskgrpo.core.registry.parameter_error``). Run by TaskSpec's validator, so ``maskgrpo
    validate`` reports it."""
    error = parameter_error(f"task {name!r}", _REGISTRY.load(name), params)
    if error:
        raise ValueError(error)


def answer_tokens(name: str, params: dict[str, Any]) -> int | None:
    """The tokens the longest answer of task ``name`` (with ``params``) takes, its EOS included, when
    the task declares them (``answer_tokens``, tasks/base.py), else None (file tasks: unknown
    without reading the data). Builds the task only when its class declares them, so a bad
    parameter value fails here (ValueError) and no dataset is touched."""
    if getattr(_REGISTRY.load(name), "answer_tokens", None) is None:
        return None
    return get_task(name, **params).answer_tokens


def task_modality(name: str) -> str | None:
    """The modality task ``name``'s prompts ask for ("text" or "image"), read off its class without
    building it; None for a plugin that does not declare one (nothing is checked then)."""
    modality = getattr(_REGISTRY.load(name), "modality", None)
    return modality if isinstance(modality, str) else None


def get_task(name: str, **params: Any) -> Task:
    """The task ``name`` built with ``params``; unknown name or parameter -> ValueError."""
    check_task_params(name, params)
    return _REGISTRY.load(name)(**params)
