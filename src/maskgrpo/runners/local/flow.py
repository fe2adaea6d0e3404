"""The Prefect runner (``maskgrpo run --runner prefect``, and ``maskgrpo schedule --local``): the
same ``run_pipeline`` as the plain runner (runners/local/plain.py), each stage call a Prefect task
with retries inside one flow (docs/design.md, "Orchestration").

With ``PREFECT_API_URL`` set, the flow reports to that long-lived server (its UI shows the runs);
without it Prefect 3 starts its ephemeral API server first (a subprocess with its own database:
the start-up cost that made plain the default). :func:`configure_prefect` sets a generous
startup timeout and turns analytics off (server and client: ``DO_NOT_TRACK``) before Prefect is
imported.

    maskgrpo run pipelines/toy-text.yaml --runner prefect
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from maskgrpo.plan import StageCall
from maskgrpo.runners.local.plain import OnDone, default_run_id, describe, run_pipeline
from maskgrpo.specs import load_run_spec
from maskgrpo.stages import run_stage
from maskgrpo.store import Store

__all__ = ["configure_prefect", "default_run_id", "describe", "execute", "run_pipeline", "run_pipeline_flow"]

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",  # the client's anonymous-usage banner and events
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_LOG_PRINTS": "false",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
}


def configure_prefect() -> None:
    """Quiet, reliable ephemeral Prefect on a slow machine (the user's own settings win)."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


configure_prefect()
from prefect import flow, task  # noqa: E402  (after configure_prefect, which must precede the import)


def execute(calls: list[StageCall], store: Store, retries: int = 1, on_done: OnDone | None = None,
            on_start: Callable[[StageCall], None] | None = None) -> dict[str, Any]:
    """Run ``calls`` in order as Prefect tasks inside the current flow; returns results by name."""
    results: dict[str, Any] = {}
    for call in calls:
        if on_start is not None:
            on_start(call)
        stage_task = task(run_stage, name=call.name, retries=retries, retry_delay_seconds=1,
                          persist_result=False, cache_policy=None)
        start = time.perf_counter()
        results[call.name] = stage_task(call.kind, call.spec, store)
        if on_done is not None:
            on_done(call, results[call.name], time.perf_counter() - start)
    return results


@flow(name="maskgrpo-pipeline", persist_result=False, log_prints=False)
def run_pipeline_flow(pipeline_path: str, store: str, run_id: str | None = None, overrides: list[str] | None = None,
                      resume: bool = True, log_format: str = "text") -> dict[str, Any]:
    """The flow: validate the document, run every stage of its plan, write summary and report.

    A scheduled deployment (runners/local/schedule.py) calls it with run_id None: a fresh run id
    per tick. ``resume`` is accepted for symmetry with the CLI: committed stages are always reused.
    ``log_format``: what ``maskgrpo run --log-format`` prints (runners/local/output.py), the same
    lines and JSON events as the plain runner.
    """
    from maskgrpo.runners.local.output import Output

    run = load_run_spec(Path(pipeline_path), overrides or [])
    out = Output(log_format)
    return run_pipeline(run, store, run_id or default_run_id(run), executor=execute, echo=out.line,
                        on_start=out.stage_start, on_done=out.stage_done)
