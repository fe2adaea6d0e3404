"""Emerge vs MaskGIT rollouts from the same SFT checkpoint: the paper's diversity claim (§2.3).

For each seed: run the pipeline's SFT once; for each rollout sampler (same steps, CFG and
temperature; only the sampler differs) sample G images per training prompt from that SFT
checkpoint and report the in-group reward std, the zero-std group ratio, distinct images per
group and the rollout accuracy; then run the pipeline's MaskGRPO rounds with that sampler (both
from the same SFT checkpoint) and report held-out accuracy before and after (the pipeline's own
evaluation protocol). ``--rounds 0``: the diversity part only. JSON (per seed and mean/std over
seeds) goes to bench/results/emerge_vs_maskgit.json.

    .venv/bin/python bench/emerge_vs_maskgit.py pipelines/toy-image.yaml --seeds 0 1 2
    # or one process per seed, then: --merge s0.json s1.json s2.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
import time
from pathlib import Path
from statistics import fmean, stdev

import torch

from maskgrpo.artifacts import LOSSES, METRICS
from maskgrpo.core.advantages import group_advantages
from maskgrpo.plan import build_plan
from maskgrpo.specs import load_run_spec, spec_hash
from maskgrpo.modalities import modality_for
from maskgrpo.stages import sft
from maskgrpo.stages.data import load_examples
from maskgrpo.stages.policy import load_policy
from maskgrpo.stages.scoring import score_rows
from maskgrpo.stages.seeds import Salt, stage_generator
from maskgrpo.store import open_store


def diversity(run, store, run_id: str, sampler: str, seed: int, prompts: int) -> dict:
    policy = load_policy(store, run_id, "sft/0", run.model)
    modality = modality_for(run)
    examples = load_examples(run.task, "train", run.seed)[:prompts]
    repeated = [e for e in examples for _ in range(run.rl.group_size)]
    spec = run.rl.sampler.model_copy(update={"sampler": sampler})
    out = modality.generate(policy.logits, policy.tokenizer, [e.prompt for e in repeated], spec,
                            stage_generator(seed, Salt.BENCH_DIVERSITY), device=policy.device, progress=False)
    rows = [{"prompt": e.prompt, "answer": e.answer, "columns": e.columns, "completion": c}
            for e, c in zip(repeated, modality.decode(policy.tokenizer, out.input_ids, out.prompt_length))]
    _, totals = score_rows(rows, run.reward, run.task, modality)
    rewards = torch.tensor(totals)
    _, stats = group_advantages(rewards, run.rl.group_size)
    distinct = fmean(len({r["completion"] for r in rows[g:g + run.rl.group_size]}) for g in range(0, len(rows), run.rl.group_size))
    return {"group_std_mean": stats.group_std_mean, "zero_std_ratio": stats.zero_std_ratio, "reward_mean": stats.reward_mean,
            "rollout_accuracy": float((rewards >= run.reward.accuracy_threshold).float().mean()),
            "distinct_images_per_group": distinct}


def run_variant(run, store, run_id: str, sampler: str, reuse_sft_from: str | None) -> dict:
    """The pipeline with ``sampler`` for the rollouts; the SFT of ``reuse_sft_from`` when given."""
    rl = run.rl.model_copy(update={"sampler": run.rl.sampler.model_copy(update={"sampler": sampler})})
    variant = run.model_copy(update={"rl": rl})
    evals, rollouts = {}, []
    for call in build_plan(variant, run_id, store.uri, num_shards=1):
        if call.kind == "sft" and reuse_sft_from is not None:
            # the same SFT checkpoint for both samplers (the claim is about the rollouts, not the
            # SFT): committed again as this run's SFT output (a manifest names its own run)
            source = store.open(reuse_sft_from, sft.STAGE, 0)
            policy = load_policy(store, reuse_sft_from, f"{sft.STAGE}/0", call.spec.model)
            result = sft.SftResult(**source.get_json(METRICS))
            sft.commit_sft(call.spec, store, spec_hash(call.spec), policy, result, source.get_json(LOSSES))
            continue
        result = importlib.import_module(f"maskgrpo.stages.{call.kind}").run(call.spec, store)
        if call.kind == "evaluate":
            evals[call.round] = result.accuracy
        if call.kind == "score":
            rollouts.append(result.accuracy)
    return {"accuracy_before": evals.get(0), "accuracy_after": evals.get(max(evals)) if evals else None,
            "rollout_accuracy_by_round": rollouts}


def summarise(results: list[dict]) -> dict:
    """Mean and sample std over seeds of every numeric field, per sampler."""
    out = {}
    for sampler in ("emerge", "maskgit"):
        rows = [r for r in results if r["sampler"] == sampler]
        keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and k != "seed"] if rows else []
        out[sampler] = {k: {"mean": fmean(r[k] for r in rows),
                            "std": stdev([r[k] for r in rows]) if len(rows) > 1 else 0.0} for k in keys}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", nargs="?", help="pipeline document (not needed with --merge)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=None, help="MaskGRPO rounds per sampler (default: the pipeline's; 0: diversity only)")
    parser.add_argument("--prompts", type=int, default=64, help="training prompts for the diversity measurement")
    parser.add_argument("--set", action="append", default=[], help="pipeline overrides")
    parser.add_argument("--out", default="bench/results/emerge_vs_maskgit.json")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="combine the result files of parallel runs (e.g. one seed each) into --out; runs nothing")
    args = parser.parse_args()
    if args.merge:
        docs = [json.loads(Path(f).read_text()) for f in args.merge]
        results = sorted((r for d in docs for r in d["results"]), key=lambda r: (r["seed"], r["sampler"]))
        write(args.out, {**docs[0], "results": results, "summary": summarise(results)})
        return
    if args.pipeline is None:
        parser.error("the pipeline document is required (unless --merge)")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    results = []
    for seed in args.seeds:
        overrides = args.set + [f"seed={seed}"] + ([f"rl.rounds={args.rounds}"] if args.rounds is not None else [])
        run = load_run_spec(args.pipeline, overrides)
        with tempfile.TemporaryDirectory() as tmp:
            store = open_store(f"file://{tmp}")
            first = None
            for sampler in ("emerge", "maskgit"):
                start = time.perf_counter()
                run_id = f"s{seed}-{sampler}"
                accuracies = run_variant(run, store, run_id, sampler, first)
                first = first or run_id
                row = {"seed": seed, "sampler": sampler, **diversity(run, store, run_id, sampler, seed, args.prompts),
                       **accuracies, "wall_seconds": time.perf_counter() - start}
                print(json.dumps(row), flush=True)
                results.append(row)
    write(args.out, {"pipeline": args.pipeline, "overrides": args.set, "rounds": args.rounds, "results": results,
                     "summary": summarise(results)})


def write(path: str, doc: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc["summary"], indent=1))


if __name__ == "__main__":
    main()
