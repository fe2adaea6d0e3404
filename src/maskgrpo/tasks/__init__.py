"""Prompt sources chosen by name: toy generators and file datasets (docs/design.md, "Style").

``get_task(name, **params)`` resolves a lazy ``"module:attr"`` import string from ``_TASKS`` or a
third-party plugin registered under the entry-point group ``maskgrpo.tasks`` (built-in names win),
then calls it with ``params``. Unknown names fail listing the valid ones.
"""

from __future__ import annotations

import inspect
from typing import Any

from maskgrpo.core.registry import LazyRegistry
from maskgrpo.tasks.base import Example, Task, collate_columns, split_of
from maskgrpo.tasks.tokenizer import DEFAULT_CHARS, CharTokenizer

__all__ = [
    "CharTokenizer",
    "DEFAULT_CHARS",
    "Example",
    "Task",
    "collate_columns",
    "get_task",
    "list_tasks",
    "split_of",
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
    "geneval": "maskgrpo.tasks.geneval_files:GenEvalFileTask",
}


_REGISTRY = LazyRegistry("task", _TASKS, ENTRY_POINT_GROUP)


def list_tasks() -> list[str]:
    """Every task name: built-in and plugins, sorted."""
    return _REGISTRY.names()


def get_task(name: str, **params: Any) -> Task:
    """The task ``name`` built with ``params``; unknown name or parameter -> ValueError."""
    factory = _REGISTRY.load(name)
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        sig = None
    if sig is not None:
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        unknown = sorted(set(params) - set(sig.parameters)) if not accepts_any else []
        if unknown:
            valid = [p for p in sig.parameters if p != "self"]
            raise ValueError(f"task {name!r} has no parameter(s) {unknown}; valid: {valid}")
    return factory(**params)
