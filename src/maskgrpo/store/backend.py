"""The small byte-level interface the store needs from a storage backend, and the registry
that picks one by URI scheme (lazy import strings, so s3fs loads only for ``s3://``).

Keys are '/'-separated and relative to the store root.  Every backend must provide
create-only writes and compare-and-swap on one key: that is all the commit protocol needs.
File transfers (``put_files``, ``get_file``) return each file's (size, hex digest) of the
algorithm named by ``digest`` (store/digest.py), computed from the bytes as they stream.
"""

from __future__ import annotations

import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Protocol, TypeVar

from maskgrpo.core.registry import LazyRegistry

from . import digest as digests
from .errors import StoreError, TooLargeError

CHUNK = 1 << 20  # hashing block: larger blocks fall out of the CPU cache between read and hash
MAP_MIN = 1 << 20  # copy_file_hashing copies through a read-only mapping from this size
READ_WRITE = 64 << 10  # the mapped copy's write size on reads (out of the store; _copy_mapped)
SAVE_WRITE = CHUNK  # ... and on saves (into it)
_THREAD_MIN = 8 << 20  # unmappable files: kernel copy and hash overlap in two threads from this size


class Backend(Protocol):
    uri: str  # normalised root URI, no trailing slash
    serial_below: int  # files smaller than this are read one by one (a thread costs more)

    def url(self, key: str) -> str: ...
    def check_reachable(self) -> None: ...
    # max_bytes: refuse (TooLargeError, read no further) an object larger than that
    def get(self, key: str, max_bytes: int | None = None) -> bytes | None: ...  # None if missing
    def get_many(self, keys: list[str]) -> dict[str, bytes | None]: ...
    def get_versioned(self, key: str) -> tuple[bytes, str] | None: ...  # (data, CAS token)
    def put(self, key: str, data: bytes) -> None: ...                  # atomic overwrite
    def put_create(self, key: str, data: bytes) -> bool: ...           # False if it exists
    def put_cas(self, key: str, data: bytes, token: str | None) -> bool: ...  # None: create-only
    def put_files(self, items: list[tuple[str, Path]],
                  *, digest: str) -> list[tuple[int, str]]: ...   # (size, hex) each
    def get_file(self, key: str, local_path: Path, max_bytes: int | None = None,
                 *, digest: str) -> tuple[int, str] | None: ...
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


_T, _R = TypeVar("_T"), TypeVar("_R")


def map_transfers(fn: Callable[[_T], _R], items: list[_T], sizes: list[int], serial_below: int,
                  workers: int) -> list[_R]:
    """``[fn(item) for item in items]``, the items of ``serial_below`` bytes and more ``workers``
    at a time in a thread pool when there are two or more of them, the others in this thread
    (a pool costs ~0.5 ms of CPU here, as much as copying 1.5 MB)."""
    out: list = [None] * len(items)
    pooled = [i for i, size in enumerate(sizes) if size >= serial_below]
    if len(pooled) < 2:
        pooled = []
    for i, item in enumerate(items):  # in order, so the first bad item is the one reported
        if i not in pooled:
            out[i] = fn(item)
    if pooled:
        with ThreadPoolExecutor(min(workers, len(pooled))) as pool:
            for i, got in zip(pooled, pool.map(fn, [items[i] for i in pooled])):
                out[i] = got
    return out


def hash_file(path: str | os.PathLike, digest: str) -> tuple[int, str]:
    """(size, hex digest) of a local file, read in 1 MiB chunks."""
    with open(path, "rb", buffering=0) as f:
        return _hash_stream(f, None, digest)


def _hash_stream(f, limit: int | None, digest: str) -> tuple[int, str]:
    """(bytes read, hex digest) of unbuffered binary file ``f`` from its position, reading at
    most ``limit`` bytes; one reused buffer, no copies."""
    h, size = digests.new(digest), 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while limit is None or size < limit:
        n = f.readinto(view if limit is None else view[:min(CHUNK, limit - size)])
        if not n:
            break
        h.update(view[:n])
        size += n
    return size, h.hexdigest()


def _kernel_copy(src_fd: int, dst_fd: int, count: int) -> int:
    """Copy up to ``count`` bytes from offset 0 of ``src_fd`` into ``dst_fd`` in the kernel
    (``copy_file_range``, else ``sendfile``, else a read/write loop); the bytes copied (fewer at
    end of file).  Explicit offsets: neither file's position is used or moved."""
    off = 0
    try:
        while off < count:
            n = os.copy_file_range(src_fd, dst_fd, count - off, off, off)
            if n == 0:
                return off
            off += n
        return off
    except (OSError, AttributeError):  # EXDEV/ENOSYS/EINVAL on some kernels and filesystems
        pass
    try:
        while off < count:
            n = os.sendfile(dst_fd, src_fd, off, count - off)
            if n == 0:
                return off
            off += n
        return off
    except (OSError, AttributeError):
        pass
    while off < count:
        data = os.pread(src_fd, min(CHUNK, count - off), off)
        if not data:
            break
        os.pwrite(dst_fd, data, off)
        off += len(data)
    return off


def copy_file_hashing(src, dst: str | os.PathLike, max_bytes: int | None = None,
                      what: str = "", *, digest: str,
                      write_size: int = READ_WRITE) -> tuple[int, str]:
    """Copy local file ``src`` (a path, or a file object opened unbuffered on a regular file) to
    ``dst`` (created or truncated) and return the (size, hex digest) of the bytes copied.

    One pass (``_copy_mapped``) for files of ``MAP_MIN`` bytes and more: each 1 MiB of a
    read-only mapping is hashed, which brings it into the CPU cache, then written from there, so
    every byte leaves the page cache once and is copied once (within 10-25% of the CPU of
    ``shutil.copyfile``'s kernel copy, which hashes nothing: bench/README.md).  The digest is
    then always that of the bytes written.
    Small files, and files that cannot be mapped, are copied in the kernel and hashed from the
    same open file (beside it in a second thread from ``_THREAD_MIN`` bytes).  ``write_size``:
    the mapped copy's writes (``_copy_mapped`` says why saves and reads differ).  More than
    ``max_bytes`` (known from ``fstat`` before anything is read) is refused unread with
    TooLargeError naming ``what``; a file whose length changes while it is copied is refused.

    Deviation from "a clear error, never a crash": a file that another process truncates while it
    is mapped here kills this process with SIGBUS (Python cannot catch it).  Nothing is lost: an
    uncommitted attempt is an orphan, a download lands under a temp name, and the run resumes.
    Checkpoints being saved and committed store files are never truncated by maskgrpo itself."""
    fin = open(src, "rb", buffering=0) if isinstance(src, (str, os.PathLike)) else src
    try:
        size = os.fstat(fin.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise TooLargeError(f"{what or src} has more than {max_bytes} bytes: refused")
        with open(dst, "wb") as fout:
            hexdigest = (_copy_mapped(fin.fileno(), fout, size, digest, write_size)
                         if size >= MAP_MIN else None)
            if hexdigest is not None:
                now = os.fstat(fin.fileno()).st_size
                if now != size:
                    raise StoreError(f"{what or src} changed while it was copied ({size} bytes "
                                     f"copied, {now} now)")
                return size, hexdigest
            limit = (1 << 62) if max_bytes is None else max_bytes + 1
            copied: list = []
            if size < _THREAD_MIN:  # small: a second thread costs more than it overlaps
                copied.append(_kernel_copy(fin.fileno(), fout.fileno(), limit))
                fin.seek(0)
                hashed, sha = _hash_stream(fin, limit, digest)
                return _checked(copied[0], hashed, sha, max_bytes, what or str(src))

            def copy():
                try:
                    copied.append(_kernel_copy(fin.fileno(), fout.fileno(), limit))
                except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
                    copied.append(e)

            worker = threading.Thread(target=copy, name="store-copy", daemon=True)
            worker.start()
            try:
                fin.seek(0)
                hashed, sha = _hash_stream(fin, limit, digest)
            finally:  # never close the files under a running copy (a signal may land here)
                worker.join()
        if isinstance(copied[0], BaseException):
            raise copied[0]
        return _checked(copied[0], hashed, sha, max_bytes, what or str(src))
    finally:
        if fin is not src:
            fin.close()


def copy_file_known(src_fd: int, st: os.stat_result, hexdigest: str, dst: str | os.PathLike,
                    max_bytes: int | None = None, what: str = "") -> tuple[int, str]:
    """Copy open regular file ``src_fd`` (``fstat`` ``st``), whose digest ``hexdigest`` is
    already known (an intact seal, store/seal.py), to ``dst`` in the kernel, no byte read in user
    space; (size, hexdigest).  Refused like ``copy_file_hashing``: more than ``max_bytes``
    unread, and a file whose size or mtime changed while it was copied."""
    if max_bytes is not None and st.st_size > max_bytes:
        raise TooLargeError(f"{what} has more than {max_bytes} bytes: refused")
    with open(dst, "wb") as fout:
        copied = _kernel_copy(src_fd, fout.fileno(), st.st_size + 1)  # +1: growth shows
    now = os.fstat(src_fd)
    if copied != st.st_size or (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise StoreError(f"{what} changed while it was copied ({st.st_size} bytes sealed, "
                         f"{copied} copied, {now.st_size} now)")
    return copied, hexdigest


def _copy_mapped(src_fd: int, fout, size: int, digest: str, write_size: int) -> str | None:
    """Hash and write the first ``size`` bytes of ``src_fd`` through a read-only shared mapping,
    ``CHUNK`` at a time (hash first, so the writes copy from the CPU cache) in writes of
    ``write_size``; the hex digest, or None (nothing written) when the file cannot be mapped.

    Measured choices (bench/README.md, "store.py"): the kernel sizes new page-cache folios by
    the write, and on a VM whose balloon returns freed memory to the host (free page reporting,
    as on the dev machine) large folios can land on memory the host must fault in again.  In
    same-run sweeps of 64 KiB / 256 KiB / 1 MiB writes there, 1 MiB was the cheapest save at 50
    and 500 MB, memory recycled or not (save CPU 0.87-0.98 of a raw copy, against 0.69-0.83 with
    64 KiB), but a 500 MB mapped read right after a save cost 3-4x with 256 KiB or 1 MiB writes
    and not with 64 KiB, the size a kernel copy writes at once (16 pipe pages): hence
    ``SAVE_WRITE`` = 1 MiB and ``READ_WRITE`` = 64 KiB (reads of sealed files are kernel copies
    anyway, local.py).  No MAP_POPULATE and no madvise: both slower on a file not in the page
    cache."""
    try:
        mapping = mmap.mmap(src_fd, size, prot=mmap.PROT_READ)
    except (OSError, ValueError):  # a filesystem or file kind without mmap
        return None
    h = digests.new(digest)
    fout.flush()
    fd = fout.fileno()
    with mapping, memoryview(mapping) as view:
        for off in range(0, size, CHUNK):
            end = min(off + CHUNK, size)
            h.update(view[off:end])
            pos = off
            while pos < end:  # os.write: no buffered-writer layer; a short write is resumed
                pos += os.write(fd, view[pos:min(pos + write_size, end)])
    return h.hexdigest()


def _checked(copied: int, hashed: int, sha: str, max_bytes: int | None,
             what: str) -> tuple[int, str]:
    if max_bytes is not None and max(hashed, copied) > max_bytes:
        raise TooLargeError(f"{what} has more than {max_bytes} bytes: refused")
    if copied != hashed:
        raise StoreError(f"{what} changed while it was copied ({copied} bytes copied, {hashed} "
                         "hashed)")
    return hashed, sha


def read_capped(f, max_bytes: int | None, what: str) -> bytes:
    """All of binary file ``f``, or TooLargeError after reading at most ``max_bytes + 1`` bytes."""
    data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise TooLargeError(f"{what} has more than {max_bytes} bytes: refused")
    return data
