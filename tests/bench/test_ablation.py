"""bench/ablation.py's pure parts: the per-estimator learning-rate choice (--tune-lrs) and the
paired statistics (hand-made scores; no training)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("bench_ablation", ROOT / "bench" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_ablation", module)
    spec.loader.exec_module(module)
    return module


def test_choose_lrs_takes_the_best_score_per_estimator(ablation):
    scores = {"maskgrpo": {1e-4: 0.62, 3e-5: 0.58, 1e-5: 0.51},
              "spg": {1e-4: 0.03, 3e-5: 0.47, 1e-5: 0.55},
              "wd1": {1e-4: 0.10, 3e-5: 0.49, 1e-5: 0.44}}
    assert ablation.choose_lrs(scores) == {"maskgrpo": 1e-4, "spg": 1e-5, "wd1": 3e-5}


def test_choose_lrs_breaks_ties_towards_the_smaller_rate(ablation):
    assert ablation.choose_lrs({"d1": {1e-4: 0.5, 3e-5: 0.5, 1e-5: 0.4}}) == {"d1": 3e-5}
    assert ablation.choose_lrs({"d1": {1e-5: 0.5, 1e-4: 0.5}}) == {"d1": 1e-5}  # not the dict order


def test_choose_lrs_never_picks_a_failed_run(ablation):
    scores = {"espo": {1e-4: None, 3e-5: math.nan, 1e-5: 0.0}, "coupled": {1e-4: None}}
    assert ablation.choose_lrs(scores) == {"espo": 1e-5}  # coupled: nothing to choose, left out


def test_paired_difference_to_maskgrpo(ablation):
    rows = [{"estimator": e, "seed": s, "final_accuracy": a, "final_correct": c}
            for e, s, a, c in [("maskgrpo", 0, 0.5, [1, 0]), ("maskgrpo", 1, 0.5, [0, 1]),
                               ("d1", 0, 0.0, [0, 0]), ("d1", 1, 0.5, [0, 1])]]
    d = ablation.paired_difference(rows, "d1")
    assert d["per_seed"] == [-0.5, 0.0] and d["mean"] == -0.25 and (d["wins"], d["losses"]) == (0, 1)
    half = 12.706 * math.sqrt(0.125) / math.sqrt(2)  # t_{0.975, 1} * stdev / sqrt(n)
    assert d["ci95_t"] == pytest.approx([-0.25 - half, -0.25 + half])
    assert ablation.paired_difference(rows, "maskgrpo") is None


def test_lr_key_is_a_valid_run_id_and_reads_back(ablation):
    for lr in (1e-4, 3e-5, 1e-5, 2.5e-4):
        key = ablation.lr_key(lr)
        assert "." not in key and float(key.replace("p", ".")) == lr
