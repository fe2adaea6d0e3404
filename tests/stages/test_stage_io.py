"""Stages as processes (``python -m maskgrpo.stages.<kind>``) and on bad input: a missing
checkpoint and a corrupted rollout each fail with an error naming the URI, and no stage output
that was not committed before becomes committed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from maskgrpo.stages import get_stage
from maskgrpo.artifacts import ROLLOUT as ROLLOUT_FILE
from maskgrpo.artifacts import SCORES as SCORES_FILE
from maskgrpo.store import CorruptOutputError, NotCommittedError

from .conftest import RUN_ID, committed_stages, files_under


def test_stage_main_as_a_subprocess(tiny_run, tmp_path):
    store, root = tiny_run.copy_store(tmp_path / "runs")
    spec = tiny_run.spec_in("score_1", store)
    spec_file = tmp_path / "score.json"
    spec_file.write_text(spec.model_dump_json())
    metrics, summary = tmp_path / "out" / "metrics.json", tmp_path / "out" / "summary.md"
    proc = subprocess.run(
        [sys.executable, "-m", "maskgrpo.stages.score", "--spec", f"@{spec_file}",
         "--metrics-path", str(metrics), "--summary-path", str(summary)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    # the copy's store URI differs, so the spec hash differs: the stage ran and replaced the pointer
    committed = store.open(RUN_ID, "score", 1)
    assert committed.spec_hash != tiny_run.store.open(RUN_ID, "score", 1).spec_hash
    # same rollouts, same rewards: the process computed what the in-process call did
    assert committed.get_tensors(SCORES_FILE)["advantages"].tolist() == \
        tiny_run.store.open(RUN_ID, "score", 1).get_tensors(SCORES_FILE)["advantages"].tolist()
    flat = json.loads(metrics.read_text())
    assert flat["reward_mean"] == pytest.approx(tiny_run.results["score_1"].reward_mean)
    assert f"# score (run {RUN_ID}, round 1)" in summary.read_text()


def test_stage_main_rejects_a_bad_spec(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "maskgrpo.stages.score", "--spec",
         json.dumps({"kind": "score", "store": f"file://{tmp_path}/runs", "run_id": "r", "round": 1,
                     "task": {}, "reward": {}, "rl": {"group_size": 1}})],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "--spec: rl.group_size: Input should be greater than or equal to 2" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_checkpoint_names_the_uri(tiny_run, tmp_path):
    store, root = tiny_run.copy_store(tmp_path / "runs")
    (root / RUN_ID / "sft" / "0" / "_POINTER.json").unlink()
    shutil.rmtree(root / RUN_ID / "update" / "1")
    before = committed_stages(store, RUN_ID)
    with pytest.raises(NotCommittedError) as info:
        get_stage("update")(tiny_run.spec_in("update_1", store), store)
    assert f"file://{root}/{RUN_ID}/sft/0/_POINTER.json does not exist" in str(info.value)
    assert committed_stages(store, RUN_ID) == before
    assert not (root / RUN_ID / "update" / "1").exists()  # not even an orphan: it failed before writing


def test_corrupted_rollout_names_the_file(tiny_run, tmp_path):
    store, root = tiny_run.copy_store(tmp_path / "runs")
    committed = store.open(RUN_ID, "rollout", 1)
    path = root / RUN_ID / "rollout" / "1" / committed.attempt_id / ROLLOUT_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one bit in the tensor payload
    path.write_bytes(bytes(data))
    shutil.rmtree(root / RUN_ID / "update" / "1")
    before, files = committed_stages(store, RUN_ID), files_under(root)
    with pytest.raises(CorruptOutputError) as info:
        get_stage("update")(tiny_run.spec_in("update_1", store), store)
    assert f"file://{root}/{RUN_ID}/rollout/1/{committed.attempt_id}/{ROLLOUT_FILE}" in str(info.value)
    assert "fails its xxh3_128 check" in str(info.value)  # the default per-file digest
    assert committed_stages(store, RUN_ID) == before
    assert files_under(root) == files  # failed before writing anything
