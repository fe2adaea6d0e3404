"""The retraining stages without training (stages/resolve.py, gate.py, promote.py): the plan's
real specs against a file:// store whose checkpoints and evaluations are written by the test."""

import json
from pathlib import Path

import pytest

from maskgrpo.plan import build_plan
from maskgrpo.specs import RESOLVED_DATA, load_run_spec
from maskgrpo.stages import gate, promote, resolve
from maskgrpo.stages.retrain import resolved_spec
from maskgrpo.store import LeaseHeld, Registry, open_store
from maskgrpo.store.snapshot import row_id

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tick(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train-001.jsonl").write_text('{"prompt": "sort:21=", "answer": "12"}\n')
    (data / "eval.jsonl").write_text('{"prompt": "sort:31=", "answer": "13"}\n')
    store = open_store(f"file://{tmp_path}/runs")
    run = load_run_spec(ROOT / "pipelines" / "toy-retrain.yaml",
                        [f"retrain.data={data}/train-*.jsonl", f"task.params.eval_path={data}/eval.jsonl",
                         "rl.rounds=2"])  # the tests name rounds (evaluate/2, update/2), not the demo's count

    def calls(run_id):
        return {c.name: c for c in build_plan(run, run_id, store.uri, num_shards=1)}
    return store, calls, data


def fake_checkpoint(store, run_id, digest):
    with store.begin(run_id, "update", 2, spec_hash="x") as att:
        att.put_json("metrics.json", {"weight_digest": digest})
        return att.commit()


def champion(store, run_id, digest, files=()):
    reg = store.registry("toy-sort")
    v = reg.register({"run_id": run_id, "checkpoint": store.pin(fake_checkpoint(store, run_id, digest)),
                      "parent": reg.aliases()["champion"], "weight_digest": digest, "data_snapshot": {"files": list(files)}})
    reg.promote(v, expected=reg.aliases()["champion"])
    return v


def test_plan_of_a_retraining_tick(tick):
    _, plan, _ = tick
    calls = plan("t1")
    names = list(calls)
    assert names[:2] == ["resolve", "sft"] and names[-2:] == ["gate", "promote"]
    assert calls["sft"].after == ("resolve",)
    assert calls["gate"].after == ("evaluate_2", "evaluate_0") and calls["gate"].spec.champion == "evaluate/0"
    assert calls["rollout_1"].spec.task.params["path"] == RESOLVED_DATA
    assert calls["sft"].spec.model.source == "registry:toy-sort@champion"


def test_first_tick_cold_starts_then_a_resumed_run_keeps_its_champion(tick):
    store, calls, data = tick
    first = resolve.run(calls("t1")["resolve"].spec, store)
    assert first.champion is None and not first.warm_start and first.source == "builtin:tiny"
    assert resolved_spec(calls("t1")["sft"].spec, store).sft.enabled  # cold start: SFT runs
    store.registry("toy-sort").release_lease("t1")

    v1 = champion(store, "t1", "w1")
    spec = calls("t2")["resolve"].spec
    r = resolve.run(spec, store)
    assert (r.champion, r.warm_start, r.data_rows) == (v1, True, 1)
    sft = resolved_spec(calls("t2")["sft"].spec, store)
    assert sft.model.source == f"{store.uri}/t1/update/2" and not sft.sft.enabled  # warm start skips SFT
    path = resolved_spec(calls("t2")["rollout_1"].spec, store).task.params["path"]
    assert path.startswith(f"{store.uri}/t2/resolve/0/") and path.endswith("/data.jsonl")

    store.registry("toy-sort").release_lease("t2")
    v2 = champion(store, "t9", "w9")  # a new champion appears while t2 is interrupted
    again = resolve.run(spec, store)  # t2 resumed
    assert again.skipped and again.champion == v1
    assert resolved_spec(calls("t2")["sft"].spec, store).model.source == f"{store.uri}/t1/update/2"
    assert resolve.run(calls("t3")["resolve"].spec, store).champion == v2  # a fresh tick sees v2


def test_unseen_only_drops_files_in_the_champion_lineage(tick):
    store, calls, data = tick
    resolve.run(calls("t1")["resolve"].spec, store)
    seen = json.loads(json.dumps(store.open("t1", "resolve", 0).get_json("resolved.json")["data_snapshot"]["files"]))
    store.registry("toy-sort").release_lease("t1")
    champion(store, "t1", "w1", files=seen)
    with pytest.raises(ValueError, match="no new data for this tick"):
        resolve.run(calls("t2")["resolve"].spec, store)
    assert not store.registry("toy-sort").release_lease("t2")  # the failed tick released its lease
    (data / "train-002.jsonl").write_text('{"prompt": "sort:54=", "answer": "45"}\n{"prompt": "sort:65=", "answer": "56"}\n')
    r = resolve.run(calls("t3")["resolve"].spec, store)
    snap = store.open("t3", "resolve", 0).get_json("resolved.json")["data_snapshot"]
    assert r.data_rows == 2 and snap["excluded_seen"] == 1 and [Path(f["uri"]).name for f in snap["files"]] == ["train-002.jsonl"]


@pytest.mark.parametrize("rows", [False, True])
def test_unseen_rows_keeps_only_the_new_rows_of_a_file_that_grew(tmp_path, rows):
    """Tick 1 trains on train-001.jsonl (1 row); the file then grows by a row (new sha256, so the
    file-level filter keeps it whole) and train-002.jsonl (1 row) lands. With ``unseen_rows`` tick 2
    gets the 2 new rows; with ``unseen_only`` alone, all 3."""
    data = tmp_path / "data"
    data.mkdir()
    old_row = '{"prompt": "sort:21=", "answer": "12"}\n'
    (data / "train-001.jsonl").write_text(old_row)
    store = open_store(f"file://{tmp_path}/runs")
    run = load_run_spec(ROOT / "pipelines" / "toy-retrain.yaml",
                        [f"retrain.data={data}/train-*.jsonl", "rl.rounds=2", f"retrain.unseen_rows={str(rows).lower()}"])
    calls = lambda run_id: {c.name: c for c in build_plan(run, run_id, store.uri, num_shards=1)}  # noqa: E731
    resolve.run(calls("t1")["resolve"].spec, store)
    store.registry("toy-sort").release_lease("t1")
    first = store.open("t1", "resolve", 0).get_json("resolved.json")["data_snapshot"]
    if rows:  # the tick's row ids are committed and named in the snapshot
        ids = store.open("t1", "resolve", 0).get_bytes("row_ids.txt").decode().split()
        assert ids == [row_id(json.loads(old_row))] and first["row_ids"]["count"] == 1
    reg = store.registry("toy-sort")  # v1 trained on tick 1's snapshot, as promote records it
    v1 = reg.register({"run_id": "t1", "checkpoint": store.pin(fake_checkpoint(store, "t1", "w1")), "parent": None,
                       "data_snapshot": {k: first[k] for k in ("pattern", "files", "digest", "rows", "row_ids") if k in first}})
    reg.promote(v1, expected=None)
    # the same record with its keys reordered is the same row (canonical JSON): still seen
    (data / "train-001.jsonl").write_text(old_row + '{"answer": "12", "prompt": "sort:21="}\n{"prompt": "sort:43=", "answer": "34"}\n')
    (data / "train-002.jsonl").write_text('{"prompt": "sort:54=", "answer": "45"}\n')
    r = resolve.run(calls("t2")["resolve"].spec, store)
    snap = store.open("t2", "resolve", 0).get_json("resolved.json")["data_snapshot"]
    got = [row["prompt"] for row in store.open("t2", "resolve", 0).get_jsonl("data.jsonl")]
    if rows:
        assert got == ["sort:43=", "sort:54="] and r.data_rows == 2 and snap["excluded_seen_rows"] == 2
    else:
        assert got == ["sort:21=", "sort:21=", "sort:43=", "sort:54="] and "row_ids" not in snap
    assert snap["excluded_seen"] == 0  # no whole file was seen: train-001.jsonl changed


def test_a_second_tick_is_skipped_while_the_first_holds_the_lease(tick):
    store, calls, _ = tick
    resolve.run(calls("t1")["resolve"].spec, store)
    with pytest.raises(LeaseHeld, match="'t1' still holds"):
        resolve.run(calls("t2")["resolve"].spec, store)


def test_the_kfp_resolve_step_ends_cleanly_with_skip_while_the_lease_is_held(tick, tmp_path, capsys):
    """``python -m maskgrpo.stages.resolve ... --skip-path P`` (the KFP component's argv): a held
    lease -> exit 0, P = "true", the summary names the holder, nothing committed; free -> "false"."""
    store, calls, _ = tick
    store.registry("toy-sort").acquire_lease("t1", ttl_s=60)
    spec = calls("t2")["resolve"].spec.model_dump_json()
    out = {k: tmp_path / k for k in ("skip", "summary.md", "metrics.json")}
    argv = ["--spec", spec, "--skip-path", str(out["skip"]), "--summary-path", str(out["summary.md"]),
            "--metrics-path", str(out["metrics.json"])]
    assert resolve.main(argv) == 0
    assert out["skip"].read_text() == "true" and "'t1' still holds the retraining lease" in out["summary.md"].read_text()
    assert "skipped:" in capsys.readouterr().err and not store.list_runs()  # t2 committed nothing
    with pytest.raises(LeaseHeld):  # without --skip-path (local runners) the error reaches the caller
        resolve.main(argv[:2])
    store.registry("toy-sort").release_lease("t1")
    assert resolve.main(argv) == 0 and out["skip"].read_text() == "false"
    t3 = calls("t3")["resolve"].spec.model_dump_json()  # t2 holds the lease now; --flag=value is the same flag
    assert resolve.main(["--spec", t3, f"--skip-path={out['skip']}"]) == 0 and out["skip"].read_text() == "true"
    assert store.open("t2", "resolve", 0).get_json("resolved.json")["champion"] is None


def evaluation(store, run_id, round_, correct):
    rows = [{"prompt": f"p{i}", "completion": "x", "reward": float(c)} for i, c in enumerate(correct)]
    with store.begin(run_id, "evaluate", round_, spec_hash="e") as att:
        att.put_jsonl("samples.jsonl", rows)
        att.put_json("metrics.json", {"accuracy": sum(correct) / len(correct), "reward_mean": sum(correct) / len(correct),
                                      "examples": len(correct)})


def gated_tick(store, calls, run_id, old, new, digest="w1"):
    resolve.run(calls(run_id)["resolve"].spec, store)
    with store.begin(run_id, "sft", 0, spec_hash="s") as att:
        att.put_json("metrics.json", {"weight_digest": digest})
    evaluation(store, run_id, 0, old)
    evaluation(store, run_id, 2, new)
    fake_checkpoint(store, run_id, "w-" + run_id)
    return gate.run(calls(run_id)["gate"].spec, store)


def test_gate_and_promote_move_the_champion_only_on_a_clear_win(tick):
    store, calls, data = tick
    v1 = champion(store, "t0", "w1")
    reg: Registry = store.registry("toy-sort")
    better = gated_tick(store, calls, "t1", old=[1] * 50 + [0] * 50, new=[1] * 90 + [0] * 10)
    assert better.decision == "promote" and better.diff == pytest.approx(0.4) and better.ci_low > 0
    p = promote.run(calls("t1")["promote"].spec, store)
    assert p.promoted and p.champion == p.version == 2
    doc = reg.get(2)
    assert doc["parent"] == v1 and doc["checkpoint"]["run_id"] == "t1" and doc["weight_digest"] == "w-t1"
    assert doc["metrics"]["accuracy"] == 0.9 and doc["gate"]["decision"] == "promote" and doc["data_snapshot"]["rows"] == 1
    assert "Promotion gate: **PROMOTE**" in store.open("t1", "gate", 2).get_bytes("decision.md").decode()

    (data / "train-002.jsonl").write_text('{"prompt": "sort:54=", "answer": "45"}\n')
    worse = gated_tick(store, calls, "t2", old=[1] * 90 + [0] * 10, new=[1] * 40 + [0] * 60, digest="w-t1")
    assert worse.decision == "reject"
    p = promote.run(calls("t2")["promote"].spec, store)
    assert not p.promoted and p.version is None and reg.aliases()["champion"] == 2 and reg.version_numbers() == [1, 2]
    reg.acquire_lease("t3", ttl_s=60)  # the rejecting gate released t2's lease
    reg.release_lease("t3")


def test_gate_refuses_a_warm_start_that_loaded_other_weights(tick):
    store, calls, _ = tick
    champion(store, "t0", "w1")
    with pytest.raises(Exception, match="the warm start loaded weights"):
        gated_tick(store, calls, "t1", old=[1] * 50, new=[1] * 50, digest="something-else")


def test_a_crash_between_register_and_alias_move_then_a_rerun(tick, monkeypatch):
    store, calls, _ = tick
    champion(store, "t0", "w1")
    gated_tick(store, calls, "t1", old=[0] * 100, new=[1] * 100)

    def crash(self, *a, **k):
        raise SystemExit("killed")
    monkeypatch.setattr(Registry, "promote", crash)
    with pytest.raises(SystemExit):
        promote.run(calls("t1")["promote"].spec, store)
    reg = store.registry("toy-sort")
    assert reg.aliases()["champion"] == 1 and reg.orphans() == [2]  # old champion stays, orphan visible
    assert not store.is_done("t1", "promote", 2, "anything")
    monkeypatch.undo()
    p = promote.run(calls("t1")["promote"].spec, store)  # the rerun reuses its version
    assert p.promoted and p.version == 2 and reg.version_numbers() == [1, 2] and reg.orphans() == []
