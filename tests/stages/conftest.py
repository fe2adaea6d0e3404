"""One tiny run of the five stages, called directly (no Prefect) against a file:// store, shared
by the stage tests: sort-6 task, 20 SFT steps, one round of 4 prompts x G=4, mu=2, the dense
sort reward (so the advantages are not all zero and the update has something to learn)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from maskgrpo.plan import StageCall, build_plan
from maskgrpo.specs import RunSpec
from maskgrpo.stages import get_stage
from maskgrpo.store import Store, open_store

TINY_DOC = {
    "name": "tiny",
    "seed": 0,
    "task": {"name": "sort", "params": {"length": 6}, "train_size": 200, "eval_size": 20},
    "reward": {"functions": [{"name": "sort_dense"}]},
    "sft": {"steps": 20, "batch_size": 64, "lr": 1e-3},
    "rl": {"rounds": 1, "prompts_per_round": 4, "group_size": 4, "minibatch_size": 16, "num_iterations": 2,
           "lr": 1e-3, "sampler": {"gen_length": 8, "steps": 8, "block_length": 8, "temperature": 1.0}},
    "evaluate": {"sampler": {"gen_length": 8, "steps": 8, "block_length": 8, "temperature": 0.0}},
}
RUN_ID = "stages"


@dataclass
class TinyRun:
    root: Path  # the store folder
    store: Store
    run: RunSpec
    calls: dict[str, StageCall]
    results: dict[str, object]

    def copy_store(self, dest: Path) -> tuple[Store, Path]:
        """A private copy of the store (for tests that damage it)."""
        shutil.copytree(self.root, dest)
        return open_store(f"file://{dest}"), dest

    def spec_in(self, name: str, store: Store):
        return self.calls[name].spec.model_copy(update={"store": store.uri})


def files_under(path: Path) -> dict[str, int]:
    """Relative path -> size of every file (lock files included): a snapshot to compare."""
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def committed_stages(store: Store, run_id: str) -> dict[tuple[str, int], str]:
    return {(s["stage"], s["round"]): s["attempt_id"] for s in store.list_stages(run_id) if s["committed"]}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    root = tmp_path_factory.mktemp("stages") / "runs"
    store = open_store(f"file://{root}")
    run = RunSpec.model_validate(TINY_DOC)
    calls = build_plan(run, RUN_ID, store.uri, num_shards=1)
    results = {c.name: get_stage(c.kind)(c.spec, store) for c in calls}
    return TinyRun(root, store, run, {c.name: c for c in calls}, results)
