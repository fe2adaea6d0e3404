"""rewards/geneval.py: strict and soft scores, shown check by check."""

import doctest

import maskgrpo.rewards.geneval as module
from maskgrpo.rewards import get_reward
from maskgrpo.rewards.geneval import geneval_checks, geneval_soft, geneval_strict
from maskgrpo.tasks.geneval import grid_to_image, grid_to_png, text_to_grid

EMPTY = "0" * 64


def put(cells, code, text=EMPTY):
    chars = list(text)
    for r, c in cells:
        chars[r * 8 + c] = str(code)
    return "".join(chars)


SQUARE = [(0, 0), (0, 1), (1, 0), (1, 1)]
BAR = [(5, 4), (5, 5), (5, 6)]
COUNT2 = {"tag": "counting", "include": [{"class": "square", "count": 2}], "exclude": [{"class": "square", "count": 3}], "prompt": "two squares"}
POSITION = {"tag": "position", "include": [{"class": "square", "count": 1, "color": "red"},
                                           {"class": "bar", "count": 1, "color": "blue", "position": ["below", 0]}],
            "prompt": "a blue bar below a red square"}


def test_counting_partial_credit():
    one = put(SQUARE, 1)
    two = put([(r + 4, c) for r, c in SQUARE], 2, one)
    # one square of two: count score 1 - |1 - 2| / 2 = 0.5; exclude 1.0; clean 1.0 -> soft 2.5 / 3
    checks = geneval_checks([one], [COUNT2])[0]
    assert checks == {"include[0].count": 0.5, "exclude[0]": 1.0, "clean": 1.0}
    assert geneval_soft([""], [one], metadata=[COUNT2]) == [2.5 / 3]
    assert geneval_strict(["", ""], [one, two], metadata=[COUNT2, COUNT2]) == [0.0, 1.0]


def test_position_and_colour():
    good = put(BAR, 3, put(SQUARE, 1))  # red square rows 0-1, blue bar row 5: below by 5 - 0.5 = 4.5 cells
    swapped = put([(0, 4), (0, 5), (0, 6)], 3, put([(5, 0), (5, 1), (6, 0), (6, 1)], 1))  # bar above the square
    assert geneval_strict(["", ""], [good, swapped], metadata=[POSITION, POSITION]) == [1.0, 0.0]
    # swapped: both counts right (1.0, 1.0), position 0.0, clean 1.0 -> 3 / 4
    assert geneval_soft([""], [swapped], metadata=[POSITION]) == [0.75]


def test_stray_cells_break_strict_but_only_dent_soft():
    noisy = put([(7, 7)], 4, put(BAR, 3, put(SQUARE, 1)))
    # 3 components, 2 recognised: clean = 2/3; the other three checks pass -> soft (3 + 2/3) / 4
    assert geneval_strict([""], [noisy], metadata=[POSITION]) == [0.0]
    assert abs(geneval_soft([""], [noisy], metadata=[POSITION])[0] - (3 + 2 / 3) / 4) < 1e-12


def test_images_and_unreadable_completions():
    good = put(BAR, 3, put(SQUARE, 1))
    grid = text_to_grid(good, 8)
    assert geneval_strict(["", "", ""], [grid_to_image(grid), grid_to_png(grid), "not a grid"],
                          metadata=[POSITION] * 3) == [1.0, 1.0, 0.0]


def test_registered_and_doctests():
    assert get_reward("geneval_strict") is geneval_strict and get_reward("geneval_soft") is geneval_soft
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
