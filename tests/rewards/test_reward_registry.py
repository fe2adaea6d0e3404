"""Reward registry and weighted sums."""

import math

import pytest

from maskgrpo.rewards import combine, get_reward, list_rewards, weighted_sum


def test_registry_names_and_errors():
    names = list_rewards()
    for n in ["sort_exact", "sort_dense", "add", "countdown", "sudoku", "code"]:
        assert n in names
    with pytest.raises(ValueError, match="unknown reward 'nope'; valid rewards: .*sort_exact"):
        get_reward("nope")


@pytest.mark.parametrize("name", [n for n in ["sort_exact", "sort_dense", "add", "countdown",
                                              "countdown_tagged", "sudoku", "sudoku_tagged"]])
def test_registered_rewards_resolve(name):
    assert callable(get_reward(name))


def test_combine_skips_none_and_nan():
    # row 0: 1*1 + 2*0.25 = 1.5; row 1: None skipped -> 2*0.5 = 1.0; row 2: both skipped -> 0.0
    got = combine([[1.0, None, float("nan")], [0.25, 0.5, None]], [1.0, 2.0])
    assert got == [1.5, 1.0, 0.0]
    with pytest.raises(ValueError, match="2 reward lists but 1 weights"):
        combine([[1.0], [1.0]], [1.0])
    with pytest.raises(ValueError, match="returned 2 values, expected 1"):
        combine([[1.0], [1.0, 2.0]], [1.0, 1.0])


def test_weighted_sum_mixes_names_and_callables():
    def half(prompts, completions, **_):
        return [0.5 if c else None for c in completions]

    total = weighted_sum(["sort_dense", half], [2.0, 1.0])
    # "0123": dense 1 -> 2*1 + 0.5 = 2.5; "": dense 0, half None -> 0.0
    assert total(["p", "p"], ["0123", ""], answer=["0123", "0123"]) == [2.5, 0.0]
    assert not any(math.isnan(v) for v in total(["p"], ["1"], answer=["0"]))
    with pytest.raises(ValueError, match="2 functions but 1 weights"):
        weighted_sum(["sort_exact", "add"], [1.0])
