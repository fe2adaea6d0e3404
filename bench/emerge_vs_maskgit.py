"""Emerge vs MaskGIT rollouts from the same SFT checkpoint: the paper's diversity claim (§2.3).

For each seed: run the pipeline's SFT once, then for each sampler (same steps, CFG, temperature)
sample G images per prompt for the same training prompts and report the in-group reward std,
the zero-std group ratio and the rollout accuracy; with ``--rounds R > 0`` also run R MaskGRPO
rounds per sampler and report held-out accuracy before and after. JSON goes to bench/results/.

    .venv/bin/python bench/emerge_vs_maskgit.py pipelines/toy-image.yaml --seeds 0 1 2 --rounds 0
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
import time
from pathlib import Path
from statistics import fmean

import torch

from maskgrpo.core.advantages import group_advantages
from maskgrpo.plan import build_plan
from maskgrpo.specs import load_run_spec
from maskgrpo.stages import image
from maskgrpo.stages.common import load_policy, stage_generator
from maskgrpo.stages.data import load_examples
from maskgrpo.stages.score import score_rows
from maskgrpo.store import open_store


def diversity(run, store, run_id: str, sampler: str, seed: int, prompts: int) -> dict:
    policy = load_policy(store, run_id, "sft/0", run.model)
    layout = image.image_layout(run.image, policy.tokenizer)
    examples = load_examples(run.task, "train", run.seed)[:prompts]
    repeated = [e for e in examples for _ in range(run.rl.group_size)]
    spec = run.image.rollout.model_copy(update={"sampler": sampler})
    ids, _ = image.generate(policy, layout, [e.prompt for e in repeated], spec, stage_generator(seed, salt=99), progress=False)
    rows = [{"prompt": e.prompt, "answer": e.answer, "columns": e.columns, "completion": c}
            for e, c in zip(repeated, image.decode(layout, ids))]
    _, totals = score_rows(rows, run.reward, run.task)
    rewards = torch.tensor(totals)
    _, stats = group_advantages(rewards, run.rl.group_size)
    distinct = fmean(len({r["completion"] for r in rows[g:g + run.rl.group_size]}) for g in range(0, len(rows), run.rl.group_size))
    return {"group_std_mean": stats.group_std_mean, "zero_std_ratio": stats.zero_std_ratio, "reward_mean": stats.reward_mean,
            "rollout_accuracy": float((rewards >= run.reward.accuracy_threshold).float().mean()),
            "distinct_images_per_group": distinct}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=0, help="MaskGRPO rounds per sampler (0: diversity only)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--set", action="append", default=[], help="pipeline overrides")
    parser.add_argument("--out", default="bench/results/emerge_vs_maskgit.json")
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        run = load_run_spec(args.pipeline, args.set + [f"seed={seed}", f"rl.rounds={args.rounds}"])
        with tempfile.TemporaryDirectory() as tmp:
            store = open_store(f"file://{tmp}")
            for sampler in ("emerge", "maskgit"):
                start = time.perf_counter()
                image_doc = run.image.model_copy(update={"rollout": run.image.rollout.model_copy(update={"sampler": sampler})})
                variant = run.model_copy(update={"image": image_doc})
                run_id = f"s{seed}-{sampler}"
                calls = build_plan(variant, run_id, store.uri, num_shards=1)
                # same spec and seed: SFT is deterministic on CPU, so both samplers start from equal weights
                evals = {}
                for call in calls:
                    result = importlib.import_module(f"maskgrpo.stages.{call.kind}").run(call.spec, store)
                    if call.kind == "evaluate":
                        evals[call.round] = result.accuracy
                row = {"seed": seed, "sampler": sampler, **diversity(run, store, run_id, sampler, seed, args.prompts),
                       "accuracy_before": evals.get(0), "accuracy_after": evals.get(max(evals)) if evals else None,
                       "wall_seconds": time.perf_counter() - start}
                print(json.dumps(row))
                results.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"pipeline": args.pipeline, "rounds": args.rounds, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
