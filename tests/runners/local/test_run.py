"""``maskgrpo run`` end to end on a tiny config (shared run, conftest.py): summary.json, report.md,
curve.png, ``maskgrpo show``, refusal to overwrite a run id, ``maskgrpo gc``."""

from __future__ import annotations

import json
import shutil

from maskgrpo.cli import main
from maskgrpo.store import open_store



def test_run_writes_summary_report_and_curve(cli_run):
    assert cli_run.code == 0
    run_dir = cli_run.root / cli_run.run_id
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run_id"] == "ref" and summary["pipeline"] == "toy-text"
    for part in ("baseline", "final"):
        assert set(summary[part]) == {"accuracy", "reward_mean"}
        assert 0.0 <= summary[part]["accuracy"] <= 1.0
    assert summary["gain"] == summary["final"]["accuracy"] - summary["baseline"]["accuracy"]
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    for r in summary["rounds"]:
        assert {"round", "reward_mean", "reward_std", "zero_std_ratio", "kl", "clip_fraction"} <= set(r)
        assert 0.0 <= r["zero_std_ratio"] <= 1.0 and 0.0 <= r["clip_fraction"] <= 1.0
        assert r["kl"] == 0.0  # beta = 0: no reference, no KL
    assert [e["round"] for e in summary["evaluations"]] == [0, 2]  # every 2 rounds, the end coincides
    assert summary["wall_seconds"] > 0 and len(summary["final_weight_digest"]) == 64
    # the summary is read back from the committed outputs
    store = open_store(cli_run.uri)
    assert summary["final_weight_digest"] == store.open("ref", "update", 2).get_json("metrics.json")["weight_digest"]
    assert summary["baseline"]["accuracy"] == store.open("ref", "evaluate", 0).get_json("metrics.json")["accuracy"]
    report = (run_dir / "report.md").read_text()
    assert "# toy-text: run ref" in report and "![curve](curve.png)" in report
    assert "| 2 |" in report and "## Sample completions" in report
    assert (run_dir / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show(cli_run, capsys):
    assert main(["show", f"{cli_run.uri}/ref"]) == 0
    out = capsys.readouterr().out
    assert f"run ref in {cli_run.uri}" in out
    for stage in ("sft", "evaluate", "rollout", "score", "update"):
        assert stage in out
    assert out.count("committed") >= 9 and "uncommitted" not in out  # 9 stage calls, all committed
    assert "held-out accuracy" in out
    # each committed checkpoint's full path, what `maskgrpo merge` takes
    final = open_store(cli_run.uri).open("ref", "update", 2)
    path = cli_run.root / "ref" / "update" / "2" / final.attempt_id / "checkpoint"
    assert f"    checkpoint: {path}\n" in out and (path / "config.json").exists()
    assert out.count("    checkpoint: ") == 3  # sft, update_1, update_2
    assert main(["show", f"{cli_run.uri}/nope"]) == 1
    assert "no run 'nope'" in capsys.readouterr().err


def test_same_run_id_without_resume_is_refused(cli_run, run_args, capsys):
    before = sorted(p for p in (cli_run.root / "ref").rglob("*"))
    code = main(["run", *run_args, "--store", cli_run.uri, "--run-id", "ref"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"run 'ref' already exists in {cli_run.uri}; pass --resume to continue it" in err
    assert sorted(p for p in (cli_run.root / "ref").rglob("*")) == before


def test_resume_needs_a_run_id(cli_run, run_args, capsys):
    assert main(["run", *run_args, "--store", cli_run.uri, "--resume"]) == 2
    assert "--resume needs the --run-id" in capsys.readouterr().err


def test_gc_removes_only_orphans(cli_run, tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(cli_run.root, root)
    store = open_store(f"file://{root}")
    committed = store.open("ref", "evaluate", 0)
    # an orphan: an old attempt no pointer names (as a crashed writer leaves behind)
    orphan = root / "ref" / "evaluate" / "0" / "20200101T000000Z-0123456789ab"
    shutil.copytree(root / "ref" / "evaluate" / "0" / committed.attempt_id, orphan)
    assert main(["gc", f"file://{root}", "--run-id", "ref", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 1 orphan attempt(s)" in out and orphan.name in out
    assert orphan.exists()
    assert main(["gc", f"file://{root}"]) == 0
    assert "removed 1 orphan attempt(s)" in capsys.readouterr().out
    assert not orphan.exists()
    assert store.open("ref", "evaluate", 0).attempt_id == committed.attempt_id  # committed output kept
    assert main(["gc", f"file://{root}"]) == 0
    assert "removed 0 orphan attempt(s)" in capsys.readouterr().out
