"""RL guard for the sampler's block KV cache (issue 18, item 3): not a test.

Runs the toy pipeline (pipelines/toy-text.yaml) with the rollout sampler's ``cache`` set to
``none``, ``dual`` and ``dual`` + threshold decoding (0.9), for several seeds: the same SFT warm
start per seed, the same rounds, prompts and group size, only the rollout sampler differs (the
evaluation sampler stays the pipeline's: greedy, no cache). Old log-probs are full forwards of the
estimator in every arm (core/text_sampler.py, "RL guard"), so this measures whether RL on the
cached sampler's completions learns as well. Per run: held-out greedy accuracy after SFT and after
RL, the gain, the rollout stage's wall seconds per round (sampling + old log-probs) and the
sampler's forwards per completion. Writes bench/results/cache_guard.json.

    .venv/bin/python bench/cache_guard.py [--seeds 0 1 2] [--set rl.sampler.block_length=4]

The stages run in-process over a file:// store in a temporary folder. Wall times depend on the
machine's load; the accuracies are exact and repeatable (fixed generators).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from ablation import aggregate, evaluations, run_stages  # noqa: E402
from common import RESULTS, environment  # noqa: E402

ARMS = {
    "none": [],
    "dual": ["rl.sampler.cache=dual"],
    "dual+threshold": ["rl.sampler.cache=dual", "rl.sampler.threshold=0.9"],
}


def run_arm(pipeline: Path, arm: str, seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        results, wall = run_stages(pipeline, [f"seed={seed}", *extra, *ARMS[arm]], f"{arm.replace('+', '-')}-s{seed}",
                                   f"file://{tmp}")
    evals = evaluations(results)
    rollouts = [r for name, r in results.items() if name.startswith("rollout_")]
    return {
        "arm": arm, "seed": seed,
        "baseline_accuracy": evals[0].accuracy, "final_accuracy": evals[-1].accuracy,
        "gain": evals[-1].accuracy - evals[0].accuracy,
        "rollout_seconds_per_round": statistics.fmean(r.wall_seconds for r in rollouts),
        "rollout_forwards_per_completion": statistics.fmean(r.forwards_per_completion for r in rollouts),
        "wall_seconds": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", type=Path, default=ROOT / "pipelines" / "toy-text.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--set", action="append", default=[], help="extra overrides for every arm, e.g. rl.rounds=4")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the tiny model on a loaded machine)")
    parser.add_argument("--out", type=Path, default=RESULTS / "cache_guard.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        for arm in args.arms:
            rows.append(run_arm(args.pipeline, arm, seed, args.set))
            print(json.dumps(rows[-1]), flush=True)
    report = {"bench": "cache_guard", "pipeline": str(args.pipeline.relative_to(ROOT)), "overrides": args.set,
              "environment": environment(torch.device("cpu")), "runs": rows, "by_arm": aggregate(rows, key="arm")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["by_arm"], indent=2))


if __name__ == "__main__":
    main()
