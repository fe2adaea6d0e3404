"""Data snapshots (store/snapshot.py): explicit, stable (file, size, sha256) lists."""

import json
import os
import time

import pytest

from maskgrpo.store import StoreError, open_store
from maskgrpo.store.snapshot import fetch_verified, resolve_snapshot, snapshot_digest


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_glob_resolves_to_sorted_hashed_files_and_is_stable(tmp_path):
    write(tmp_path / "d" / "b.jsonl", [{"x": 2}])
    write(tmp_path / "d" / "a.jsonl", [{"x": 1}])
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    first = resolve_snapshot(f"{tmp_path}/d/*")
    assert [os.path.basename(e["uri"]) for e in first] == ["a.jsonl", "b.jsonl"]
    assert first[0]["size"] == len('{"x": 1}\n') and len(first[0]["sha256"]) == 64
    os.utime(tmp_path / "d" / "a.jsonl", (time.time() + 100, time.time() + 100))  # mtimes do not matter
    assert resolve_snapshot(f"{tmp_path}/d/*.jsonl") == first
    assert snapshot_digest(first) == snapshot_digest(list(reversed(first)))
    write(tmp_path / "d" / "c.jsonl", [{"x": 3}])  # a new drop adds an entry, the old ones stay equal
    grown = resolve_snapshot(f"{tmp_path}/d/*.jsonl")
    assert grown[:2] == first and len(grown) == 3 and snapshot_digest(grown) != snapshot_digest(first)


def test_a_changed_file_is_refused_after_the_snapshot(tmp_path):
    write(tmp_path / "a.jsonl", [{"x": 1}])
    [entry] = resolve_snapshot(f"{tmp_path}/*.jsonl")
    assert fetch_verified(entry, tmp_path / "copy").exists()
    write(tmp_path / "a.jsonl", [{"x": 9}])
    with pytest.raises(StoreError, match="changed since the snapshot"):
        fetch_verified(entry, tmp_path / "copy")


def test_no_match_names_the_pattern(tmp_path):
    with pytest.raises(ValueError, match="matches no .jsonl or .parquet"):
        resolve_snapshot(f"{tmp_path}/nothing-*.jsonl")


def test_a_store_prefix_and_a_store_glob(store, tmp_path):
    backend = store._b
    backend.put("datasets/toy/2.jsonl", b'{"x": 2}\n')
    backend.put("datasets/toy/1.jsonl", b'{"x": 1}\n')
    backend.put("datasets/toy/readme.md", b"no")
    prefix = store.url("datasets/toy")
    snap = resolve_snapshot(prefix + "/")
    assert [e["uri"] for e in snap] == [f"{prefix}/1.jsonl", f"{prefix}/2.jsonl"]
    assert resolve_snapshot(f"{prefix}/2.*") == snap[1:]
    assert resolve_snapshot(prefix) == snap
    assert fetch_verified(snap[0], tmp_path / "one.jsonl").read_bytes() == b'{"x": 1}\n'
    backend.put("datasets/toy/1.jsonl", b'{"x": 100}\n')
    with pytest.raises(StoreError, match="changed since the snapshot"):
        fetch_verified(snap[0], tmp_path / "one.jsonl")
