"""A model registry inside the store (no extra server): immutable versions, movable aliases.

Layout under the store root (``_`` keeps it out of ``list_runs`` and the run ``gc``)::

    _registry/<name>/versions/<NNNNNN>.json    one version, written once, create-only
    _registry/<name>/_ALIASES.json             {"champion", "previous", "history"}: CAS-advanced
    _registry/<name>/_LEASE.json               the retraining lease of one tick at a time (CAS)

1. A version records where its checkpoint is (a committed stage output, pinned by its attempt id
   and manifest sha256, so a later commit at the same stage cannot swap the weights), its parent
   version, the data snapshot it trained on, the pipeline document's hash, the code version and
   its metrics.  Numbers are allocated by create-only writes: two registrars never share one.
2. Aliases move only by compare-and-swap against the champion the caller was gated against
   (``expected``): of two ticks that finish together and were both gated against champion v3,
   exactly one moves the alias; the other gets ``PromotionConflict`` and changes nothing.  The
   alias document is one object, so a crash leaves the old or the new champion, never half.
3. A version no alias document ever named (a crash between registering and the alias move) is an
   orphan: ``orphans()`` lists it, ``gc()`` removes it once older than ``min_age_s``.
4. The lease is advisory for schedulers that could overlap (a local schedule, a manual run next to
   a recurring one): ``acquire_lease`` fails with ``LeaseHeld`` naming the holder until it is
   released or expires.

Deviation: versions reference a run's checkpoint instead of copying it (an 8B checkpoint is tens of
GB); the run ``gc`` never removes a committed attempt, but deleting a run folder by hand breaks the
versions that point into it (``models export`` then fails naming the missing file).
"""

from __future__ import annotations

import json
import random
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from .backend import Backend
from .committed import Committed
from .errors import CorruptOutputError, StoreError
from .layout import MANIFEST_NAME, attempt_prefix, check_attempt_id
from .manifest import dumps, parse_manifest, sha256_hex, utc_now

ROOT = "_registry"
ALIASES = "_ALIASES.json"
LEASE = "_LEASE.json"
VERSION_FORMAT = "maskgrpo.model-version/1"
ALIASES_FORMAT = "maskgrpo.aliases/1"
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_REF_RE = re.compile(r"^registry:([a-z0-9][a-z0-9-]*)@(champion|previous|v?\d+)$")
_TRIES = 50


class PromotionConflict(StoreError):
    """The champion moved since the caller was gated against it: nothing was changed."""


class LeaseHeld(StoreError):
    """Another tick holds the model's retraining lease."""


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"invalid model name {name!r}: use lowercase letters, digits and '-' (DNS label)")
    return name


def parse_registry_source(source: str) -> tuple[str, str] | None:
    """``registry:<name>@<alias or version>`` -> (name, alias/version); None for other sources.

    >>> parse_registry_source("registry:toy-sort@champion"), parse_registry_source("builtin:tiny")
    (('toy-sort', 'champion'), None)
    """
    if not isinstance(source, str) or not source.startswith("registry:"):
        return None
    m = _REF_RE.match(source)
    if not m:
        raise ValueError(f"model.source {source!r}: expected registry:<name>@champion, @previous or @<version>")
    return m.group(1), m.group(2)


def _backoff(i: int) -> None:
    time.sleep(random.uniform(0, 0.01 * (i + 1)))


class Registry:
    """One model name's versions and aliases in a store."""

    def __init__(self, backend: Backend, name: str):
        self._b = backend
        self.name = check_model_name(name)
        self._prefix = f"{ROOT}/{name}"
        self.uri = backend.url(self._prefix)

    def __repr__(self) -> str:
        return f"Registry({self.uri!r})"

    def _version_key(self, version: int) -> str:
        return f"{self._prefix}/versions/{version:06d}.json"

    # -- versions ------------------------------------------------------------------------------
    def version_numbers(self) -> list[int]:
        out = []
        for key in self._b.find(f"{self._prefix}/versions"):
            stem = key.rsplit("/", 1)[-1].removesuffix(".json")
            if stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def get(self, version: int) -> dict:
        key = self._version_key(version)
        data = self._b.get(key)
        if data is None:
            raise StoreError(f"no version {version} of model {self.name!r}: {self._b.url(key)} does not exist "
                             f"(versions: {self.version_numbers() or 'none'})")
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise CorruptOutputError(f"{self._b.url(key)} is not JSON: {e}") from None
        if doc.get("format") != VERSION_FORMAT or doc.get("version") != version:
            raise CorruptOutputError(f"{self._b.url(key)} is not version {version} of {self.name!r}")
        return doc

    def versions(self) -> list[dict]:
        return [self.get(v) for v in self.version_numbers()]

    def register(self, record: dict) -> int:
        """Write ``record`` (checkpoint, parent, data_snapshot, pipeline_hash, code_version, metrics,
        run_id, ...) as the next version, create-only; returns its number."""
        try:
            json.dumps(record, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"version record of {self.name!r} is not JSON-serialisable: {e}") from None
        for key in ("checkpoint", "run_id"):
            if key not in record:
                raise ValueError(f"version record of {self.name!r} needs {key!r}")
        version = (self.version_numbers() or [0])[-1] + 1
        for _ in range(_TRIES):
            doc = {**record, "format": VERSION_FORMAT, "name": self.name, "version": version, "created": utc_now()}
            if self._b.put_create(self._version_key(version), dumps(doc)):
                return version
            version += 1  # someone took it: try the next number
        raise StoreError(f"could not allocate a version of {self.name!r} after {_TRIES} tries")

    def find_by_run(self, run_id: str) -> dict | None:
        """The version registered by run ``run_id`` (a promote stage that crashed and reran)."""
        return next((v for v in self.versions() if v.get("run_id") == run_id), None)

    def lineage(self, version: int) -> list[dict]:
        """``version`` and its ancestors, newest first (parents must be older: no cycles)."""
        chain, seen = [], set()
        current: int | None = version
        while current is not None and current not in seen:
            seen.add(current)
            doc = self.get(current)
            chain.append(doc)
            current = doc.get("parent")
        return chain

    def checkpoint(self, version: int) -> Committed:
        """The committed output holding the version's checkpoint, pinned by attempt id and manifest sha256."""
        ref = self.get(version)["checkpoint"]
        run_id, stage, round_ = ref["run_id"], ref["stage"], ref["round"]
        key = f"{attempt_prefix(run_id, stage, round_, check_attempt_id(ref['attempt_id']))}/{MANIFEST_NAME}"
        data = self._b.get(key)
        if data is None:
            raise CorruptOutputError(f"version {version} of {self.name!r}: its checkpoint {self._b.url(key)} is missing")
        if sha256_hex(data) != ref["manifest_sha256"]:
            raise CorruptOutputError(f"version {version} of {self.name!r}: {self._b.url(key)} changed after registration")
        manifest = parse_manifest(data, run_id=run_id, stage=stage, round=round_, attempt_id=ref["attempt_id"])
        return Committed(self._b, run_id, stage, round_, manifest)

    # -- aliases -------------------------------------------------------------------------------
    def _read_aliases(self) -> tuple[dict, str | None]:
        current = self._b.get_versioned(f"{self._prefix}/{ALIASES}")
        if current is None:
            return {"format": ALIASES_FORMAT, "champion": None, "previous": None, "history": []}, None
        data, token = current
        try:
            return json.loads(data), token
        except ValueError as e:
            raise CorruptOutputError(f"{self._b.url(self._prefix + '/' + ALIASES)} is not JSON: {e}") from None

    def aliases(self) -> dict:
        return self._read_aliases()[0]

    def resolve(self, ref: str | int) -> int | None:
        """'champion' / 'previous' -> the version the alias names (None if unset); 'v3' / '3' / 3 -> 3."""
        if isinstance(ref, int):
            return self.get(ref)["version"]
        if ref in ("champion", "previous"):
            return self.aliases()[ref]
        digits = ref[1:] if ref.startswith("v") else ref
        if not digits.isdigit():
            raise ValueError(f"model {self.name!r}: {ref!r} is neither an alias (champion, previous) nor a version")
        return self.get(int(digits))["version"]

    def _move(self, event: str, expected: int | None, target: Any, **extra: Any) -> dict:
        """CAS the alias document: ``target(doc) -> (champion, previous)`` applied only while the
        champion is still ``expected``."""
        key = f"{self._prefix}/{ALIASES}"
        for i in range(_TRIES):
            doc, token = self._read_aliases()
            if doc.get("champion") != expected:
                raise PromotionConflict(
                    f"model {self.name!r}: the champion is v{doc.get('champion')}, not v{expected} as expected: "
                    f"another tick or a person moved it; {event} refused, nothing changed")
            champion, previous = target(doc)
            new = {"format": ALIASES_FORMAT, "champion": champion, "previous": previous,
                   "history": doc.get("history", []) + [
                       {"event": event, "champion": champion, "previous": previous, "at": utc_now(), **extra}]}
            if self._b.put_cas(key, dumps(new), token):
                return new
            _backoff(i)
        raise StoreError(f"could not move the aliases of {self.name!r} after {_TRIES} tries")

    def promote(self, version: int, expected: int | None, reason: str = "") -> dict:
        """Make ``version`` the champion (the old one becomes ``previous``) if the champion is
        still ``expected`` (None: no champion yet); else PromotionConflict."""
        self.get(version)
        return self._move("promote", expected, lambda d: (version, d.get("champion")), version=version, reason=reason)

    def rollback(self, expected: int | None = None) -> dict:
        """champion <- previous; previous <- the champion before that one (from the history)."""
        doc = self.aliases()
        expected = doc.get("champion") if expected is None else expected
        if doc.get("previous") is None:
            raise StoreError(f"model {self.name!r} has no previous champion to roll back to")

        def target(d: dict) -> tuple[int, int | None]:
            back = d["previous"]
            # the champion that preceded `back`, from the last history entry that made `back` champion
            before = next((h["previous"] for h in reversed(d.get("history", []))
                           if h["champion"] == back and h["event"] == "promote"), None)
            return back, before
        return self._move("rollback", expected, target)

    # -- orphans -------------------------------------------------------------------------------
    def orphans(self) -> list[int]:
        """Versions no alias document ever named (registered, then never promoted)."""
        named = {n for h in self.aliases().get("history", []) for n in (h.get("champion"), h.get("previous"))}
        return [v for v in self.version_numbers() if v not in named]

    def gc(self, dry_run: bool = False, min_age_s: float = 3600.0) -> list[str]:
        """Remove orphan versions older than ``min_age_s`` (a promotion may still be in flight)."""
        now = datetime.now(timezone.utc)
        removed = []
        for v in self.orphans():
            created = datetime.fromisoformat(self.get(v)["created"])
            if now - created < timedelta(seconds=min_age_s):
                continue
            if not dry_run:
                self._b.delete_prefix(self._version_key(v))
            removed.append(self._b.url(self._version_key(v)))
        return removed

    # -- lease ---------------------------------------------------------------------------------
    def acquire_lease(self, holder: str, ttl_s: float) -> None:
        """Take the retraining lease for ``holder`` (a run id) for ``ttl_s`` seconds; re-taking
        one's own lease renews it; a live lease of another holder raises LeaseHeld."""
        key = f"{self._prefix}/{LEASE}"
        for i in range(_TRIES):
            current = self._b.get_versioned(key)
            token = None
            if current is not None:
                data, token = current
                lease = json.loads(data)
                expires = datetime.fromisoformat(lease["expires"])
                if lease.get("holder") not in (holder, None) and expires > datetime.now(timezone.utc):
                    raise LeaseHeld(f"model {self.name!r}: tick {lease['holder']!r} still holds the retraining "
                                    f"lease (until {lease['expires']}); this tick is skipped")
            expires = (datetime.now(timezone.utc) + timedelta(seconds=ttl_s)).isoformat(timespec="milliseconds")
            if self._b.put_cas(key, dumps({"holder": holder, "expires": expires}), token):
                return
            _backoff(i)
        raise StoreError(f"could not take the lease of {self.name!r} after {_TRIES} tries")

    def release_lease(self, holder: str) -> bool:
        """Release ``holder``'s lease (True), or leave another holder's alone (False)."""
        key = f"{self._prefix}/{LEASE}"
        current = self._b.get_versioned(key)
        if current is None or json.loads(current[0]).get("holder") != holder:
            return False
        return self._b.put_cas(key, dumps({"holder": None, "expires": utc_now()}), current[1])


def list_models(backend: Backend) -> list[str]:
    names = set()
    for key in backend.find(ROOT):
        parts = key.split("/")
        if len(parts) >= 3 and _NAME_RE.match(parts[1]):
            names.add(parts[1])
    return sorted(names)


def pin(backend: Backend, committed: Committed) -> dict:
    """The pinned reference a version stores for a committed checkpoint output."""
    key = f"{attempt_prefix(committed.run_id, committed.stage, committed.round, committed.attempt_id)}/{MANIFEST_NAME}"
    data = backend.get(key)
    if data is None:
        raise CorruptOutputError(f"{backend.url(key)} is missing")
    return {"run_id": committed.run_id, "stage": committed.stage, "round": committed.round,
            "attempt_id": committed.attempt_id, "manifest_sha256": sha256_hex(data), "uri": committed.uri}
