"""Turning task examples into the tensors the core works on (text modality).

Prompts are left-padded with the pad id, so every completion starts at the same column P;
completions are the answer, then EOS to the fixed length L_o (ALGORITHM.md §1).
"""

from __future__ import annotations

from typing import Any

import torch

from maskgrpo.specs import TaskSpec
from maskgrpo.tasks import CharTokenizer, Example, collate_columns, get_task


def load_examples(task: TaskSpec, split: str, seed: int) -> list[Example]:
    size = task.train_size if split == "train" else task.eval_size
    return get_task(task.name, **task.params).examples(split, size, seed)


def completion_length(task: TaskSpec) -> int:
    return get_task(task.name, **task.params).completion_length


def encode_prompts(tokenizer: CharTokenizer, prompts: list[str], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, P) left-padded to ``length`` (default: the longest), valid (B, P) bool)."""
    ids = tokenizer.encode_batch_left_padded(prompts, length)
    return ids, ids != tokenizer.pad_id


def encode_answers(tokenizer: CharTokenizer, answers: list[str], length: int) -> torch.Tensor:
    """(B, L_o): answer + EOS, EOS-filled."""
    return torch.tensor([tokenizer.encode_completion(a, length) for a in answers], dtype=torch.long)


def decode(tokenizer: CharTokenizer, completions: torch.Tensor) -> list[str]:
    return [tokenizer.decode(row) for row in completions.tolist()]


def reward_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Reward keyword columns (answer + the example's columns) for rows of samples.jsonl."""
    return collate_columns(Example(r["prompt"], r["answer"], r.get("columns", {})) for r in rows)
