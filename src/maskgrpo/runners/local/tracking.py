"""Experiment tracking of a local run: TensorBoard event files beside the run in the store.

After each stage that ran (not one skipped as committed), every number of its committed
``metrics.json`` is logged as a scalar ``<kind>/<field>`` at step = round (``sft/loss_last``,
``score/zero_std_ratio``, ``update/kl``, ``update/clip_fraction``, ``evaluate/accuracy``, ...),
plus ``time/<kind>_seconds``; the event file is then copied into the run's folder
(``<store>/<run_id>/events.out.tfevents.*``, beside summary.json), so ``tensorboard --logdir
<store>`` shows every run (one TensorBoard run per run id) while it goes, and a crash loses at
most the running stage's scalars. Each process writes its own event file (a
resumed run adds one; TensorBoard merges them). The writer is torch's
``torch.utils.tensorboard.SummaryWriter`` (TensorBoard's own event format and protobufs), from the
``tracking`` extra; without it the run says so once and writes no event files.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from maskgrpo.artifacts import METRICS
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


class TensorBoardTracker:
    """Logs each finished stage of a run; ``close()`` at the end. ``available`` is False (and
    every call a no-op) when tensorboard is not installed."""

    def __init__(self, store: Store, run_id: str, echo: Any = print):
        self.store, self.run_id = store, run_id
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the tracking extra is not installed
            echo("      (no TensorBoard event files: pip install 'maskgrpo[tracking]')")
            self.available = False
            return
        self.available = True
        self._dir = tempfile.TemporaryDirectory(prefix="maskgrpo-tb-")
        self._writer = SummaryWriter(log_dir=self._dir.name)

    def stage_done(self, call: StageCall, result: Any, seconds: float) -> None:
        if not self.available or getattr(result, "skipped", False):
            return
        committed = self.store.open(self.run_id, call.output, call.round)
        metrics = committed.get_json(METRICS) if METRICS in committed.files() else {}  # resolve/promote write none
        for tag, value in scalars_of(metrics, call.kind).items():
            self._writer.add_scalar(tag, value, global_step=call.round)
        self._writer.add_scalar(f"time/{call.kind}_seconds", seconds, global_step=call.round)
        self._upload()

    def _upload(self) -> None:
        self._writer.flush()
        for path in Path(self._dir.name).glob(EVENTS_GLOB):
            self.store.write_run_file(self.run_id, path.name, path.read_bytes())

    def close(self) -> None:
        if self.available:
            self._upload()
            self._writer.close()
            self._dir.cleanup()
            self.available = False
