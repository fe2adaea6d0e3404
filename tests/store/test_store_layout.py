"""Key layout: pure functions, no I/O."""

from datetime import datetime, timezone

import pytest

from maskgrpo.store.layout import (
    attempt_created, check_name, new_attempt_id, parse_round, pointer_key, run_file_key,
    stage_prefix,
)


def test_stage_prefix_and_run_file_key():
    assert stage_prefix("run-1", "rollout", 3) == "run-1/rollout/3"
    assert stage_prefix("run-1", "sft", None) == "run-1/sft/-"
    assert stage_prefix("run-1", "evaluate", 0) == "run-1/evaluate/0"
    assert pointer_key("r", "score", 2) == "r/score/2/_POINTER.json"
    assert run_file_key("r", "summary.json") == "r/summary.json"
    assert run_file_key("r", "plots.d/curve.png") == "r/plots.d/curve.png"


@pytest.mark.parametrize("run_id,stage,rnd", [
    ("", "sft", None), ("a/b", "sft", None), ("..", "sft", None), ("r", "s.x", None),
    ("r", "sft", -1), ("r", "sft", True), ("r", "sft", "1"), ("r", "", 0),
])
def test_stage_prefix_rejects_bad_parts(run_id, stage, rnd):
    with pytest.raises(ValueError):
        stage_prefix(run_id, stage, rnd)


@pytest.mark.parametrize("name", ["", "/abs", "a//b", "../x", "a/./b", ".hidden", "a/"])
def test_bad_file_names(name):
    with pytest.raises(ValueError):
        check_name(name)


def test_run_file_needs_extension_so_it_cannot_shadow_a_stage():
    with pytest.raises(ValueError, match="extension"):
        run_file_key("r", "sft")


def test_round_segments_round_trip():
    assert [parse_round(s) for s in ("-", "0", "17")] == [None, 0, 17]
    for bad in ("01", "x", "", "-1"):
        with pytest.raises(ValueError):
            parse_round(bad)


def test_attempt_ids_sort_by_time_and_encode_it():
    t1 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    t2 = datetime(2026, 1, 2, 3, 4, 6, tzinfo=timezone.utc)
    a, b = new_attempt_id(t1), new_attempt_id(t2)
    assert a.startswith("20260102T030405Z-") and a < b
    assert attempt_created(a) == t1
    assert attempt_created("not-an-attempt") is None
    assert new_attempt_id(t1) != a  # random suffix
