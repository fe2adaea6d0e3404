"""Kubeflow Pipelines runner: compile a RunSpec to a KFP v2 package, submit it, schedule it.

    compile_run(run, output, *, image=None, run_id=None, store=None) -> Path
    submit_run(run, *, host, experiment=None, namespace=None, image=None, run_id=None, store=None) -> str
    schedule_run(run, *, host, cron, max_concurrency=1, ...) -> str
    render_components() -> {stage kind: component YAML}

Attributes load lazily, so ``maskgrpo.runners.kfp.trainer`` and ``.outputs`` (which run inside the
pods) import without kfp. kfp itself is imported only under this package.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "compile_run": "pipeline", "build_pipeline": "pipeline", "resolve_target": "pipeline",
    "submit_run": "client", "schedule_run": "client", "kfp_cron": "client",
    "render_components": "components", "stage_component": "components", "STAGE_KINDS": "components",
    "TrainJobOptions": "trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
