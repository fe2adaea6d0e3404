"""The two small JSON documents of the commit protocol, built and validated here (no I/O).

* ``_MANIFEST.json`` (one per attempt, written last and create-only) lists every file's size and
  digest, keyed by its algorithm (``{"size": n, "xxh3_128": hex}``, or ``"sha256"``: the only
  form before, still read and verified; store/digest.py), the stage spec's hash, the package version, the caller's ``meta``, the folders put with
  ``put_dir`` and the creation time.
* ``_POINTER.json`` (one per stage output, advanced by compare-and-swap) names the committed
  attempt, repeats its spec hash and pins the manifest by its sha256, so a reader detects a
  manifest that changed after commit.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any

from . import digest as digests
from .layout import check_attempt_id, check_name

MANIFEST_FORMAT = "maskgrpo.manifest/1"
POINTER_FORMAT = "maskgrpo.pointer/1"
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def dumps(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, UTF-8) so equal documents hash equally."""
    return json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False).encode("utf-8")


def build_manifest(*, run_id: str, stage: str, round: int | None, attempt_id: str,
                   spec_hash: str, package_version: str, meta: dict, created: str,
                   files: dict[str, dict], dirs: list[str]) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        "run_id": run_id,
        "stage": stage,
        "round": round,
        "attempt_id": attempt_id,
        "spec_hash": spec_hash,
        "package_version": package_version,
        "meta": meta,
        "created": created,
        "committed": utc_now(),
        "files": {k: digests.entry(v["size"], *digests.of_entry(v)) for k, v in sorted(files.items())},
        "dirs": sorted(dirs),
    }


def build_pointer(manifest: dict, manifest_bytes: bytes) -> dict:
    files = manifest["files"]
    return {
        "format": POINTER_FORMAT,
        "attempt_id": manifest["attempt_id"],
        "spec_hash": manifest["spec_hash"],
        "manifest_sha256": sha256_hex(manifest_bytes),
        "committed_at": manifest["committed"],
        "n_files": len(files),
        "total_bytes": sum(f["size"] for f in files.values()),
    }


class InvalidDocument(ValueError):
    """A manifest or pointer does not have the expected shape (the caller adds the URI)."""


def _require(doc: Any, key: str, typ: type | tuple, what: str) -> Any:
    if not isinstance(doc, dict) or key not in doc:
        raise InvalidDocument(f"{what} has no field {key!r}")
    value = doc[key]
    if not isinstance(value, typ) or isinstance(value, bool) and typ is int:
        raise InvalidDocument(f"{what} field {key!r} has type {type(value).__name__}")
    return value


#: Largest pointer or manifest read (bytes): a manifest of 100k files is ~15 MB.
MAX_DOCUMENT = 64 << 20


def parse_pointer(data: bytes) -> dict:
    """Parse and validate pointer bytes; raises InvalidDocument."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise InvalidDocument(f"pointer is not JSON ({type(e).__name__}: {str(e)[:100]})") from None
    if _require(doc, "format", str, "pointer") != POINTER_FORMAT:
        raise InvalidDocument(f"pointer format {doc['format']!r} is not {POINTER_FORMAT!r}")
    try:
        check_attempt_id(_require(doc, "attempt_id", str, "pointer"))
    except ValueError as e:
        raise InvalidDocument(str(e)) from None
    _require(doc, "spec_hash", str, "pointer")
    if not _SHA_RE.match(_require(doc, "manifest_sha256", str, "pointer")):
        raise InvalidDocument("pointer field 'manifest_sha256' is not a sha256 hex digest")
    return doc


def parse_manifest(data: bytes, *, run_id: str, stage: str, round: int | None,
                   attempt_id: str) -> dict:
    """Parse and validate manifest bytes against where they were found; raises InvalidDocument."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise InvalidDocument(f"manifest is not JSON ({type(e).__name__}: {str(e)[:100]})") from None
    if _require(doc, "format", str, "manifest") != MANIFEST_FORMAT:
        raise InvalidDocument(f"manifest format {doc['format']!r} is not {MANIFEST_FORMAT!r}")
    expected = {"run_id": run_id, "stage": stage, "round": round, "attempt_id": attempt_id}
    for key, want in expected.items():
        if doc.get(key) != want:
            raise InvalidDocument(f"manifest field {key!r} is {doc.get(key)!r}, expected {want!r}")
    for key in ("spec_hash", "package_version", "created", "committed"):
        _require(doc, key, str, "manifest")
    _require(doc, "meta", dict, "manifest")
    files = _require(doc, "files", dict, "manifest")
    for name, entry in files.items():
        try:
            check_name(name)
        except ValueError as e:
            raise InvalidDocument(f"manifest lists a bad file name: {e}") from None
        size = _require(entry, "size", int, f"manifest entry {name!r}")
        if size < 0:
            raise InvalidDocument(f"manifest entry {name!r} has a negative size")
        try:
            digests.of_entry(entry)
        except ValueError as e:
            raise InvalidDocument(f"manifest entry {name!r} {e}") from None
    dirs = _require(doc, "dirs", list, "manifest")
    if not all(isinstance(d, str) for d in dirs):
        raise InvalidDocument("manifest field 'dirs' must be a list of names")
    return doc
