"""Task examples for the stages: the fixed train/eval sets and the reward columns of samples.

Encoding them into tensors is the modality's job (modalities/).
"""

from __future__ import annotations

from typing import Any

from maskgrpo.specs import TaskSpec
from maskgrpo.tasks import Example, collate_columns, get_task


def load_examples(task: TaskSpec, split: str, seed: int) -> list[Example]:
    size = task.train_size if split == "train" else task.eval_size
    return get_task(task.name, **task.params).examples(split, size, seed)


def reward_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Reward keyword columns (answer + the example's columns) for rows of samples.jsonl."""
    return collate_columns(Example(r["prompt"], r["answer"], r.get("columns", {})) for r in rows)
