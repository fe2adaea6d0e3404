"""A digest recorded on a ``file://`` store file when the store writes it, so a read need not
hash the file again while it is provably the file that was written.

``put_files`` hashes every byte as it copies (backend.copy_file_hashing), then records, in the
user extended attribute ``user.maskgrpo.seal`` of the new file, that digest with the file's size,
mtime (ns) and inode.  ``get_file`` trusts the recorded digest when all three still match the
open file, and copies it in the kernel without reading it in user space; anything else (no
attribute, another algorithm, a changed size, mtime or inode, a filesystem without user xattrs)
falls back to hashing every byte on the way out.  The sealed file's digest is then checked
against the manifest like a hashed one.

Deviation from "readers hash every byte" (docs/design.md, "The store"): this is the rule of
store/dircache.py's download index and of DVC's cache (trust size + mtime + inode for a file
one wrote and hashed): any write through the filesystem moves the mtime (at ns granularity on
kernels with multigrain timestamps, 6.13+; on older ones a same-size rewrite within one clock
tick of the store's own write would go unseen, and the store never rewrites its files), and a
file copied or replaced gets a new inode.  What it cannot see is what no filesystem call makes:
bytes rotting on the disk under an unchanged inode.  ``MASKGRPO_STORE_VERIFY=full`` (read when
the store is opened) hashes every byte of every read regardless of seals.  Seals carry no trust
of their own: anyone who can set one can rewrite the manifest as easily.
"""

from __future__ import annotations

import os

XATTR = "user.maskgrpo.seal"
ENV_VAR = "MASKGRPO_STORE_VERIFY"
MODES = ("seal", "full")  # trust an intact seal (default) / hash every byte of every read


def mode_from_env() -> str:
    """``MASKGRPO_STORE_VERIFY`` if set, else "seal"; ValueError naming the variable otherwise."""
    value = os.environ.get(ENV_VAR, "seal").strip() or "seal"
    if value not in MODES:
        raise ValueError(f"{ENV_VAR}={value!r}: use one of {', '.join(MODES)}")
    return value


def _value(alg: str, hexdigest: str, st: os.stat_result) -> bytes:
    return f"v1 {alg} {hexdigest} {st.st_size} {st.st_mtime_ns} {st.st_ino}".encode()


def seal(path: str | os.PathLike, alg: str, hexdigest: str) -> None:
    """Record on ``path`` (a file just written and closed) the ``alg`` digest of its bytes;
    nothing when the filesystem has no user xattrs (reads then hash)."""
    try:
        os.setxattr(path, XATTR, _value(alg, hexdigest, os.stat(path)), follow_symlinks=False)
    except OSError:
        pass


def sealed_digest(fd: int, alg: str, st: os.stat_result) -> str | None:
    """The ``alg`` digest sealed on open file ``fd`` (whose ``fstat`` is ``st``) if its seal is
    intact: same algorithm, size, mtime and inode; else None."""
    try:
        value = os.getxattr(fd, XATTR)
    except OSError:
        return None
    parts = value.split(b" ")
    if len(parts) != 6:
        return None
    hexdigest = parts[2].decode("ascii", "replace")
    return hexdigest if value == _value(alg, hexdigest, st) else None
