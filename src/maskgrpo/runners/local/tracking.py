"""Experiment tracking of a local run: TensorBoard event files beside the run in the store, and
MLflow when ``MLFLOW_TRACKING_URI`` is set (runners/local/mlflow_tracking.py).

After each stage that ran (not one skipped as committed), every number of its result (the same
document the stage commits as ``metrics.json``; no store read) is logged as a scalar
``<kind>/<field>`` at step = round (``sft/loss_last``, ``score/zero_std_ratio``, ``update/kl``,
``update/clip_fraction``, ``evaluate/accuracy``, ``rollout/generate_seconds``, ...), plus
``time/<kind>_seconds`` (the runner's measure of the stage call).

TensorBoard: each stage's scalars go to an event file of their own, uploaded once into the run's
folder (``<store>/<run_id>/events.out.tfevents.<start>.<host>.<pid>.s<NNN>``, beside
summary.json): nothing is re-uploaded as the run grows, ``tensorboard --logdir <store>`` shows
every run (one TensorBoard run per run id) while it goes, and a crash loses at most the running
stage's scalars. The names sort in write order (TensorBoard reads a folder's event files in name
order), a resumed run's process after the earlier ones. The writer is torch's
``torch.utils.tensorboard.SummaryWriter`` (TensorBoard's own event format), from the ``tracking``
extra; without it the run says so once and writes no event files.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from maskgrpo.plan import StageCall
from maskgrpo.store import Store

EVENTS_GLOB = "events.out.tfevents.*"


def scalars_of(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """Finite numbers (not booleans) of a metrics document, nested keys joined by '/'."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(scalars_of(value, f"{prefix}/{key}"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}/{key}"] = float(value)
    return out


def stage_scalars(call: StageCall, result: Any, seconds: float) -> dict[str, float]:
    """What the trackers log for one finished stage."""
    data = result.model_dump(mode="json", exclude={"skipped"})
    return {**scalars_of(data, call.kind), f"time/{call.kind}_seconds": float(seconds)}


class TensorBoardTracker:
    """Logs each finished stage of a run to its own event file in the store. ``available`` is
    False (and every call a no-op) when tensorboard is not installed."""

    def __init__(self, store: Store, run_id: str, echo: Any = print):
        self.store, self.run_id = store, run_id
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the tracking extra is not installed
            echo("      (no TensorBoard event files: pip install 'maskgrpo[tracking]')")
            self.available = False
            return
        self._writer_class = SummaryWriter
        self.available = True
        self._prefix = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        self._count = 0
        self.uploaded: list[str] = []

    def stage_done(self, call: StageCall, scalars: dict[str, float], seconds: float, result: Any) -> None:
        if not self.available:
            return
        with tempfile.TemporaryDirectory(prefix="maskgrpo-tb-") as folder:
            writer = self._writer_class(log_dir=folder)
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, global_step=call.round or 0)
            writer.close()
            (path,) = Path(folder).glob(EVENTS_GLOB)
            name = f"{self._prefix}.s{self._count:03d}"
            self.store.write_run_file(self.run_id, name, path.read_bytes())
        self._count += 1
        self.uploaded.append(name)

    def finish(self, summary: dict[str, Any], files: dict[str, bytes]) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        self.available = False


class Trackers:
    """The run's trackers together: TensorBoard always (when installed), MLflow when
    ``MLFLOW_TRACKING_URI`` is set (checked here, before the first stage)."""

    def __init__(self, run: Any, store: Store, run_id: str, echo: Any = print):
        self.items: list[Any] = [TensorBoardTracker(store, run_id, echo=echo)]
        uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        if uri:
            from maskgrpo.runners.local.mlflow_tracking import MlflowTracker

            self.items.append(MlflowTracker(uri, run, store, run_id, echo=echo))

    def stage_done(self, call: StageCall, result: Any, seconds: float) -> None:
        if getattr(result, "skipped", False):
            return
        scalars = stage_scalars(call, result, seconds)
        for tracker in self.items:
            tracker.stage_done(call, scalars, seconds, result)

    def finish(self, summary: dict[str, Any], files: dict[str, bytes]) -> None:
        for tracker in self.items:
            tracker.finish(summary, files)

    def close(self, status: str = "FINISHED") -> None:
        for tracker in self.items:
            tracker.close(status)
