"""GenEval metadata files as a task (registry name ``geneval``): real text-to-image prompts.

Implements:
1. ``GenEvalFileTask(path, eval_path=None, eval_permille=100, grid_size=32)``: every row of a
   GenEval ``evaluation_metadata.jsonl`` (``{tag, include: [{class, count, color?, position?}],
   exclude?, prompt}``), or of a training file in the same schema, read from a local path or a
   store URI exactly as ``FileTask`` reads ``path``/``eval_path`` (tasks/files.py). Rows are parsed
   with ``maskgrpo.tasks.geneval.load_geneval_metadata`` (a bad row fails naming its file and line).
2. ``Example.prompt`` is the metadata's prompt; ``Example.columns["metadata"]`` the row as
   ``GenEvalMetadata.to_json`` writes it (the same column the toy GenEval task and its rewards
   use, and that a GenEval-style reward server receives over ``rewards/http.py``); ``answer`` is
   "" (GenEval has no reference image).
3. Splits as ``FileTask``'s: ``eval_path`` is the eval split (rows of ``path`` with the same prompt
   are dropped from train), else a stable hash of the prompt holds out ``eval_permille``/1000.
   ``path`` is required: GenEval's ``evaluation_metadata.jsonl`` (djghosh13/geneval, MIT) or rows
   of its schema; no copy ships with the package.

Deviations: the default reward is ``http`` (GenEval's scorer is an object detector; serve it with
``maskgrpo serve-reward`` or any server of the same JSON protocol and name it, with ``params.url``,
in ``reward.functions``); without ``params.url`` scoring fails with that message. No reference
image means no SFT targets: with this task, ``sft.enabled`` must be false (or the SFT stage fails
on the empty answers).

    >>> task = GenEvalFileTask("evaluation_metadata.jsonl", eval_permille=1000)  # all of it held out
    >>> ex = task.examples("eval", 1, seed=0)[0] if task.path.is_file() else None
    >>> ex is None or (ex.answer == "" and ex.columns["metadata"]["prompt"] == ex.prompt)
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maskgrpo.tasks.base import Example
from maskgrpo.tasks.files import FileTask
from maskgrpo.tasks.geneval import GenEvalMetadata, load_geneval_metadata

__all__ = ["GenEvalFileTask"]


class GenEvalFileTask(FileTask):
    """GenEval metadata rows (see the module docstring)."""

    name = "geneval"
    modality = "image"
    reward = "http"
    source = "GenEval's evaluation_metadata.jsonl (github.com/djghosh13/geneval, MIT) or rows of its schema"

    def __init__(self, path: str | Path | None = None, eval_path: str | Path | None = None,
                 eval_permille: int = 100, grid_size: int = 32) -> None:
        if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 1:
            raise ValueError(f"task {self.name!r}: grid_size must be a positive integer (MMaDA: 32), got {grid_size!r}")
        super().__init__(path, eval_path, eval_permille, completion_length=grid_size * grid_size)
        self.grid_size = grid_size

    def parse_file(self, local: Path) -> list[dict[str, Any]]:
        """Rows as validated metadata JSON (``load_geneval_metadata``; a bad row names its line)."""
        return [meta.to_json() for meta in load_geneval_metadata(local)]

    def make_example(self, row: dict[str, Any]) -> Example:
        meta = GenEvalMetadata.from_json(row)
        if not meta.prompt.strip():
            raise ValueError("empty prompt")
        return Example(meta.prompt, "", {"metadata": meta.to_json()})
