"""Data snapshots: a glob or a store prefix resolved to an explicit list of (file, size, sha256).

``resolve_snapshot(pattern)`` takes
* a local glob (``data/*.jsonl``, ``/data/**/*.parquet``; ``**`` recurses),
* a store prefix (``s3://bucket/datasets/toy/`` or ``file:///data/toy``: every ``.jsonl`` and
  ``.parquet`` object under it), or a store URI whose last segment is a glob
  (``s3://bucket/datasets/toy/*.jsonl``),
and returns the matching files sorted by URI, each hashed while being read.  The same bytes give
the same snapshot whatever the listing order or modification times; an empty match is an error
naming the pattern.  ``fetch_verified`` copies one entry to a local file and refuses it if its
size or sha256 changed since the snapshot was taken.  ``row_id`` names one row by content (the
row-level unseen filter of stages/resolve.py).
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path

from .backend import hash_file, open_backend
from .errors import StoreError

SUFFIXES = (".jsonl", ".parquet")
_GLOB_CHARS = set("*?[")


def _entry(uri: str, size: int, sha: str) -> dict:
    return {"uri": uri, "size": size, "sha256": sha}


def _split_store(pattern: str) -> tuple[str, str]:
    """(store URI of the folder, glob of the names under it) of a store pattern."""
    head, _, last = pattern.rstrip("/").rpartition("/")
    if _GLOB_CHARS & set(last) and "://" in head:
        return head, last
    return pattern.rstrip("/"), "**"


def resolve_snapshot(pattern: str) -> list[dict]:
    """The files ``pattern`` names now, as [{uri, size, sha256}] sorted by uri (module docstring)."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError(f"retrain.data: {pattern!r} is not a glob or a store prefix")
    out: list[dict] = []
    if "://" not in pattern:
        for path in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
            p = Path(path)
            if p.is_file() and p.suffix in SUFFIXES:
                size, sha = hash_file(p, "sha256")
                out.append(_entry(str(p.resolve()), size, sha))
    else:
        folder, names = _split_store(pattern)
        backend = open_backend(folder)
        with tempfile.TemporaryDirectory(prefix="maskgrpo-snapshot-") as tmp:
            for key in sorted(k.removeprefix("./") for k in backend.find("")):  # file:// lists the root as "."
                if not key.endswith(SUFFIXES) or not (names == "**" or fnmatch.fnmatch(key, names)):
                    continue
                found = backend.get_file(key, Path(tmp) / "f", digest="sha256")
                if found is None:  # removed while listing
                    continue
                out.append(_entry(backend.url(key), *found))
    if not out:
        raise ValueError(f"retrain.data: {pattern!r} matches no {' or '.join(SUFFIXES)} file")
    return sorted(out, key=lambda e: e["uri"])


def row_id(row: dict) -> str:
    """A row's identity: sha256 of its canonical JSON (sorted keys, no spaces, UTF-8), so the same
    record gets the same id in any file, at any position, as jsonl or parquet.

    >>> row_id({"prompt": "sort:21=", "answer": "12"}) == row_id({"answer": "12", "prompt": "sort:21="})
    True
    """
    text = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def snapshot_digest(files: list[dict]) -> str:
    """One sha256 for the whole snapshot (order-independent: entries are sorted by uri)."""
    h = hashlib.sha256()
    for e in sorted(files, key=lambda e: e["uri"]):
        h.update(f"{e['uri']}\0{e['size']}\0{e['sha256']}\n".encode())
    return h.hexdigest()


def fetch_verified(entry: dict, local: Path) -> Path:
    """Copy a snapshot entry to ``local`` and check its size and sha256 against the snapshot."""
    uri = entry["uri"]
    if "://" not in uri:
        size, sha = hash_file(uri, "sha256")
        local = Path(uri)
    else:
        parent, _, name = uri.rpartition("/")
        found = open_backend(parent).get_file(name, local, digest="sha256")
        if found is None:
            raise StoreError(f"snapshot file {uri} no longer exists")
        size, sha = found
    if (size, sha) != (entry["size"], entry["sha256"]):
        raise StoreError(f"snapshot file {uri} changed since the snapshot was taken "
                         f"(size {size} vs {entry['size']}, sha256 {sha[:12]} vs {entry['sha256'][:12]})")
    return local
