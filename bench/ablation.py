"""Estimator ablation at toy scale (issue "embedded default", item 9): not a test.

Runs the embedded default (pipelines/toy-text.yaml) with each importance estimator, d1, unigrpo,
maskgrpo (AR-like) and coupled, at an equal rollout budget (same rounds, prompts and group size,
same SFT warm start per seed), for several seeds; writes per-run rows and per-estimator
aggregates (final accuracy mean and spread, gain over the SFT baseline, forwards per completion
spent by the update, wall time) to bench/results/ablation.json.

    .venv/bin/python bench/ablation.py [--seeds 0 1 2] [--estimators d1 unigrpo maskgrpo coupled]

The stages run in-process over a file:// store in a temporary folder (no Prefect: the bench
measures the algorithm, not the orchestrator). Wall times depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from common import RESULTS, environment  # noqa: E402

from maskgrpo.plan import build_plan  # noqa: E402
from maskgrpo.specs import load_run_spec  # noqa: E402
from maskgrpo.stages import get_stage  # noqa: E402
from maskgrpo.store import open_store  # noqa: E402


def run_stages(pipeline: Path, overrides: list[str], run_id: str, store_dir: str) -> tuple[dict, float]:
    """Every stage of the pipeline in-process: ({stage call name: result}, wall seconds)."""
    run = load_run_spec(pipeline, overrides)
    store = open_store(store_dir)
    start = time.perf_counter()
    results = {call.name: get_stage(call.kind)(call.spec, store) for call in build_plan(run, run_id, store.uri, 1)}
    return results, time.perf_counter() - start


def evaluations(results: dict) -> list:
    """The evaluate results in round order (the first is the SFT baseline)."""
    return [r for _, r in sorted((int(name.split("_")[1]), r) for name, r in results.items() if name.startswith("evaluate_"))]


def run_once(pipeline: Path, estimator: str, seed: int, store_dir: str, extra: list[str]) -> dict:
    results, wall = run_stages(pipeline, [f"rl.estimator={estimator}", f"seed={seed}", *extra], f"{estimator}-s{seed}",
                               store_dir)
    evals = evaluations(results)
    updates = [r for name, r in results.items() if name.startswith("update_")]
    update_seconds = sum(r.wall_seconds for r in updates)
    return {
        "estimator": estimator, "seed": seed,
        "baseline_accuracy": evals[0].accuracy, "final_accuracy": evals[-1].accuracy,
        "gain": evals[-1].accuracy - evals[0].accuracy,
        "update_forwards_per_completion": statistics.fmean(r.forwards_per_completion for r in updates),
        "update_seconds": update_seconds, "wall_seconds": wall,
    }


def aggregate(rows: list[dict], key: str = "estimator") -> dict:
    """Per value of ``key``: the mean of every numeric column, and the spread of the accuracy and gain."""
    out = {}
    for name in dict.fromkeys(r[key] for r in rows):
        mine = [r for r in rows if r[key] == name]
        entry = {}
        for column in (c for c in mine[0] if c not in (key, "seed")):
            values = [r[column] for r in mine]
            entry[f"{column}_mean"] = statistics.fmean(values)
            if column in ("final_accuracy", "gain"):
                entry[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out[name] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", type=Path, default=ROOT / "pipelines" / "toy-text.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--estimators", nargs="+", default=["d1", "unigrpo", "maskgrpo", "coupled"])
    parser.add_argument("--set", action="append", default=[], help="extra overrides, e.g. rl.rounds=4")
    parser.add_argument("--out", type=Path, default=RESULTS / "ablation.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for estimator in args.estimators:
                row = run_once(args.pipeline, estimator, seed, tmp, args.set)
                rows.append(row)
                print(json.dumps(row), flush=True)
    report = {"bench": "ablation", "pipeline": str(args.pipeline.relative_to(ROOT)), "overrides": args.set,
              "environment": environment(torch.device("cpu")), "runs": rows, "by_estimator": aggregate(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["by_estimator"], indent=2))


if __name__ == "__main__":
    main()
