"""The end of a run: ``summary.json``, a report (plots, time breakdown, sample completions and
images) and a table.

Everything is read back from the committed stage outputs, so a resumed run reports the same
numbers as an uninterrupted one; only the timings differ (``wall_seconds``: the sum over every
process that worked on the run, from ``processes.json``; ``time``: where it went).

Files beside the run's stage outputs: summary.json, report.md, curve.png (reward and held-out
accuracy, one labelled axis each), plot-<metric>.png (reward, KL, clip fraction, zero-std ratio,
eval accuracy per round, wall time per stage kind), images-baseline.png / images-final.png (image
runs), pipeline.yaml (the resolved document, written at the start by the runner).
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
PIPELINE = "pipeline.yaml"
PROCESSES = "processes.json"
IMAGES = IMAGE_GRID  # written by image evaluations (modalities/image.py)
PLOTS = ("reward", "kl", "clip_fraction", "zero_std_ratio", "eval_accuracy", "stage_time")


def _metrics(store: Store, run_id: str, call: StageCall) -> dict[str, Any]:
    return store.open(run_id, call.output, call.round).get_json(METRICS)


METRIC_KINDS = ("sft", "rollout", "score", "update", "evaluate")  # the stage kinds that commit metrics.json


def stage_metrics(store: Store, run_id: str, calls: list[StageCall]) -> dict[str, dict[str, Any]]:
    """Each stage's committed metrics.json by call name, read once for the whole summary."""
    return {c.name: _metrics(store, run_id, c) for c in calls if c.kind in METRIC_KINDS}


def time_breakdown(metrics: dict[str, dict[str, Any]], calls: list[StageCall], wall_seconds: float) -> dict[str, Any]:
    """Where the run's time went, from what the stages record in metrics.json (``metrics``:
    ``stage_metrics``).

    ``parts``: rollout generation, old (+ reference) log-probs, update optimisation, store I/O of
    rollout and update (policy loads, tensor writes), the other stage kinds' whole wall time (sft,
    score, evaluate), the rest of rollout and update (model set-up, decoding), and orchestration
    (everything outside the stages' own clocks: planning, stage dispatch, commits, the report).
    ``per_kind``: the stages' wall seconds summed per kind."""
    per_kind: dict[str, float] = {}
    parts = {"rollout (generation)": 0.0, "old log-probs": 0.0, "update (optimizer)": 0.0, "store I/O": 0.0}
    other = 0.0
    for call in calls:
        if call.kind not in METRIC_KINDS:
            continue
        m = metrics[call.name]
        wall = float(m.get("wall_seconds", 0.0))
        per_kind[call.kind] = per_kind.get(call.kind, 0.0) + wall
        if call.kind == "rollout":
            split = (m.get("generate_seconds", 0.0), m.get("logprob_seconds", 0.0), m.get("store_seconds", 0.0))
            parts["rollout (generation)"] += split[0]
            parts["old log-probs"] += split[1]
            parts["store I/O"] += split[2]
            other += max(wall - sum(split), 0.0)
        elif call.kind == "update":
            split = (m.get("optimize_seconds", 0.0), m.get("store_seconds", 0.0))
            parts["update (optimizer)"] += split[0]
            parts["store I/O"] += split[1]
            other += max(wall - sum(split), 0.0)
        else:
            parts[call.kind] = parts.get(call.kind, 0.0) + wall
    parts["rollout/update set-up"] = other
    parts["orchestration"] = max(wall_seconds - sum(per_kind.values()), 0.0)
    return {"parts": parts, "per_kind": per_kind}


def build_summary(run: RunSpec, store: Store, run_id: str, calls: list[StageCall], wall_seconds: float,
                  processes: int = 1) -> dict[str, Any]:
    """``wall_seconds``: every process's time on the run (``processes`` of them)."""
    metrics = stage_metrics(store, run_id, calls)
    evaluations = [(c.round, metrics[c.name]) for c in calls if c.kind == "evaluate"]
    updates = {c.round: metrics[c.name] for c in calls if c.kind == "update"}
    lengths: dict[int, list[float]] = {}
    for c in calls:
        if c.kind == "rollout":
            lengths.setdefault(c.round, []).append(metrics[c.name]["completion_length_mean"])
    rounds = []
    for call in calls:
        if call.kind != "score":
            continue
        score, update = metrics[call.name], updates[call.round]
        rounds.append({
            "round": call.round, "reward_mean": score["reward_mean"], "reward_std": score["reward_std"],
            "zero_std_ratio": score["zero_std_ratio"], "rollout_accuracy": score["accuracy"], "kl": update["kl"],
            "clip_fraction": update["clip_fraction"], "loss": update["loss"], "grad_norm": update["grad_norm"],
            "ratio_deviation": update["ratio_deviation"],
            "completion_length": fmean(lengths[call.round]),
        })
    pick = lambda m: {"accuracy": m["accuracy"], "reward_mean": m["reward_mean"]}  # noqa: E731
    final = updates[max(updates)]["weight_digest"] if updates else metrics[calls[0].name]["weight_digest"]
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
        "processes": processes,
        "time": time_breakdown(metrics, calls, wall_seconds),
        **retrain_summary(store, run_id, calls),
    }


def retrain_summary(store: Store, run_id: str, calls: list[StageCall]) -> dict[str, Any]:
    """A retraining tick's gate decision and promotion (empty for other runs)."""
    out: dict[str, Any] = {}
    for call in calls:
        if call.kind == "gate":
            d = store.open(run_id, call.output, call.round).get_json("decision.json")
            out["gate"] = {k: d[k] for k in ("decision", "reason", "metric", "n", "challenger", "champion", "diff",
                                            "ci_low", "ci_high", "champion_version", "guards")}
        if call.kind == "promote":
            out["promotion"] = store.open(run_id, call.output, call.round).get_json("promotion.json")
    return out


def _figure(width: float = 5.0, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds
    return plt, fig, ax


def _png(plt: Any, fig: Any) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _curve_png(summary: dict[str, Any]) -> bytes:
    """Rollout reward (left axis) and held-out accuracy (right axis) per round."""
    plt, fig, ax = _figure(6, 3.5)
    rounds = summary["rounds"]
    left = ax.plot([r["round"] for r in rounds], [r["reward_mean"] for r in rounds], "o-", color="C0",
                   label="rollout reward (mean)")
    ax.set_xlabel("round")
    ax.set_ylabel("rollout reward (mean)", color="C0")
    right_ax = ax.twinx()
    evals = summary["evaluations"]
    right = right_ax.plot([e["round"] for e in evals], [e["accuracy"] for e in evals], "s--", color="C1",
                          label="held-out accuracy (greedy)")
    right_ax.set_ylabel("held-out accuracy", color="C1")
    ax.set_title(f"{summary['pipeline']} ({summary['run_id']})")
    ax.grid(alpha=0.3)
    ax.legend(left + right, [line.get_label() for line in left + right], loc="best", fontsize=8)
    return _png(plt, fig)


def _metric_png(title: str, ylabel: str, series: list[tuple[str, list, list]], band: list | None = None) -> bytes:
    plt, fig, ax = _figure()
    for label, xs, ys in series:
        ax.plot(xs, ys, "o-", label=label)
    if band is not None:
        xs, lo, hi = band
        ax.fill_between(xs, lo, hi, alpha=0.2, label="± std")
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1 or band is not None:
        ax.legend(fontsize=8)
    return _png(plt, fig)


def plots(summary: dict[str, Any]) -> dict[str, bytes]:
    """plot-<metric>.png: one labelled figure per metric (module docstring)."""
    rounds = summary["rounds"]
    xs = [r["round"] for r in rounds]
    col = lambda key: [r[key] for r in rounds]  # noqa: E731
    mean, std = col("reward_mean"), col("reward_std")
    evals = summary["evaluations"]
    out = {
        "reward": _metric_png("rollout reward per round", "reward (mean over completions)", [("mean", xs, mean)],
                              band=[xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)]]),
        "kl": _metric_png("KL to the reference policy", "KL (per token)", [("KL", xs, col("kl"))]),
        "clip_fraction": _metric_png("clip fraction", "fraction of tokens clipped", [("clip", xs, col("clip_fraction"))]),
        "zero_std_ratio": _metric_png("zero-std groups", "fraction of groups with equal rewards",
                                      [("zero-std", xs, col("zero_std_ratio"))]),
        "eval_accuracy": _metric_png("held-out accuracy", "accuracy", [
            ("accuracy", [e["round"] for e in evals], [e["accuracy"] for e in evals]),
            ("reward mean", [e["round"] for e in evals], [e["reward_mean"] for e in evals])]),
    }
    plt, fig, ax = _figure()
    kinds = summary["time"]["per_kind"]
    ax.bar(list(kinds), list(kinds.values()), color="C2")
    ax.set_xlabel("stage kind")
    ax.set_ylabel("wall seconds (all rounds)")
    ax.set_title("wall time per stage kind")
    ax.grid(alpha=0.3, axis="y")
    out["stage_time"] = _png(plt, fig)
    return {f"plot-{name}.png": data for name, data in out.items()}


def _cell(text: Any) -> str:
    """A markdown table cell: one line, pipes escaped, shown as code."""
    flat = " ⏎ ".join(line.strip() for line in str(text).splitlines() if line.strip()) or " "
    flat = flat.replace("|", "\\|")
    return f"`{flat}`" if "`" not in flat else f"<code>{flat}</code>"


def _report_md(summary: dict[str, Any], baseline_rows: list[dict], final_rows: list[dict], limit: int,
               threshold: float) -> str:
    processes = summary.get("processes", 1)
    lines = [
        f"# {summary['pipeline']}: run {summary['run_id']}", "",
        f"Held-out accuracy {summary['baseline']['accuracy']:.3f} after SFT -> {summary['final']['accuracy']:.3f} "
        f"after {len(summary['rounds'])} MaskGRPO rounds (gain {summary['gain']:+.3f}); {summary['wall_seconds']:.0f} s"
        + (f" over {processes} processes (resumed)." if processes > 1 else "."),
        "", f"![curve]({CURVE})", "",
        "| round | reward mean | reward std | zero-std ratio | KL | clip fraction |", "|---|---|---|---|---|---|",
    ]
    for r in summary["rounds"]:
        lines.append(f"| {r['round']} | {r['reward_mean']:.3f} | {r['reward_std']:.3f} | {r['zero_std_ratio']:.3f} | "
                     f"{r['kl']:.4f} | {r['clip_fraction']:.3f} |")
    lines += ["", "## Metrics per round", ""]
    lines += [f"![{name}](plot-{name}.png)" for name in PLOTS]
    parts, total = summary["time"]["parts"], summary["wall_seconds"]
    lines += ["", "## Where the time went", "", "| part | seconds | share |", "|---|---|---|"]
    for part, seconds in parts.items():
        lines.append(f"| {part} | {seconds:.1f} | {seconds / total if total > 0 else 0.0:.1%} |")
    lines.append(f"| **total** | {total:.1f} | |")
    lines += ["", f"## Sample completions (same held-out prompts; ✓: reward >= {threshold:g})", "",
              "| prompt | reference | after SFT | after RL |", "|---|---|---|---|"]
    for before, after in list(zip(baseline_rows, final_rows))[:limit]:
        mark = lambda row: ("✓ " if row["reward"] >= threshold else "✗ ") + _cell(row["completion"])  # noqa: E731
        lines.append(f"| {_cell(before['prompt'])} | {_cell(before['answer'])} | {mark(before)} | {mark(after)} |")
    return "\n".join(lines) + "\n"


def load_processes(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The earlier processes of a run (``processes.json``; empty for a new run)."""
    from maskgrpo.store import StoreError

    try:
        return json.loads(store.read_run_file(run_id, PROCESSES))
    except StoreError:
        return []


def write_summary(run: RunSpec, store: Store, run_id: str, calls: list[StageCall], wall_seconds: float,
                  processes: int = 1, files: dict[str, bytes] | None = None) -> dict[str, Any]:
    """Write summary.json, report.md, curve.png, the plots and image grids beside the run's stage
    outputs; ``files`` (if given) receives every file written, and the evaluation samples
    (``samples/round-<r>.jsonl``) for the trackers' artifacts."""
    written = files if files is not None else {}

    def put(name: str, data: bytes) -> None:
        store.write_run_file(run_id, name, data)
        written[name] = data

    summary = build_summary(run, store, run_id, calls, wall_seconds, processes)
    evals = [c for c in calls if c.kind == "evaluate"]
    first = store.open(run_id, evals[0].output, evals[0].round).get_jsonl(SAMPLES)
    last = store.open(run_id, evals[-1].output, evals[-1].round).get_jsonl(SAMPLES)
    for call, rows in ((evals[0], first), (evals[-1], last)):
        written[f"samples/round-{call.round}.jsonl"] = "".join(json.dumps(r) + "\n" for r in rows).encode()
    put(SUMMARY, json.dumps(summary, indent=2).encode())
    put(CURVE, _curve_png(summary))
    for name, data in plots(summary).items():
        put(name, data)
    report = _report_md(summary, first, last, run.evaluate.num_samples, run.reward.accuracy_threshold)
    grids = []  # image runs: the evaluate stages' PNG grids (same prompts), baseline vs final
    for label, call in (("baseline", evals[0]), ("final", evals[-1])):
        committed = store.open(run_id, call.output, call.round)
        if IMAGES in committed.files():
            put(f"images-{label}.png", committed.get_bytes(IMAGES))
            grids.append(f"{label} (round {call.round}):\n\n![{label}](images-{label}.png)")
    if grids:
        report += "\n## Images (same held-out prompts; a row per prompt)\n\n" + "\n\n".join(grids) + "\n"
    gates = [c for c in calls if c.kind == "gate"]
    if gates:
        report += "\n" + store.open(run_id, gates[0].output, gates[0].round).get_bytes("decision.md").decode().replace("# ", "## ", 1)
    put(REPORT, report.encode())
    from maskgrpo.store import StoreError

    try:
        written[PIPELINE] = store.read_run_file(run_id, PIPELINE)
    except StoreError:  # a summary rebuilt outside a runner: no document stored
        pass
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
    if "gate" in summary:
        g, p = summary["gate"], summary.get("promotion") or {}
        lines.append(f"gate: {g['decision']} ({g['reason']}); champion now v{p.get('champion')}")
    return "\n".join(lines)
