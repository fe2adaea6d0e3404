"""The small byte-level interface the store needs from a storage backend, and the registry
that picks one by URI scheme (lazy import strings, so s3fs loads only for ``s3://``).

Keys are '/'-separated and relative to the store root.  Every backend must provide
create-only writes and compare-and-swap on one key: that is all the commit protocol needs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

from maskgrpo.core.registry import LazyRegistry

from .errors import StoreError, TooLargeError

CHUNK = 1 << 20


class Backend(Protocol):
    uri: str  # normalised root URI, no trailing slash

    def url(self, key: str) -> str: ...
    def check_reachable(self) -> None: ...
    # max_bytes: refuse (TooLargeError, read no further) an object larger than that
    def get(self, key: str, max_bytes: int | None = None) -> bytes | None: ...  # None if missing
    def get_many(self, keys: list[str]) -> dict[str, bytes | None]: ...
    def get_versioned(self, key: str) -> tuple[bytes, str] | None: ...  # (data, CAS token)
    def put(self, key: str, data: bytes) -> None: ...                  # atomic overwrite
    def put_create(self, key: str, data: bytes) -> bool: ...           # False if it exists
    def put_cas(self, key: str, data: bytes, token: str | None) -> bool: ...  # None: create-only
    def put_files(self, items: list[tuple[str, Path]]) -> list[tuple[int, str]]: ...
    def get_file(self, key: str, local_path: Path,
                 max_bytes: int | None = None) -> tuple[int, str] | None: ...
    def find(self, prefix: str) -> dict[str, int]: ...                 # key -> size, recursive
    def delete_prefix(self, prefix: str) -> None: ...


# scheme -> "module:Class"; each class has from_uri(uri: str) -> Backend
BACKENDS: dict[str, str] = {
    "file": "maskgrpo.store.local:LocalBackend",
    "s3": "maskgrpo.store.s3:S3Backend",
}


def open_backend(uri: str) -> Backend:
    """Pick the backend for ``uri``; a bare path (``./runs``, ``/abs``) means ``file``."""
    if not isinstance(uri, str) or not uri.strip():
        raise StoreError(f"invalid store URI {uri!r}: valid schemes are {sorted(BACKENDS)}")
    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    if scheme not in BACKENDS:
        raise StoreError(
            f"unknown store scheme {scheme!r} in {uri!r}: valid schemes are "
            f"{', '.join(s + '://' for s in sorted(BACKENDS))} (or a plain local path)"
        )
    return LazyRegistry("store scheme", BACKENDS).load(scheme).from_uri(uri)  # core/registry.py: the one mechanism


def hash_file(path: str | os.PathLike) -> tuple[int, str]:
    """(size, sha256 hex) of a local file, read in 1 MiB chunks."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def copy_hashing(src, dst: str | os.PathLike, max_bytes: int | None = None,
                 what: str = "") -> tuple[int, str]:
    """Copy ``src`` (a path or a binary file object) to ``dst`` (created or truncated) and hash it
    in the same pass; TooLargeError naming ``what`` as soon as more than ``max_bytes`` arrive."""
    h, size = hashlib.sha256(), 0
    fin = open(src, "rb") if isinstance(src, (str, os.PathLike)) else src
    try:
        with open(dst, "wb") as fout:
            while chunk := fin.read(CHUNK):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise TooLargeError(f"{what or src} has more than {max_bytes} bytes: refused")
                h.update(chunk)
                fout.write(chunk)
    finally:
        if fin is not src:
            fin.close()
    return size, h.hexdigest()


def read_capped(f, max_bytes: int | None, what: str) -> bytes:
    """All of binary file ``f``, or TooLargeError after reading at most ``max_bytes + 1`` bytes."""
    data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLargeError(f"{what} has more than {max_bytes} bytes: refused")
    return data
