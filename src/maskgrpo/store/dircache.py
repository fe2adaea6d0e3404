"""Download a folder put with ``Attempt.put_dir`` into a local folder, cheaply when it is
already there.

The local folder keeps a hidden index (``.maskgrpo-files.json``) of what this module wrote:
relative path -> digest (keyed by its algorithm, as in the manifest: ``{"xxh3_128": hex}``, or
``{"sha256": hex}`` in indexes written before store/digest.py), size and mtime.  A file whose
index entry holds the wanted digest under the wanted algorithm and whose size and mtime are
unchanged is trusted without re-reading it (an entry of another algorithm never matches: the file
is fetched again); anything else is fetched to a temp file beside it, verified (size + digest)
and renamed into place.  Files this module
wrote earlier that the new manifest lacks are removed (stale checkpoint shards); files it did
not write are left alone. Every relative path, in the index and in the manifest, must be a
valid store name (`layout.check_name`: no '..', no absolute path) that resolves inside the local
folder: a forged index entry ``../../x`` is dropped, never deleted.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Callable

from . import digest as digests
from .backend import map_transfers
from .errors import CorruptOutputError, StoreError
from .fspath import escape_of
from .layout import check_name

INDEX_NAME = ".maskgrpo-files.json"


def _inside(real_local: str, rel: str) -> bool:
    """``rel`` is a store name whose path stays inside the resolved folder ``real_local`` (no
    symlink out of it either)."""
    try:
        check_name(rel)
    except ValueError:
        return False
    return escape_of(real_local, rel) is None


def _load_index(local: Path, real_local: str) -> dict:
    try:
        index = json.loads((local / INDEX_NAME).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(index, dict):
        return {}
    return {rel: rec for rel, rec in index.items()
            if isinstance(rec, dict) and _inside(real_local, rel)}


def _fresh(target: Path, rec: dict | None, entry: dict) -> bool:
    alg, want = digests.of_entry(entry)
    if not rec or rec.get(alg) != want:
        return False
    try:
        st = target.stat()
    except FileNotFoundError:
        return False
    return st.st_size == entry["size"] == rec.get("size") and st.st_mtime_ns == rec.get("mtime_ns")


def sync_dir(wanted: dict[str, dict], local: Path,
             fetch: Callable[[str, Path], tuple[int, str] | None],
             url: Callable[[str], str], workers: int = 8, serial_below: int = 0) -> Path:
    """Make ``local`` hold ``wanted`` (relative path -> manifest entry: size and one digest).

    ``fetch(rel, tmp_path)`` downloads one file and returns (size, hex digest of the entry's
    algorithm) or None if missing;
    ``url(rel)`` names the stored file in errors; files of ``serial_below`` bytes and more are
    fetched ``workers`` at a time, smaller ones one by one (backend.map_transfers).
    """
    local.mkdir(parents=True, exist_ok=True)
    real_local = os.path.realpath(local)
    bad = next((rel for rel in wanted if not _inside(real_local, rel)), None)
    if bad is not None:
        raise CorruptOutputError(f"{url(bad)}: the manifest names a path outside {local}: refused")
    index = _load_index(local, real_local)
    for rel in set(index) - set(wanted):
        (local / rel).unlink(missing_ok=True)

    def one(rel: str) -> tuple[str, dict]:
        entry, target = wanted[rel], local / rel
        if _fresh(target, index.get(rel), entry):
            return rel, index[rel]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".tmp-{secrets.token_hex(6)}-{target.name}"
        try:
            got = fetch(rel, tmp)
            if got is None:
                raise CorruptOutputError(f"{url(rel)} is listed in its manifest but missing")
            size, got_hex = got
            alg, want = digests.of_entry(entry)
            if size != entry["size"] or got_hex != want:
                raise CorruptOutputError(
                    f"{url(rel)} does not match its manifest: size {size} (manifest "
                    f"{entry['size']}), {alg} {got_hex[:12]}... (manifest {want[:12]}...)")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        st = target.stat()
        return rel, {alg: got_hex, "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    rels = sorted(wanted)
    results = map_transfers(one, rels, [wanted[r]["size"] for r in rels], serial_below, workers)
    tmp_index = local / f".tmp-{secrets.token_hex(6)}-index"
    try:
        tmp_index.write_text(json.dumps(dict(results), indent=1, sort_keys=True))
        os.replace(tmp_index, local / INDEX_NAME)
    except OSError as e:
        tmp_index.unlink(missing_ok=True)
        raise StoreError(f"cannot write the download index in {local}: {e.strerror}") from None
    return local
