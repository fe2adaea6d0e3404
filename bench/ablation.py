"""Estimator ablation at toy scale: not a test.

Runs a pipeline (default pipelines/toy-chain.yaml: chain arithmetic, 32-token completions) with
each estimator/objective, d1, random (the paper's seeded masks), unigrpo, maskgrpo (AR-like),
coupled, spg, wd1 and espo, at an equal rollout budget (same rounds, prompts and group size) and,
per seed, the same SFT warm start and baseline: every estimator of a seed runs under one run id,
so the SFT and the baseline evaluation are computed once and skipped after (same spec hash),
while every RL stage differs by its spec and is recomputed. Writes per-run rows and
per-estimator aggregates to bench/results/ablation.json: final accuracy mean and std over seeds,
the paired difference to maskgrpo (same seed, same SFT) with a t-based 95% confidence interval,
update forwards per completion, rollout log-prob forwards per completion (old + reference; 0 for
the ratio-free spg and wd1), wall time.

    .venv/bin/python bench/ablation.py [--seeds 0 1 2] [--estimators d1 random maskgrpo ...] [--set rl.rounds=4]
    .venv/bin/python bench/ablation.py --pipeline pipelines/toy-text.yaml --estimators d1 unigrpo maskgrpo coupled

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


ESTIMATORS = ["d1", "random", "unigrpo", "maskgrpo", "coupled", "spg", "wd1", "espo"]
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # t_{0.975, df}


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
    # one run id per seed, shared by its estimators: the SFT and the baseline run once
    results, wall = run_stages(pipeline, [f"rl.estimator={estimator}", f"seed={seed}", *extra], f"s{seed}", store_dir)
    evals = evaluations(results)
    updates = [r for name, r in results.items() if name.startswith("update_")]
    rollouts = [r for name, r in results.items() if name.startswith("rollout_")]
    update_seconds = sum(r.wall_seconds for r in updates)
    return {
        "estimator": estimator, "seed": seed,
        "baseline_accuracy": evals[0].accuracy, "final_accuracy": evals[-1].accuracy,
        "final_reward_mean": evals[-1].reward_mean,
        "gain": evals[-1].accuracy - evals[0].accuracy,
        "update_forwards_per_completion": statistics.fmean(r.forwards_per_completion for r in updates),
        "logprob_forwards_per_completion": statistics.fmean(r.logprob_forwards_per_completion for r in rollouts),
        "update_seconds": update_seconds, "rl_wall_seconds": sum(r.wall_seconds for r in updates + rollouts),
        "wall_seconds": wall,
    }


def paired_difference(rows: list[dict], name: str, baseline: str = "maskgrpo") -> dict | None:
    """Mean of (final accuracy of ``name`` - of ``baseline``) over the seeds both ran, with a
    t-based 95% confidence interval (paired: same seed, same SFT warm start)."""
    base = {r["seed"]: r["final_accuracy"] for r in rows if r["estimator"] == baseline}
    diffs = [r["final_accuracy"] - base[r["seed"]] for r in rows if r["estimator"] == name and r["seed"] in base]
    if name == baseline or not diffs:
        return None
    mean = statistics.fmean(diffs)
    half = T975.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("inf")
    return {"mean": mean, "ci95": [mean - half, mean + half], "seeds": len(diffs)}


def aggregate(rows: list[dict], key: str = "estimator") -> dict:
    """Per value of ``key``: the mean of every numeric column, the spread of the accuracy and gain,
    and (per estimator) the paired difference to maskgrpo."""
    out = {}
    for name in dict.fromkeys(r[key] for r in rows):
        mine = [r for r in rows if r[key] == name]
        entry = {}
        for column in (c for c in mine[0] if c not in (key, "seed")):
            values = [r[column] for r in mine]
            entry[f"{column}_mean"] = statistics.fmean(values)
            if column in ("final_accuracy", "gain"):
                entry[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        if key == "estimator":
            entry["difference_to_maskgrpo"] = paired_difference(rows, name)
        out[name] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", type=Path, default=ROOT / "pipelines" / "toy-chain.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--estimators", nargs="+", default=ESTIMATORS)
    parser.add_argument("--set", action="append", default=[], help="extra overrides, e.g. rl.rounds=4")
    parser.add_argument("--out", type=Path, default=RESULTS / "ablation.json")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--store", type=Path, help="keep the runs in this folder (default: a temporary one)")
    parser.add_argument("--merge", type=Path, nargs="+", help="combine the runs of these result files (one process per seed)")
    args = parser.parse_args()
    if args.merge:
        reports = [json.loads(path.read_text()) for path in args.merge]
        rows = [row for report in reports for row in report["runs"]]
        report = {**reports[0], "runs": rows, "by_estimator": aggregate(rows), "merged": [str(p) for p in args.merge]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(json.dumps(report["by_estimator"], indent=2))
        return
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = str(args.store) if args.store else tmp
        for seed in args.seeds:
            for estimator in args.estimators:
                row = run_once(args.pipeline, estimator, seed, tmp, args.set)
                rows.append(row)
                print(json.dumps(row), flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with args.out.with_suffix(".partial.jsonl").open("a") as partial:
                    partial.write(json.dumps(row) + "\n")
    report = {"bench": "ablation", "pipeline": str(args.pipeline.relative_to(ROOT)), "overrides": args.set,
              "environment": environment(torch.device("cpu")), "runs": rows, "by_estimator": aggregate(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["by_estimator"], indent=2))


if __name__ == "__main__":
    main()
