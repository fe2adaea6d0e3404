"""One writer's attempt at a stage output, and the commit protocol (docs/design.md, "The store").

1. Files go under the attempt's own prefix ``<run>/<stage>/<round>/<attempt_id>/``; nothing
   there is ever overwritten (putting a name twice is an error).
2. ``commit()`` lists the prefix to check every recorded file landed with its size, then writes
   ``_MANIFEST.json`` last and create-only (sizes, per-file digests of the store's algorithm,
   store/digest.py; spec hash, package version, meta).
3. It advances ``_POINTER.json`` by compare-and-swap.  The rule when the pointer already names
   another attempt (a concurrent or earlier commit):
   * same spec hash -> this attempt LOSES cleanly: the pointer is left alone, ``commit()``
     returns the winner's ``Committed`` and ``attempt.won`` is False (the output is the same
     work; this attempt's files stay as an orphan for ``gc``);
   * different spec hash -> the spec changed since, so this attempt REPLACES it (CAS against
     the token just read).
   A failed CAS (someone moved the pointer between our read and write) re-reads and re-applies
   the rule, so of N racers with one spec hash exactly one wins and all return its output.
A crash or an exception before step 3 leaves an orphan no reader follows.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from maskgrpo import __version__

from . import codecs
from . import digest as digests
from .backend import Backend
from .committed import Committed, load_committed
from .errors import CorruptOutputError, StoreError
from .layout import MANIFEST_NAME, attempt_prefix, check_name, pointer_key
from .manifest import build_manifest, build_pointer, dumps, utc_now

if TYPE_CHECKING:
    import torch

_CAS_TRIES = 50


class Attempt:
    """Write files, then ``commit()``.  As a context manager: a clean exit commits (if not done
    already, the result is in ``.committed``); an exception commits nothing.  ``digest`` names
    the per-file digest of its files (store/digest.py)."""

    def __init__(self, backend: Backend, run_id: str, stage: str, round: int | None,
                 spec_hash: str, meta: dict, attempt_id: str, digest: str = digests.DEFAULT):
        self._backend = backend
        self.digest = digests.check(digest)
        self.run_id, self.stage, self.round = run_id, stage, round
        self.spec_hash, self.meta, self.attempt_id = spec_hash, meta, attempt_id
        self._prefix = attempt_prefix(run_id, stage, round, attempt_id)
        self.uri = backend.url(self._prefix)
        self.created = utc_now()
        self.committed: Committed | None = None
        self.won: bool | None = None
        self._files: dict[str, dict] = {}
        self._dirs: list[str] = []
        self._taken: set[str] = set()    # files and put_dir folders
        self._parents: set[str] = set()  # every proper parent of a taken name
        self._lock = threading.Lock()
        self._state = "open"

    def __repr__(self) -> str:
        return f"Attempt({self.uri!r}, {self._state})"

    def url(self, name: str) -> str:
        return f"{self.uri}/{name}"

    # -- writing -------------------------------------------------------------------------------
    def _claim(self, names: list[str], folder: str | None = None) -> None:
        """Check names are valid, new, and neither inside nor above a name already put (a file
        or a put_dir folder); reserve them."""
        with self._lock:
            if self._state != "open":
                raise StoreError(f"attempt {self.uri} is {self._state}: no more files can be added")
            for name in ([folder] if folder else []) + names:
                check_name(name)
                if name == MANIFEST_NAME:
                    raise ValueError(f"{self.url(name)}: {MANIFEST_NAME} is reserved for commit()")
                parts = name.split("/")
                parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
                # a put_dir file may sit inside its own folder, nowhere else inside a taken name
                own = folder if folder is not None and name != folder else None
                if (name in self._taken or name in self._parents
                        or any(p in self._taken and p != own for p in parents)):
                    raise StoreError(f"{self.url(name)} clashes with a name already put: an "
                                     "attempt's files are immutable")
                self._taken.add(name)
                self._parents.update(parents)
            if folder:
                self._dirs.append(folder)
            for name in names:
                self._files[name] = {"size": -1}

    def _record(self, name: str, size: int, hexdigest: str) -> None:
        with self._lock:
            self._files[name] = digests.entry(size, self.digest, hexdigest)

    def put_bytes(self, name: str, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"put_bytes({name!r}) needs bytes, got {type(data).__name__}")
        data = bytes(data)
        self._claim([name])
        self._backend.put(f"{self._prefix}/{name}", data)
        self._record(name, len(data), digests.hexdigest(self.digest, data))

    def put_json(self, name: str, obj) -> None:
        self.put_bytes(name, codecs.encode_json(obj))

    def put_jsonl(self, name: str, rows: list[dict]) -> None:
        self.put_bytes(name, codecs.encode_jsonl(rows))

    def put_tensors(self, name: str, tensors: dict[str, torch.Tensor],
                    metadata: dict[str, str] | None = None) -> None:
        self.put_bytes(name, codecs.encode_tensors(tensors, metadata))

    def put_dir(self, name: str, local_dir: str | Path) -> None:
        """Upload a local folder recursively as ``<name>/<relative path>``; entries whose name
        starts with '.' (hidden files, caches, download indexes) are skipped."""
        local = Path(local_dir)
        if not local.is_dir():
            raise StoreError(f"put_dir({name!r}): {local} is not a folder")
        items: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(local, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(dirpath).relative_to(local).as_posix()
            for fn in sorted(filenames):
                if not fn.startswith("."):
                    items.append((fn if rel == "." else f"{rel}/{fn}", Path(dirpath) / fn))
        self._claim([f"{name}/{rel}" for rel, _ in items], folder=name)
        results = self._backend.put_files([(f"{self._prefix}/{name}/{rel}", p) for rel, p in items],
                                          digest=self.digest)
        for (rel, _), (size, hexdigest) in zip(items, results):
            self._record(f"{name}/{rel}", size, hexdigest)

    # -- commit --------------------------------------------------------------------------------
    def _verify_uploaded(self) -> None:
        listed = self._backend.find(self._prefix)
        for name, entry in self._files.items():
            key = f"{self._prefix}/{name}"
            if entry["size"] < 0:
                raise StoreError(f"{self.url(name)} was still being written when commit() ran")
            if key not in listed:
                raise CorruptOutputError(f"{self.url(name)} is missing before commit")
            if listed[key] != entry["size"]:
                raise CorruptOutputError(
                    f"{self.url(name)} has {listed[key]} bytes before commit, expected "
                    f"{entry['size']}")

    def commit(self) -> Committed:
        with self._lock:
            if self._state != "open":
                raise StoreError(f"attempt {self.uri} is already {self._state}")
            self._state = "committing"
        try:
            result = self._commit()
        except BaseException:
            self._state = "failed"
            raise
        self._state = "committed"
        return result

    def _commit(self) -> Committed:
        self._verify_uploaded()
        manifest = build_manifest(
            run_id=self.run_id, stage=self.stage, round=self.round, attempt_id=self.attempt_id,
            spec_hash=self.spec_hash, package_version=__version__, meta=self.meta,
            created=self.created, files=self._files, dirs=self._dirs)
        mbytes = dumps(manifest)
        mkey = f"{self._prefix}/{MANIFEST_NAME}"
        if not self._backend.put_create(mkey, mbytes):
            raise StoreError(
                f"{self._backend.url(mkey)} already exists: attempt ids must be unique")
        pbytes = dumps(build_pointer(manifest, mbytes))
        pkey = pointer_key(self.run_id, self.stage, self.round)
        for i in range(_CAS_TRIES):
            current = self._backend.get_versioned(pkey)
            token = None
            if current is not None:
                data, token = current
                try:
                    theirs = json.loads(data)
                except ValueError:
                    theirs = {}
                if (theirs.get("spec_hash") == self.spec_hash
                        and theirs.get("attempt_id") != self.attempt_id):
                    self.won = False
                    self.committed = load_committed(self._backend, self.run_id, self.stage,
                                                    self.round, data)
                    return self.committed
            if self._backend.put_cas(pkey, pbytes, token):
                self.won = True
                self.committed = Committed(self._backend, self.run_id, self.stage, self.round,
                                           manifest)
                return self.committed
            time.sleep(random.uniform(0, 0.01 * (i + 1)))
        raise StoreError(f"could not advance {self._backend.url(pkey)} after {_CAS_TRIES} "
                         "compare-and-swap tries: too many concurrent writers")

    def __enter__(self) -> "Attempt":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            with self._lock:
                if self._state == "open":
                    self._state = "aborted"
            return
        if self._state == "open":
            self.commit()
