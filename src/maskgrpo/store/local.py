"""``file://`` backend on the os module.

Deviation from "everything over fsspec": fsspec's LocalFileSystem offers neither create-only
writes nor an atomic compare-and-swap, so this backend uses the os module directly:
* atomic overwrite = write a hidden temp file in the same folder, then ``os.replace``;
* create-only = write a temp file, then ``os.link`` it to the final name (fails if it exists);
* compare-and-swap = under an ``fcntl.flock`` on a hidden lock file beside the key, compare the
  current content's sha256 with the caller's token, then ``os.replace``.  Readers never lock:
  they always see a whole old or a whole new file.  flock works across threads and processes on
  one host; it is not reliable on NFS, so share a file:// store between machines at your peril.
Hidden names (starting with '.') are temp/lock files and are not listed.
Symlinks are never followed out of the root: every key must resolve inside it (fspath.py), and
reads open the final name with ``O_NOFOLLOW`` (a key with '..', '.' or empty
segments is refused outright).
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import stat
from pathlib import Path

from .backend import (MAP_MIN, SAVE_WRITE, copy_file_hashing, copy_file_known, map_transfers,
                      read_capped)
from .errors import StoreError, StoreUnreachableError
from .fspath import escape_of
from .manifest import sha256_hex
from .seal import mode_from_env, seal, sealed_digest


_FILE_WORKERS = 2  # large files copied at once by put_files


class LocalBackend:
    def __init__(self, root: Path, verify: str = "seal"):
        self.root = root
        self.verify = verify  # seal.py: "seal" trusts an intact seal on read, "full" hashes all
        self.uri = "file://" + root.as_posix()
        self._real_root = os.path.realpath(root)

    @classmethod
    def from_uri(cls, uri: str) -> "LocalBackend":
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        if not path:
            raise StoreError(f"invalid store URI {uri!r}: no path after file://")
        try:
            verify = mode_from_env()
        except ValueError as e:
            raise StoreError(str(e)) from None
        return cls(Path(os.path.abspath(os.path.expanduser(path))), verify)

    @property
    def serial_below(self) -> int:
        """Reads of files this size and more run two at a time: hashing reads (``verify`` full)
        from 1 MiB, as saves; sealed reads, kernel copies, never (bench/README.md: on the 2-core
        dev VM two 250 MB kernel copies at once took the same wall time as one after the other
        and up to twice the CPU)."""
        return MAP_MIN if self.verify == "full" else 1 << 62

    def url(self, key: str) -> str:
        return f"{self.uri}/{key}" if key else self.uri

    def _path(self, key: str) -> Path:
        if not key:
            return self.root
        if key.startswith("/") or any(seg in ("", ".", "..") for seg in key.split("/")):
            raise StoreError(f"invalid key {key!r} under {self.uri}: empty, '.' or '..' segments")
        real = escape_of(self._real_root, key)
        if real is not None:
            raise StoreError(f"{self.url(key)} resolves outside the store root (a symlink to "
                             f"{real}): refused")
        return self.root / key

    def _open_read(self, key: str, buffered: bool = True):
        """The key's file opened for reading without following a final symlink."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StoreError(f"{self.url(key)} is a symlink: refused") from None
            raise
        return os.fdopen(fd, "rb", buffering=-1 if buffered else 0)

    def check_reachable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreUnreachableError(
                f"cannot create store root {self.uri}: {e.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreUnreachableError(f"store root {self.uri} is not writable")

    # -- reads ---------------------------------------------------------------------------------
    def get(self, key: str, max_bytes: int | None = None) -> bytes | None:
        try:
            with self._open_read(key) as f:
                return read_capped(f, max_bytes, self.url(key))
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise StoreError(f"{self.url(key)} is a folder, not a file") from None
        except OSError as e:
            raise StoreError(f"cannot read {self.url(key)}: {e.strerror}") from None

    def get_many(self, keys: list[str]) -> dict[str, bytes | None]:
        return {k: self.get(k) for k in keys}

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        data = self.get(key)
        return None if data is None else (data, sha256_hex(data))

    def get_file(self, key: str, local_path: Path, max_bytes: int | None = None,
                 *, digest: str) -> tuple[int, str] | None:
        try:
            src = self._open_read(key, buffered=False)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise StoreError(f"{self.url(key)} is a folder, not a file") from None
        with src:
            st = os.fstat(src.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"{self.url(key)} is not a regular file")
            known = self.verify == "seal" and sealed_digest(src.fileno(), digest, st)
            if known:
                return copy_file_known(src.fileno(), st, known, local_path, max_bytes,
                                       self.url(key))
            return copy_file_hashing(src, local_path, max_bytes, self.url(key), digest=digest)

    def find(self, prefix: str) -> dict[str, int]:
        base = self._path(prefix)
        out: dict[str, int] = {}
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if not name.startswith("."):
                    try:
                        out[f"{rel}/{name}"] = os.stat(os.path.join(dirpath, name)).st_size
                    except FileNotFoundError:  # removed while listing
                        pass
        return out

    # -- writes --------------------------------------------------------------------------------
    def _temp_for(self, path: Path) -> Path:
        try:
            if not os.path.isdir(path.parent):  # one stat when it exists (mkdir would raise)
                os.makedirs(path.parent, exist_ok=True)
        except OSError as e:
            rel = path.relative_to(self.root).as_posix()
            raise StoreError(f"cannot create folder for {self.url(rel)}: {e.strerror}") from None
        return path.parent / f".tmp-{secrets.token_hex(6)}-{path.name}"

    def _write_temp(self, path: Path, data: bytes, durable: bool) -> Path:
        tmp = self._temp_for(path)
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        return tmp

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data, durable=False)
        try:
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write {self.url(key)}: {e.strerror}") from None

    def put_create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._write_temp(path, data, durable=True)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def put_cas(self, key: str, data: bytes, token: str | None) -> bool:
        path = self._path(key)
        tmp = self._write_temp(path, data, durable=True)
        lock = path.parent / f".{path.name}.lock"
        try:
            with open(lock, "a+b") as lf:
                fcntl.flock(lf.fileno(), fcntl.LOCK_EX)
                try:
                    current = path.read_bytes()
                except FileNotFoundError:
                    current = None
                if (current is None) != (token is None):
                    return False
                if current is not None and sha256_hex(current) != token:
                    return False
                os.replace(tmp, path)
                return True
        finally:
            tmp.unlink(missing_ok=True)

    def put_files(self, items: list[tuple[str, Path]],
                  *, digest: str) -> list[tuple[int, str]]:
        """Files copied and hashed in one pass (backend.copy_file_hashing); large ones two at a
        time."""
        def one(item: tuple[str, Path]) -> tuple[int, str]:
            key, local = item
            path = self._path(key)
            tmp = self._temp_for(path)
            try:
                got = copy_file_hashing(local, tmp, what=str(local), digest=digest,
                                        write_size=SAVE_WRITE)
                seal(tmp, digest, got[1])
                os.replace(tmp, path)
                return got
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise StoreError(f"cannot copy {local} to {self.url(key)}: {e.strerror}") from None
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise

        sizes = [_size_or_zero(local) for _, local in items]
        return map_transfers(one, items, sizes, MAP_MIN, _FILE_WORKERS)

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise StoreError(f"cannot delete {self.url(prefix)}: {e.strerror}") from None


def _size_or_zero(path: Path) -> int:
    """The file's size for scheduling (0 if it cannot be read now: its copy will say why)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
