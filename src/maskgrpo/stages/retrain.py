"""What the retraining stages share (stages/resolve.py, gate.py, promote.py): the names of the
resolution's files and how a later stage's spec picks up the run's committed resolution; and the
toy data drops of the scheduled-retraining demo (runners/local/schedule.py, ``retrain-ticks``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maskgrpo.specs import RESOLVED_DATA
from maskgrpo.store import Store

RESOLVE_STAGE = "resolve"
RESOLVED = "resolved.json"
DATA = "data.jsonl"
DECISION = "decision.json"
EVAL_ROWS = 200  # held-out rows of the demo's eval.jsonl (toy-retrain.yaml evaluates task.eval_size of them)


def read_resolved(store: Store, run_id: str) -> dict:
    """The committed resolution of run ``run_id`` (with the data URI filled in)."""
    committed = store.open(run_id, RESOLVE_STAGE, 0)
    resolved = committed.get_json(RESOLVED)
    snap = resolved.get("data_snapshot")
    if snap:
        snap["uri"] = committed.url(DATA)
    return resolved


def resolved_spec(spec: Any, store: Store) -> Any:
    """``spec`` with a registry source, the data placeholder and SFT's switch replaced by the
    run's committed resolution; other specs unchanged (no store access)."""
    model = getattr(spec, "model", None)
    task = getattr(spec, "task", None)
    registry = model is not None and hasattr(model, "source") and model.source.startswith("registry:")
    data = task is not None and task.params.get("path") == RESOLVED_DATA
    if not (registry or data):
        return spec
    resolved = read_resolved(store, spec.run_id)
    update: dict[str, Any] = {}
    if registry:
        update["model"] = model.model_copy(update={"source": resolved["source"]})
    if data:
        update["task"] = task.model_copy(update={"params": {**task.params, "path": resolved["data_snapshot"]["uri"]}})
    if getattr(spec, "kind", None) == "sft":
        update["sft"] = spec.sft.model_copy(update={"enabled": resolved["sft_enabled"]})
    return spec.model_copy(update=update)


def write_data_drop(data_dir: Path, tick: int, *, corrupt: bool = False, rows: int = 256,
                    length: int = 6) -> Path:
    """The toy data that "arrives" before ``tick``: ``train-<tick>.jsonl`` of sort problems
    (disjoint from earlier drops and from ``eval.jsonl``, written once); ``corrupt`` writes the
    answers in descending order (a bad data drop: its rewards point the wrong way)."""
    import json

    from maskgrpo.tasks import get_task

    data_dir.mkdir(parents=True, exist_ok=True)
    sort = get_task("sort", length=length)
    eval_path = data_dir / "eval.jsonl"
    if not eval_path.exists():
        eval_path.write_text("".join(json.dumps({"prompt": e.prompt, "answer": e.answer}) + "\n"
                                     for e in sort.examples("eval", EVAL_ROWS, 0)))
    drop = sort.examples("train", rows * tick, 0)[rows * (tick - 1):]
    path = data_dir / f"train-{tick:03d}.jsonl"
    path.write_text("".join(json.dumps({"prompt": e.prompt, "answer": e.answer[::-1] if corrupt else e.answer}) + "\n"
                            for e in drop))
    return path
