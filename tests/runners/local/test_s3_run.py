"""The tiny pipeline end to end against a real S3 server on loopback (SeaweedFS): one round,
then ``maskgrpo show`` on the s3:// run URI."""

from __future__ import annotations

import json
import uuid

import pytest

from maskgrpo.cli import main
from maskgrpo.store import open_store
from maskgrpo.store.testing import TEST_BUCKET


@pytest.mark.s3
@pytest.mark.slow
def test_tiny_pipeline_on_s3(s3_env, run_args, capsys):
    uri = f"s3://{TEST_BUCKET}/e2e-{uuid.uuid4().hex[:8]}"
    assert main(["run", *run_args, "--set", "rl.rounds=1", "--store", uri, "--run-id", "s3run"]) == 0
    store = open_store(uri)
    summary = json.loads(store.read_run_file("s3run", "summary.json"))
    assert summary["run_id"] == "s3run" and [r["round"] for r in summary["rounds"]] == [1]
    assert summary["final_weight_digest"] == store.open("s3run", "update", 1).get_json("metrics.json")["weight_digest"]
    assert store.read_run_file("s3run", "curve.png")[:4] == b"\x89PNG"
    committed = [(s["stage"], s["round"]) for s in store.list_stages("s3run") if s["committed"]]
    assert sorted(committed) == [("evaluate", 0), ("evaluate", 1), ("rollout", 1), ("score", 1), ("sft", 0), ("update", 1)]
    capsys.readouterr()
    assert main(["show", f"{uri}/s3run"]) == 0
    assert f"run s3run in {uri}" in capsys.readouterr().out
