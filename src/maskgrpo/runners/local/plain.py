"""The local run without an orchestrator: the plan walked in this process (``--runner plain``,
the default of ``maskgrpo run``; docs/design.md, "Orchestration").

Each stage call runs with ``retries`` retries; stages skip themselves when their committed output
matches their spec hash, so ``--resume`` recomputes nothing that is committed. Models stay in the
stages' process-local cache between stages. The Prefect runner (``--runner prefect``,
runners/local/flow.py) calls the same ``run_pipeline`` with Prefect tasks as its executor.

Why plain is the default: Prefect 3 has no API-less mode; without ``PREFECT_API_URL`` every flow
starts an ephemeral API server (a uvicorn subprocess with its own SQLite database) before the
first stage: tens of seconds to minutes on a loaded 2-core machine, against ~20 s for all 30 stages
of the demo (figures in bench/README.md, "Start-up"). Prefect is kept for what it adds: a
long-lived server's UI and history (``PREFECT_API_URL``), and schedules (``maskgrpo schedule --local``).

Signals (``stop_on_signals``): SIGTERM and SIGINT raise ``Interrupted`` in the main thread at the
next Python bytecode, a safe point for the store: the open attempt of the running stage exits
with the exception and is never committed (the commit is one create-only manifest plus one pointer
swap, docs/design.md), every committed stage stays, and ``--resume`` continues from there.
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from maskgrpo.plan import StageCall, build_plan
from maskgrpo.specs import RunSpec
from maskgrpo.stages import run_stage
from maskgrpo.store import LeaseHeld, Store, open_store

Executor = Callable[..., dict[str, Any]]
OnDone = Callable[[StageCall, Any, float], None]


class Interrupted(BaseException):
    """A stop signal arrived; not an ``Exception``, so no retry or ``except Exception`` swallows it."""

    def __init__(self, signum: int, stage: str | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.stage = signum, stage

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise ``Interrupted`` while the block runs (main thread only)."""
    def raise_interrupted(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def describe(call: StageCall, result: Any) -> str:
    """The key figures of a stage's result, for its progress line."""
    data = result.model_dump()
    if data.get("skipped"):
        return "skipped (committed)"
    keys = {
        "sft": ("loss_last",), "rollout": ("forwards_per_completion",), "score": ("reward_mean", "zero_std_ratio"),
        "update": ("loss", "clip_fraction", "kl"), "evaluate": ("accuracy", "reward_mean"),
        "resolve": ("data_rows",), "gate": ("diff", "ci_low", "ci_high"), "promote": (),
    }[call.kind]
    if call.kind == "resolve":
        return f"champion v{data['champion']}" if data["warm_start"] else "no champion: cold start"
    if call.kind in ("gate", "promote"):
        head = data["decision"] if call.kind == "gate" else ("promoted" if data["promoted"] else "not promoted")
        return "  ".join([head] + [f"{k}={data[k]:+.3f}" for k in keys] + ([f"v{data['version']}"] if data.get("version") else []))
    return "  ".join(f"{k}={data[k]:.3f}" for k in keys)


def execute(calls: list[StageCall], store: Store, retries: int = 1, on_done: OnDone | None = None,
            on_retry: Callable[[StageCall, BaseException], None] | None = None,
            on_start: Callable[[StageCall], None] | None = None) -> dict[str, Any]:
    """Run ``calls`` in order in this process, each up to ``1 + retries`` times; results by name."""
    results: dict[str, Any] = {}
    for call in calls:
        try:  # a signal anywhere in the call, its start and done hooks included, names the stage
            if on_start is not None:
                on_start(call)
            start = time.perf_counter()
            for attempt in range(retries + 1):
                try:
                    results[call.name] = run_stage(call.kind, call.spec, store)
                    break
                except Exception as err:  # noqa: BLE001  (a stage failure: retried, then raised)
                    if attempt == retries:
                        raise
                    if on_retry is not None:
                        on_retry(call, err)
                    time.sleep(1.0)
            if on_done is not None:
                on_done(call, results[call.name], time.perf_counter() - start)
        except Interrupted as stop:
            stop.stage = stop.stage or call.name
            raise
    return results


def run_pipeline(run: RunSpec, store_uri: str, run_id: str, *, echo: Callable[[str], None] = print,
                 executor: Executor = execute, on_done: OnDone | None = None,
                 on_start: Callable[[StageCall], None] | None = None) -> dict[str, Any]:
    """Run the whole plan of ``run``; returns the run summary. ``on_start`` and ``on_done`` are
    called around each stage (after its progress line; the JSON log and tracking hooks).

    Beside the run: ``pipeline.yaml`` (the resolved document, with the overrides and defaults, as
    ``maskgrpo config`` prints it) and ``processes.json`` (each process's seconds on the run,
    updated after every stage, so a resumed run's ``wall_seconds`` counts the interrupted ones)."""
    import yaml

    from maskgrpo.runners.local.report import PIPELINE, PROCESSES, load_processes, write_summary
    from maskgrpo.runners.local.tracking import Trackers

    store = open_store(store_uri)
    store.check_reachable()
    calls = build_plan(run, run_id, store.uri, num_shards=1)
    started = time.perf_counter()
    trackers = Trackers(run, store, run_id, echo=echo)  # MLflow: the server is checked before any stage
    store.write_run_file(run_id, PIPELINE, yaml.safe_dump(run.model_dump(mode="json"), sort_keys=False).encode())
    earlier = load_processes(store, run_id)
    this = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": 0.0}

    def record_time() -> None:
        this["seconds"] = round(time.perf_counter() - started, 3)
        store.write_run_file(run_id, PROCESSES, json.dumps(earlier + [this], indent=1).encode())

    def progress(call: StageCall, result: Any, seconds: float) -> None:
        index = calls.index(call) + 1
        echo(f"[{index:>3}/{len(calls)}] {call.name:<14} {seconds:6.1f}s  {describe(call, result)}")
        record_time()
        trackers.stage_done(call, result, seconds)
        if on_done is not None:
            on_done(call, result, seconds)

    kwargs: dict[str, Any] = {"on_done": progress, "on_start": on_start}
    if executor is execute:  # Prefect's tasks retry themselves
        kwargs["on_retry"] = lambda call, err: echo(f"      {call.name} failed ({type(err).__name__}: {err}); retrying")
    status = "FAILED"
    try:
        executor(calls, store, retries=1, **kwargs)
        record_time()
        files: dict[str, bytes] = {}
        summary = write_summary(run, store, run_id, calls, processes=len(earlier) + 1, files=files,
                                wall_seconds=sum(p["seconds"] for p in earlier) + time.perf_counter() - started)
        trackers.finish(summary, files)
        status = "FINISHED"
        return summary
    except LeaseHeld as err:  # a retraining tick while the previous one still runs: skip it, clearly
        echo(f"skipped: {err}")
        status = "KILLED"
        return {"run_id": run_id, "pipeline": run.name, "skipped": str(err)}
    except Interrupted:  # a stop signal: this process's time so far still counts on resume
        status = "KILLED"
        record_time()
        raise
    finally:
        trackers.close(status)


def default_run_id(run: RunSpec) -> str:
    return f"{run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
