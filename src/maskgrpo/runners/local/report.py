"""The end of a run: ``summary.json``, a report (curve PNG + sample completions) and a table.

Everything is read back from the committed stage outputs, so a resumed run reports the same
numbers as an uninterrupted one (only ``wall_seconds`` differs).
"""

from __future__ import annotations

import io
import json
from statistics import fmean
from typing import Any

from maskgrpo.artifacts import IMAGE_GRID, METRICS, SAMPLES
from maskgrpo.plan import StageCall
from maskgrpo.specs import RunSpec
from maskgrpo.store import Store

SUMMARY = "summary.json"
REPORT = "report.md"
CURVE = "curve.png"
IMAGES = IMAGE_GRID  # written by image evaluations (modalities/image.py)


def _metrics(store: Store, run_id: str, call: StageCall) -> dict[str, Any]:
    return store.open(run_id, call.output, call.round).get_json(METRICS)


def build_summary(run: RunSpec, store: Store, run_id: str, calls: list[StageCall], wall_seconds: float) -> dict[str, Any]:
    evaluations = [(c.round, _metrics(store, run_id, c)) for c in calls if c.kind == "evaluate"]
    updates = {c.round: _metrics(store, run_id, c) for c in calls if c.kind == "update"}
    lengths: dict[int, list[float]] = {}
    for c in calls:
        if c.kind == "rollout":
            lengths.setdefault(c.round, []).append(_metrics(store, run_id, c)["completion_length_mean"])
    rounds = []
    for call in calls:
        if call.kind != "score":
            continue
        score, update = _metrics(store, run_id, call), updates[call.round]
        rounds.append({
            "round": call.round, "reward_mean": score["reward_mean"], "reward_std": score["reward_std"],
            "zero_std_ratio": score["zero_std_ratio"], "rollout_accuracy": score["accuracy"], "kl": update["kl"],
            "clip_fraction": update["clip_fraction"], "loss": update["loss"], "grad_norm": update["grad_norm"],
            "ratio_deviation": update["ratio_deviation"],
            "completion_length": fmean(lengths[call.round]),
        })
    pick = lambda m: {"accuracy": m["accuracy"], "reward_mean": m["reward_mean"]}  # noqa: E731
    final = updates[max(updates)]["weight_digest"] if updates else _metrics(store, run_id, calls[0])["weight_digest"]
    return {
        "run_id": run_id,
        "pipeline": run.name,
        "store": store.uri,
        "baseline": pick(evaluations[0][1]),
        "final": pick(evaluations[-1][1]),
        "gain": evaluations[-1][1]["accuracy"] - evaluations[0][1]["accuracy"],
        "evaluations": [{"round": r, **pick(m)} for r, m in evaluations],
        "rounds": rounds,
        "final_weight_digest": final,
        "wall_seconds": wall_seconds,
    }


def _curve_png(summary: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    rounds = summary["rounds"]
    ax.plot([r["round"] for r in rounds], [r["reward_mean"] for r in rounds], "o-", label="rollout reward (mean)")
    evals = summary["evaluations"]
    ax.plot([e["round"] for e in evals], [e["accuracy"] for e in evals], "s--", label="held-out accuracy (greedy)")
    ax.set_xlabel("round")
    ax.set_title(f"{summary['pipeline']} ({summary['run_id']})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _report_md(summary: dict[str, Any], baseline_rows: list[dict], final_rows: list[dict], limit: int) -> str:
    lines = [
        f"# {summary['pipeline']}: run {summary['run_id']}", "",
        f"Held-out accuracy {summary['baseline']['accuracy']:.3f} after SFT -> {summary['final']['accuracy']:.3f} "
        f"after {len(summary['rounds'])} MaskGRPO rounds (gain {summary['gain']:+.3f}); {summary['wall_seconds']:.0f} s.",
        "", f"![curve]({CURVE})", "",
        "| round | reward mean | reward std | zero-std ratio | KL | clip fraction |", "|---|---|---|---|---|---|",
    ]
    for r in summary["rounds"]:
        lines.append(f"| {r['round']} | {r['reward_mean']:.3f} | {r['reward_std']:.3f} | {r['zero_std_ratio']:.3f} | "
                     f"{r['kl']:.4f} | {r['clip_fraction']:.3f} |")
    lines += ["", "## Sample completions (same held-out prompts)", "",
              "| prompt | reference | after SFT | after RL |", "|---|---|---|---|"]
    for before, after in list(zip(baseline_rows, final_rows))[:limit]:
        mark = lambda row: ("✓ " if row["reward"] >= 1.0 else "✗ ") + f"`{row['completion']}`"  # noqa: E731
        lines.append(f"| `{before['prompt']}` | `{before['answer']}` | {mark(before)} | {mark(after)} |")
    return "\n".join(lines) + "\n"


def write_summary(run: RunSpec, store: Store, run_id: str, calls: list[StageCall], wall_seconds: float) -> dict[str, Any]:
    """Write summary.json, report.md and curve.png beside the run's stage outputs."""
    summary = build_summary(run, store, run_id, calls, wall_seconds)
    evals = [c for c in calls if c.kind == "evaluate"]
    first = store.open(run_id, evals[0].output, evals[0].round).get_jsonl(SAMPLES)
    last = store.open(run_id, evals[-1].output, evals[-1].round).get_jsonl(SAMPLES)
    store.write_run_file(run_id, SUMMARY, json.dumps(summary, indent=2).encode())
    store.write_run_file(run_id, CURVE, _curve_png(summary))
    report = _report_md(summary, first, last, run.evaluate.num_samples)
    grids = []  # image runs: the evaluate stages' PNG grids (same prompts), baseline vs final
    for label, call in (("baseline", evals[0]), ("final", evals[-1])):
        committed = store.open(run_id, call.output, call.round)
        if IMAGES in committed.files():
            store.write_run_file(run_id, f"images-{label}.png", committed.get_bytes(IMAGES))
            grids.append(f"{label}: ![{label}](images-{label}.png)")
    if grids:
        report += "\n## Images (same held-out prompts)\n\n" + "\n\n".join(grids) + "\n"
    store.write_run_file(run_id, REPORT, report.encode())
    return summary


def format_table(summary: dict[str, Any]) -> str:
    """The summary table printed at the end of a run."""
    lines = [f"{'round':>5}  {'reward':>7}  {'std':>6}  {'zero-std':>8}  {'KL':>7}  {'clip':>6}  {'eval acc':>8}"]
    evals = {e["round"]: e["accuracy"] for e in summary["evaluations"]}
    if 0 in evals:
        lines.append(f"{'sft':>5}  {'':>7}  {'':>6}  {'':>8}  {'':>7}  {'':>6}  {evals[0]:>8.3f}")
    for r in summary["rounds"]:
        acc = f"{evals[r['round']]:.3f}" if r["round"] in evals else ""
        lines.append(f"{r['round']:>5}  {r['reward_mean']:>7.3f}  {r['reward_std']:>6.3f}  {r['zero_std_ratio']:>8.3f}  "
                     f"{r['kl']:>7.4f}  {r['clip_fraction']:>6.3f}  {acc:>8}")
    lines.append(f"held-out accuracy {summary['baseline']['accuracy']:.3f} -> {summary['final']['accuracy']:.3f} "
                 f"({summary['gain']:+.3f}) in {summary['wall_seconds']:.0f} s")
    return "\n".join(lines)
