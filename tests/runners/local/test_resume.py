"""Resume after SIGKILL (issue "The embedded default", item 8).

``maskgrpo run`` runs as a subprocess on the tiny config; when it prints the progress line of
``score_2`` (stdout unbuffered), update_2 has just started and the process is SIGKILLed. Then
``maskgrpo run --resume --run-id SAME`` must recompute nothing that was committed (attempt ids
and manifests unchanged) and end with the same final weights as the uninterrupted shared run
(``final_weight_digest``), because every draw comes from the stage seeds and the optimizer state
round-trips exactly through safetensors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from maskgrpo.cli import main
from maskgrpo.store import open_store

RUN_ID = "killed"


def committed_outputs(store, run_id):
    """(stage, round) -> (attempt id, manifest bytes) for every committed stage output."""
    out = {}
    for s in store.list_stages(run_id):
        if s["committed"]:
            c = store.open(run_id, s["stage"], s["round"])
            out[(s["stage"], s["round"])] = (c.attempt_id, json.dumps(c.manifest, sort_keys=True))
    return out


@pytest.mark.slow
def test_resume_after_sigkill_in_update_recomputes_nothing_and_matches(cli_run, run_args, capsys):
    uri = cli_run.uri
    proc = subprocess.Popen(
        [sys.executable, "-m", "maskgrpo.cli", "run", *run_args, "--store", uri, "--run-id", RUN_ID],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    seen = []
    try:
        for line in proc.stdout:  # ends at EOF if the run dies first: the assertions below say so
            seen.append(line.rstrip())
            if "] score_2 " in line:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        if proc.poll() is None and not any("] score_2 " in s for s in seen):
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, seen
    store = open_store(uri)
    before = committed_outputs(store, RUN_ID)
    # killed in update_2: everything up to score_2 is committed, update_2 is not
    assert set(before) == {("sft", 0), ("evaluate", 0), ("rollout", 1), ("score", 1), ("update", 1),
                           ("rollout", 2), ("score", 2)}, (sorted(before), seen)
    assert store.committed(RUN_ID, "update", 2) is None
    assert not (cli_run.root / RUN_ID / "summary.json").exists()

    assert main(["run", *run_args, "--store", uri, "--run-id", RUN_ID, "--resume"]) == 0
    out = capsys.readouterr().out
    after = committed_outputs(store, RUN_ID)
    assert {k: after[k] for k in before} == before  # nothing committed was recomputed
    assert set(after) - set(before) == {("update", 2), ("evaluate", 2)}
    for name in ("sft", "evaluate_0", "rollout_1", "score_1", "update_1", "rollout_2", "score_2"):
        assert f"] {name}" in out and "skipped (committed)" in out.split(f"] {name}")[1].splitlines()[0]

    resumed = json.loads((cli_run.root / RUN_ID / "summary.json").read_text())
    reference = json.loads((cli_run.root / cli_run.run_id / "summary.json").read_text())
    assert resumed["final_weight_digest"] == reference["final_weight_digest"]
    timing = ("run_id", "store", "wall_seconds", "processes", "time")
    strip = lambda s: {k: v for k, v in s.items() if k not in timing}  # noqa: E731
    assert strip(resumed) == strip(reference)
    # wall_seconds counts both processes: the killed one up to its last finished stage, and this one
    processes = json.loads((cli_run.root / RUN_ID / "processes.json").read_text())
    assert len(processes) == 2 and resumed["processes"] == 2 and processes[0]["seconds"] > 0
    assert resumed["wall_seconds"] >= processes[0]["seconds"] + processes[1]["seconds"]
    assert "over 2 processes (resumed)" in (cli_run.root / RUN_ID / "report.md").read_text()
