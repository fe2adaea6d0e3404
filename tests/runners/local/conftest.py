"""One tiny end-to-end ``maskgrpo run`` (in-process CLI, real Prefect, file:// store) shared by
the runner tests, and the overrides that make it tiny: 20 SFT steps, 2 rounds of 8 prompts x
G=4 (32 completions, 2 minibatches of 16, mu=4), the dense sort reward so updates move weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PIPELINE = ROOT / "pipelines" / "toy-text.yaml"
TINY_SETS = [
    "sft.steps=20", "rl.rounds=2", "rl.prompts_per_round=8", "rl.group_size=4", "rl.minibatch_size=16",
    "task.train_size=200", "task.eval_size=20", "reward.functions=[{name: sort_dense}]",
]


def set_args(sets: list[str] = TINY_SETS) -> list[str]:
    return [arg for s in sets for arg in ("--set", s)]


@pytest.fixture(scope="session")
def run_args() -> list[str]:
    """``PIPELINE --set ...`` of the tiny run (append --store/--run-id)."""
    return [str(PIPELINE), *set_args()]


@dataclass
class CliRun:
    root: Path  # store folder
    run_id: str
    code: int

    @property
    def uri(self) -> str:
        return f"file://{self.root}"


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory) -> CliRun:
    from maskgrpo.cli import main

    root = tmp_path_factory.mktemp("local") / "runs"
    code = main(["run", str(PIPELINE), "--store", f"file://{root}", "--run-id", "ref", *set_args()])
    return CliRun(root, "ref", code)
