"""Scheduled retraining on one machine: a Prefect deployment of the local flow on a cron schedule.

    prefect server start                                   # a real server runs the scheduler
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    maskgrpo schedule pipelines/toy-text.yaml --local --cron "0 3 * * *"

1. ``local_deployment`` builds the deployment (``Flow.to_deployment``): the flow is
   ``maskgrpo.runners.local.flow.run_pipeline_flow`` and its parameters are the pipeline path
   (absolute), the store, the ``--set`` overrides, ``run_id=None`` (each run gets a fresh id, so
   every tick retrains) and ``resume=False``.
2. ``schedule_local`` serves it (``prefect.serve``) until interrupted: the server creates runs on
   the schedule and this process executes them.
3. Cron: Prefect's standard five fields (minute first). KFP's six-field form is accepted when its
   seconds field is ``0`` (dropped); anything else is refused with the reason.

Prefect's ephemeral mode has no scheduler, so ``schedule_local`` refuses to start without
``PREFECT_API_URL`` pointing at a server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["schedule_local", "local_deployment", "local_cron", "DEFAULT_LOCAL_STORE"]

DEFAULT_LOCAL_STORE = "file://./runs"


def local_cron(expr: str) -> str:
    """Prefect's five-field cron from a five- or (seconds-first, seconds=0) six-field expression."""
    parts = str(expr).split()
    if len(parts) == 6:
        if parts[0] != "0":
            raise ValueError(f"--cron {expr!r}: Prefect schedules have minute resolution; "
                             "a six-field (seconds-first) expression needs seconds = 0")
        parts = parts[1:]
    if len(parts) != 5:
        raise ValueError(f"--cron {expr!r}: expected 5 fields (minute hour day-of-month month day-of-week), "
                         f"got {len(parts)}")
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    text = " ".join(parts)
    try:
        CronSchedule(cron=text)  # Prefect's own validation
    except ValidationError:
        raise ValueError(f"--cron {expr!r}: not a valid cron expression") from None
    return text


def local_deployment(pipeline_path: Path, cron: str, *, store: str | None, overrides: list[str],
                     name: str | None = None, flow: Any = None) -> Any:
    """The Prefect ``RunnerDeployment`` that ``schedule_local`` serves (built offline; no server)."""
    from maskgrpo.specs import load_run_spec

    path = Path(pipeline_path).resolve()
    run = load_run_spec(path, overrides)  # fail now, with the field path, not at the first tick
    if flow is None:
        from .flow import run_pipeline_flow as flow
    parameters = {"pipeline_path": str(path), "store": store or DEFAULT_LOCAL_STORE, "run_id": None,
                  "overrides": list(overrides), "resume": False}
    return flow.to_deployment(name=name or f"{run.name}-scheduled", cron=local_cron(cron), parameters=parameters,
                              description=f"maskgrpo scheduled retraining of {path.name}",
                              tags=["maskgrpo", run.name])


def schedule_local(pipeline_path: Path, cron: str, *, store: str | None, overrides: list[str]) -> None:
    """Serve the scheduled deployment until interrupted (needs a Prefect server)."""
    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise RuntimeError("a Prefect schedule needs a Prefect server: run `prefect server start` and set "
                           "PREFECT_API_URL=http://127.0.0.1:4200/api (ephemeral mode has no scheduler)")
    serve(local_deployment(pipeline_path, cron, store=store, overrides=overrides))
