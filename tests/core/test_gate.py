"""The promotion gate's decision on constructed metric pairs (core/gate.py)."""

import math

import pytest

from maskgrpo.core.gate import Guard, bootstrap_ci, decide


def pairs(n: int, challenger_wins: int, champion_wins: int) -> tuple[dict, dict]:
    """Per-example accuracy: ``challenger_wins`` examples only the challenger gets right,
    ``champion_wins`` only the champion, the rest both get right (paired)."""
    new = [1.0] * challenger_wins + [0.0] * champion_wins + [1.0] * (n - challenger_wins - champion_wins)
    old = [0.0] * challenger_wins + [1.0] * champion_wins + [1.0] * (n - challenger_wins - champion_wins)
    return {"accuracy": new, "reward": new}, {"accuracy": old, "reward": old}


def test_clear_improvement_promotes():
    new, old = pairs(200, 40, 5)
    d = decide(new, old, metric="accuracy", margin=0.05, min_examples=20)
    assert d["decision"] == "promote" and d["promote"]
    assert d["diff"] == pytest.approx(35 / 200)
    assert 0 < d["ci_low"] < d["diff"] < d["ci_high"]


def test_no_improvement_or_a_worse_challenger_is_rejected():
    new, old = pairs(200, 5, 40)
    d = decide(new, old, metric="accuracy", margin=0.0)
    assert d["decision"] == "reject" and not d["promote"] and d["diff"] < 0
    new, old = pairs(200, 12, 5)  # better, but by less than the margin
    assert decide(new, old, metric="accuracy", margin=0.05)["decision"] == "reject"


def test_guard_regression_rejects_even_a_better_gate_metric():
    new, old = pairs(200, 40, 5)
    new["completion_length"] = [12.0] * 200
    old["completion_length"] = [8.0] * 200
    guards = [Guard("completion_length", tolerance=2.0, higher_is_better=False)]
    d = decide(new, old, metric="accuracy", margin=0.0, guards=guards)
    assert d["decision"] == "reject" and "completion_length" in d["reason"]
    assert d["guards"][0]["regression"] == pytest.approx(4.0) and not d["guards"][0]["ok"]
    loose = [Guard("completion_length", tolerance=5.0, higher_is_better=False)]
    assert decide(new, old, metric="accuracy", margin=0.0, guards=loose)["decision"] == "promote"


def test_too_few_examples_to_tell_is_not_promoted():
    new, old = pairs(40, 3, 1)  # +5 points, but 4 discordant pairs: the interval reaches 0
    d = decide(new, old, metric="accuracy", margin=0.0, min_examples=20)
    assert d["diff"] > 0 and d["ci_low"] <= 0 and d["decision"] == "uncertain" and not d["promote"]
    new, old = pairs(10, 10, 0)  # a perfect sweep of 10 is still below min_examples
    assert decide(new, old, metric="accuracy", margin=0.0, min_examples=20)["decision"] == "uncertain"


def test_bootstrap_is_seeded_and_covers_the_mean():
    diff = [1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 1.0, 0.0] * 10
    a = bootstrap_ci(diff, 0.9, 2000, seed=7)
    assert a == bootstrap_ci(diff, 0.9, 2000, seed=7)
    assert a != bootstrap_ci(diff, 0.9, 2000, seed=8)
    mean = sum(diff) / len(diff)
    assert a[0] < mean < a[1]
    wide, narrow = bootstrap_ci(diff, 0.99, 2000, 0), bootstrap_ci(diff, 0.5, 2000, 0)
    assert wide[0] < narrow[0] and narrow[1] < wide[1]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="not paired"):
        decide({"accuracy": [1.0]}, {"accuracy": [1.0, 0.0]}, metric="accuracy", margin=0.0)
    with pytest.raises(ValueError, match="NaN"):
        decide({"accuracy": [math.nan]}, {"accuracy": [1.0]}, metric="accuracy", margin=0.0)
    with pytest.raises(ValueError, match="missing"):
        decide({"accuracy": [1.0]}, {"accuracy": [1.0]}, metric="reward", margin=0.0)
