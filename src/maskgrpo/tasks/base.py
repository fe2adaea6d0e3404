"""The task interface: ``Example``, ``Task`` and deterministic, disjoint train/eval splits.

Implements:
1. ``Example(prompt, answer, columns)``: ``columns`` are extra reward inputs (JSON-serialisable);
   ``collate_columns`` turns a list of examples into the ``answer=[...]`` + ``**columns`` lists a
   TRL-style reward function takes.
2. ``split_of(key)``: a problem's split from a stable hash (blake2b) of its key, never Python's
   ``hash()``, so train and eval are disjoint on every machine and interpreter.
3. ``GeneratedTask``: the sampling shared by the toy generators. A problem space either
   enumerates (small spaces: exact split sizes, shuffled deterministically) or samples with
   rejection of duplicates and of the other split's problems (large spaces). Results depend only
   on (task parameters, split, n, seed) and the first n of a larger draw equal a draw of n.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["Example", "Task", "Split", "split_of", "collate_columns", "GeneratedTask", "check_split"]

Split = Literal["train", "eval"]
_SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Example:
    """One problem: the prompt text, the reference completion and extra reward columns."""

    prompt: str
    answer: str
    columns: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "answer" in self.columns or "prompts" in self.columns or "completions" in self.columns:
            raise ValueError(f"columns must not be named answer/prompts/completions: {sorted(self.columns)}")

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "answer": self.answer, "columns": dict(self.columns)}


@runtime_checkable
class Task(Protocol):
    name: str
    reward: str
    completion_length: int
    modality: str  # "text" or "image": the kind of output its prompts ask for (RunSpec checks it)

    def examples(self, split: Split, n: int, seed: int) -> list[Example]: ...


def collate_columns(examples: Iterable[Example]) -> dict[str, list[Any]]:
    """Reward keyword columns for a batch: ``{"answer": [...], <column>: [...], ...}``.

    >>> collate_columns([Example("p", "1", {"k": 3}), Example("q", "2", {"k": 4})])
    {'answer': ['1', '2'], 'k': [3, 4]}
    """
    examples = list(examples)
    out: dict[str, list[Any]] = {"answer": [e.answer for e in examples]}
    keys = sorted({k for e in examples for k in e.columns})
    for k in keys:
        out[k] = [e.columns.get(k) for e in examples]
    return out


def split_of(key: str, eval_permille: int) -> Split:
    """``"eval"`` for about ``eval_permille``/1000 of keys, by a stable hash of ``key``.

    >>> split_of("sort:53812907=", 100), split_of("sort:53812907=", 0), split_of("x", 1000)
    ('train', 'train', 'eval')
    """
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")
    return "eval" if h % 1000 < eval_permille else "train"


def check_split(split: str, n: int) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")


class GeneratedTask:
    """Base for generated tasks. Subclasses set ``name``, ``reward``, ``completion_length`` and
    implement ``space_size()`` plus either ``enumerate_problems()`` (small spaces) or
    ``sample_problem(rng)`` (returns None to reject a draw). A text task whose answers have a
    known longest length declares it as ``answer_tokens`` (a property of its parameters): the
    tokens the longest answer takes with its EOS, one token per character (the character
    tokenizer; digit-splitting subword tokenizers such as LLaDA's agree on the digit answers).
    ``maskgrpo validate`` refuses a text sampler whose gen_length is shorter (specs/pipeline.py).

    Disjointness: the split of an example is ``split_of(example.prompt, eval_permille)``.
    """

    name: str
    reward: str
    completion_length: int
    answer_tokens: int | None = None  # None: not declared (nothing is checked)
    modality: str = "text"  # image tasks say "image"; `maskgrpo validate` refuses a mismatched run
    eval_permille: int = 100  # 10% of the problem space is held out for evaluation
    enumerate_limit: int = 200_000  # spaces up to this size are enumerated exactly
    max_draws_per_example: int = 200

    def params(self) -> dict[str, Any]:  # overridden: the task's parameters, for seeding and repr
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def space_size(self) -> int:
        raise NotImplementedError

    def enumerate_problems(self) -> Iterator[Example]:
        raise NotImplementedError

    def sample_problem(self, rng: random.Random) -> Example | None:
        raise NotImplementedError

    def _rng(self, split: str, seed: int) -> random.Random:
        # random.Random(str) seeds through sha512: stable across runs and PYTHONHASHSEED.
        tag = json.dumps([self.name, self.params(), split, seed], sort_keys=True)
        return random.Random(tag)

    def _enumerable(self) -> bool:
        return self.space_size() <= self.enumerate_limit

    def split_problems(self, split: Split) -> list[Example]:
        """Every problem of a split, in a fixed order (only for enumerable spaces)."""
        if not self._enumerable():
            raise ValueError(f"task {self.name!r}: space of {self.space_size()} problems is not enumerated")
        cache = self.__dict__.setdefault("_split_cache", {})
        if split not in cache:
            cache[split] = tuple(
                e for e in self.enumerate_problems() if split_of(e.prompt, self.eval_permille) == split
            )
        return list(cache[split])

    def split_size(self, split: Split) -> int:
        """Exact for enumerated spaces; for sampled ones the expected size (space x fraction)."""
        if self._enumerable():
            return len(self.split_problems(split))
        frac = self.eval_permille / 1000
        return int(self.space_size() * (frac if split == "eval" else 1 - frac))

    def examples(self, split: Split, n: int, seed: int) -> list[Example]:
        check_split(split, n)
        rng = self._rng(split, seed)
        if self._enumerable():
            pool = self.split_problems(split)
            if n > len(pool):
                raise ValueError(
                    f"task {self!r}: asked for {n} {split} examples but the {split} split has {len(pool)}"
                )
            rng.shuffle(pool)
            return pool[:n]
        # Large space: sample without duplicates. Ask for at most half the expected split so
        # rejection stays cheap.
        limit = self.split_size(split) // 2
        if n > limit:
            raise ValueError(
                f"task {self!r}: asked for {n} {split} examples; a sampled split of about "
                f"{self.split_size(split)} problems serves at most {limit}"
            )
        out: list[Example] = []
        seen: set[str] = set()
        draws = 0
        while len(out) < n:
            draws += 1
            if draws > self.max_draws_per_example * max(n, 10):
                raise ValueError(f"task {self!r}: could not draw {n} distinct {split} examples")
            ex = self.sample_problem(rng)
            if ex is None or ex.prompt in seen or split_of(ex.prompt, self.eval_permille) != split:
                continue
            seen.add(ex.prompt)
            out.append(ex)
        return out
