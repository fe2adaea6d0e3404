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
