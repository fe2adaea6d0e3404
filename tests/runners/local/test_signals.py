"""``maskgrpo run`` as a process: SIGTERM mid-stage stops it at a safe point (exit 143, the running
stage abandoned and uncommitted, a line saying how to resume, and the resume finishes the run);
no process of its session outlives it, with the plain runner and with Prefect's (whose ephemeral
API server is a subprocess).

The SIGTERM test's child is the real CLI with one injected delay (``HOLD_ROLLOUT``): the rollout
stage waits inside its open store attempt, after its tensors are uploaded and before its samples
are. Without it the race was real: a tiny rollout finished, and the whole run with it, before the
test process (descheduled on a loaded machine) read the stage's start event and sent the signal,
so the run exited 0 (seen in ~2 of 8 batched runs). The wait makes "mid-stage, attempt open"
certain, whatever the load: the test signals when the child says it holds the attempt."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from maskgrpo.cli import main
from maskgrpo.store import open_store

PIPELINE = Path(__file__).resolve().parents[3] / "pipelines" / "toy-text.yaml"
SETS = ["sft.steps=5", "rl.rounds=1", "rl.prompts_per_round=4", "rl.group_size=4", "rl.minibatch_size=16",
        "task.train_size=50", "task.eval_size=8", "reward.functions=[{name: sort_dense}]"]


def set_args(sets: list[str]) -> list[str]:
    return [arg for s in sets for arg in ("--set", s)]


def session_processes(sid: int) -> list[str]:
    """'pid cmdline' of every live (non-zombie) process in session ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(f"{entry.name} {cmd.strip()}")
    return found


# The CLI, with the rollout's samples upload held for up to 5 minutes (the signal ends the wait).
HELD = "held: rollout attempt open"
HOLD_ROLLOUT = f"""
import sys, time
from maskgrpo.store.attempt import Attempt
real_put_jsonl = Attempt.put_jsonl
def held_put_jsonl(self, name, rows):
    if self.stage == "rollout":
        print("{HELD}", file=sys.stderr, flush=True)
        time.sleep(300)
    return real_put_jsonl(self, name, rows)
Attempt.put_jsonl = held_put_jsonl
from maskgrpo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start(args: list[str], cwd: Path, hold_rollout: bool = False) -> subprocess.Popen:
    entry = ["-c", HOLD_ROLLOUT] if hold_rollout else ["-m", "maskgrpo.cli"]
    return subprocess.Popen([sys.executable, *entry, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_sigterm_mid_stage_stops_at_a_safe_point_and_the_run_resumes(tmp_path, capsys):
    uri = f"file://{tmp_path / 'runs'}"
    proc = start(["run", str(PIPELINE), "--store", uri, "--run-id", "t", "--log-format", "json", *set_args(SETS)],
                 tmp_path, hold_rollout=True)
    events = []
    try:
        for line in proc.stdout:  # one JSON object per line: nothing else is printed on stdout
            events.append(json.loads(line))
            if events[-1] == {"event": "stage_start", "name": "rollout_1", "kind": "rollout", "round": 1}:
                break
        held = []
        for line in proc.stderr:  # rollout_1 runs; wait until it holds its open attempt
            held.append(line)
            if line.strip() == HELD:
                proc.send_signal(signal.SIGTERM)
                break
        rest, err = proc.communicate(timeout=300)
        err = "".join(held) + err
    finally:
        if proc.poll() is None:
            proc.kill()
    events += [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == 143, (err, events)
    assert session_processes(proc.pid) == []  # nothing of the run outlives it
    done = [e["name"] for e in events if e["event"] == "stage"]
    assert done == ["sft", "evaluate_0"], events  # rollout_1 was stopped, not finished
    assert events[-1]["event"] == "error" and "stopped by SIGTERM during rollout_1" in events[-1]["message"]
    assert "Traceback" not in err
    store = open_store(uri)
    committed = {(s["stage"], s["round"]) for s in store.list_stages("t") if s["committed"]}
    assert committed == {("sft", 0), ("evaluate", 0)}  # the abandoned attempt committed nothing
    line = err.strip().splitlines()[-1]
    assert line.startswith("maskgrpo: stopped by SIGTERM during rollout_1") and "resume with: " in line
    resume = shlex.split(line.split("resume with: ", 1)[1])
    assert resume[:2] == ["maskgrpo", "run"] and "--resume" in resume
    assert main(resume[1:]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped (committed)") == 2 and "rollout_1" in out
    assert (tmp_path / "runs" / "t" / "summary.json").exists()


@pytest.mark.slow
def test_prefect_runner_logs_json_and_leaves_no_process_behind(tmp_path):
    # Prefect's ephemeral API server is a uvicorn subprocess: it must end with the run.
    # One Prefect start (the costly part) also checks --log-format json under --runner prefect.
    proc = start(["run", str(PIPELINE), "--store", f"file://{tmp_path / 'runs'}", "--run-id", "p",
                  "--runner", "prefect", "--log-format", "json", *set_args(SETS)], tmp_path)
    try:
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]  # stdout: one JSON object per line, nothing else
    names = ["sft", "evaluate_0", "rollout_1", "score_1", "update_1", "evaluate_1"]
    assert events[0]["event"] == "run" and events[0]["runner"] == "prefect"
    assert [(e["event"], e["name"]) for e in events[1:-1]] == [(kind, n) for n in names for kind in ("stage_start", "stage")]
    assert events[-1]["event"] == "summary" and events[-1]["summary"]["run_id"] == "p"
    assert events[-2]["result"]["accuracy"] == events[-1]["summary"]["final"]["accuracy"]
    assert session_processes(proc.pid) == []


def test_a_signal_in_a_stage_start_hook_still_names_the_stage(tmp_path):
    # Interrupted raised by the handler while on_start prints the stage's start line (before the
    # stage body runs) carries the stage's name, like one raised inside the stage.
    from maskgrpo.plan import build_plan
    from maskgrpo.runners.local.plain import Interrupted, execute
    from maskgrpo.specs import load_run_spec

    calls = build_plan(load_run_spec(PIPELINE, SETS), run_id="t", store=f"file://{tmp_path}")

    def on_start(call):
        if call.name == "sft":
            raise Interrupted(signal.SIGTERM)

    with pytest.raises(Interrupted) as stop:
        execute(calls, open_store(f"file://{tmp_path}"), on_start=on_start)
    assert stop.value.stage == "sft" and stop.value.exit_code == 143
