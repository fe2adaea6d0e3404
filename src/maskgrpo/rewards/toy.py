"""Rewards of the toy and puzzle tasks (docs/algorithm.md §6 and §9).

Implements, all with the TRL signature ``fn(prompts, completions, **columns) -> list[float|None]``:
1. ``sort_exact`` (1 if the completion is the sorted answer) and ``sort_dense`` (fraction of
   positions correct, over the longer of answer and completion).
2. ``add_reward``: 1.0 if exact, else 0.5 x the fraction of digits matching, aligned from the
   least significant digit (a design choice of this project; docs/algorithm.md §9 only asks for
   "partial credit per digit").
3. ``countdown_reward``: 1.0 if the expression uses exactly the given numbers once each and
   equals the target, 0.1 if an expression is present but invalid or wrong, 0.0 if none (the
   scores of d1's ``compute_score``, TinyZero's countdown reward). Evaluated with ``ast`` over
   numbers, + - * / and parentheses, in exact fractions (d1 uses float ``eval`` with a 1e-5
   tolerance: exact arithmetic is stricter only where floats were wrong).
4. ``sudoku_reward``: fraction of the puzzle's blank cells filled correctly; the digits of the
   answer are read, padded with 0 or cut to 16 (d1's ``validate_sudoku_solution``).
5. ``chain_reward`` (task ``chain``): 1.0 if the whole chain is the reference, else 0.5 x the
   fraction of the reference's steps (split on ';') written exactly at their place.

Toy completions are the bare answer; the real countdown/sudoku prompts ask for
``<answer>...</answer>``: ``answer_tag`` (keyword, default None = use the tag when present) is
explained in ``maskgrpo.rewards.extract``. A missing reference (None) gives None.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction
from typing import Any

from maskgrpo.rewards.extract import check_lengths, completion_text, extract_answer

__all__ = [
    "sort_exact",
    "sort_dense",
    "add_reward",
    "chain_reward",
    "countdown_reward",
    "countdown_reward_tagged",
    "sudoku_reward",
    "sudoku_reward_tagged",
    "evaluate_expression",
]

_EXPR_CHARS = re.compile(r"^[\d+\-*/()\s]+$")
_MAX_EXPR_CHARS = 256
_BINOPS = {
    ast.Add: lambda x, y: x + y,
    ast.Sub: lambda x, y: x - y,
    ast.Mult: lambda x, y: x * y,
    ast.Div: lambda x, y: x / y,
}


def evaluate_expression(text: str) -> tuple[Fraction, list[int]] | None:
    """(exact value, numbers used) of an arithmetic expression, or None if it is not one.

    Only non-negative integer literals, binary + - * / and parentheses are accepted; the text is
    parsed with ``ast``, never evaluated by Python.

    >>> evaluate_expression("30-(100-93)")
    (Fraction(23, 1), [30, 100, 93])
    >>> evaluate_expression("7/2"), evaluate_expression("2**10"), evaluate_expression("1/0")
    ((Fraction(7, 2), [7, 2]), None, None)
    """
    text = text.strip()
    if not text or len(text) > _MAX_EXPR_CHARS or not _EXPR_CHARS.match(text):
        return None
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return None
    used: list[int] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ZeroDivisionError
            return _BINOPS[type(node.op)](left, right)
        raise ValueError(f"disallowed syntax {type(node).__name__}")

    try:
        value = walk(tree.body)
    except (ValueError, ZeroDivisionError, RecursionError):
        return None
    return value, used


def _prepare(fn: str, completions: list[Any], answer_tag: bool | None, **columns: Any) -> list[str | None]:
    check_lengths(fn, completions, **columns)
    return [extract_answer(completion_text(c), answer_tag) for c in completions]


def sort_exact(prompts: list[str], completions: list[Any], answer: list[str], *,
               answer_tag: bool | None = None, **columns: Any) -> list[float | None]:
    """1.0 if the completion equals the sorted reference, else 0.0.

    >>> sort_exact(["sort:312=", "sort:312="], ["123", "132"], answer=["123", "123"])
    [1.0, 0.0]
    """
    preds = _prepare("sort_exact", completions, answer_tag, answer=answer)
    return [None if a is None else float(p == a) for p, a in zip(preds, answer)]


def sort_dense(prompts: list[str], completions: list[Any], answer: list[str], *,
               answer_tag: bool | None = None, **columns: Any) -> list[float | None]:
    """Fraction of positions equal to the reference, over the longer of the two strings.

    >>> sort_dense(["sort:3120=", "sort:3120="], ["0123", "0132"], answer=["0123", "0123"])
    [1.0, 0.5]
    >>> sort_dense(["sort:3120="], ["012345"], answer=["0123"])  # 4 right of 6 positions
    [0.6666666666666666]
    """
    preds = _prepare("sort_dense", completions, answer_tag, answer=answer)
    out: list[float | None] = []
    for p, a in zip(preds, answer):
        if a is None:
            out.append(None)
            continue
        p = p or ""
        width = max(len(p), len(a))
        out.append(sum(x == y for x, y in zip(p, a)) / width if width else 1.0)
    return out


def add_reward(prompts: list[str], completions: list[Any], answer: list[str], *,
               answer_tag: bool | None = None, **columns: Any) -> list[float | None]:
    """1.0 if exact, else 0.5 x (digits matching, aligned right) / (longer length).

    >>> add_reward(["123+456="] * 3, ["579", "589", "1579"], answer=["579"] * 3)
    [1.0, 0.3333333333333333, 0.375]

    "589": 2 of 3 digits match -> 0.5 * 2/3; "1579": the last 3 of 4 match -> 0.5 * 3/4.
    """
    def partial(p: str, a: str) -> float:
        return 0.5 * sum(x == y for x, y in zip(reversed(p), reversed(a))) / max(len(p), len(a))

    return _graded("add_reward", completions, answer, answer_tag, partial)


def _graded(fn: str, completions: list[Any], answer: list[str], answer_tag: bool | None, partial) -> list[float | None]:
    """None without a reference, 1.0 if exact, 0.0 if empty, else ``partial(prediction, answer)``."""
    preds = _prepare(fn, completions, answer_tag, answer=answer)
    return [None if a is None else 1.0 if p == a else 0.0 if not p else partial(p, a) for p, a in zip(preds, answer)]


def chain_reward(prompts: list[str], completions: list[Any], answer: list[str], *,
                 answer_tag: bool | None = None, **_: Any) -> list[float | None]:
    """1.0 if the chain is exact, else 0.5 x (steps right at their place) / (reference steps).

    >>> chain_reward(["ch:47+8-3="] * 3, ["47+8=55;55-3=52", "47+8=55;55-3=53", "47+8=54"],
    ...              answer=["47+8=55;55-3=52"] * 3)
    [1.0, 0.25, 0.0]
    """
    def partial(p: str, a: str) -> float:
        steps = a.split(";")
        return 0.5 * sum(x == y for x, y in zip(p.split(";"), steps)) / len(steps)

    return _graded("chain_reward", completions, answer, answer_tag, partial)


def _as_numbers(value: Any) -> list[int]:
    if isinstance(value, str):  # d1's file format: "30,100,93"
        return [int(v) for v in value.split(",") if v.strip()]
    return [int(v) for v in value]


def countdown_reward(prompts: list[str], completions: list[Any], numbers: list[Any], target: list[Any], *,
                     answer_tag: bool | None = None, **columns: Any) -> list[float | None]:
    """1.0 right, 0.1 present but wrong or invalid, 0.0 absent (d1 / TinyZero countdown scores).

    >>> countdown_reward(["cd"] * 5, ["30-(100-93)", "30-100-93", "30-(100-93)+1", "", "30+(100-93)*x"],
    ...                  numbers=[[30, 100, 93]] * 5, target=[23] * 5)
    [1.0, 0.1, 0.1, 0.0, 0.1]
    >>> countdown_reward(["cd"] * 2, ["<answer>93-(100-30)</answer>", "93-(100-30)"],
    ...                  numbers=["30,100,93"] * 2, target=["23"] * 2, answer_tag=True)
    [1.0, 0.0]
    """
    exprs = _prepare("countdown_reward", completions, answer_tag, numbers=numbers, target=target)
    out: list[float | None] = []
    for expr, nums, tgt in zip(exprs, numbers, target):
        if nums is None or tgt is None:
            out.append(None)
            continue
        if not expr:
            out.append(0.0)
            continue
        result = evaluate_expression(expr)
        if result is None:
            out.append(0.1)
            continue
        value, used = result
        ok = sorted(used) == sorted(_as_numbers(nums)) and value == Fraction(str(tgt).strip())
        out.append(1.0 if ok else 0.1)
    return out


def countdown_reward_tagged(prompts: list[str], completions: list[Any], **columns: Any) -> list[float | None]:
    """``countdown_reward`` requiring ``<answer>...</answer>`` (the real countdown prompts).

    >>> countdown_reward_tagged(["cd"], ["30-(100-93)"], numbers=[[30, 100, 93]], target=[23])
    [0.0]
    """
    return countdown_reward(prompts, completions, answer_tag=True, **columns)


def sudoku_reward(prompts: list[str], completions: list[Any], puzzle: list[str], answer: list[str], *,
                  answer_tag: bool | None = None, **columns: Any) -> list[float | None]:
    """Fraction of the puzzle's blanks (0) filled as in the solution ``answer``.

    >>> puzzle, solution = "3102200002100320", "3142243142131324"
    >>> sudoku_reward(["p"] * 3, [solution, "3142243142131323", "314"], puzzle=[puzzle] * 3,
    ...               answer=[solution] * 3)
    [1.0, 0.875, 0.125]

    "...23" misses the last of 8 blanks; "314" is padded with 0s and fills one blank (index 2).
    A puzzle without blanks scores 0.0, as in d1.
    """
    preds = _prepare("sudoku_reward", completions, answer_tag, puzzle=puzzle, answer=answer)
    out: list[float | None] = []
    for p, puz, sol in zip(preds, puzzle, answer):
        if puz is None or sol is None:
            out.append(None)
            continue
        if len(puz) != 16 or len(sol) != 16:
            raise ValueError(f"sudoku_reward: puzzle {puz!r} and solution {sol!r} must have 16 digits")
        digits = "".join(ch for ch in (p or "") if ch.isdigit())[:16].ljust(16, "0")
        blanks = [i for i, ch in enumerate(puz) if ch == "0"]
        out.append(sum(digits[i] == sol[i] for i in blanks) / len(blanks) if blanks else 0.0)
    return out


def sudoku_reward_tagged(prompts: list[str], completions: list[Any], **columns: Any) -> list[float | None]:
    """``sudoku_reward`` requiring ``<answer>...</answer>`` (the real sudoku prompts; d1 scores a
    missing tag 0).

    >>> sudoku_reward_tagged(["p"], ["3142243142131324"], puzzle=["3102200002100320"],
    ...                      answer=["3142243142131324"])
    [0.0]
    """
    return sudoku_reward(prompts, completions, answer_tag=True, **columns)
