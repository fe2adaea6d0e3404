"""Estimator ablation at toy scale: not a test.

Runs a pipeline (default bench/ablation-sort31.yaml: sort 31 digits, 32-token completions, tiny
2 x 64 model; bench/ablation-sort16.yaml is the previous 24-token one) with each estimator/objective, maskgrpo (AR-like), d1, random (the paper's seeded
masks), unigrpo, coupled, spg, wd1 and espo, at an equal rollout budget (same rounds, prompts and
group size) and, per seed, the same SFT warm start and baseline:

1. prepare (one per seed): the seed's SFT start, saved to ``<dir>/sft/s<seed>/`` (a transformers
   folder), and its baseline evaluation (the pipeline's evaluate stage, run id ``s<seed>``). With
   ``--sft-rule target`` (default) the SFT runs the SFT stage's objective, data and optimizer in
   chunks of ``--sft-check`` steps until the greedy accuracy on training prompts reaches
   ``--sft-target`` (a mediocre start whatever the seed's learning speed; ``sft_to_target``);
   with ``--sft-rule pipeline`` it is the pipeline's SFT stage (``sft.steps``) as it is;
2. cell (one per seed x estimator): the pipeline with ``model.source`` = that folder and
   ``sft.enabled=false`` (the SFT stage passes the checkpoint through unchanged), run id
   ``s<seed>-<estimator>``, every stage but the baseline evaluation (the prepare step's is the
   baseline). So all estimators of a seed start from bit-identical weights (each cell records
   the weight digest of its start, and the report refuses a cell whose digest differs from the
   seed's), and the cells are independent processes.

With ``--tune-lrs A B C`` each estimator first gets its own ``rl.lr``: a tuning seed
(``--tune-seed``, default 5, refused if it is one of ``--seeds``) has its own SFT start (the same
rule) and runs every estimator at every rate (``--tune-rounds`` rounds, default the pipeline's);
each run is scored by its greedy exact accuracy on ``--tune-prompts`` *training* prompts (the
last ones of the train split: disjoint from the held-out eval split, base.split_of; the held-out
prompts are never looked at) and ``choose_lrs`` keeps each estimator's best rate (ties: the
smaller). The cells of the evaluated seeds then run at those rates (they wait for every tuning
run); the report lists the tuning scores and the chosen rates. One tuning seed: the choice carries
that seed's RL noise (stated in the report, not hidden).

Every step writes its JSON under ``<dir>`` (default ``bench/results/ablation/<pipeline>-<config
hash>/``) and is skipped when that file exists, so an interrupted run resumes where it stopped
and ``--report`` turns whatever cells are finished into the table. ``--jobs N`` runs N worker
processes (1 torch thread each) that claim the missing steps in order: the seeds' SFTs first,
then the cells seed by seed, so a partial run has whole seeds.

Report (``--out``, default bench/results/ablation.json, and the same name .md): per estimator the
held-out accuracy after RL, the gain over the seed's SFT baseline (mean, std over seeds), the
paired (same seed, same start) difference of the final accuracy to maskgrpo with a t-based 95%
confidence interval and a percentile bootstrap over seeds, the evaluation noise of that
difference (the per-prompt paired standard error, mean over seeds), update forwards per
completion, rollout log-prob forwards per completion (0 for the ratio-free spg and wd1), RL wall
and CPU seconds; and the evaluation set's size with the binomial standard error of an accuracy.

    .venv/bin/python bench/ablation.py --jobs 8 [--seeds 0 1 2 3 4] [--estimators maskgrpo d1 ...] [--set rl.rounds=4]
    .venv/bin/python bench/ablation.py --jobs 2 --sft-check 50 --sft-max-steps 1500 --tune-lrs 1e-4 3e-5 1e-5   # bench/README.md's table
    .venv/bin/python bench/ablation.py --report [same --pipeline/--set]      # the table of the finished cells
    .venv/bin/python bench/ablation.py --pipeline pipelines/toy-text.yaml --sft-rule pipeline --estimators maskgrpo d1 unigrpo coupled

The stages run in-process over a file:// store (no Prefect: the bench measures the algorithm,
not the orchestrator). Accuracies are exact and repeatable (fixed generators); wall times depend
on the machine's load, CPU seconds much less (one thread per process).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from common import RESULTS, environment  # noqa: E402

from maskgrpo.artifacts import CHECKPOINT, SAMPLES  # noqa: E402
from maskgrpo.plan import build_plan  # noqa: E402
from maskgrpo.specs import load_run_spec  # noqa: E402
from maskgrpo.stages import get_stage  # noqa: E402
from maskgrpo.store import open_store  # noqa: E402

# maskgrpo first: the reference of the paired differences, and the first cell of every seed
ESTIMATORS = ["maskgrpo", "d1", "random", "unigrpo", "coupled", "spg", "wd1", "espo"]
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 19: 2.093, 29: 2.045}  # t_{0.975, df}
BOOTSTRAP = 10_000


def t975(df: int) -> float:
    return T975.get(df) or T975[max(k for k in T975 if k <= df)] if df < 30 else 1.96


def sft_rule(args) -> list[str]:
    if args.sft_rule == "pipeline":
        return ["sft_rule=pipeline"]
    return [f"sft_target={args.sft_target}", f"sft_check={args.sft_check}", f"sft_check_prompts={args.sft_check_prompts}",
            f"sft_max_steps={args.sft_max_steps}"]


def tune_rule(args) -> list[str]:
    if not args.tune_lrs:
        return []
    return [f"tune_lrs={[lr_key(lr) for lr in args.tune_lrs]}", f"tune_seed={args.tune_seed}",
            f"tune_rounds={args.tune_rounds}", f"tune_prompts={args.tune_prompts}"]


def config_tag(pipeline: Path, overrides: list[str]) -> str:
    """``<pipeline stem>-<hash of its text and the overrides>``: one folder per configuration."""
    digest = hashlib.sha256(json.dumps([pipeline.read_text(), overrides]).encode()).hexdigest()[:10]
    return f"{pipeline.stem}-{digest}"


def run_calls(pipeline: Path, overrides: list[str], run_id: str, store_dir: Path, keep) -> dict:
    """The pipeline's stage calls that ``keep(call)`` selects, in plan order, in-process."""
    run = load_run_spec(pipeline, overrides)
    store = open_store(store_dir.resolve().as_uri())
    return {call.name: get_stage(call.kind)(call.spec, store)
            for call in build_plan(run, run_id, store.uri, 1) if keep(call)}


def final_round(results: dict) -> int:
    return max(int(name.split("_")[1]) for name in results if name.startswith("evaluate_"))


def correct_per_prompt(store_dir: Path, run_id: str, round_: int, threshold: float) -> list[int]:
    rows = open_store(store_dir.resolve().as_uri()).open(run_id, "evaluate", round_).get_jsonl(SAMPLES)
    return [int(r["reward"] >= threshold) for r in rows]


def greedy_accuracy(policy, modality, examples, evaluate_spec, seed: int) -> float:
    """Exact accuracy of the evaluation sampler (greedy) on ``examples``, scored like the evaluate
    stage (the SFT stage's stopping check: stages/scoring.py)."""
    from maskgrpo.stages.scoring import greedy_accuracy as accuracy

    return accuracy(policy, modality, examples, evaluate_spec.evaluate.sampler, evaluate_spec.reward,
                    evaluate_spec.task, seed)


def sft_to_target(args, overrides: list[str], seed: int, folder: Path) -> dict:
    """The pipeline's SFT (the SFT stage's data, noising, loss, batch rows and optimizer) run in
    chunks of ``--sft-check`` steps until the greedy accuracy on the first ``--sft-check-prompts``
    *training* prompts reaches ``--sft-target`` (or ``--sft-max-steps``): a mediocre start whatever
    the seed's learning speed, chosen without looking at the held-out prompts. Saved to ``folder``.
    (The stage itself has no stopping rule: it runs ``sft.steps``; this is the one deviation.)"""
    from maskgrpo.core.sft import sft_loss_share
    from maskgrpo.modalities import modality_for
    from maskgrpo.stages.data import load_examples
    from maskgrpo.stages.policy import start_policy
    from maskgrpo.stages.seeds import Salt, stage_generator
    from maskgrpo.stages.sft import sft_targets

    run = load_run_spec(args.pipeline, overrides)
    calls = {c.name: c.spec for c in build_plan(run, f"s{seed}", "file:///unused", 1)}
    spec, evaluate_spec = calls["sft"], calls["evaluate_0"]
    modality = modality_for(spec)
    examples = load_examples(spec.task, "train", spec.data_seed)
    policy = start_policy(spec.model, lambda tok: modality.tiny_shape(tok, examples), spec.seed)
    tok, part = policy.tokenizer, spec.sft
    data = modality.sft_data(tok, examples, sft_targets(examples, part.label_noise, spec.seed))
    inputs, positions = data.inputs.to(policy.device), data.target_positions.to(policy.device)
    generator = stage_generator(spec.seed, Salt.SFT_BATCHES)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=part.lr, weight_decay=part.weight_decay)
    check = examples[: args.sft_check_prompts]
    history, steps = [], 0
    while steps < args.sft_max_steps:
        policy.model.train()
        for _ in range(args.sft_check):
            idx = torch.randint(len(inputs), (part.batch_size,), generator=generator)
            x = inputs[idx]
            noise = modality.sft_noise(tok, x, data, part, generator)
            logits = policy.logits(noise.inputs, positions.expand(len(x), -1))
            loss = sft_loss_share(logits, x[:, positions], noise, torch.arange(len(x)), data.vocab_slice)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        steps += args.sft_check
        accuracy = greedy_accuracy(policy, modality, check, evaluate_spec, spec.seed)
        history.append({"steps": steps, "loss": loss.item(), "train_accuracy": accuracy})
        print(f"sft s{seed}: {history[-1]}", flush=True)
        if accuracy >= args.sft_target:
            break
    folder.mkdir(parents=True, exist_ok=True)
    policy.model.save_pretrained(folder)
    tok.save(folder)
    return {"sft_steps": steps, "sft_history": history}


def prepare(args, seed: int, work: Path) -> dict:
    """The seed's SFT start (``sft_to_target``, saved to ``<work>/sft/s<seed>``) and its baseline
    evaluation (the pipeline's evaluate stage, run id ``s<seed>``)."""
    overrides = [f"seed={seed}", *args.set]
    start, cpu = time.perf_counter(), time.process_time()
    folder = work / "sft" / f"s{seed}"
    if args.sft_rule == "target":
        trained = sft_to_target(args, overrides, seed, folder)
    else:  # the pipeline's SFT stage as it is (sft.steps), under its own run id
        sft = run_calls(args.pipeline, overrides, f"s{seed}-sft", work / "store", lambda c: c.name == "sft")["sft"]
        open_store((work / "store").resolve().as_uri()).open(f"s{seed}-sft", "sft", 0).get_dir(CHECKPOINT, folder)
        trained = {"sft_steps": sft.steps, "sft_history": []}
    results = run_calls(args.pipeline, [*overrides, f"model.source={folder}", "sft.enabled=false"], f"s{seed}",
                        work / "store", lambda c: c.name in ("sft", "evaluate_0"))
    run = load_run_spec(args.pipeline, overrides)
    base, sft = results["evaluate_0"], results["sft"]
    return {
        "seed": seed, **trained, "sft_weight_digest": sft.weight_digest,
        "checkpoint": str(folder), "baseline_accuracy": base.accuracy, "baseline_reward_mean": base.reward_mean,
        "eval_examples": base.examples,
        "baseline_correct": correct_per_prompt(work / "store", f"s{seed}", 0, run.reward.accuracy_threshold),
        "wall_seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
        "load_average_1m": os.getloadavg()[0],
    }


def cell(args, seed: int, estimator: str, work: Path, prep: dict, lr: float | None = None) -> dict:
    """One estimator's RL from the seed's exported SFT checkpoint (every stage but the baseline
    evaluation), at ``lr`` (its tuned rate) when given, else the pipeline's ``rl.lr``."""
    overrides = [f"rl.estimator={estimator}", f"seed={seed}", *args.set, *([f"rl.lr={lr}"] if lr is not None else []),
                 f"model.source={prep['checkpoint']}", "sft.enabled=false"]
    load_start = os.getloadavg()[0]
    start, cpu = time.perf_counter(), time.process_time()
    run_id = f"s{seed}-{estimator}"
    results = run_calls(args.pipeline, overrides, run_id, work / "store", lambda c: c.name != "evaluate_0")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    last = final_round(results)
    final = results[f"evaluate_{last}"]
    updates = [r for name, r in results.items() if name.startswith("update_")]
    rollouts = [r for name, r in results.items() if name.startswith("rollout_")]
    scores = [r for name, r in results.items() if name.startswith("score_")]
    run = load_run_spec(args.pipeline, overrides)
    return {
        "estimator": estimator, "seed": seed, "lr": run.rl.lr,
        "start_weight_digest": results["sft"].weight_digest, "sft_weight_digest": prep["sft_weight_digest"],
        "baseline_accuracy": prep["baseline_accuracy"], "final_accuracy": final.accuracy,
        "gain": final.accuracy - prep["baseline_accuracy"],
        "baseline_reward_mean": prep["baseline_reward_mean"], "final_reward_mean": final.reward_mean,
        "reward_gain": final.reward_mean - prep["baseline_reward_mean"],
        "rollout_reward_first": scores[0].reward_mean, "rollout_reward_last": scores[-1].reward_mean,
        "zero_std_ratio_mean": statistics.fmean(s.zero_std_ratio for s in scores),
        "update_forwards_per_completion": statistics.fmean(r.forwards_per_completion for r in updates),
        "logprob_forwards_per_completion": statistics.fmean(r.logprob_forwards_per_completion for r in rollouts),
        "rollout_seconds": sum(r.wall_seconds for r in rollouts), "update_seconds": sum(r.wall_seconds for r in updates),
        "rl_wall_seconds": wall, "rl_cpu_seconds": cpu, "eval_examples": final.examples,
        "final_correct": correct_per_prompt(work / "store", run_id, last, run.reward.accuracy_threshold),
        "load_average_1m": [load_start, os.getloadavg()[0]],
    }


# ---------------------------------------------------------------------------------------------
# per-objective learning rate (--tune-lrs)


def choose_lrs(scores: dict[str, dict[float, float | None]]) -> dict[str, float]:
    """Each estimator's learning rate: the one with the highest tuning score (accuracy on the
    tuning prompts after RL on the tuning seed); a tie goes to the smaller rate (the more stable
    one); a missing or failed score (None, NaN) is never chosen. An estimator with no score
    at all is left out (its cells wait, see ``steps_left``).

    >>> choose_lrs({"a": {1e-4: 0.2, 1e-5: 0.5}, "b": {1e-4: 0.4, 3e-5: 0.4, 1e-5: None}})
    {'a': 1e-05, 'b': 3e-05}
    """
    chosen = {}
    for name, by_lr in scores.items():
        valid = {lr: s for lr, s in by_lr.items() if s is not None and s == s}
        if valid:
            chosen[name] = max(valid, key=lambda lr: (valid[lr], -lr))
    return chosen


def lr_key(lr: float) -> str:
    """``lr`` in step and run ids (no '.': 1e-4 -> '0p0001', 3e-5 -> '3e-05'); ``float(key.replace('p', '.'))`` reads it back."""
    return f"{lr:g}".replace(".", "p")


def tuning_examples(args, overrides: list[str]):
    """The tuning prompts: the *last* ``--tune-prompts`` training prompts of the data seed (the
    train split, disjoint from the held-out eval split by construction, base.split_of; the SFT saw
    them, the RL rounds draw their prompts from the whole train split)."""
    from maskgrpo.stages.data import load_examples

    run = load_run_spec(args.pipeline, overrides)
    calls = {c.name: c.spec for c in build_plan(run, "tune", "file:///unused", 1)}
    return load_examples(calls["sft"].task, "train", calls["sft"].data_seed)[-args.tune_prompts:]


def tune_overrides(args) -> list[str]:
    return [f"seed={args.tune_seed}", *args.set, *([f"rl.rounds={args.tune_rounds}"] if args.tune_rounds else [])]


def tune_prepare(args, work: Path) -> dict:
    """The tuning seed's SFT start (the same rule as the evaluated seeds) and its greedy accuracy on
    the tuning prompts; no held-out prompt is looked at."""
    from maskgrpo.modalities import modality_for
    from maskgrpo.stages.policy import load_policy_dir

    overrides = tune_overrides(args)
    start, cpu = time.perf_counter(), time.process_time()
    folder = work / "sft" / f"tune-s{args.tune_seed}"
    trained = sft_to_target(args, overrides, args.tune_seed, folder)
    run = load_run_spec(args.pipeline, overrides)
    spec = {c.name: c.spec for c in build_plan(run, "tune", "file:///unused", 1)}["evaluate_0"]
    policy = load_policy_dir(folder, spec.model)
    score = greedy_accuracy(policy, modality_for(spec), tuning_examples(args, overrides), spec, args.tune_seed)
    return {"seed": args.tune_seed, **trained, "checkpoint": str(folder), "tune_baseline_accuracy": score,
            "tune_prompts": args.tune_prompts, "wall_seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu}


def tune_cell(args, estimator: str, lr: float, work: Path, prep: dict) -> dict:
    """One estimator's RL at ``lr`` from the tuning seed's start (its RL stages, no held-out
    evaluation), then the greedy accuracy of the final policy on the tuning prompts."""
    from maskgrpo.modalities import modality_for
    from maskgrpo.stages.policy import load_policy

    overrides = [f"rl.estimator={estimator}", f"rl.lr={lr}", *tune_overrides(args),
                 f"model.source={prep['checkpoint']}", "sft.enabled=false"]
    start, cpu = time.perf_counter(), time.process_time()
    run_id = f"tune-s{args.tune_seed}-{estimator}-lr{lr_key(lr)}"
    run = load_run_spec(args.pipeline, overrides)
    store = open_store((work / "store").resolve().as_uri())
    calls = build_plan(run, run_id, store.uri, 1)
    results = {c.name: get_stage(c.kind)(c.spec, store) for c in calls if not c.name.startswith("evaluate_")}
    final = [c for c in calls if c.name.startswith("evaluate_")][-1].spec
    policy = load_policy(store, run_id, final.policy, final.model)
    score = greedy_accuracy(policy, modality_for(final), tuning_examples(args, overrides), final, args.tune_seed)
    scores = [r for name, r in results.items() if name.startswith("score_")]
    return {"estimator": estimator, "lr": lr, "seed": args.tune_seed, "rounds": run.rl.rounds,
            "tune_accuracy": score, "tune_gain": score - prep["tune_baseline_accuracy"],
            "rollout_reward_first": scores[0].reward_mean, "rollout_reward_last": scores[-1].reward_mean,
            "wall_seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu}


def tuning_scores(args, work: Path) -> dict[str, dict[float, float | None]] | None:
    """{estimator: {lr: tuning accuracy}} once every tuning cell has finished or failed (a failed
    one scores None); None while some are still to run; {} without --tune-lrs."""
    if not args.tune_lrs:
        return {}
    failed = {p.stem for p in (work / "claims").glob("*/tune-*.failed")}
    scores = {}
    for e in args.estimators:
        for lr in args.tune_lrs:
            key = f"tune-{e}-lr{lr_key(lr)}"
            path = work / "tune" / f"{key}.json"
            if path.exists():
                scores.setdefault(e, {})[lr] = json.loads(path.read_text())["tune_accuracy"]
            elif key in failed:
                scores.setdefault(e, {})[lr] = None
            else:
                return None
    return scores


def chosen_lrs(args, work: Path) -> dict[str, float] | None:
    scores = tuning_scores(args, work)
    return None if scores is None else choose_lrs(scores)


# ---------------------------------------------------------------------------------------------
# statistics


def mean_ci_t(values: list[float]) -> list[float] | None:
    if len(values) < 2:
        return None
    mean, half = statistics.fmean(values), t975(len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return [mean - half, mean + half]


def bootstrap_ci(values: list[float], seed: int = 0) -> list[float] | None:
    """Percentile 95% interval of the mean, resampling the seeds (fixed generator)."""
    if len(values) < 2:
        return None
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(BOOTSTRAP))
    return [means[int(0.025 * BOOTSTRAP)], means[int(0.975 * BOOTSTRAP) - 1]]


def paired_eval_se(a: list[int], b: list[int]) -> float:
    """Standard error of acc(a) - acc(b) on the same prompts from the evaluation sample alone:
    sqrt(var(a_i - b_i) / n) over the prompts (what a larger eval set would shrink)."""
    d = [x - y for x, y in zip(a, b)]
    return (statistics.pvariance(d) / len(d)) ** 0.5 if len(d) > 1 else float("nan")


def paired_difference(rows: list[dict], name: str, baseline: str = "maskgrpo") -> dict | None:
    """Final accuracy of ``name`` minus ``baseline``'s, paired by seed (same SFT start)."""
    base = {r["seed"]: r for r in rows if r["estimator"] == baseline}
    mine = [r for r in rows if r["estimator"] == name and r["seed"] in base]
    if name == baseline or not mine:
        return None
    diffs = [r["final_accuracy"] - base[r["seed"]]["final_accuracy"] for r in mine]
    eval_se = [paired_eval_se(r["final_correct"], base[r["seed"]]["final_correct"]) for r in mine]
    return {"mean": statistics.fmean(diffs), "per_seed": diffs, "seeds": [r["seed"] for r in mine],
            "ci95_t": mean_ci_t(diffs), "ci95_bootstrap": bootstrap_ci(diffs),
            "eval_se_per_seed_mean": statistics.fmean(eval_se),
            "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs)}


def aggregate(rows: list[dict]) -> dict:
    out = {}
    for name in [e for e in ESTIMATORS if any(r["estimator"] == e for r in rows)] + \
            sorted({r["estimator"] for r in rows} - set(ESTIMATORS)):
        mine = sorted((r for r in rows if r["estimator"] == name), key=lambda r: r["seed"])
        entry = {"seeds": [r["seed"] for r in mine]}
        for column in (c for c, v in mine[0].items() if isinstance(v, (int, float)) and c != "seed"):
            values = [r[column] for r in mine]
            entry[f"{column}_mean"] = statistics.fmean(values)
            if column in ("final_accuracy", "gain", "reward_gain", "final_reward_mean"):
                entry[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        entry["gain_ci95_t"] = mean_ci_t([r["gain"] for r in mine])
        entry["difference_to_maskgrpo"] = paired_difference(rows, name)
        out[name] = entry
    return out


def binomial_se(p: float, n: int) -> float:
    return (p * (1 - p) / n) ** 0.5 if n else float("nan")


def fmt_ci(ci: list[float] | None) -> str:
    return "–" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def markdown(report: dict) -> str:
    preps, by = report["prepare"], report["by_estimator"]
    seeds = sorted(p["seed"] for p in preps)
    n = report["eval_examples"]
    lines = [
        f"Held-out exact accuracy on {n} eval prompts (greedy); seeds {seeds}; binomial standard error of one "
        f"accuracy at the SFT mean {report['baseline_accuracy_mean']:.3f}: {report['binomial_se_baseline']:.3f} "
        f"(at 0.5: {binomial_se(0.5, n):.3f}).",
        "",
        "| estimator | " + " | ".join(f"seed {s}" for s in seeds) + " | final acc mean ± std | gain mean ± std "
        "| diff to maskgrpo (paired) | 95% CI (t) | 95% CI (bootstrap) | wins/losses | eval SE of diff "
        "| update fwd / completion | rollout log-prob fwd / completion | RL wall s | RL CPU s | lr |",
        "|---|" + "---|" * len(seeds) + "---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {p["seed"]: p["baseline_accuracy"] for p in preps}
    lines.append("| baseline (SFT) | " + " | ".join(f"{base[s]:.3f}" for s in seeds)
                 + f" | {statistics.fmean(base.values()):.3f} ± {statistics.stdev(base.values()) if len(base) > 1 else 0:.3f}"
                 + " | | | | | | | | | | | |")
    for name, e in by.items():
        per_seed = {r["seed"]: r["final_accuracy"] for r in report["runs"] if r["estimator"] == name}
        d = e["difference_to_maskgrpo"]
        diff = ("–", "–", "–", "–", "–") if d is None else (
            f"{d['mean']:+.3f}", fmt_ci(d["ci95_t"]), fmt_ci(d["ci95_bootstrap"]), f"{d['wins']}/{d['losses']}",
            f"{d['eval_se_per_seed_mean']:.3f}")
        lines.append(
            f"| {name} | " + " | ".join(f"{per_seed[s]:.3f}" if s in per_seed else "" for s in seeds)
            + f" | {e['final_accuracy_mean']:.3f} ± {e['final_accuracy_std']:.3f} | {e['gain_mean']:+.3f} ± {e['gain_std']:.3f}"
            + " | " + " | ".join(diff)
            + f" | {e['update_forwards_per_completion_mean']:g} | {e['logprob_forwards_per_completion_mean']:g}"
            + f" | {e['rl_wall_seconds_mean']:.0f} | {e['rl_cpu_seconds_mean']:.0f} | {e.get('lr_mean', float('nan')):g} |")
    lines += ["", "Mean reward (partial credit) on the same prompts:", "",
              "| estimator | final reward mean ± std | reward gain mean ± std | rollout reward first -> last round | zero-std groups |",
              "|---|---|---|---|---|"]
    for name, e in by.items():
        lines.append(f"| {name} | {e['final_reward_mean_mean']:.3f} ± {e['final_reward_mean_std']:.3f} | "
                     f"{e['reward_gain_mean']:+.3f} ± {e['reward_gain_std']:.3f} | {e['rollout_reward_first_mean']:.3f} -> "
                     f"{e['rollout_reward_last_mean']:.3f} | {e['zero_std_ratio_mean_mean']:.2f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# driver


def build_report(args, work: Path) -> dict:
    preps = [json.loads(p.read_text()) for p in sorted((work / "prepare").glob("s*.json"))]
    rows = [json.loads(p.read_text()) for p in sorted((work / "cells").glob("s*.json"))]
    preps = [p for p in preps if p["seed"] in args.seeds]
    rows = [r for r in rows if r["seed"] in args.seeds and r["estimator"] in args.estimators]
    for r in rows:
        if r["start_weight_digest"] != r["sft_weight_digest"]:
            raise SystemExit(f"cell s{r['seed']}-{r['estimator']}: its start weights differ from the seed's SFT checkpoint")
    n = preps[0]["eval_examples"] if preps else 0
    base_mean = statistics.fmean(p["baseline_accuracy"] for p in preps) if preps else float("nan")
    return {
        "bench": "ablation", "pipeline": str(args.pipeline.relative_to(ROOT)), "overrides": args.set, "work": str(work),
        "environment": environment(torch.device("cpu")), "eval_examples": n,
        "baseline_accuracy_mean": base_mean, "binomial_se_baseline": binomial_se(base_mean, n),
        "prepare": [{k: v for k, v in p.items() if k != "baseline_correct"} for p in preps],
        "runs": [{k: v for k, v in r.items() if k != "final_correct"} for r in rows],
        "by_estimator": aggregate(rows),
        "tuning": tuning_report(args, work),
        "total": {"prepare_wall_seconds": sum(p["wall_seconds"] for p in preps),
                  "cells_wall_seconds": sum(r["rl_wall_seconds"] for r in rows),
                  "cpu_seconds": sum(p["cpu_seconds"] for p in preps) + sum(r["rl_cpu_seconds"] for r in rows)},
    }


def tuning_report(args, work: Path) -> dict | None:
    """The tuning runs (--tune-lrs): the tuning seed's start, every (estimator, lr) score and the
    chosen rates (None until every tuning cell has finished)."""
    if not args.tune_lrs:
        return None
    prep_path = work / "tune" / "prepare.json"
    prep = json.loads(prep_path.read_text()) if prep_path.exists() else None
    runs = [json.loads(p.read_text()) for p in sorted((work / "tune").glob("tune-*.json"))]
    return {"seed": args.tune_seed, "lrs": args.tune_lrs, "prompts": args.tune_prompts,
            "rounds": runs[0]["rounds"] if runs else args.tune_rounds, "prepare": prep, "runs": runs,
            "chosen": chosen_lrs(args, work),
            "cpu_seconds": (prep["cpu_seconds"] if prep else 0) + sum(r["cpu_seconds"] for r in runs)}


def tuning_markdown(tuning: dict) -> str:
    prep, lrs = tuning["prepare"], tuning["lrs"]
    scores = {(r["estimator"], r["lr"]): r["tune_accuracy"] for r in tuning["runs"]}
    chosen = tuning["chosen"] or {}
    names = [e for e in ESTIMATORS if any(r["estimator"] == e for r in tuning["runs"])]
    lines = [f"Learning rate per estimator: RL on tuning seed {tuning['seed']} ({tuning['rounds']} rounds), greedy exact "
             f"accuracy on {tuning['prompts']} training prompts (disjoint from the held-out eval split); SFT start "
             f"{prep['tune_baseline_accuracy']:.3f} on them ({prep['sft_steps']} SFT steps)." if prep else "", "",
             "| estimator | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen lr |",
             "|---|" + "---|" * len(lrs) + "---|"]
    for name in names:
        cells = [f"{scores[name, lr]:.3f}" if (name, lr) in scores else "failed" for lr in lrs]
        lines.append(f"| {name} | " + " | ".join(cells) + (f" | {chosen[name]:g} |" if name in chosen else " | – |"))
    return "\n".join(lines) + "\n"


def write_report(args, work: Path) -> None:
    report = build_report(args, work)
    report["markdown"] = (tuning_markdown(report["tuning"]) + "\n" if report["tuning"] and report["tuning"]["runs"] else "") \
        + (markdown(report) if report["runs"] else "")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(report["markdown"])
    print(report["markdown"])
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


def steps_left(args, work: Path) -> list[str]:
    """Missing steps in priority order: the tuning seed's SFT, the seeds' SFTs, the tuning cells
    (``--tune-lrs``: estimator x lr), then the cells seed by seed."""
    tune = []
    if args.tune_lrs:
        tune = [] if (work / "tune" / "prepare.json").exists() else ["tune-prepare"]
        tune_cells = [f"tune-{e}-lr{lr_key(lr)}" for e in args.estimators for lr in args.tune_lrs
                      if not (work / "tune" / f"tune-{e}-lr{lr_key(lr)}.json").exists()]
    preps = [f"prepare-s{s}" for s in args.seeds if not (work / "prepare" / f"s{s}.json").exists()]
    cells = [f"s{s}-{e}" for s in args.seeds for e in args.estimators if not (work / "cells" / f"s{s}-{e}.json").exists()]
    return tune + preps + (tune_cells if args.tune_lrs else []) + cells


def ready(args, key: str, work: Path) -> bool:
    """Whether ``key``'s inputs exist: a tuning cell needs the tuning SFT; a cell its seed's SFT and,
    with --tune-lrs, every tuning score."""
    if key.startswith("prepare-") or key == "tune-prepare":
        return True
    if key.startswith("tune-"):
        return (work / "tune" / "prepare.json").exists()
    seed = key[1:].split("-", 1)[0]
    return (work / "prepare" / f"s{seed}.json").exists() and (not args.tune_lrs or chosen_lrs(args, work) is not None)


def run_step(args, key: str, work: Path) -> None:
    if key == "tune-prepare":
        write_json(work / "tune" / "prepare.json", tune_prepare(args, work))
        return
    if key.startswith("tune-"):
        estimator, lr = key.removeprefix("tune-").rsplit("-lr", 1)
        prep = json.loads((work / "tune" / "prepare.json").read_text())
        write_json(work / "tune" / f"{key}.json", tune_cell(args, estimator, float(lr.replace("p", ".")), work, prep))
        return
    if key.startswith("prepare-s"):
        seed = int(key.removeprefix("prepare-s"))
        write_json(work / "prepare" / f"s{seed}.json", prepare(args, seed, work))
        return
    seed, estimator = key[1:].split("-", 1)
    prep = json.loads((work / "prepare" / f"s{seed}.json").read_text())
    lr = None
    if args.tune_lrs:
        lrs = chosen_lrs(args, work)
        if estimator not in lrs:
            raise RuntimeError(f"{estimator}: every tuning cell failed, no learning rate to run it at")
        lr = lrs[estimator]
    write_json(work / "cells" / f"{key}.json", cell(args, int(seed), estimator, work, prep, lr))


def worker(args, work: Path, token: str) -> None:
    """Claim and run steps until none is left (one of ``--jobs`` processes; the claims are files
    created exclusively under ``<work>/claims/<token>``, so no step runs twice)."""
    claims = work / "claims" / token
    claims.mkdir(parents=True, exist_ok=True)
    while True:
        left = steps_left(args, work)
        failed = {p.stem.removeprefix("prepare-s") for p in claims.glob("prepare-s*.failed")}
        tune_failed = (claims / "tune-prepare.failed").exists()
        runnable = [k for k in left if not (claims / k).exists() and ready(args, k, work)]
        waiting = [k for k in left if not (claims / k).exists() and k not in runnable
                   and not (k.startswith("tune-") and tune_failed)
                   and (k.startswith("tune-") or (k[1:].split("-", 1)[0] not in failed and not tune_failed))]
        if not runnable:
            if not waiting:
                return
            time.sleep(5)  # a seed's SFT is still running in another worker
            continue
        key = runnable[0]
        try:
            os.close(os.open(claims / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        start = time.perf_counter()
        print(f"start {key} (load {os.getloadavg()[0]:.1f})", flush=True)
        try:
            run_step(args, key, work)
        except Exception as err:  # noqa: BLE001 - one failed step must not stop the others
            (claims / f"{key}.failed").write_text(repr(err))
            print(f"FAILED {key}: {err!r}", flush=True)
            continue
        print(f"done {key} in {time.perf_counter() - start:.0f} s (load {os.getloadavg()[0]:.1f})", flush=True)


def drive(args, work: Path) -> None:
    """``args.jobs`` worker processes (1 torch thread each) over every missing step."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    (work / "logs").mkdir(parents=True, exist_ok=True)
    token = time.strftime("%Y%m%dT%H%M%S")
    started = time.perf_counter()
    procs = []
    for j in range(args.jobs):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--pipeline", str(args.pipeline), "--dir", str(work),
               "--threads", "1", "--worker", token, "--sft-rule", args.sft_rule, "--sft-target", str(args.sft_target), "--sft-check",
               str(args.sft_check), "--sft-check-prompts", str(args.sft_check_prompts), "--sft-max-steps", str(args.sft_max_steps), "--seeds", *map(str, args.seeds), "--estimators", *args.estimators]
        if args.tune_lrs:
            cmd += ["--tune-lrs", *map(str, args.tune_lrs), "--tune-seed", str(args.tune_seed), "--tune-prompts",
                    str(args.tune_prompts), *(["--tune-rounds", str(args.tune_rounds)] if args.tune_rounds else [])]
        for item in args.set:
            cmd += ["--set", item]
        log = (work / "logs" / f"{token}-worker{j}.log").open("w")
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
    print(f"{args.jobs} workers, logs in {work / 'logs'}", flush=True)
    for proc in procs:
        proc.wait()
    print(f"all steps finished in {time.perf_counter() - started:.0f} s wall", flush=True)
    failed = sorted((work / "claims" / token).glob("*.failed"))
    if failed:
        print(f"failed: {' '.join(p.stem for p in failed)} (see {work / 'logs'})", file=sys.stderr)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)  # a cell's file exists only once it is complete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", type=Path, default=ROOT / "bench" / "ablation-sort31.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--estimators", nargs="+", default=ESTIMATORS)
    parser.add_argument("--set", action="append", default=[], help="extra overrides, e.g. rl.rounds=4")
    parser.add_argument("--out", type=Path, default=RESULTS / "ablation.json", help="report JSON (and .md beside it)")
    parser.add_argument("--dir", type=Path, help="work folder (default bench/results/ablation/<pipeline>-<config hash>)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (per process)")
    parser.add_argument("--jobs", type=int, default=1, help="steps at once, as subprocesses (1: in this process)")
    parser.add_argument("--report", action="store_true", help="only write the report of the finished cells")
    parser.add_argument("--sft-rule", choices=["target", "pipeline"], default="target",
                        help="target: SFT until --sft-target on training prompts; pipeline: the pipeline's sft.steps")
    parser.add_argument("--sft-target", type=float, default=0.3, help="stop SFT at this greedy accuracy on training prompts")
    parser.add_argument("--sft-check", type=int, default=100, help="SFT steps between accuracy checks")
    parser.add_argument("--sft-check-prompts", type=int, default=128, help="training prompts of the check")
    parser.add_argument("--sft-max-steps", type=int, default=3000, help="stop SFT here whatever the accuracy")
    parser.add_argument("--tune-lrs", type=float, nargs="+", help="pick each estimator's rl.lr among these on the "
                        "tuning seed, scored on training prompts (choose_lrs), then run the seeds at it")
    parser.add_argument("--tune-seed", type=int, default=5, help="the tuning seed's SFT and RL (not an evaluated seed)")
    parser.add_argument("--tune-rounds", type=int, help="RL rounds of the tuning runs (default: the pipeline's)")
    parser.add_argument("--tune-prompts", type=int, default=500, help="training prompts scoring a tuning run")
    parser.add_argument("--worker", metavar="TOKEN", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tune_lrs and args.tune_seed in args.seeds:
        parser.error(f"--tune-seed {args.tune_seed} is one of the evaluated --seeds")
    args.pipeline = args.pipeline.resolve()
    work = (args.dir or RESULTS / "ablation" / config_tag(args.pipeline, [*args.set, *sft_rule(args), *tune_rule(args)])).resolve()
    torch.set_num_threads(args.threads)
    if args.worker:
        worker(args, work, args.worker)
        return
    if not args.report:
        if args.jobs > 1:
            drive(args, work)
        else:
            for key in steps_left(args, work):
                run_step(args, key, work)
                print(f"done {key}", flush=True)
    write_report(args, work)


if __name__ == "__main__":
    main()
