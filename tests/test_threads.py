"""torch's intra-op threads (maskgrpo/threads.py): the default rule, and `maskgrpo run --threads N`
reaching torch in the process where the plain runner runs every stage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from maskgrpo import threads
from maskgrpo.cli import main

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "toy-text.yaml"


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    for var in (threads.ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    yield
    torch.set_num_threads(before)


def test_default_is_the_usable_cores_capped_unless_the_environment_says(restore_threads, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert threads.default_threads() == threads.MAX_DEFAULT  # 64 usable cores -> the cap, 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 5}, raising=False)
    assert threads.default_threads() == 2  # a CPU set of 2 cores (taskset, container)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.default_threads() == 1
    monkeypatch.setenv(threads.ENV, "3")  # set by `maskgrpo run --threads 3` for its children
    assert threads.default_threads() == 3
    monkeypatch.setenv(threads.ENV, "zero")
    with pytest.raises(ValueError, match="MASKGRPO_THREADS: expected a positive number of threads, got 'zero'"):
        threads.default_threads()


def test_run_threads_reaches_torch_in_the_stages(restore_threads, monkeypatch, tmp_path):
    """The plain runner's stages run in the CLI's process: record torch's thread count where the
    first stage would start (run_pipeline is replaced by a recorder, so nothing trains)."""
    import maskgrpo.runners.local.plain as plain

    seen = []

    def recorder(run, store, run_id, **_):
        seen.append((torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]))
        return {"skipped": "recorded"}

    monkeypatch.setattr(plain, "run_pipeline", recorder)
    target = 2 if torch.get_num_threads() != 2 else 3
    assert main(["run", str(PIPELINE), "--store", str(tmp_path), "--threads", str(target)]) == 0
    assert seen == [(target, str(target))]
    assert main(["run", str(PIPELINE), "--store", str(tmp_path), "--threads", "0"]) == 2
