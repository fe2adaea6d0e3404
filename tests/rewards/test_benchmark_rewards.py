"""Rewards on the real d1 benchmark files (skipped with a reason where ../shared is absent)."""

import random

import pytest

from maskgrpo.rewards import get_reward
from maskgrpo.rewards.toy import countdown_reward, evaluate_expression, sudoku_reward
from maskgrpo.tasks import collate_columns, get_task
from maskgrpo.tasks.files import read_csv, read_jsonl
from maskgrpo.tasks.toy import solve_countdown
from shared_data import COUNTDOWN, SUDOKU


@pytest.fixture(scope="module")
def sudoku_rows():
    if not SUDOKU.is_file():
        pytest.skip(f"benchmark file absent: {SUDOKU}")
    return read_csv(SUDOKU)


@pytest.fixture(scope="module")
def countdown_rows():
    if not COUNTDOWN.is_file():
        pytest.skip(f"benchmark file absent: {COUNTDOWN}")
    return read_jsonl(COUNTDOWN)


def test_every_sudoku_solution_scores_one(sudoku_rows):
    puzzles = [r["Puzzle"] for r in sudoku_rows]
    solutions = [r["Solution"] for r in sudoku_rows]
    tagged = [f"<reasoning>...</reasoning>\n<answer>\n{s}\n</answer>" for s in solutions]
    n = len(puzzles)
    assert n == 500
    assert sudoku_reward(["p"] * n, solutions, puzzle=puzzles, answer=solutions) == [1.0] * n
    assert get_reward("sudoku_tagged")(["p"] * n, tagged, puzzle=puzzles, answer=solutions) == [1.0] * n


def test_wrong_sudoku_fills_score_less(sudoku_rows):
    rng = random.Random(0)
    for row in sudoku_rows[:100]:
        puzzle, solution = row["Puzzle"], row["Solution"]
        blanks = [i for i, c in enumerate(puzzle) if c == "0"]
        k = rng.randint(1, len(blanks))
        wrong = list(solution)
        for i in rng.sample(blanks, k):  # break k blank cells
            wrong[i] = str(int(wrong[i]) % 4 + 1)
        (score,) = sudoku_reward(["p"], ["".join(wrong)], puzzle=[puzzle], answer=[solution])
        # k of the 8 blanks are wrong -> (8 - k) / 8
        assert score == (len(blanks) - k) / len(blanks) < 1.0
        (given,) = sudoku_reward(["p"], [puzzle], puzzle=[puzzle], answer=[solution])
        assert given == 0.0  # echoing the puzzle fills no blank


def test_countdown_right_and_wrong_answers_on_real_rows(countdown_rows):
    rows = countdown_rows[:40]
    numbers = [[int(x) for x in r["input"].split(",")] for r in rows]
    targets = [int(r["output"]) for r in rows]
    right = [solve_countdown(n, t) for n, t in zip(numbers, targets)]
    assert all(right)
    assert right[0] == "30-100+93"  # 30 - 100 + 93 = 23, the README's row
    for expr, n, t in zip(right, numbers, targets):  # independent check of the brute force
        value, used = evaluate_expression(expr)
        assert value == t and sorted(used) == sorted(n)
    m = len(rows)
    tag = [f"<reasoning>search</reasoning><answer>{e}</answer>" for e in right]
    assert countdown_reward(["p"] * m, tag, numbers=[r["input"] for r in rows],
                            target=[r["output"] for r in rows], answer_tag=True) == [1.0] * m
    # all numbers added: uses each once but misses the target (unless the sum is the target)
    sums = [f"<answer>{'+'.join(map(str, n))}</answer>" for n in numbers]
    expect = [1.0 if sum(n) == t else 0.1 for n, t in zip(numbers, targets)]
    assert countdown_reward(["p"] * m, sums, numbers=numbers, target=targets) == expect
    # the right expression with a number dropped: wrong numbers -> 0.1
    dropped = [f"<answer>{n[0]}+{n[1]}</answer>" for n in numbers]
    assert countdown_reward(["p"] * m, dropped, numbers=numbers, target=targets) == [0.1] * m
    # no answer tag at all under the tagged reward -> 0.0
    assert get_reward("countdown_tagged")(["p"] * m, right, numbers=numbers, target=targets) == [0.0] * m


def test_file_task_columns_feed_their_rewards(countdown_rows, sudoku_rows):
    for name, path in (("countdown", COUNTDOWN), ("sudoku", SUDOKU)):
        task = get_task(name, path=str(path), eval_permille=1000)
        exs = task.examples("eval", 64, seed=0)
        comps = [f"<reasoning>r</reasoning><answer>{e.answer}</answer>" for e in exs]
        scores = get_reward(task.reward)([e.prompt for e in exs], comps, **collate_columns(exs))
        assert scores == [1.0] * 64
