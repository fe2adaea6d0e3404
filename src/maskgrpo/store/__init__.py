"""Object storage for stage outputs: ``file://`` and ``s3://`` with atomic, verified commits.

Implements docs/design.md, "The store": keys from one pure function (layout.py); each attempt writes
under its own prefix; ``_MANIFEST.json`` last and create-only; a pointer advanced by
compare-and-swap (attempt.py documents the rule for concurrent commits); readers verify size and
digest per file: xxh3_128 for new commits by default, sha256 by option (``MASKGRPO_STORE_DIGEST``)
and for outputs committed before.  xxh3_128 detects corruption, not a deliberate collision; the
trust boundary (whoever can write the store can rewrite manifests and pointers) is unchanged,
and manifests, pointers and registry pins stay sha256 (digest.py states it in full).
Deviations: file:// uses the os module rather than fsspec (local.py says why), and a file://
read trusts the digest sealed on a file the store wrote while its size, mtime and inode are
unchanged (seal.py; ``MASKGRPO_STORE_VERIFY=full`` hashes every read);
``gc`` also removes attempts superseded by a later spec, and spares attempts younger than
``min_age_s``.

    >>> from maskgrpo.store import open_store
    >>> store = open_store("./runs")                     # or "s3://bucket/prefix"
    >>> with store.begin("run1", "score", 1, spec_hash="abc") as att:
    ...     att.put_json("scores.json", {"mean": 0.5})
    >>> store.open("run1", "score", 1).get_json("scores.json")
    {'mean': 0.5}
"""

from .attempt import Attempt
from .committed import Committed
from .errors import CorruptOutputError, NotCommittedError, StoreError, StoreUnreachableError
from .layout import run_file_key, stage_prefix
from .registry import LeaseHeld, PromotionConflict, Registry, parse_registry_source
from .store import Store, open_store

__all__ = [
    "Attempt", "Committed", "CorruptOutputError", "LeaseHeld", "NotCommittedError", "PromotionConflict",
    "Registry", "parse_registry_source", "Store", "StoreError",
    "StoreUnreachableError", "open_store", "run_file_key", "stage_prefix",
]
