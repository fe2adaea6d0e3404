"""GSM8K and MATH rewards: worked cases beyond the docstrings."""

import pytest

from maskgrpo.rewards import get_reward
from maskgrpo.rewards.math_equiv import is_equiv, strip_string
from maskgrpo.rewards.reasoning import gsm8k_reward, math_reward

GOOD = "<reasoning>\n{r}\n</reasoning>\n<answer>\n\\boxed{{{a}}}\n</answer>"


def test_gsm8k_components_add_up():
    comps = [
        GOOD.format(r="5*200=1000", a="1,000"),  # 0.5 format + 0.5 int + 2.0 right = 3.0
        GOOD.format(r="...", a="999"),           # 0.5 + 0.5 + 0 = 1.0
        "\\boxed{1000}",                         # 0 + 0.5 + 2.0 = 2.5
        "<answer>1000</answer>",                 # no box: the answer tag is used -> 2.5
        GOOD.format(r="...", a="1000.5"),        # not an integer, wrong: 0.5
        "the answer is 1000",                    # nothing extractable: 0
    ]
    assert gsm8k_reward(["q"] * 6, comps, answer=["1000"] * 6) == [3.0, 1.0, 2.5, 2.5, 0.5, 0.0]
    assert get_reward("gsm8k") is gsm8k_reward


def test_gsm8k_last_box_wins_and_missing_reference():
    comp = "first \\boxed{7} then \\boxed{8}"
    assert gsm8k_reward(["q"] * 2, [comp, comp], answer=["8", None]) == [2.5, None]


@pytest.mark.parametrize("a,b", [
    ("\\frac{1}{2}", "\\dfrac12"),
    ("0.5", "\\frac{1}{2}"),
    ("\\left(1,2\\right)", "(1, 2)"),
    ("5\\%", "5"),
    ("x=5", "5"),
    ("\\sqrt3", "\\sqrt{3}"),
    ("3/4", "\\frac{3}{4}"),
    (".25", "0.25"),
    ("10 \\text{ inches}", "10"),
    ("\\$4", "4"),
    ("30^\\circ", "30"),
    ("\\tfrac{2}{3}", "\\frac23"),
])
def test_math_equivalences(a, b):
    assert is_equiv(a, b), (strip_string(a), strip_string(b))


@pytest.mark.parametrize("a,b", [("1/2", "2"), ("\\frac{1}{3}", "0.33"), ("(1,2)", "[1,2]"), ("x^2", "x^3")])
def test_math_non_equivalences(a, b):
    assert not is_equiv(a, b)


def test_math_reward_values():
    comps = ["so \\boxed{\\dfrac{3}{4}}", "\\boxed{0.75}", "3/4", "\\boxed{\\frac{3}{4}"]
    # 2.0 + 0.5; boxed but not equivalent (0.75 is not normalised to a fraction): 0.5;
    # no box: 0.25; an unclosed box has no extractable answer but contains "\boxed": 0.5
    assert math_reward(["q"] * 4, comps, answer=["\\boxed{\\frac34}"] * 4) == [2.5, 0.5, 0.25, 0.5]
