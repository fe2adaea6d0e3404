"""The small KFP outputs a stage step writes for the KFP UI (no kfp import: runs inside the pods).

Convention shared by every maskgrpo component (see ``components.py``):

1. ``--metrics-path P``: a flat JSON object ``{name: number}`` (the KFP v2 Metrics artifact body).
2. ``--summary-path P``: Markdown, rendered by the UI's Markdown visualisation.
3. ``--executor-input JSON``: KFP's executor input (the ``{{$}}`` placeholder). A container
   component's Metrics only appear in the UI as the artifact's *metadata*, which the KFP launcher
   reads from the executor output file named at ``outputs.outputFile``; so the same numbers are
   written there as ``{"artifacts": {"metrics": {"artifacts": [{"metadata": {...}}]}}}``.

``write_kfp_outputs`` does all three; the stage mains follow the same format.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

__all__ = ["scalar_metrics", "write_kfp_outputs", "executor_output"]


def scalar_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among ``values`` (bools and NaN/inf dropped: KFP metadata is JSON)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[str(key)] = float(value)
    return out


def executor_output(metrics: Mapping[str, float], output_name: str = "metrics") -> dict[str, Any]:
    """KFP ExecutorOutput (JSON form) carrying ``metrics`` as the Metrics artifact's metadata."""
    return {"artifacts": {output_name: {"artifacts": [{"metadata": dict(metrics)}]}}}


def write_kfp_outputs(metrics: Mapping[str, Any], summary: str, *, metrics_path: str | None = None,
                      summary_path: str | None = None, executor_input: str | None = None) -> None:
    """Write whichever of the three outputs were asked for (each argument may be None)."""
    numbers = scalar_metrics(metrics)
    if metrics_path:
        _write(Path(metrics_path), json.dumps(numbers, sort_keys=True))
    if summary_path:
        _write(Path(summary_path), summary)
    if executor_input:
        try:
            output_file = json.loads(executor_input)["outputs"]["outputFile"]
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"--executor-input: not a KFP executor input with outputs.outputFile ({err})") from None
        _write(Path(output_file), json.dumps(executor_output(numbers), sort_keys=True))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
