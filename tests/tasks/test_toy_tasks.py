"""Toy tasks: determinism, disjoint splits, correct references, size errors, registry."""

import pytest

from maskgrpo.rewards.toy import evaluate_expression
from maskgrpo.tasks import Example, Task, get_task, list_tasks
from maskgrpo.tasks.base import collate_columns, split_of
from maskgrpo.tasks.toy import count_sudoku_solutions, sudoku_solutions

TOY = ["add", "countdown-lite", "sort", "sudoku-4x4"]


@pytest.mark.parametrize("name", TOY)
def test_deterministic_and_prefix_stable(name):
    task = get_task(name)
    a = task.examples("train", 50, seed=3)
    assert a == get_task(name).examples("train", 50, seed=3)
    assert a[:20] == task.examples("train", 20, seed=3)  # the first n of a larger draw
    assert a != task.examples("train", 50, seed=4)
    assert len({e.prompt for e in a}) == 50  # no duplicates within a draw


@pytest.mark.parametrize("name", TOY)
def test_train_and_eval_are_disjoint(name):
    task = get_task(name)
    train = {e.prompt for seed in range(3) for e in task.examples("train", 300, seed=seed)}
    evals = {e.prompt for seed in range(3) for e in task.examples("eval", 100, seed=seed)}
    assert train and evals and not train & evals
    assert all(split_of(p, 100) == "eval" for p in evals)


@pytest.mark.parametrize("name", TOY)
def test_is_a_task_with_short_prompts(name):
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name
    for ex in task.examples("eval", 50, seed=0):
        assert isinstance(ex, Example) and len(ex.prompt) <= 24
        assert len(ex.answer) + 1 <= task.completion_length and task.completion_length % 8 == 0


def test_sort_references():
    task = get_task("sort", length=4, digits=3)
    assert task.completion_length == 8  # 4 digits + EOS -> 8
    for ex in task.examples("train", 20, seed=0):
        digits = ex.prompt[len("sort:"):-1]
        assert ex.prompt.startswith("sort:") and ex.prompt.endswith("=")
        assert len(digits) == 4 and set(digits) <= set("012")
        assert ex.answer == "".join(sorted(digits))


def test_small_space_split_sizes_are_exact():
    task = get_task("sort", length=3, digits=4)  # 4**3 = 64 problems
    assert task.split_size("train") + task.split_size("eval") == 64
    n_eval = task.split_size("eval")
    assert len(task.examples("eval", n_eval, seed=0)) == n_eval
    with pytest.raises(ValueError, match=f"the eval split has {n_eval}"):
        task.examples("eval", n_eval + 1, seed=0)


def test_large_space_too_many_raises():
    task = get_task("sort", length=2, digits=10)  # 100 problems: enumerated
    with pytest.raises(ValueError, match="train split has"):
        task.examples("train", 100, seed=0)


def test_add_references():
    for ex in get_task("add", n_digits=2).examples("eval", 30, seed=1):
        a, b = ex.prompt[:-1].split("+")
        assert int(ex.answer) == int(a) + int(b) and ex.answer == str(int(ex.answer))


def test_add_padded_and_reversed_references():
    default = get_task("add", n_digits=2)
    assert default.params() == {"n_digits": 2}  # the flags stay out: split seeds and repr unchanged
    assert get_task("add", n_digits=2, pad=False).examples("train", 20, seed=1) == default.examples("train", 20, seed=1)
    padded = get_task("add", n_digits=2, pad=True)
    rev = get_task("add", n_digits=2, pad=True, reverse=True)
    assert rev.params() == {"n_digits": 2, "pad": True, "reverse": True}
    assert padded._make(5, 37) == Example("05+37=", "042") and rev._make(5, 37) == Example("05+37=", "240")
    assert rev._make(99, 99) == Example("99+99=", "891")
    for ex in rev.examples("eval", 30, seed=1):
        a, b = ex.prompt[:-1].split("+")
        assert len(a) == len(b) == 2 and len(ex.answer) == 3
        assert int(ex.answer[::-1]) == int(a) + int(b)
    assert rev.answer_tokens == default.answer_tokens == 4 and rev.completion_length == 8


def test_add_flags_validated():
    with pytest.raises(ValueError, match="reverse needs pad: true"):
        get_task("add", reverse=True)
    with pytest.raises(ValueError, match="parameter pad must be true or false, got 1"):
        get_task("add", pad=1)


def test_countdown_lite_every_reference_is_valid():
    task = get_task("countdown-lite")
    problems = list(task.enumerate_problems())
    assert len(problems) == task.split_size("train") + task.split_size("eval")
    for ex in problems:
        value, used = evaluate_expression(ex.answer)
        assert value == ex.columns["target"], ex
        assert sorted(used) == sorted(ex.columns["numbers"]), ex
        assert 1 <= ex.columns["target"] <= 50
        assert len(ex.answer) + 1 <= task.completion_length


def test_sudoku_grids_and_puzzles():
    grids = sudoku_solutions()
    assert len(grids) == 288 == len(set(grids))  # the known count of 4x4 sudoku grids
    task = get_task("sudoku-4x4", min_blanks=6, max_blanks=6)
    for ex in task.examples("train", 40, seed=0):
        puzzle = ex.columns["puzzle"]
        assert ex.prompt == f"sudoku:{puzzle}=" and puzzle.count("0") == 6
        assert ex.answer in grids and count_sudoku_solutions(puzzle) == 1
        assert all(p in ("0", s) for p, s in zip(puzzle, ex.answer))


def test_columns_collate_for_rewards():
    exs = get_task("countdown-lite").examples("train", 3, seed=0)
    cols = collate_columns(exs)
    assert set(cols) == {"answer", "numbers", "target"} and all(len(v) == 3 for v in cols.values())


def test_registry_errors():
    assert {"sort", "add", "countdown-lite", "sudoku-4x4"} <= set(list_tasks())
    with pytest.raises(ValueError, match="unknown task 'nope'; valid tasks: .*sort"):
        get_task("nope")
    with pytest.raises(ValueError, match=r"task 'sort' has no parameter 'width' \(unknown: width; valid: length, digits\)"):
        get_task("sort", width=3)
    with pytest.raises(ValueError, match="parameter length must be an integer"):
        get_task("sort", length=0)
    with pytest.raises(ValueError, match="split must be one of"):
        get_task("sort").examples("test", 1, seed=0)


@pytest.mark.parametrize("name, params", [
    ("sort", {"length": 6}), ("add", {"n_digits": 2}), ("chain", {"steps": 3}), ("countdown-lite", {}), ("sudoku-4x4", {}),
], ids=lambda v: v if isinstance(v, str) else "")
def test_answer_tokens_hold_the_longest_answer_and_its_eos(name, params):
    # answer_tokens is what `maskgrpo validate` holds a text sampler's gen_length to: every answer
    # plus its EOS fits, and the bound is reached (sort, chain, sudoku: fixed-width answers; add:
    # 99+99=198, 3 digits; countdown-lite: "(a+b)*c", 7 characters), so it refuses no gen_length
    # that could hold every answer.
    task = get_task(name, **params)
    answers = [e.answer for split in ("train", "eval") for e in task.examples(split, 40, seed=0)]
    assert max(len(a) for a in answers) + 1 == task.answer_tokens
    assert task.completion_length == -(-task.answer_tokens // 8) * 8  # the SFT target: rounded up to 8


def test_tasks_that_do_not_know_their_answers_declare_nothing():
    from maskgrpo.tasks import answer_tokens

    assert answer_tokens("sudoku-4x4", {}) == 17 and answer_tokens("sort", {"length": 6}) == 7
    assert answer_tokens("gsm8k", {}) is None  # a file task: unknown without reading the data (and not built)
    assert answer_tokens("toy-geneval", {}) is None  # image slots: sized by image.grid_size, not a text sampler
    assert answer_tokens("sort", {"length": 31}) == 32 and get_task("sort", length=31).completion_length == 32  # bench's sort31
    with pytest.raises(ValueError, match=r"parameter length must be an integer in \[1, 40\], got 41"):
        answer_tokens("sort", {"length": 41})
