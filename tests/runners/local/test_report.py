"""runners/local/report.py: the report of the shared tiny run (plots, time breakdown, the stored
document) and the sample table's rendering (multi-line prompts, the accuracy threshold)."""

from __future__ import annotations

import json

import pytest
import yaml

from maskgrpo.runners.local.report import PLOTS, _report_md
from maskgrpo.specs import load_run_spec

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_has_a_labelled_plot_per_metric_and_the_time_breakdown(cli_run):
    run_dir = cli_run.root / cli_run.run_id
    report = (run_dir / "report.md").read_text()
    for name in PLOTS:
        assert f"![{name}](plot-{name}.png)" in report
        assert (run_dir / f"plot-{name}.png").read_bytes()[:8] == PNG
    summary = json.loads((run_dir / "summary.json").read_text())
    parts, per_kind = summary["time"]["parts"], summary["time"]["per_kind"]
    assert set(per_kind) == {"sft", "evaluate", "rollout", "score", "update"}
    for part in ("rollout (generation)", "old log-probs", "update (optimizer)", "store I/O", "orchestration"):
        assert parts[part] >= 0 and f"| {part} | {parts[part]:.1f} |" in report
    assert parts["rollout (generation)"] > 0 and parts["update (optimizer)"] > 0
    # the parts add up to the run's wall time (orchestration is what the stages' clocks do not see)
    assert sum(parts.values()) == pytest.approx(summary["wall_seconds"], rel=1e-9)
    assert summary["processes"] == 1


def test_the_resolved_document_with_overrides_is_stored_with_the_run(cli_run, run_args):
    stored = yaml.safe_load((cli_run.root / cli_run.run_id / "pipeline.yaml").read_text())
    assert stored == load_run_spec(run_args[0], run_args[2::2]).model_dump(mode="json")
    assert stored["sft"]["steps"] == 20 and [f["name"] for f in stored["reward"]["functions"]] == ["sort_dense"]


SUMMARY = {"pipeline": "p", "run_id": "r", "baseline": {"accuracy": 0.0}, "final": {"accuracy": 0.5}, "gain": 0.5,
           "wall_seconds": 10.0, "rounds": [], "time": {"parts": {"orchestration": 10.0}}}


def table_rows(report: str) -> list[str]:
    section = report.split("## Sample completions")[1]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| prompt")]


def test_multi_line_prompts_stay_one_table_row_each():
    prompt = "Natalia sold clips to 48 of her friends.\nHow many clips did she sell?\n\nAnswer: | x"
    rows = [{"prompt": prompt, "answer": "72", "completion": "She sold 48.\n#### 72", "reward": 1.0}] * 2
    report = _report_md(SUMMARY, rows, rows, limit=2, threshold=1.0)
    lines = table_rows(report)
    assert len(lines) == 2  # one line per sample, nothing spilled
    cells = [c for c in lines[0].split(" | ")]
    assert len(cells) == 4 and "\n" not in lines[0]
    assert "How many clips did she sell? ⏎ Answer: \\| x" in lines[0]


def test_check_marks_use_the_accuracy_threshold():
    before = [{"prompt": "p", "answer": "a", "completion": "c", "reward": 0.6}]
    after = [{"prompt": "p", "answer": "a", "completion": "c", "reward": 0.4}]
    lenient = table_rows(_report_md(SUMMARY, before, after, limit=1, threshold=0.5))[0]
    assert lenient.endswith("| ✓ `c` | ✗ `c` |")
    strict = table_rows(_report_md(SUMMARY, before, after, limit=1, threshold=1.0))[0]
    assert strict.endswith("| ✗ `c` | ✗ `c` |")
    assert "✓: reward >= 0.5" in _report_md(SUMMARY, before, after, limit=1, threshold=0.5)


def test_every_plot_has_a_title_and_both_axes_labelled(cli_run, monkeypatch):
    from maskgrpo.runners.local import report

    summary = json.loads((cli_run.root / cli_run.run_id / "summary.json").read_text())
    seen, original = [], report._png

    def record(plt, fig):
        seen.append([(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes])
        return original(plt, fig)

    monkeypatch.setattr(report, "_png", record)
    files = report.plots(summary)
    assert sorted(files) == sorted(f"plot-{name}.png" for name in PLOTS) and len(seen) == len(PLOTS)
    for axes in seen:
        (title, xlabel, ylabel), = axes
        assert title and xlabel and ylabel, axes
    report._curve_png(summary)
    (left, right) = seen[-1]  # the curve: reward and accuracy on their own labelled axes
    assert left[1] == "round" and left[2] == "rollout reward (mean)" and right[2] == "held-out accuracy"
