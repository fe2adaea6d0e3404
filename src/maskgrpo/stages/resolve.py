"""Resolve: the first stage of a retraining tick; pins what the tick starts from, once.

1. Takes the model's retraining lease (store/registry.py) for this run id; another live tick's
   lease -> ``LeaseHeld``: the tick is skipped with a message naming the holder.
2. ``model.source: registry:<name>@champion`` -> the champion's immutable version and the store
   source of its checkpoint; no champion yet -> ``retrain.initial_source`` (and SFT runs).
3. ``retrain.data`` -> a snapshot: every file with its size and sha256 (store/snapshot.py); with
   ``unseen_only`` the files whose sha256 is in the champion's lineage are left out.  The rows of
   the kept files, each verified against the snapshot, are written as this output's
   ``data.jsonl``, so every later stage of the tick reads exactly those bytes.
4. Everything lands in ``resolved.json`` of the committed output.  A resumed run (same run id)
   finds it committed and keeps it, even if a new champion appeared meanwhile.

``stages/retrain.py``'s ``resolved_spec(spec, store)`` applies it to a later stage's spec: the
runners call it before each stage (runners/local/flow.py, stages/main.py), so ``registry:`` sources and the
``RESOLVED_DATA`` placeholder never reach the model or task loaders.

    python -m maskgrpo.stages.resolve --spec @resolve.json
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from maskgrpo.specs import ResolveSpec, spec_hash
from maskgrpo.stages.retrain import DATA, RESOLVED
from maskgrpo.store import Store, parse_registry_source
from maskgrpo.store.snapshot import fetch_verified, resolve_snapshot, snapshot_digest

STAGE = "resolve"


class ResolveResult(BaseModel):
    champion: int | None
    warm_start: bool
    source: str
    data_files: int
    data_rows: int
    skipped: bool = False


def run(spec: ResolveSpec, store: Store) -> ResolveResult:
    digest = spec_hash(spec)
    if store.is_done(spec.run_id, STAGE, 0, digest):
        return ResolveResult(**_fields(store.open(spec.run_id, STAGE, 0).get_json(RESOLVED)), skipped=True)
    retrain = spec.retrain
    registry = store.registry(retrain.model)
    registry.acquire_lease(spec.run_id, retrain.lease_ttl_s)
    try:
        return _resolve(spec, store, registry, digest)
    except Exception:
        registry.release_lease(spec.run_id)  # a tick that cannot start must not block the next one
        raise


def _resolve(spec: ResolveSpec, store: Store, registry: Any, digest: str) -> ResolveResult:
    retrain = spec.retrain
    parsed = parse_registry_source(spec.source)
    champion = registry.resolve(parsed[1]) if parsed else None
    if champion is None:
        source, sft_enabled, champion_doc = (retrain.initial_source if parsed else spec.source), spec.sft_enabled, None
    else:
        champion_doc = registry.get(champion)
        ckpt = registry.checkpoint(champion)  # verified pin
        source = f"{store.uri.rstrip('/')}/{ckpt.run_id}/{ckpt.stage}/{ckpt.round}"
        sft_enabled = retrain.sft
    resolved: dict[str, Any] = {
        "model": retrain.model, "requested": spec.source, "champion": champion, "warm_start": champion is not None,
        "source": source, "sft_enabled": sft_enabled,
        "champion_weight_digest": champion_doc.get("weight_digest") if champion_doc else None,
        "data_snapshot": None,
    }
    with store.begin(spec.run_id, STAGE, 0, digest) as attempt:
        if retrain.data:
            files = resolve_snapshot(retrain.data)
            seen = set()
            if retrain.unseen_only and champion is not None:
                seen = {f["sha256"] for v in registry.lineage(champion) for f in (v.get("data_snapshot") or {}).get("files", [])}
            kept = [f for f in files if f["sha256"] not in seen]
            if not kept:
                raise ValueError(f"retrain.data {retrain.data!r}: every file is in the lineage of champion v{champion} "
                                 "(unseen_only): no new data for this tick")
            rows = _rows(kept)
            attempt.put_jsonl(DATA, rows)
            resolved["data_snapshot"] = {"pattern": retrain.data, "files": kept, "excluded_seen": len(files) - len(kept),
                                         "digest": snapshot_digest(kept), "rows": len(rows)}
        attempt.put_json(RESOLVED, resolved)
        committed = attempt.commit()  # a concurrent twin's commit wins cleanly: the same resolution is read back
    return ResolveResult(**_fields(committed.get_json(RESOLVED)))


def _fields(resolved: dict) -> dict:
    snap = resolved.get("data_snapshot") or {}
    return {"champion": resolved["champion"], "warm_start": resolved["warm_start"], "source": resolved["source"],
            "data_files": len(snap.get("files", [])), "data_rows": snap.get("rows", 0)}


def _rows(files: list[dict]) -> list[dict]:
    from maskgrpo.tasks.files import read_records

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="maskgrpo-snapshot-") as tmp:
        for i, entry in enumerate(files):
            local = fetch_verified(entry, Path(tmp) / f"{i}{Path(entry['uri']).suffix}")
            rows += read_records(local)
    return rows


def main(argv: list[str] | None = None) -> int:
    from maskgrpo.stages.main import stage_main

    return stage_main(STAGE, ResolveSpec, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
