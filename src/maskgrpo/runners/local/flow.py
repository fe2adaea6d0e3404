"""The local runner: a Prefect flow that walks the plan in one process (docs/design.md, "Orchestration").

Each stage call is a Prefect task with retries; stages skip themselves when their committed
output matches their spec hash, so ``--resume`` (or a Prefect retry) recomputes nothing that is
committed. Models stay in the stages' process-local cache between stages. Prefect runs in its
ephemeral mode (no server): :func:`configure_prefect` sets a generous startup timeout and turns
analytics off before Prefect is imported.

    maskgrpo run pipelines/toy-text.yaml
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from maskgrpo.plan import StageCall, build_plan
from maskgrpo.specs import RunSpec, load_run_spec
from maskgrpo.stages import get_stage
from maskgrpo.store import Store, open_store

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_LOG_PRINTS": "false",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
}


def configure_prefect() -> None:
    """Quiet, reliable ephemeral Prefect on a slow machine (the user's own settings win)."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _describe(call: StageCall, result: Any) -> str:
    data = result.model_dump()
    if data.get("skipped"):
        return "skipped (committed)"
    keys = {
        "sft": ("loss_last",), "rollout": ("forwards_per_completion",), "score": ("reward_mean", "zero_std_ratio"),
        "update": ("loss", "clip_fraction", "kl"), "evaluate": ("accuracy", "reward_mean"),
    }[call.kind]
    return "  ".join(f"{k}={data[k]:.3f}" for k in keys)


configure_prefect()
from prefect import flow, task  # noqa: E402  (after configure_prefect, which must precede the import)


def execute(calls: list[StageCall], store: Store, retries: int = 1,
            on_done: Callable[[StageCall, Any, float], None] | None = None) -> dict[str, Any]:
    """Run ``calls`` in order as Prefect tasks inside the current flow; returns results by name."""
    results: dict[str, Any] = {}
    for call in calls:
        stage_task = task(get_stage(call.kind), name=call.name, retries=retries, retry_delay_seconds=1,
                          persist_result=False, cache_policy=None)
        start = time.perf_counter()
        results[call.name] = stage_task(call.spec, store)
        if on_done is not None:
            on_done(call, results[call.name], time.perf_counter() - start)
    return results


@flow(name="maskgrpo-pipeline", persist_result=False, log_prints=False)
def run_pipeline_flow(pipeline_path: str, store: str, run_id: str | None = None, overrides: list[str] | None = None,
                      resume: bool = True) -> dict[str, Any]:
    """The flow: validate the document, run every stage of its plan, write summary and report.

    A scheduled deployment (runners/local/schedule.py) calls it with run_id None: a fresh run id
    per tick. ``resume`` is accepted for symmetry with the CLI: committed stages are always reused.
    """
    run = load_run_spec(Path(pipeline_path), overrides or [])
    return run_pipeline(run, store, run_id or default_run_id(run))


def run_pipeline(run: RunSpec, store_uri: str, run_id: str, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole plan of ``run`` (inside a flow when called from one); returns the run summary."""
    from maskgrpo.runners.local.report import write_summary

    store = open_store(store_uri)
    store.check_reachable()
    calls = build_plan(run, run_id, store.uri, num_shards=1)
    started = time.perf_counter()

    def progress(call: StageCall, result: Any, seconds: float) -> None:
        index = calls.index(call) + 1
        echo(f"[{index:>3}/{len(calls)}] {call.name:<14} {seconds:6.1f}s  {_describe(call, result)}")

    execute(calls, store, retries=1, on_done=progress)
    return write_summary(run, store, run_id, calls, wall_seconds=time.perf_counter() - started)


def default_run_id(run: RunSpec) -> str:
    return f"{run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
