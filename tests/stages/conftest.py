"""Tiny runs of the five stages, called directly (no Prefect) against a file:// store, shared by
the stage tests. Text: sort-6, 20 SFT steps, one round of 4 prompts x G=4, mu=2, the dense sort
reward (so the advantages are not all zero and the update has something to learn). Image: toy
GenEval colours on 8x8 grids, 3 SFT steps, one round of 2 prompts x G=2 with emerge rollouts,
mu=2, the soft detector reward. ``modality_run`` is parametrised over both."""

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
IMAGE_DOC = {
    "name": "tiny-image", "seed": 0, "modality": "image",
    "image": {"grid_size": 8, "codebook_size": 5, "text_slots": 20},
    "model": {"tiny": {"hidden_size": 16, "num_layers": 1, "num_heads": 2}},
    "task": {"name": "toy-geneval", "params": {"tags": ["colors"]}, "train_size": 8, "eval_size": 2},
    "reward": {"functions": [{"name": "geneval_soft"}]},
    "sft": {"steps": 3, "batch_size": 4},
    "rl": {"rounds": 1, "prompts_per_round": 2, "group_size": 2, "num_iterations": 2, "min_mask_rate": 0.8,
           "minibatch_size": 4, "sampler": {"sampler": "emerge", "steps": 4, "cfg_scale": 1.0}},
    "evaluate": {"num_samples": 2, "sampler": {"sampler": "maskgit", "steps": 4, "cfg_scale": 1.0, "temperature": 0.0}},
}
DOCS = {"text": TINY_DOC, "image": IMAGE_DOC}
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


def run_all(doc: dict, root: Path) -> TinyRun:
    store = open_store(f"file://{root}")
    run = RunSpec.model_validate(doc)
    calls = build_plan(run, RUN_ID, store.uri, num_shards=1)
    results = {c.name: get_stage(c.kind)(c.spec, store) for c in calls}
    return TinyRun(root, store, run, {c.name: c for c in calls}, results)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    return run_all(TINY_DOC, tmp_path_factory.mktemp("stages") / "runs")


@pytest.fixture(scope="session")
def image_run(tmp_path_factory) -> TinyRun:
    return run_all(IMAGE_DOC, tmp_path_factory.mktemp("image-stages") / "runs")


@pytest.fixture(params=["text", "image"])
def modality_run(request) -> TinyRun:
    """The text and the image tiny runs, one test each."""
    return request.getfixturevalue("tiny_run" if request.param == "text" else "image_run")
