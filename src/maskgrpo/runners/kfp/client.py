"""Submit and schedule compiled pipelines on a KFP v2 API server.

    maskgrpo submit   PIPELINE.yaml --host URL [--experiment NAME] [--namespace NS]
    maskgrpo schedule PIPELINE.yaml --host URL --cron EXPR [--max-concurrency N]

1. ``submit_run`` compiles the document (``compile_run``) and creates one run with
   ``run_id`` as its parameter; the same run id again resumes that run's store prefix.
2. ``schedule_run`` creates a KFP recurring run with a cron trigger, no catch-up, and the
   ``run_id`` parameter ``<run id>-[[ScheduledTime]]``: KFP's scheduler substitutes the tick's
   time, so every scheduled run retrains under a fresh store prefix instead of skipping
   everything already committed.
3. KFP's cron has six fields, seconds first (robfig/cron); ``kfp_cron`` accepts the usual five
   fields (minute first) and converts, or six as they are, or a ``@daily``-style descriptor, and
   rejects anything else naming the bad field.
4. Credentials: ``KF_PIPELINES_TOKEN`` (a bearer token, passed as kfp's ``existing_token``), else
   ``KF_PIPELINES_SA_TOKEN_PATH`` (a projected ServiceAccount token file, refreshed on every
   call), else none (a port-forwarded or open endpoint). Nothing is logged or stored.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from maskgrpo.specs import RunSpec

from .pipeline import compile_run, resolve_target
from .trainer import TrainJobOptions

__all__ = ["submit_run", "schedule_run", "kfp_cron", "make_client", "SCHEDULED_RUN_ID_SUFFIX"]

SCHEDULED_RUN_ID_SUFFIX = "-[[ScheduledTime]]"
TOKEN_ENV = "KF_PIPELINES_TOKEN"
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"

_MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
_DAYS = "SUN MON TUE WED THU FRI SAT".split()
# (name, low, high, names) in KFP's order: seconds first
_FIELDS = [("seconds", 0, 59, None), ("minutes", 0, 59, None), ("hours", 0, 23, None),
           ("day of month", 1, 31, None), ("month", 1, 12, _MONTHS), ("day of week", 0, 6, _DAYS)]
_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_EVERY = re.compile(r"^@every (\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def _value(text: str, field: tuple, expr: str) -> int:
    name, low, high, names = field
    if names and text.upper() in names:
        return names.index(text.upper()) + (1 if name == "month" else 0)
    if not text.isdigit():
        raise ValueError(f"cron {expr!r}: {name} field: {text!r} is not a number"
                         + (f" or one of {', '.join(names)}" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"cron {expr!r}: {name} field: {value} is outside {low}-{high}")
    return value


def _check_field(text: str, field: tuple, expr: str) -> None:
    name = field[0]
    for item in text.split(","):
        base, _, step = item.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise ValueError(f"cron {expr!r}: {name} field: step {step!r} must be a positive number")
        if base in ("*", "?"):
            if base == "?" and name not in ("day of month", "day of week"):
                raise ValueError(f"cron {expr!r}: {name} field: '?' is only allowed in day of month/week")
            continue
        lo, dash, hi = base.partition("-")
        first = _value(lo, field, expr)
        if dash and _value(hi, field, expr) < first:
            raise ValueError(f"cron {expr!r}: {name} field: range {base!r} runs backwards")


def kfp_cron(expr: str) -> str:
    """A cron expression in KFP's six-field form (seconds first), validated.

    >>> kfp_cron("30 2 * * 1-5")   # minute hour dom month dow -> seconds prepended
    '0 30 2 * * 1-5'
    >>> kfp_cron("0 0 */6 * * *")  # already six fields
    '0 0 */6 * * *'
    """
    text = " ".join(str(expr).split())
    if text.startswith("@"):
        if text in _DESCRIPTORS or _EVERY.match(text):
            return text
        raise ValueError(f"cron {expr!r}: unknown descriptor; use one of {', '.join(sorted(_DESCRIPTORS))} "
                         "or '@every <duration>'")
    parts = text.split(" ") if text else []
    if len(parts) == 5:
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise ValueError(f"cron {expr!r}: expected 5 fields (minute hour day-of-month month day-of-week) "
                         f"or KFP's 6 (seconds first), got {len(parts)}")
    for part, field in zip(parts, _FIELDS):
        _check_field(part, field, expr)
    return " ".join(parts)


def make_client(host: str | None, namespace: str | None = None):
    """A ``kfp.Client`` with credentials from the environment (see the module docstring)."""
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    kwargs: dict = {}
    if os.environ.get(TOKEN_ENV):
        kwargs["existing_token"] = os.environ[TOKEN_ENV]
    elif os.environ.get(SA_TOKEN_PATH_ENV):
        path = os.environ[SA_TOKEN_PATH_ENV]
        if not Path(path).is_file():
            raise ValueError(f"{SA_TOKEN_PATH_ENV}={path}: no such token file")
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path)
    return kfp.Client(host=host, namespace=namespace or "kubeflow", **kwargs)


def submit_run(run: RunSpec, *, host: str | None, experiment: str | None = None, namespace: str | None = None,
               image: str | None = None, run_id: str | None = None, store: str | None = None,
               trainer: TrainJobOptions | None = None) -> str:
    """Compile and start one run; returns the KFP run id."""
    image, run_id, store = resolve_target(run, image=image, run_id=run_id, store=store)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_run(run, Path(tmp) / f"{run.name}.yaml", image=image, run_id=run_id, store=store,
                              trainer=trainer)
        client = make_client(host, namespace)
        result = client.create_run_from_pipeline_package(
            str(package), arguments={"run_id": run_id}, run_name=run_id,
            experiment_name=experiment or run.name, namespace=namespace)
    return result.run_id


def schedule_run(run: RunSpec, *, host: str | None, cron: str, max_concurrency: int = 1,
                 experiment: str | None = None, namespace: str | None = None, image: str | None = None,
                 run_id: str | None = None, store: str | None = None,
                 trainer: TrainJobOptions | None = None) -> str:
    """Create a KFP recurring run of ``run`` on ``cron``; returns the recurring run id."""
    schedule = kfp_cron(cron)
    if not 1 <= max_concurrency <= 10:
        raise ValueError(f"--max-concurrency {max_concurrency}: KFP accepts 1 to 10")
    image, run_id, store = resolve_target(run, image=image, run_id=run_id, store=store)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_run(run, Path(tmp) / f"{run.name}.yaml", image=image, run_id=run_id, store=store,
                              trainer=trainer)
        client = make_client(host, namespace)
        exp = client.create_experiment(name=experiment or run.name, namespace=namespace)
        recurring = client.create_recurring_run(
            experiment_id=exp.experiment_id, job_name=f"{run.name} every {schedule}",
            description=f"maskgrpo scheduled retraining of {run.name}; store {store}/{run_id}-<time>",
            cron_expression=schedule, max_concurrency=max_concurrency, no_catchup=True,
            pipeline_package_path=str(package), params={"run_id": run_id + SCHEDULED_RUN_ID_SUFFIX}, enabled=True)
    return recurring.recurring_run_id
