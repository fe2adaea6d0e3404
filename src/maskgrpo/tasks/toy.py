"""Toy generators that show real learning on a CPU (docs/algorithm.md §9).

Implements, each with a short prompt (<= 24 characters at the defaults) the ``CharTokenizer`` covers:
1. ``sort``: ``"sort:53812907="`` -> ``"01235789"`` (params ``length`` = 8, at most 40, ``digits`` = 10:
   the symbols 0..digits-1); reward ``sort_exact`` (``sort_dense`` is the dense variant).
   bench/ablation-sort31.yaml sorts 31 digits: 31 + EOS fill a 32-token completion.
2. ``add``: ``"123+456="`` -> ``"579"`` (param ``n_digits`` = 3: operands uniform in
   [0, 10**n_digits); ``pad`` = false: zero-padded fixed widths, ``reverse`` = false: the sum least
   significant digit first); reward ``add``.
3. ``countdown-lite``: ``"cd:3,5,7>22="`` -> ``"3*5+7"``: three numbers in 1..``max_number`` and
   a reachable integer target in 1..``max_target``; the answer is an expression using each number
   exactly once with + - * / and parentheses (the shortest one found, numbers in prompt order
   preferred). Columns ``numbers`` and ``target``; reward ``countdown``.
4. ``sudoku-4x4``: ``"sudoku:<16 digits>="`` (0 = blank) -> the 16-digit solution; every puzzle
   has a unique solution; ``min_blanks``..``max_blanks`` blanks. Column ``puzzle``; reward
   ``sudoku``.
5. ``chain``: multi-step arithmetic with the chain written out, a long completion whose every
   step reads the previous one (the visible prefix matters): ``"ch:47+8-3+6="`` ->
   ``"47+8=55;55-3=52;52+6=58"``. A start in 10..89 and ``steps`` (= 4) single-digit + or -
   operations that keep every value in 10..99; completion 8 characters a step (32 for 4 steps).
   Reward ``chain`` (maskgrpo.rewards.toy.chain_reward).

Splits: 10% of each problem space (by a stable hash of the prompt) is the eval split; see
``maskgrpo.tasks.base``. ``answer_tokens`` is the answer's maximum length + 1 EOS (one token per
character); ``completion_length``, the SFT target length, is that rounded up to a multiple of 8 (so
blocks of 4 or 8 divide it).
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

from maskgrpo.tasks.base import Example, GeneratedTask

__all__ = ["SortTask", "AddTask", "ChainTask", "CountdownLiteTask", "Sudoku4x4Task", "solve_countdown", "sudoku_solutions"]


def _round_up8(n: int) -> int:
    return -(-n // 8) * 8


def _check_int(task: str, name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"task {task!r}: parameter {name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


class SortTask(GeneratedTask):
    """``sort:<length digits>=`` -> the same digits in ascending order."""

    name = "sort"
    reward = "sort_exact"

    def __init__(self, length: int = 8, digits: int = 10) -> None:
        self.length = _check_int(self.name, "length", length, 1, 40)
        self.digits = _check_int(self.name, "digits", digits, 2, 10)
        self.completion_length = _round_up8(self.answer_tokens)

    @property
    def answer_tokens(self) -> int:
        return self.length + 1  # the sorted digits + EOS

    def params(self) -> dict[str, Any]:
        return {"length": self.length, "digits": self.digits}

    def space_size(self) -> int:
        return self.digits**self.length

    def _make(self, seq: tuple[int, ...] | list[int]) -> Example:
        s = "".join(map(str, seq))
        return Example(f"sort:{s}=", "".join(sorted(s)))

    def enumerate_problems(self) -> Iterator[Example]:
        for seq in itertools.product(range(self.digits), repeat=self.length):
            yield self._make(seq)

    def sample_problem(self, rng: random.Random) -> Example:
        return self._make([rng.randrange(self.digits) for _ in range(self.length)])


class AddTask(GeneratedTask):
    """``a+b=`` -> ``a+b`` in decimal, operands uniform in [0, 10**n_digits).

    ``pad``: operands written with ``n_digits`` digits and the sum with ``n_digits + 1`` (leading
    zeros: ``"05+37="`` -> ``"042"``), so every digit has a fixed place. ``reverse`` (needs
    ``pad``): the sum's digits least significant first (``"05+37="`` -> ``"240"``), the order in
    which the carries are computed. Both off by default (the original task).
    """

    name = "add"
    reward = "add"

    def __init__(self, n_digits: int = 3, pad: bool = False, reverse: bool = False) -> None:
        self.n_digits = _check_int(self.name, "n_digits", n_digits, 1, 9)
        for flag, value in (("pad", pad), ("reverse", reverse)):
            if not isinstance(value, bool):
                raise ValueError(f"task {self.name!r}: parameter {flag} must be true or false, got {value!r}")
        if reverse and not pad:
            raise ValueError(f"task {self.name!r}: reverse needs pad: true (the add reward aligns digits "
                             "from the right, which only fits a reversed sum of fixed width)")
        self.pad, self.reverse = pad, reverse
        self.completion_length = _round_up8(self.answer_tokens)

    @property
    def answer_tokens(self) -> int:
        return self.n_digits + 2  # the sum has <= n+1 digits, + EOS

    def params(self) -> dict[str, Any]:
        # the flags only when set: the default task's repr and split seeds stay as they were
        return {"n_digits": self.n_digits, **({"pad": True} if self.pad else {}),
                **({"reverse": True} if self.reverse else {})}

    def space_size(self) -> int:
        return 10 ** (2 * self.n_digits)

    def _make(self, a: int, b: int) -> Example:
        if not self.pad:
            return Example(f"{a}+{b}=", str(a + b))
        n = self.n_digits
        total = f"{a + b:0{n + 1}d}"
        return Example(f"{a:0{n}d}+{b:0{n}d}=", total[::-1] if self.reverse else total)

    def enumerate_problems(self) -> Iterator[Example]:
        top = 10**self.n_digits
        for a in range(top):
            for b in range(top):
                yield self._make(a, b)

    def sample_problem(self, rng: random.Random) -> Example:
        top = 10**self.n_digits
        return self._make(rng.randrange(top), rng.randrange(top))


class ChainTask(GeneratedTask):
    """``ch:<start><op><digit>...=`` -> the chain ``a+b=c;c-d=e;...`` (values in 10..99)."""

    name = "chain"
    reward = "chain"

    def __init__(self, steps: int = 4) -> None:
        self.steps = _check_int(self.name, "steps", steps, 1, 6)
        self.completion_length = _round_up8(self.answer_tokens)

    @property
    def answer_tokens(self) -> int:
        return 8 * self.steps  # "aa+b=cc;" per step, the last ';' is EOS

    def params(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def space_size(self) -> int:
        return 80 * 18**self.steps  # an upper bound (some operations leave 10..99)

    def sample_problem(self, rng: random.Random) -> Example | None:
        value = rng.randrange(10, 90)
        prompt, chain = f"ch:{value}", []
        for _ in range(self.steps):
            op, digit = rng.choice("+-"), rng.randrange(1, 10)
            nxt = value + digit if op == "+" else value - digit
            if not 10 <= nxt <= 99:
                return None
            prompt += f"{op}{digit}"
            chain.append(f"{value}{op}{digit}={nxt}")
            value = nxt
        return Example(prompt + "=", ";".join(chain))


_OPS = {
    "+": lambda x, y: x + y,
    "-": lambda x, y: x - y,
    "*": lambda x, y: x * y,
    "/": lambda x, y: x / y if y != 0 else None,
}
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def _apply(op: str, x: Fraction | None, y: Fraction | None) -> Fraction | None:
    if x is None or y is None:
        return None
    return _OPS[op](x, y)


def _right_needs_parens(o1: str, o2: str) -> bool:
    """Does ``x o1 (y o2 z)`` need its parentheses? Without them it parses (x o1 y) o2 z or
    x o1 (y o2 z) by precedence; they are only droppable when both readings are equal."""
    if _PREC[o2] > _PREC[o1]:
        return False  # x + y*z already groups the right pair
    return not (o1 == "+" or (o1 == "*" and o2 in "*/"))


def _expressions(nums: tuple[int, ...]) -> Iterator[tuple[int, str, Fraction]]:
    """(permutation rank, text, value) for every two-operator expression over ``nums``."""
    for rank, (x, y, z) in enumerate(itertools.permutations(nums)):
        fx, fy, fz = Fraction(x), Fraction(y), Fraction(z)
        for o1, o2 in itertools.product("+-*/", repeat=2):
            left = _apply(o2, _apply(o1, fx, fy), fz)  # (x o1 y) o2 z
            if left is not None:
                text = f"({x}{o1}{y}){o2}{z}" if _PREC[o2] > _PREC[o1] else f"{x}{o1}{y}{o2}{z}"
                yield rank, text, left
            right = _apply(o1, fx, _apply(o2, fy, fz))  # x o1 (y o2 z)
            if right is not None:
                text = f"{x}{o1}({y}{o2}{z})" if _right_needs_parens(o1, o2) else f"{x}{o1}{y}{o2}{z}"
                yield rank, text, right


def solve_countdown(numbers: list[int] | tuple[int, ...], target: int) -> str | None:
    """The shortest expression over three numbers (each once, + - * /) equal to ``target``.

    >>> solve_countdown([30, 100, 93], 23), solve_countdown([1, 1, 1], 100)
    ('30-100+93', None)
    """
    if len(numbers) != 3:
        return None
    best: tuple[int, int, str] | None = None
    for rank, text, value in _expressions(tuple(numbers)):
        if value == target and (best is None or (len(text), rank, text) < best):
            best = (len(text), rank, text)
    return None if best is None else best[2]


@functools.lru_cache(maxsize=8)
def _countdown_space(max_number: int, max_target: int) -> tuple[tuple[tuple[int, ...], int, str], ...]:
    """Every (numbers, target, shortest expression) with an integer target in [1, max_target]."""
    out = []
    for nums in itertools.product(range(1, max_number + 1), repeat=3):
        best: dict[int, tuple[int, int, str]] = {}
        for rank, text, value in _expressions(nums):
            if value.denominator != 1 or not 1 <= value <= max_target:
                continue
            key = (len(text), rank, text)
            t = int(value)
            if t not in best or key < best[t]:
                best[t] = key
        for t in sorted(best):
            out.append((nums, t, best[t][2]))
    return tuple(out)


class CountdownLiteTask(GeneratedTask):
    """``cd:a,b,c>target=`` -> an expression using a, b and c exactly once that equals target."""

    name = "countdown-lite"
    reward = "countdown"

    def __init__(self, max_number: int = 9, max_target: int = 50) -> None:
        self.max_number = _check_int(self.name, "max_number", max_number, 2, 20)
        self.max_target = _check_int(self.name, "max_target", max_target, 1, 999)
        self.completion_length = _round_up8(self.answer_tokens)

    @property
    def answer_tokens(self) -> int:
        # "(ab+cd)*ef" style: 3 numbers, 2 operators, one pair of parentheses, + EOS
        return 3 * len(str(self.max_number)) + 2 + 2 + 1

    def params(self) -> dict[str, Any]:
        return {"max_number": self.max_number, "max_target": self.max_target}

    def space_size(self) -> int:
        return len(_countdown_space(self.max_number, self.max_target))

    def enumerate_problems(self) -> Iterator[Example]:
        for nums, target, expr in _countdown_space(self.max_number, self.max_target):
            prompt = f"cd:{','.join(map(str, nums))}>{target}="
            yield Example(prompt, expr, {"numbers": list(nums), "target": target})


@functools.lru_cache(maxsize=1)
def sudoku_solutions() -> tuple[str, ...]:
    """All 288 solved 4x4 sudoku grids (rows, columns and 2x2 boxes hold 1..4), as 16-char strings."""
    grids: list[str] = []
    cells = [0] * 16

    def ok(i: int, v: int) -> bool:
        r, c = divmod(i, 4)
        box = [(r // 2 * 2 + dr) * 4 + c // 2 * 2 + dc for dr in (0, 1) for dc in (0, 1)]
        peers = [r * 4 + k for k in range(4)] + [k * 4 + c for k in range(4)] + box
        return all(cells[p] != v for p in peers if p < i)

    def fill(i: int) -> None:
        if i == 16:
            grids.append("".join(map(str, cells)))
            return
        for v in range(1, 5):
            if ok(i, v):
                cells[i] = v
                fill(i + 1)
        cells[i] = 0

    fill(0)
    return tuple(grids)


@functools.lru_cache(maxsize=1)
def _sudoku_index() -> tuple[tuple[int, ...], ...]:
    """masks[cell][digit] = bitmask of the solution grids with ``digit`` at ``cell``."""
    grids = sudoku_solutions()
    masks = [[0] * 5 for _ in range(16)]
    for g, grid in enumerate(grids):
        for cell, ch in enumerate(grid):
            masks[cell][int(ch)] |= 1 << g
    return tuple(tuple(m) for m in masks)


def count_sudoku_solutions(puzzle: str) -> int:
    """How many of the 288 grids agree with the givens of ``puzzle`` (0 = blank)."""
    masks = _sudoku_index()
    alive = (1 << len(sudoku_solutions())) - 1
    for cell, ch in enumerate(puzzle):
        if ch != "0":
            alive &= masks[cell][int(ch)]
    return bin(alive).count("1")


class Sudoku4x4Task(GeneratedTask):
    """``sudoku:<puzzle>=`` (16 digits, 0 = blank, unique solution) -> the 16-digit solution."""

    name = "sudoku-4x4"
    reward = "sudoku"
    answer_tokens = 17  # 16 digits + EOS
    completion_length = _round_up8(answer_tokens)

    def __init__(self, min_blanks: int = 4, max_blanks: int = 8) -> None:
        self.min_blanks = _check_int(self.name, "min_blanks", min_blanks, 1, 12)
        self.max_blanks = _check_int(self.name, "max_blanks", max_blanks, self.min_blanks, 12)

    def params(self) -> dict[str, Any]:
        return {"min_blanks": self.min_blanks, "max_blanks": self.max_blanks}

    def space_size(self) -> int:
        # upper bound (puzzles with several solutions are rejected when drawn); always sampled
        from math import comb

        n_blank_sets = sum(comb(16, k) for k in range(self.min_blanks, self.max_blanks + 1))
        return max(len(sudoku_solutions()) * n_blank_sets, self.enumerate_limit + 1)

    def sample_problem(self, rng: random.Random) -> Example | None:
        solution = rng.choice(sudoku_solutions())
        k = rng.randint(self.min_blanks, self.max_blanks)
        blanks = set(rng.sample(range(16), k))
        puzzle = "".join("0" if i in blanks else ch for i, ch in enumerate(solution))
        if count_sudoku_solutions(puzzle) != 1:
            return None
        return Example(f"sudoku:{puzzle}=", solution, {"puzzle": puzzle})
