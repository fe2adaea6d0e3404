"""Retraining ticks with real (tiny, CPU) training: what a warm start carries from the champion.

Each test runs a first tick of pipelines/toy-retrain.yaml shrunk to one round (runners/local/plain.py
``run_pipeline`` on a file:// store), makes its final update the champion (register + promote, as
the promote stage does, whatever the gate said: the test is about the next tick's start, not the
gate), then runs a second tick and reads what its first update started from."""

from pathlib import Path

import pytest

from maskgrpo.artifacts import OPTIMIZER_TENSORS
from maskgrpo.runners.local.plain import run_pipeline
from maskgrpo.specs import load_run_spec
from maskgrpo.stages.retrain import write_data_drop
from maskgrpo.store import open_store

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["rl.rounds=1", "rl.prompts_per_round=8", "rl.group_size=4", "rl.num_iterations=2", "rl.minibatch_size=16",
         "sft.steps=10", "task.train_size=64", "task.eval_size=16", "evaluate.num_samples=1",
         "retrain.gate.min_examples=1"]


def run_tick(tmp_path, tick, extra=()):
    data = tmp_path / "data"
    write_data_drop(data, tick, rows=64)
    run = load_run_spec(ROOT / "pipelines" / "toy-retrain.yaml",
                        [f"retrain.data={data}/train-*.jsonl", f"task.params.eval_path={data}/eval.jsonl", *SMALL, *extra])
    store_uri = f"file://{tmp_path}/runs"
    run_pipeline(run, store_uri, f"t{tick}", echo=lambda _: None)
    return open_store(store_uri)


def make_champion(store, run_id):
    reg = store.registry("toy-sort")
    if reg.aliases()["champion"] is None:  # the gate did not promote: promote by hand (module docstring)
        v = reg.register({"run_id": run_id, "checkpoint": store.pin(store.open(run_id, "update", 1)), "parent": None,
                          "data_snapshot": None})
        reg.promote(v, expected=None)
    return reg.aliases()["champion"]


def steps(store, run_id):
    """AdamW's step count of the first parameter after ``run_id``'s update 1."""
    tensors = store.open(run_id, "update", 1).get_tensors(OPTIMIZER_TENSORS)
    return int(tensors["0.step"].item())


@pytest.mark.parametrize("carry", [False, True])
def test_adamw_state_crosses_ticks_only_when_asked(tmp_path, carry):
    extra = ["retrain.carry_optimizer=true"] if carry else []
    store = run_tick(tmp_path, 1, extra)
    make_champion(store, "t1")
    first = steps(store, "t1")  # 2 iterations x (8 prompts x 4 completions / 16 per minibatch) = 4 steps
    assert first == 4
    run_tick(tmp_path, 2, [*extra, "rl.lr=2.0e-4"])
    assert store.open("t2", "resolve", 0).get_json("resolved.json")["warm_start"]
    # carried: the champion's 4 steps + this round's 4; fresh: this round's 4 only
    assert steps(store, "t2") == (2 * first if carry else first)
    # carried or not, the tick's own hyperparameters (tick 1 ran at lr 1e-4)
    assert store.open("t2", "update", 1).get_json("optimizer.json")["param_groups"][0]["lr"] == pytest.approx(2e-4)


def test_lora_champion_warm_start_trains_its_adapters_and_export_merges(tmp_path, monkeypatch):
    """A base (tick 0's full-weight SFT checkpoint of toy-sort), then a LoRA model on it: tick 1
    trains SFT + RL adapters from the base, its update becomes champion; tick 2 warm-starts from
    that adapter checkpoint: the champion's adapters are loaded onto the base (the gate's digest
    check passes), keep training (same merged chain, adapters moved), and the merged export is
    the trained policy."""
    import torch

    from maskgrpo.models.adapters import load_model
    from maskgrpo.models.loading import local_source
    from maskgrpo.models.lora import merge_adapters, merged_chain
    from maskgrpo.stages.policy import load_policy

    monkeypatch.setenv("MASKGRPO_CACHE", str(tmp_path / "cache"))
    store = run_tick(tmp_path, 1)  # a full-weight toy-sort run: its sft/0 is the base
    base = f"{store.uri}/t1/sft/0"
    lora = ["retrain.model=toy-lora", "model.source=registry:toy-lora@champion", f"retrain.initial_source={base}",
            "model.lora={r: 4, alpha: 8.0}", "sft.steps=4", "rl.lr=1.0e-2"]
    data = tmp_path / "data"

    def lora_tick(run_id, tick):
        write_data_drop(data, tick, rows=64)
        run = load_run_spec(ROOT / "pipelines" / "toy-retrain.yaml",
                            [f"retrain.data={data}/train-*.jsonl", f"task.params.eval_path={data}/eval.jsonl", *SMALL, *lora])
        run_pipeline(run, store.uri, run_id, echo=lambda _: None)

    lora_tick("l1", 2)
    reg = store.registry("toy-lora")
    if reg.aliases()["champion"] is None:  # promote tick l1 by hand, recording its weights' digest as promote does
        ckpt = store.open("l1", "update", 1)
        v = reg.register({"run_id": "l1", "checkpoint": store.pin(ckpt), "parent": None, "data_snapshot": None,
                          "weight_digest": ckpt.get_json("metrics.json")["weight_digest"]})
        reg.promote(v, expected=None)
    lora_tick("l2", 3)
    resolved = store.open("l2", "resolve", 0).get_json("resolved.json")
    assert resolved["warm_start"] and resolved["source"].endswith("/l1/update/1")
    # the pass-through SFT loaded exactly the champion (the gate checks the same digests)
    assert store.open("l2", "sft", 0).get_json("metrics.json")["weight_digest"] == resolved["champion_weight_digest"]

    def local(run_id, stage, round_):
        return store.open(run_id, stage, round_).get_dir("checkpoint", tmp_path / f"{run_id}-{stage}{round_}")
    champion_dir, challenger_dir = local("l1", "update", 1), local("l2", "update", 1)
    names = {p.name for p in challenger_dir.iterdir()}
    assert "adapter_model.safetensors" in names and "model.safetensors" not in names  # adapters only
    assert len(merged_chain(challenger_dir)) == len(merged_chain(champion_dir)) == 1  # tick 1's SFT adapters; no new fold
    from safetensors.torch import load_file

    before, after = load_file(champion_dir / "adapter_model.safetensors"), load_file(challenger_dir / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert all(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)  # every B trained on

    # export (what `maskgrpo models export` runs): base + chain + adapters folded = the trained policy
    run = load_run_spec(ROOT / "pipelines" / "toy-retrain.yaml", [*SMALL, *lora])
    policy = load_policy(store, "l2", "update/1", run.model.model_copy(update={"source": resolved["source"]}))
    merged = load_model(merge_adapters(challenger_dir, tmp_path / "export", local_source(base)))  # as cli.cmd_export
    x = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10]])
    torch.testing.assert_close(merged(x).logits, policy.logits(x), atol=1e-5, rtol=1e-5)
