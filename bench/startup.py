"""Start-up of a local run: Prefect's cost, and process start -> first stage for each runner.

    .venv/bin/python bench/startup.py                 # both runners on a tiny toy-text run
    .venv/bin/python bench/startup.py --prefect-only  # import prefect + an empty flow, twice

Writes bench/results/startup.json: ``import_prefect_s`` and ``empty_flow_first_s`` /
``empty_flow_second_s`` (a fresh PREFECT_HOME: the first flow of a process starts Prefect's
ephemeral API server), then per runner ``first_stage_start_s`` (process start to the JSON
``stage_start`` event of the first stage; both runners print it) and ``total_s``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFECT_PROBE = """
import json, os, time
t0 = time.perf_counter()
from maskgrpo.runners.local.flow import configure_prefect
configure_prefect()
from prefect import flow, task
imported = time.perf_counter() - t0
@task
def one(): return 1
@flow
def empty(): return one()
t1 = time.perf_counter(); empty(); first = time.perf_counter() - t1
t2 = time.perf_counter(); empty(); second = time.perf_counter() - t2
print(json.dumps({"import_prefect_s": imported, "empty_flow_first_s": first, "empty_flow_second_s": second}))
"""
TINY = ["sft.steps=20", "rl.rounds=1", "rl.prompts_per_round=8", "rl.group_size=4", "rl.minibatch_size=16",
        "task.train_size=200", "task.eval_size=20"]


def timed_run(runner: str, workdir: Path) -> dict:
    args = [sys.executable, "-m", "maskgrpo.cli", "run", str(ROOT / "pipelines" / "toy-text.yaml"), "--runner", runner,
            "--run-id", runner, "--log-format", "json", *[a for s in TINY for a in ("--set", s)]]
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    first = None
    for line in proc.stdout:
        if first is None and '"stage_start"' in line:
            first = time.perf_counter() - start
    proc.wait()
    return {"first_stage_start_s": first, "total_s": time.perf_counter() - start, "rc": proc.returncode}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefect-only", action="store_true")
    args = parser.parse_args()
    out: dict = {"load_average": os.getloadavg(), "cpus": os.cpu_count()}
    env = {**os.environ, "PREFECT_HOME": tempfile.mkdtemp(prefix="bench-prefect-")}
    probe = subprocess.run([sys.executable, "-c", PREFECT_PROBE], env=env, capture_output=True, text=True, check=True)
    out.update(json.loads(probe.stdout.strip().splitlines()[-1]))
    if not args.prefect_only:
        with tempfile.TemporaryDirectory() as tmp:
            out["runs"] = {runner: timed_run(runner, Path(tmp)) for runner in ("plain", "prefect")}
    out["load_average_end"] = os.getloadavg()  # the machine is shared: say what else ran
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "startup.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
