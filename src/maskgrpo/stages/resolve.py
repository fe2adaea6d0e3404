"""Resolve: the first stage of a retraining tick; pins what the tick starts from, once.

1. Takes the model's retraining lease (store/registry.py) for this run id; another live tick's
   lease -> ``LeaseHeld``: the tick is skipped with a message naming the holder (the local
   runners catch it; on KFP ``main`` exits 0 with ``skip`` = true and the pipeline's ``dsl.If``
   skips every later task).
2. ``model.source: registry:<name>@champion`` -> the champion's immutable version and the store
   source of its checkpoint; no champion yet -> ``retrain.initial_source`` (and SFT runs).
3. ``retrain.data`` -> a snapshot: every file with its size and sha256 (store/snapshot.py); with
   ``unseen_only`` the files whose sha256 is in the champion's lineage are left out.  The rows of
   the kept files, each verified against the snapshot, are written as this output's
   ``data.jsonl``, so every later stage of the tick reads exactly those bytes.  With
   ``unseen_rows`` the rows whose id (sha256 of the canonical JSON row, store/snapshot.py
   ``row_id``) some lineage version trained on are left out too, so a file that grew keeps only
   its new rows; the tick's own ids go to ``row_ids.txt`` (sorted, one per line; the version's
   lineage names them with their count and sha256).  Ancestors that recorded no row ids (ticks
   without ``unseen_rows``) count by their files only.
4. Everything lands in ``resolved.json`` of the committed output.  A resumed run (same run id)
   finds it committed and keeps it, even if a new champion appeared meanwhile.

``stages/retrain.py``'s ``resolved_spec(spec, store)`` applies it to a later stage's spec: the
runners call it before each stage (runners/local/flow.py, stages/main.py), so ``registry:`` sources and the
``RESOLVED_DATA`` placeholder never reach the model or task loaders.

    python -m maskgrpo.stages.resolve --spec @resolve.json [--skip-path P]
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from maskgrpo.specs import ResolveSpec, spec_hash
from maskgrpo.stages.retrain import DATA, RESOLVED
from maskgrpo.store import CorruptOutputError, LeaseHeld, Store, parse_registry_source
from maskgrpo.store.snapshot import fetch_verified, resolve_snapshot, row_id, snapshot_digest

STAGE = "resolve"
ROW_IDS = "row_ids.txt"


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
            lineage = registry.lineage(champion) if champion is not None and (retrain.unseen_only or retrain.unseen_rows) else []
            seen = {f["sha256"] for v in lineage for f in (v.get("data_snapshot") or {}).get("files", [])}
            kept = [f for f in files if f["sha256"] not in seen]
            if not kept:
                raise ValueError(f"retrain.data {retrain.data!r}: every file is in the lineage of champion v{champion} "
                                 "(unseen_only): no new data for this tick")
            rows = _rows(kept)
            snapshot = {"pattern": retrain.data, "files": kept, "excluded_seen": len(files) - len(kept),
                        "digest": snapshot_digest(kept)}
            if retrain.unseen_rows:
                rows, snapshot["excluded_seen_rows"], snapshot["row_ids"] = _unseen_rows(store, lineage, rows, attempt)
                if not rows:
                    raise ValueError(f"retrain.data {retrain.data!r}: every row is in the lineage of champion "
                                     f"v{champion} (unseen_rows): no new data for this tick")
            attempt.put_jsonl(DATA, rows)
            resolved["data_snapshot"] = {**snapshot, "rows": len(rows)}
        attempt.put_json(RESOLVED, resolved)
        committed = attempt.commit()  # a concurrent twin's commit wins cleanly: the same resolution is read back
    return ResolveResult(**_fields(committed.get_json(RESOLVED)))


def _fields(resolved: dict) -> dict:
    snap = resolved.get("data_snapshot") or {}
    return {"champion": resolved["champion"], "warm_start": resolved["warm_start"], "source": resolved["source"],
            "data_files": len(snap.get("files", [])), "data_rows": snap.get("rows", 0)}


def _unseen_rows(store: Store, lineage: list[dict], rows: list[dict], attempt: Any) -> tuple[list[dict], int, dict]:
    """(the rows no lineage version trained on, how many were left out, the record of this tick's
    row ids); writes ``row_ids.txt`` into ``attempt`` (module docstring, 3)."""
    seen: set[str] = set()
    for version in lineage:
        ref = (version.get("data_snapshot") or {}).get("row_ids")
        if ref:  # the ids that version's resolve committed, checked against the version's record
            data = store.open(ref["run_id"], STAGE, 0).get_bytes(ROW_IDS)
            if hashlib.sha256(data).hexdigest() != ref["sha256"]:
                raise CorruptOutputError(f"row ids of version {version['version']} ({ref['run_id']}/{STAGE}/0/{ROW_IDS}) "
                                         "changed since it was registered")
            seen.update(data.decode().split())
    ids = [row_id(r) for r in rows]
    fresh = [(i, r) for i, r in zip(ids, rows) if i not in seen]
    text = "".join(f"{i}\n" for i in sorted({i for i, _ in fresh})).encode()
    attempt.put_bytes(ROW_IDS, text)
    record = {"run_id": attempt.run_id, "count": text.count(b"\n"), "sha256": hashlib.sha256(text).hexdigest()}
    return [r for _, r in fresh], len(rows) - len(fresh), record


def _rows(files: list[dict]) -> list[dict]:
    from maskgrpo.tasks.files import read_records

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="maskgrpo-snapshot-") as tmp:
        for i, entry in enumerate(files):
            local = fetch_verified(entry, Path(tmp) / f"{i}{Path(entry['uri']).suffix}")
            rows += read_records(local)
    return rows


def main(argv: list[str] | None = None) -> int:
    """The stage main; ``--skip-path P`` (the KFP component): a held lease is a clean exit 0 with
    ``true`` in P (``false`` after a normal resolve), the holder named in the summary, so the
    pipeline's ``dsl.If`` skips the rest of the tick and the run ends as skipped, not failed."""
    import sys

    from maskgrpo.stages.main import split_flags, stage_main
    from maskgrpo.stages.outputs import write_kfp_outputs

    known, rest = split_flags(argv, ("--skip-path",), ("--summary-path", "--metrics-path", "--executor-input"))
    try:
        code = stage_main(STAGE, ResolveSpec, run, rest)
    except LeaseHeld as err:
        if not known.skip_path:
            raise
        print(f"skipped: {err}", file=sys.stderr)
        write_kfp_outputs({"skipped": 1}, f"# resolve: tick skipped\n\n{err}\n", metrics_path=known.metrics_path,
                          summary_path=known.summary_path, executor_input=known.executor_input)
        _write_flag(known.skip_path, "true")
        return 0
    if code == 0 and known.skip_path:
        _write_flag(known.skip_path, "false")
    return code


def _write_flag(path: str, value: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(value)


if __name__ == "__main__":
    raise SystemExit(main())
