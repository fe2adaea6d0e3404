"""The scheduled-retraining demo, small: three ticks of pipelines/toy-retrain.yaml with a data drop
each, the third drop corrupted (answers in descending order), on a file:// store
(runners/local/schedule.py ``simulate_ticks``; `maskgrpo retrain-ticks` is the same code).

Fixed seeds make the run deterministic. Most assertions are the gate's guarantees: a promoted tick
beat its champion with an interval above 0, the corrupted tick is not promoted and leaves the
champion unchanged, every version's lineage is recorded. One is the demo's claim for seed 0 with
the settings of toy-retrain.yaml (3 rounds of 32 prompts, lr 1e-4 per tick): both clean ticks are
promoted, so the champion's held-out reward rises twice (README table). About 30 s of CPU
(80 s wall on the shared 2-core machine)."""

import json
from pathlib import Path

import pytest

from maskgrpo.runners.local.report import format_table
from maskgrpo.runners.local.schedule import format_ticks, simulate_ticks
from maskgrpo.store import open_store

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_three_ticks_promote_improvements_and_reject_a_corrupted_drop(tmp_path):
    store = f"file://{tmp_path}/runs"
    rows = simulate_ticks(ROOT / "pipelines" / "toy-retrain.yaml", ticks=3, store=store, data_dir=tmp_path / "data",
                          bad_ticks=(3,), echo=lambda _: None)
    print(format_ticks(rows))
    reg = open_store(store).registry("toy-sort")
    assert [r["tick"] for r in rows] == [1, 2, 3]
    assert rows[0]["champion_before"] is None and rows[0]["decision"] == "promote" and rows[0]["champion_after"] == 1
    assert [r["decision"] for r in rows[:2]] == ["promote", "promote"]  # seed 0: the champion improves twice
    assert rows[1]["champion_metric"] == pytest.approx(rows[0]["challenger_metric"])  # tick 2 is gated against v1
    for r in rows:
        promoted = r["champion_after"] != r["champion_before"]
        assert promoted == (r["decision"] == "promote")
        if promoted:
            assert r["challenger_metric"] > r["champion_metric"] and r["ci_low"] > 0
    bad = rows[2]
    assert bad["corrupted"] and bad["decision"] != "promote" and bad["champion_after"] == bad["champion_before"]
    assert bad["challenger_metric"] < bad["champion_metric"]  # the corrupted drop made it worse
    champion = reg.aliases()["champion"]
    lineage = reg.lineage(champion)
    assert lineage[-1]["parent"] is None and all(v["data_snapshot"]["files"] for v in lineage)
    assert reg.orphans() == []
    # `maskgrpo show` and the report carry the decision
    summary = json.loads(open_store(store).read_run_file("toy-retrain-tick3", "summary.json"))
    assert f"gate: {bad['decision']}" in format_table(summary)
    assert "Promotion gate" in open_store(store).read_run_file("toy-retrain-tick3", "report.md").decode()
