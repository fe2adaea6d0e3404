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

4. A document with a ``retrain`` section makes each tick a retraining tick, as on KFP: the flow's
   plan is resolve (champion, data snapshot, lease) -> sft (the champion passed through) ->
   rounds -> evaluate -> gate -> promote (a no-op unless the gate said promote); a tick that finds
   the previous one still holding the lease is skipped with the holder's name (flow.py).
   ``simulate_ticks`` (``maskgrpo retrain-ticks``) runs N such ticks back to back, a data drop each.

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


# --------------------------------------------------------------------------------------------
# Simulated ticks: `maskgrpo retrain-ticks` (a schedule's ticks, one after another, no cron)
# --------------------------------------------------------------------------------------------

TICK_ROWS = 256  # rows per data drop (toy-retrain.yaml trains on task.train_size = 256 of them)


def simulate_ticks(pipeline_path: Path, *, ticks: int, store: str, data_dir: Path, bad_ticks: tuple[int, ...] = (),
                   overrides: list[str] | None = None, echo=print, rows_per_tick: int = TICK_ROWS) -> list[dict]:
    """Run ``ticks`` retraining ticks of a ``retrain`` pipeline in a row: before each, a new data
    drop lands in ``data_dir`` (corrupted for the ticks in ``bad_ticks``); each tick is a fresh run
    (``<name>-tick<k>``) that resolves the current champion.  Returns one row per tick."""
    from maskgrpo.specs import load_run_spec
    from maskgrpo.store import open_store

    from maskgrpo.stages.retrain import write_data_drop

    from .plain import run_pipeline

    data_dir = Path(data_dir).resolve()
    sets = [f"retrain.data={data_dir}/train-*.jsonl", f"task.params.eval_path={data_dir}/eval.jsonl", *(overrides or [])]
    run = load_run_spec(pipeline_path, sets)
    if run.retrain is None:
        raise ValueError(f"{pipeline_path}: retrain-ticks needs a pipeline with a retrain section")
    registry = open_store(store).registry(run.retrain.model)
    rows = []
    for tick in range(1, ticks + 1):
        before = registry.aliases()["champion"]
        write_data_drop(data_dir, tick, corrupt=tick in bad_ticks, rows=rows_per_tick)
        run_id = f"{run.name}-tick{tick}"
        echo(f"--- tick {tick}: champion v{before}, data drop train-{tick:03d}.jsonl"
             f"{' (corrupted answers)' if tick in bad_ticks else ''}, run {run_id}")
        summary = run_pipeline(run, store, run_id, echo=echo)
        gate = summary["gate"]
        rows.append({"tick": tick, "corrupted": tick in bad_ticks, "champion_before": before, "metric": gate["metric"],
                     "champion_metric": gate["champion"], "challenger_metric": gate["challenger"],
                     "diff": gate["diff"], "ci_low": gate["ci_low"], "ci_high": gate["ci_high"],
                     "decision": gate["decision"], "champion_after": registry.aliases()["champion"]})
    return rows


def format_ticks(rows: list[dict]) -> str:
    metric = rows[0]["metric"] if rows else "metric"
    head = f"| tick | data | champion before | its {metric} | challenger {metric} | diff [CI] | gate | champion after |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        before = f"v{r['champion_before']}" if r["champion_before"] is not None else "none (SFT)"
        lines.append(f"| {r['tick']} | {'corrupted' if r['corrupted'] else 'clean'} | {before} | "
                     f"{r['champion_metric']:.3f} | {r['challenger_metric']:.3f} | {r['diff']:+.3f} "
                     f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['decision']} | v{r['champion_after']} |")
    return "\n".join(lines)
