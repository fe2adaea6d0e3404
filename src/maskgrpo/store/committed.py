"""A committed stage output: read-only, every file verified against the manifest on read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from . import codecs
from . import digest as digests
from .backend import Backend
from .dircache import sync_dir
from .errors import CorruptOutputError, StoreError
from .layout import MANIFEST_NAME, attempt_prefix, pointer_key
from .manifest import MAX_DOCUMENT, InvalidDocument, parse_manifest, parse_pointer, sha256_hex

if TYPE_CHECKING:
    import torch


class Committed:
    """The committed attempt of one stage output.

    ``uri`` is the attempt's folder; ``manifest`` the full validated manifest; ``meta`` and
    ``spec_hash`` come from it.  Reads check size and digest lazily, per file, with the algorithm
    its manifest entry names (sha256 for outputs committed before store/digest.py).
    """

    def __init__(self, backend: Backend, run_id: str, stage: str, round: int | None,
                 manifest: dict):
        self._backend = backend
        self.run_id, self.stage, self.round = run_id, stage, round
        self.manifest = manifest
        self.attempt_id: str = manifest["attempt_id"]
        self.spec_hash: str = manifest["spec_hash"]
        self.meta: dict = manifest["meta"]
        self._prefix = attempt_prefix(run_id, stage, round, self.attempt_id)
        self.uri = backend.url(self._prefix)

    def __repr__(self) -> str:
        return f"Committed({self.uri!r}, spec_hash={self.spec_hash!r})"

    def url(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def files(self) -> list[str]:
        return sorted(self.manifest["files"])

    def _entry(self, name: str) -> dict:
        entry = self.manifest["files"].get(name)
        if entry is None:
            raise StoreError(f"{self.url(name)} is not part of the committed output {self.uri} "
                             f"(it has {len(self.manifest['files'])} files: see .files())")
        return entry

    def get_bytes(self, name: str) -> bytes:
        entry = self._entry(name)
        # read at most the manifest's size (+1): a swapped-in huge object is refused unread
        data = self._backend.get(f"{self._prefix}/{name}", max_bytes=entry["size"])
        if data is None:
            raise CorruptOutputError(f"{self.url(name)} is listed in its manifest but missing")
        if len(data) != entry["size"]:
            raise CorruptOutputError(
                f"{self.url(name)} has {len(data)} bytes, its manifest says {entry['size']}")
        alg, want = digests.of_entry(entry)
        got = digests.hexdigest(alg, data)
        if got != want:
            raise CorruptOutputError(
                f"{self.url(name)} fails its {alg} check: {got} != manifest {want}")
        return data

    def _decode(self, name: str, decode, what: str):
        data = self.get_bytes(name)
        try:
            return decode(data)
        except MemoryError:
            raise StoreError(f"{self.url(name)} is too large to decode as {what}") from None
        except Exception as e:  # noqa: BLE001 (SafetensorError, RecursionError, JSON errors, ...)
            raise StoreError(f"{self.url(name)} is not valid {what}: {type(e).__name__}: "
                             f"{str(e)[:200]}") from None

    def get_json(self, name: str):
        return self._decode(name, json.loads, "JSON")

    def get_jsonl(self, name: str) -> list[dict]:
        return self._decode(name, codecs.decode_jsonl, "JSON lines")

    def get_tensors(self, name: str) -> dict[str, torch.Tensor]:
        return self._decode(name, codecs.decode_tensors, "safetensors")

    def get_tensors_metadata(self, name: str) -> dict[str, str]:
        return self._decode(name, codecs.tensors_metadata, "safetensors")

    def get_dir(self, name: str, local_dir: str | Path) -> Path:
        """Download (and verify) a folder put with ``put_dir`` into ``local_dir``; files already
        there from an earlier ``get_dir`` with the same digest are not fetched again."""
        if name not in self.manifest["dirs"]:
            raise StoreError(f"{self.url(name)} is not a folder of the committed output "
                             f"{self.uri} (folders: {self.manifest['dirs']})")
        head = name + "/"
        wanted = {k[len(head):]: v for k, v in self.manifest["files"].items() if k.startswith(head)}
        return sync_dir(
            wanted, Path(local_dir),
            fetch=lambda rel, tmp: self._backend.get_file(
                f"{self._prefix}/{head}{rel}", tmp, max_bytes=wanted[rel]["size"],
                digest=digests.of_entry(wanted[rel])[0]),
            url=lambda rel: self.url(head + rel), serial_below=self._backend.serial_below)


def load_committed(backend: Backend, run_id: str, stage: str, round: int | None,
                   pointer_data: bytes) -> Committed:
    """Follow pointer bytes to the manifest, check it against the pointer, and wrap it."""
    purl = backend.url(pointer_key(run_id, stage, round))
    try:
        pointer = parse_pointer(pointer_data)
    except InvalidDocument as e:
        raise CorruptOutputError(f"bad pointer {purl}: {e}") from None
    key = f"{attempt_prefix(run_id, stage, round, pointer['attempt_id'])}/{MANIFEST_NAME}"
    data = backend.get(key, max_bytes=MAX_DOCUMENT)
    if data is None:
        raise CorruptOutputError(f"{backend.url(key)} is missing, but {purl} names it")
    if sha256_hex(data) != pointer["manifest_sha256"]:
        raise CorruptOutputError(f"{backend.url(key)} changed after commit: its sha256 does not "
                                 f"match the one recorded in {purl}")
    try:
        manifest = parse_manifest(data, run_id=run_id, stage=stage, round=round,
                                  attempt_id=pointer["attempt_id"])
    except InvalidDocument as e:
        raise CorruptOutputError(f"bad manifest {backend.url(key)}: {e}") from None
    if manifest["spec_hash"] != pointer["spec_hash"]:
        raise CorruptOutputError(f"{backend.url(key)} and {purl} disagree on the spec hash")
    return Committed(backend, run_id, stage, round, manifest)
