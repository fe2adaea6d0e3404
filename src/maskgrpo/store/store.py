"""The Store: stage outputs committed atomically over a ``Backend`` (see attempt.py for the
protocol), plus plain run files, listings for ``maskgrpo show`` and ``gc``."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from . import digest as digests
from .attempt import Attempt
from .backend import Backend, open_backend
from .committed import Committed, load_committed
from .errors import NotCommittedError, StoreError
from .layout import (
    POINTER_NAME, attempt_created, check_run_id, new_attempt_id, parse_round, pointer_key,
    run_file_key, stage_prefix,
)
from .manifest import MAX_DOCUMENT, InvalidDocument, parse_pointer
from .registry import Registry, list_models, pin


def open_store(uri: str, digest: str | None = None) -> "Store":
    """``file:///abs``, ``file://./rel``, ``./rel`` or ``/abs`` -> local folder;
    ``s3://bucket/prefix`` -> S3 configured from the environment.  Nothing is contacted yet:
    call ``check_reachable()`` to fail fast.  ``digest``: the per-file digest of new commits
    (store/digest.py); None reads ``MASKGRPO_STORE_DIGEST``, default xxh3_128.  Reads verify each
    file with the algorithm its manifest names, whatever this is."""
    if digest is None:
        try:
            digest = digests.from_env()
        except ValueError as e:
            raise StoreError(str(e)) from None
    return Store(open_backend(uri), digest)


class Store:
    def __init__(self, backend: Backend, digest: str = digests.DEFAULT):
        self._b = backend
        self.uri: str = backend.uri
        try:
            self.digest: str = digests.check(digest)
        except ValueError as e:
            raise StoreError(str(e)) from None

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def url(self, key: str) -> str:
        return self._b.url(key)

    def check_reachable(self) -> None:
        """Raise StoreUnreachableError within a few seconds if the store cannot be used."""
        self._b.check_reachable()

    # -- stage outputs -------------------------------------------------------------------------
    def begin(self, run_id: str, stage: str, round: int | None, spec_hash: str,
              meta: dict | None = None) -> Attempt:
        stage_prefix(run_id, stage, round)  # validates all three
        if not isinstance(spec_hash, str) or not spec_hash:
            raise ValueError(f"spec_hash must be a non-empty string, got {spec_hash!r}")
        meta = {} if meta is None else meta
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"meta must be a JSON-serialisable dict: {e}") from None
        if not isinstance(meta, dict):
            raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
        return Attempt(self._b, run_id, stage, round, spec_hash, meta, new_attempt_id(),
                       digest=self.digest)

    def committed(self, run_id: str, stage: str, round: int | None) -> Committed | None:
        """The committed output (manifest read and validated), or None if never committed."""
        data = self._b.get(pointer_key(run_id, stage, round), max_bytes=MAX_DOCUMENT)
        if data is None:
            return None
        return load_committed(self._b, run_id, stage, round, data)

    def open(self, run_id: str, stage: str, round: int | None) -> Committed:
        c = self.committed(run_id, stage, round)
        if c is None:
            raise NotCommittedError(
                f"no committed output for stage {stage!r} round {round!r} of run {run_id!r}: "
                f"{self.url(pointer_key(run_id, stage, round))} does not exist")
        return c

    def is_done(self, run_id: str, stage: str, round: int | None, spec_hash: str) -> bool:
        c = self.committed(run_id, stage, round)
        return c is not None and c.spec_hash == spec_hash

    # -- the model registry (registry.py) ------------------------------------------------------
    def registry(self, name: str) -> "Registry":
        """The registry of model ``name`` in this store (versions, aliases, lease)."""
        return Registry(self._b, name)

    def models(self) -> list[str]:
        """Names of the models registered in this store."""
        return list_models(self._b)

    def pin(self, committed: Committed) -> dict:
        """A committed output as a version's checkpoint reference (attempt id + manifest sha256)."""
        return pin(self._b, committed)

    # -- run files -----------------------------------------------------------------------------
    def write_run_file(self, run_id: str, name: str, data: bytes) -> str:
        """Overwrite ``<run_id>/<name>`` (atomically where the backend allows); returns its URI."""
        key = run_file_key(run_id, name)
        self._b.put(key, bytes(data))
        return self.url(key)

    def read_run_file(self, run_id: str, name: str) -> bytes:
        key = run_file_key(run_id, name)
        data = self._b.get(key)
        if data is None:
            raise NotCommittedError(f"no run file {self.url(key)}")
        return data

    # -- listings ------------------------------------------------------------------------------
    def list_runs(self) -> list[str]:
        """Run ids: top-level folders that hold at least one stage pointer or attempt."""
        runs = set()
        for key in self._b.find(""):
            parts = key.split("/")
            if len(parts) >= 4:
                try:
                    check_run_id(parts[0])
                    parse_round(parts[2])
                except ValueError:
                    continue
                runs.add(parts[0])
        return sorted(runs)

    def _scan(self, run_id: str) -> dict[tuple[str, int | None], dict]:
        """(stage, round) -> {"pointer": bytes|None, "attempts": {attempt_id: total bytes}}."""
        check_run_id(run_id)
        outputs: dict[tuple[str, int | None], dict] = {}
        for key, size in self._b.find(run_id).items():
            parts = key.split("/")
            if len(parts) < 4:
                continue
            try:
                rnd = parse_round(parts[2])
            except ValueError:
                continue
            out = outputs.setdefault((parts[1], rnd), {"pointer": None, "attempts": {}})
            if len(parts) == 4 and parts[3] == POINTER_NAME:
                out["has_pointer"] = True
            elif attempt_created(parts[3]) is not None and len(parts) >= 5:
                out["attempts"][parts[3]] = out["attempts"].get(parts[3], 0) + size
        keys = {pointer_key(run_id, s, r): (s, r) for (s, r), o in outputs.items()
                if o.get("has_pointer")}
        for key, data in self._b.get_many(list(keys)).items() if keys else ():
            outputs[keys[key]]["pointer"] = data
        return outputs

    def list_stages(self, run_id: str) -> list[dict]:
        """One dict per stage output of the run, committed first in commit order: stage, round,
        committed, attempt_id, spec_hash, committed_at, n_files, total_bytes, n_attempts, uri."""
        rows = []
        for (stage, rnd), out in self._scan(run_id).items():
            row = {"stage": stage, "round": rnd, "committed": False, "attempt_id": None,
                   "spec_hash": None, "committed_at": None, "n_files": 0, "total_bytes": 0,
                   "n_attempts": len(out["attempts"]),
                   "uri": self.url(stage_prefix(run_id, stage, rnd))}
            if out["pointer"] is not None:
                try:
                    p = parse_pointer(out["pointer"])
                except InvalidDocument as e:
                    row["error"] = f"bad pointer: {e}"
                else:
                    row.update(committed=True, attempt_id=p["attempt_id"], spec_hash=p["spec_hash"],
                               committed_at=p.get("committed_at"), n_files=p.get("n_files", 0),
                               total_bytes=p.get("total_bytes", 0))
            rows.append(row)
        rows.sort(key=lambda r: (not r["committed"], r["committed_at"] or "", r["stage"],
                                 -1 if r["round"] is None else r["round"]))
        return rows

    def gc(self, run_id: str | None = None, dry_run: bool = False,
           min_age_s: float = 3600.0) -> list[str]:
        """Remove attempts no pointer names (crashed, lost races, superseded by a new spec)
        that are older than ``min_age_s`` (so in-flight writers are safe); returns their URIs.
        A stage output whose pointer is unreadable is left untouched."""
        now = datetime.now(timezone.utc)
        removed = []
        for rid in [run_id] if run_id is not None else self.list_runs():
            for (stage, rnd), out in self._scan(rid).items():
                keep = None
                if out["pointer"] is not None:
                    try:
                        keep = parse_pointer(out["pointer"])["attempt_id"]
                    except InvalidDocument:
                        continue
                elif out.get("has_pointer"):
                    continue  # pointer vanished between listing and reading: be safe
                for aid in sorted(out["attempts"]):
                    if aid == keep or (now - attempt_created(aid)).total_seconds() < min_age_s:
                        continue
                    prefix = f"{stage_prefix(rid, stage, rnd)}/{aid}"
                    if not dry_run:
                        self._b.delete_prefix(prefix)
                    removed.append(self.url(prefix))
        return removed
