"""Dataset tasks read from files: GSM8K, MATH500, and the d1 Countdown / 4x4 Sudoku test files.

Implements:
1. readers returning a list of row dicts: ``read_jsonl``, ``read_csv`` (header row),
   ``read_parquet`` (needs pyarrow; a clear error otherwise) and ``read_records`` (by suffix).
   ``path``/``eval_path`` are local paths or store URIs of plain objects
   (``s3://maskgrpo/datasets/gsm8k/train.jsonl``, ``file:///data/test.jsonl``): ``local_copy``
   downloads such an object through the store's backend (``maskgrpo.store.backend``; tasks never
   import s3fs themselves) into a temporary folder for the read, so each load sees the current object.
2. ``FileTask``: rows -> ``Example``; duplicate prompts are kept once; splits are disjoint:
   either ``eval_path`` is the eval split (rows of ``path`` whose prompt is also in it are
   dropped from train), or a stable hash of the prompt puts ``eval_permille``/1000 of the rows
   in eval (``maskgrpo.tasks.base.split_of``; 1000 = the whole file is eval, 0 = all train).
   ``examples(split, n, seed)`` is a seeded shuffle of the split, first n.
3. ``gsm8k`` (``question``/``answer`` columns; the reference is the text after ``####``),
   ``math500`` (``problem``/``answer``, or the last ``\\boxed{}`` of ``solution``), ``countdown``
   (d1's ``countdown_cd3_test.jsonl``: ``input`` "a,b,c", ``output`` target; the reference answer
   is an expression found by exhaustive search) and ``sudoku``
   (d1's ``sudoku_4x4_test.csv``: ``Puzzle``, ``Solution``). Column names are parameters.
   Every file task needs ``path``: no dataset ships with the package, and no default points
   outside it; ``source`` names where each benchmark file comes from, for the error message.

Prompts follow d1's style (a plain instruction asking for ``<reasoning>`` then ``<answer>``
tags; GSM8K and MATH ask for ``\\boxed{}`` inside the answer, as the MaskGRPO reference's LLaDA
prompts do), in this project's own words. They are plain text: a chat template, if any, is the
model adapter's business.
"""

from __future__ import annotations

import csv
import json
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from maskgrpo.tasks.base import Example, Split, check_split, split_of
from maskgrpo.tasks.toy import solve_countdown

__all__ = [
    "read_jsonl",
    "read_csv",
    "read_parquet",
    "read_records",
    "is_uri",
    "local_copy",
    "FileTask",
    "GSM8KTask",
    "Math500Task",
    "CountdownFileTask",
    "SudokuFileTask",
    "PromptAnswerFileTask",
]

GSM8K_INSTRUCTION = (
    "Solve the math word problem step by step. Put your working between <reasoning> and "
    "</reasoning>, then the final number as \\boxed{...} between <answer> and </answer>."
)
MATH_INSTRUCTION = (
    "Solve the math problem step by step. Put your working between <reasoning> and "
    "</reasoning>, then the final answer as \\boxed{...} between <answer> and </answer>."
)
COUNTDOWN_INSTRUCTION = (
    "Write an arithmetic expression that equals the target, using each given number exactly "
    "once and only the operations +, -, * and /. Think between <reasoning> and </reasoning>, "
    "then give only the expression, without '=' or the target, between <answer> and </answer>."
)
SUDOKU_INSTRUCTION = (
    "Solve this 4x4 Sudoku. The grid is a 16-digit string read row by row, left to right; 0 "
    "marks an empty cell. Fill every empty cell with a digit from 1 to 4 so that each row, each "
    "column and each 2x2 box holds 1, 2, 3 and 4 once. Think between <reasoning> and "
    "</reasoning>, then give the complete 16-digit grid, with no spaces, between <answer> and "
    "</answer>."
)


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"dataset file not found: {path}")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """One JSON object per non-empty line; a bad line fails naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV file with a header line, as dicts of strings."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    with path.open(encoding="utf-8", newline="") as f:
        return [dict(row) for row in csv.DictReader(f)]


def read_parquet(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a Parquet file (needs the optional ``pyarrow`` package)."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"reading {path} needs pyarrow, which is not installed: pip install pyarrow "
            "(or convert the file to JSON lines)"
        ) from None
    return pq.read_table(path).to_pylist()


_READERS = {".jsonl": read_jsonl, ".csv": read_csv, ".parquet": read_parquet}


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """``read_jsonl`` / ``read_csv`` / ``read_parquet`` chosen by the file's suffix."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unsupported dataset format {path.suffix!r}; use one of {sorted(_READERS)}")
    return reader(path)


def is_uri(path: str | Path) -> bool:
    """True for a store URI (``s3://...``, ``file://...``), False for a local path."""
    return isinstance(path, str) and "://" in path


@contextmanager
def local_copy(path: str | Path) -> Iterator[Path]:
    """A local path to read ``path`` from: a local path as is, a store URI's object downloaded
    into a temporary folder (removed on exit). A missing object -> FileNotFoundError naming the URI."""
    if not is_uri(path):
        yield Path(path)
        return
    from maskgrpo.store import digest as digests
    from maskgrpo.store.backend import open_backend

    parent, _, name = str(path).rstrip("/").rpartition("/")
    if "://" not in parent or not name:
        raise ValueError(f"dataset URI {path!r}: expected <scheme>://<bucket or folder>/.../<file>")
    backend = open_backend(parent)
    with tempfile.TemporaryDirectory(prefix="maskgrpo-data-") as tmp:
        local = Path(tmp) / name
        if backend.get_file(name, local, digest=digests.DEFAULT) is None:
            raise _missing(path)
        yield local


def _last_boxed(text: str) -> str | None:
    """Argument of the last ``\\boxed{...}`` (balanced braces) in a reference solution."""
    idx = text.rfind("\\boxed{")
    if idx < 0:
        return None
    start = idx + len("\\boxed{")
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return None


class FileTask:
    """Rows of a dataset file as examples; subclasses implement ``make_example``."""

    name: str
    reward: str
    source: str = "a .jsonl, .csv or .parquet file, local or a store URI"  # what path names (for the error)
    modality: str = "text"  # GenEvalFileTask: "image"

    def __init__(self, path: str | Path | None = None, eval_path: str | Path | None = None,
                 eval_permille: int = 100, completion_length: int = 256, instruction: str | None = None) -> None:
        if path is None:
            raise ValueError(f"task {self.name!r}: parameter path (the dataset file) is required: {self.source}")
        if isinstance(eval_permille, bool) or not isinstance(eval_permille, int) or not 0 <= eval_permille <= 1000:
            raise ValueError(f"task {self.name!r}: eval_permille must be an integer in [0, 1000], got {eval_permille!r}")
        if isinstance(completion_length, bool) or not isinstance(completion_length, int) or completion_length < 1:
            raise ValueError(f"task {self.name!r}: completion_length must be a positive integer")
        self.path = path if is_uri(path) else Path(path)
        self.eval_path = None if eval_path is None else eval_path if is_uri(eval_path) else Path(eval_path)
        self.eval_permille = eval_permille
        self.completion_length = completion_length
        self.instruction = instruction
        self._splits: dict[str, list[Example]] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={str(self.path)!r}, eval_path={self.eval_path and str(self.eval_path)!r})"

    def make_example(self, row: dict[str, Any]) -> Example:
        raise NotImplementedError

    @staticmethod
    def column(row: dict[str, Any], name: str) -> Any:
        if name not in row:
            raise KeyError(f"column {name!r} is missing (columns: {sorted(row)})")
        return row[name]

    def parse_file(self, local: Path) -> list[dict[str, Any]]:
        """The rows of a local dataset file (by suffix); subclasses with their own schema override it."""
        return read_records(local)

    def read_rows(self, path: str | Path) -> list[dict[str, Any]]:
        """The rows of a dataset file or store URI (errors name ``path``, not a temporary copy)."""
        with local_copy(path) as local:
            try:
                return self.parse_file(local)
            except ValueError as err:
                raise ValueError(str(err).replace(str(local), str(path))) from None

    def load(self, path: str | Path) -> list[Example]:
        """Every distinct example of a file, in file order."""
        out, seen = [], set()
        for i, row in enumerate(self.read_rows(path)):
            try:
                ex = self.make_example(row)
            except (KeyError, ValueError, TypeError) as err:
                msg = err.args[0] if err.args else repr(err)
                raise ValueError(f"{path}: row {i + 1}: {msg}") from None
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                out.append(ex)
        return out

    def split_examples(self, split: Split) -> list[Example]:
        """Every example of a split, in file order."""
        if self._splits is None:
            rows = self.load(self.path)
            if self.eval_path is not None:
                evals = self.load(self.eval_path)
                held = {e.prompt for e in evals}
                train = [e for e in rows if e.prompt not in held]
            else:
                train = [e for e in rows if split_of(e.prompt, self.eval_permille) == "train"]
                evals = [e for e in rows if split_of(e.prompt, self.eval_permille) == "eval"]
            self._splits = {"train": train, "eval": evals}
        return list(self._splits[split])

    def split_size(self, split: Split) -> int:
        return len(self.split_examples(split))

    def examples(self, split: Split, n: int, seed: int) -> list[Example]:
        check_split(split, n)
        pool = self.split_examples(split)
        if n > len(pool):
            raise ValueError(f"task {self!r}: asked for {n} {split} examples but the {split} split has {len(pool)}")
        random.Random(json.dumps([self.name, split, seed])).shuffle(pool)
        return pool[:n]


class GSM8KTask(FileTask):
    """GSM8K rows (``question``, ``answer`` ending in ``#### <number>``)."""

    name = "gsm8k"
    reward = "gsm8k"

    def __init__(self, path: str | Path | None = None, eval_path: str | Path | None = None,
                 eval_permille: int = 100, completion_length: int = 256, instruction: str | None = None,
                 question_column: str = "question", answer_column: str = "answer") -> None:
        super().__init__(path, eval_path, eval_permille, completion_length, instruction)
        self.question_column, self.answer_column = question_column, answer_column

    def make_example(self, row: dict[str, Any]) -> Example:
        question = str(self.column(row, self.question_column)).strip()
        answer = str(self.column(row, self.answer_column))
        final = answer.split("####")[-1].strip()
        if not final:
            raise ValueError(f"empty reference answer in column {self.answer_column!r}")
        return Example(f"{self.instruction or GSM8K_INSTRUCTION}\n\nQuestion: {question}", final)


class Math500Task(FileTask):
    """MATH / MATH500 rows (``problem``; ``answer``, or the boxed answer of ``solution``)."""

    name = "math500"
    reward = "math"

    def __init__(self, path: str | Path | None = None, eval_path: str | Path | None = None,
                 eval_permille: int = 100, completion_length: int = 256, instruction: str | None = None,
                 problem_column: str = "problem", answer_column: str = "answer",
                 solution_column: str = "solution") -> None:
        super().__init__(path, eval_path, eval_permille, completion_length, instruction)
        self.problem_column, self.answer_column, self.solution_column = problem_column, answer_column, solution_column

    def make_example(self, row: dict[str, Any]) -> Example:
        problem = str(self.column(row, self.problem_column)).strip()
        answer = row.get(self.answer_column)
        if answer is None or not str(answer).strip():
            answer = _last_boxed(str(self.column(row, self.solution_column)))
            if answer is None:
                raise ValueError(f"no {self.answer_column!r} and no \\boxed{{}} in {self.solution_column!r}")
        return Example(f"{self.instruction or MATH_INSTRUCTION}\n\nProblem: {problem}", str(answer).strip())


class CountdownFileTask(FileTask):
    """d1 Countdown rows: ``input`` "a,b,c" (the numbers) and ``output`` (the target)."""

    name = "countdown"
    reward = "countdown_tagged"
    source = "d1's countdown_cd3_test.jsonl (github.com/dllm-reasoning/d1, Apache-2.0) or rows of the same columns"

    def __init__(self, path: str | Path | None = None, eval_path: str | Path | None = None,
                 eval_permille: int = 100, completion_length: int = 256, instruction: str | None = None,
                 numbers_column: str = "input", target_column: str = "output") -> None:
        super().__init__(path, eval_path, eval_permille, completion_length, instruction)
        self.numbers_column, self.target_column = numbers_column, target_column

    def make_example(self, row: dict[str, Any]) -> Example:
        raw = self.column(row, self.numbers_column)
        parts = raw.split(",") if isinstance(raw, str) else raw
        numbers = [int(str(p).strip()) for p in parts]
        target = int(str(self.column(row, self.target_column)).strip())
        prompt = (f"{self.instruction or COUNTDOWN_INSTRUCTION}\n\n"
                  f"Numbers: {', '.join(map(str, numbers))}\nTarget: {target}")
        # reference: the shortest expression found by search ("" if none; any valid one scores 1.0)
        return Example(prompt, solve_countdown(numbers, target) or "", {"numbers": numbers, "target": target})


class SudokuFileTask(FileTask):
    """d1 4x4 Sudoku rows: ``Puzzle`` and ``Solution`` (16 digits each, 0 = blank)."""

    name = "sudoku"
    reward = "sudoku_tagged"
    source = "d1's sudoku_4x4_test.csv (github.com/dllm-reasoning/d1, Apache-2.0) or rows of the same columns"

    def __init__(self, path: str | Path | None = None, eval_path: str | Path | None = None,
                 eval_permille: int = 100, completion_length: int = 256, instruction: str | None = None,
                 puzzle_column: str = "Puzzle", solution_column: str = "Solution") -> None:
        super().__init__(path, eval_path, eval_permille, completion_length, instruction)
        self.puzzle_column, self.solution_column = puzzle_column, solution_column

    def make_example(self, row: dict[str, Any]) -> Example:
        puzzle = str(self.column(row, self.puzzle_column)).strip()
        solution = str(self.column(row, self.solution_column)).strip()
        for label, grid in (("puzzle", puzzle), ("solution", solution)):
            if len(grid) != 16 or not grid.isdigit():
                raise ValueError(f"{label} {grid!r} must be 16 digits")
        prompt = f"{self.instruction or SUDOKU_INSTRUCTION}\n\nPuzzle: {puzzle}"
        return Example(prompt, solution, {"puzzle": puzzle})


class PromptAnswerFileTask(FileTask):
    """Rows that already hold the prompt and the reference answer (``prompt``, ``answer`` columns),
    scored by the reward named in ``reward`` (e.g. the toy sort rows of ``maskgrpo retrain-ticks``)."""

    name = "prompt-answer"

    def __init__(self, path: str | Path | None = None, eval_path: str | Path | None = None,
                 eval_permille: int = 100, completion_length: int = 256, instruction: str | None = None,
                 reward: str = "sort_exact", prompt_column: str = "prompt", answer_column: str = "answer") -> None:
        super().__init__(path, eval_path, eval_permille, completion_length, instruction)
        self.reward = reward
        self.prompt_column, self.answer_column = prompt_column, answer_column

    def make_example(self, row: dict[str, Any]) -> Example:
        return Example(str(self.column(row, self.prompt_column)), str(self.column(row, self.answer_column)))
