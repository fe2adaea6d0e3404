"""Toy rewards: worked examples, safe evaluation, and agreement with the toy tasks' references."""

import pytest

from maskgrpo.rewards import get_reward
from maskgrpo.rewards.toy import (
    add_reward,
    countdown_reward,
    evaluate_expression,
    sort_dense,
    sort_exact,
    sudoku_reward,
)
from maskgrpo.tasks import collate_columns, get_task


@pytest.mark.parametrize("name", ["sort", "add", "countdown-lite", "sudoku-4x4"])
def test_reference_answers_score_full_marks(name):
    task = get_task(name)
    exs = task.examples("eval", 30, seed=0)
    fn = get_reward(task.reward)
    cols = collate_columns(exs)
    assert fn([e.prompt for e in exs], [e.answer for e in exs], **cols) == [1.0] * 30
    # the same answers wrapped in <answer> tags score the same (auto-detected)
    tagged = [f"reason <answer>{e.answer}</answer>" for e in exs]
    assert fn([e.prompt for e in exs], tagged, **cols) == [1.0] * 30


def test_sort():
    # "0213" vs "0123": positions 0 and 3 right -> 2/4
    assert sort_exact(["p"] * 2, ["0123", "0213"], answer=["0123"] * 2) == [1.0, 0.0]
    assert sort_dense(["p"] * 3, ["0213", "", "01"], answer=["0123"] * 3) == [0.5, 0.0, 0.5]
    assert sort_exact(["p"], ["1"], answer=[None]) == [None]  # missing reference


def test_add_partial_credit():
    # "1000" vs "999": no digit matches aligned from the right -> 0
    # "998"  vs "999": 2 of 3 -> 0.5 * 2/3
    assert add_reward(["p"] * 3, ["999", "1000", "998"], answer=["999"] * 3) == [1.0, 0.0, 0.5 * 2 / 3]
    assert add_reward(["p"], [""], answer=["5"]) == [0.0]


@pytest.mark.parametrize("text,value,used", [
    ("1+2*3", 7, [1, 2, 3]),
    ("(1+2)*3", 9, [1, 2, 3]),
    ("8/(3-1)", 4, [8, 3, 1]),
    (" 6 / 4 ", 1.5, [6, 4]),
])
def test_evaluate_expression(text, value, used):
    v, u = evaluate_expression(text)
    assert v == value and u == used


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", "2**3", "7//2", "-3+4", "1.5+2", "0x10", "1e3", "(1+2",
    "1/(2-2)", "", "1 2", "9" * 300, "(" * 200 + "1" + ")" * 200, "3;4",
])
def test_evaluate_expression_rejects(text):
    assert evaluate_expression(text) is None


def test_countdown_scores():
    nums, tgt = [[3, 5, 7]] * 6, [22] * 6
    comps = [
        "3*5+7",      # 15 + 7 = 22, each number once -> 1.0
        "7+3*5",      # the same in another order -> 1.0
        "3*5+7+0",    # right value but an extra number -> 0.1
        "3*7+5",      # 26 -> wrong -> 0.1
        "3*5+7=22",   # "=" is not part of an expression -> 0.1
        "  ",         # nothing -> 0.0
    ]
    assert countdown_reward(["p"] * 6, comps, numbers=nums, target=tgt) == [1.0, 1.0, 0.1, 0.1, 0.1, 0.0]
    # fractions are exact: 7/3*3 == 7, (6+1) uses both numbers... 9/(5-2) = 3
    assert countdown_reward(["p"], ["9/(5-2)"], numbers=[[9, 5, 2]], target=[3]) == [1.0]


def test_countdown_answer_tag_modes():
    fn = get_reward("countdown_tagged")
    kw = dict(numbers=[[3, 5, 7]] * 3, target=[22] * 3)
    comps = ["<answer>3*5+7</answer>", "3*5+7", "<answer>bad</answer>"]
    assert fn(["p"] * 3, comps, **kw) == [1.0, 0.0, 0.1]
    assert countdown_reward(["p"] * 3, comps, **kw) == [1.0, 1.0, 0.1]
    assert countdown_reward(["p"], ["<answer>3*5+7</answer>"], answer_tag=False, **{k: v[:1] for k, v in kw.items()}) == [0.1]


def test_sudoku_scores():
    puzzle, solution = "3102200002100320", "3142243142131324"
    # 8 blanks: indices 2 5 6 7 8 11 12 15; "0"*16 fills none
    assert sudoku_reward(["p"] * 2, ["0" * 16, "3142-2431-4213-1324"], puzzle=[puzzle] * 2,
                         answer=[solution] * 2) == [0.0, 1.0]  # non-digits are ignored
    assert get_reward("sudoku_tagged")(["p"], [solution], puzzle=[puzzle], answer=[solution]) == [0.0]
    with pytest.raises(ValueError, match="16 digits"):
        sudoku_reward(["p"], ["1"], puzzle=["12"], answer=["12"])


def test_misaligned_columns_name_the_column():
    with pytest.raises(ValueError, match="column 'answer' has 1 rows but there are 2 completions"):
        sort_exact(["p", "q"], ["1", "2"], answer=["1"])


def test_chat_style_completions():
    comps = [[{"role": "assistant", "content": "012"}]]
    assert sort_exact(["p"], comps, answer=["012"]) == [1.0]
