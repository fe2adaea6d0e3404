"""Issue 14, item 5: a tampered store cannot make a reader follow symlinks out of the root,
delete files outside the download folder, read a swapped-in huge object, or crash with a codec's
own exception. Each case is a reproducer from the issue; ``store`` runs on file:// and SeaweedFS."""

from __future__ import annotations

import json
import os
import tracemalloc

import pytest

from maskgrpo.store import open_store
from maskgrpo.store.dircache import INDEX_NAME
from maskgrpo.store.errors import CorruptOutputError, StoreError, TooLargeError
from maskgrpo.store.layout import attempt_prefix, pointer_key


def _commit(store, files: dict[str, bytes]):
    att = store.begin("r1", "score", 1, "h1")
    for name, data in files.items():
        att.put_bytes(name, data)
    return att.commit()


def _key(c, name):
    return f"{attempt_prefix('r1', 'score', 1, c.attempt_id)}/{name}"


def test_file_backend_never_follows_a_symlink_out_of_the_root(tmp_path):
    store = open_store(f"file://{tmp_path}/runs")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"top secret")
    c = _commit(store, {"a.bin": b"top secret"})  # same size and hash as the outside file
    path = tmp_path / "runs" / _key(c, "a.bin")
    path.unlink()
    path.symlink_to(outside / "secret.txt")
    with pytest.raises(StoreError, match="symlink") as err:
        c.get_bytes("a.bin")
    assert c.url("a.bin") in str(err.value)
    # a run folder replaced by a symlink: reads and writes are refused, nothing lands outside
    (tmp_path / "runs" / "r2").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StoreError, match="resolves outside the store root"):
        store.read_run_file("r2", "secret.txt")
    with pytest.raises(StoreError, match="resolves outside the store root"):
        store.write_run_file("r2", "pwned.txt", b"x")
    with pytest.raises(StoreError, match="resolves outside the store root"):
        store.begin("r2", "sft", None, "h").put_bytes("x.bin", b"x")
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    with pytest.raises(StoreError, match="invalid key"):
        store._b.get("r1/../../outside/secret.txt")


def test_a_forged_index_key_cannot_delete_outside_the_cache(store, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    att = store.begin("r1", "sft", None, "h1")
    att.put_dir("policy", folder)
    c = att.commit()
    local = tmp_path / "cache" / "local"
    c.get_dir("policy", local)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    index = json.loads((local / INDEX_NAME).read_text())
    index["../../victim.txt"] = {"sha256": "0" * 64, "size": 7, "mtime_ns": 0}
    index[str(victim)] = {"sha256": "0" * 64, "size": 7, "mtime_ns": 0}
    (local / INDEX_NAME).write_text(json.dumps(index))
    c.get_dir("policy", local)
    assert victim.read_text() == "keep me"
    assert (local / "config.json").read_text() == "{}"


def test_a_swapped_in_huge_object_is_refused_unread(store):
    c = _commit(store, {"a.bin": b"x" * 1000})
    huge = b"\0" * (64 << 20)  # 64 MB in place of 1 KB (same name)
    store._b.put(_key(c, "a.bin"), huge)
    del huge
    tracemalloc.start()
    try:
        with pytest.raises(TooLargeError, match="more than 1000 bytes") as err:
            c.get_bytes("a.bin")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert c.url("a.bin") in str(err.value) and isinstance(err.value, CorruptOutputError)
    assert peak < 8 << 20, peak  # never the whole 64 MB in memory


@pytest.mark.parametrize("name,data,getter,what", [
    ("t.safetensors", b"\x10\0\0\0\0\0\0\0{not safetensors}", "get_tensors", "safetensors"),
    ("t.safetensors", b"\xff" * 16, "get_tensors_metadata", "safetensors"),
    ("deep.json", b"[" * 200_000, "get_json", "JSON"),
    ("bad.json", b"\xff\xfe", "get_json", "JSON"),
    ("rows.jsonl", b'{"a": 1}\n' + b"[" * 200_000 + b"\n", "get_jsonl", "JSON lines"),
])
def test_every_codec_error_is_a_store_error_naming_the_uri(store, name, data, getter, what):
    c = _commit(store, {name: data})
    with pytest.raises(StoreError, match=f"is not valid {what}") as err:
        getattr(c, getter)(name)
    assert c.url(name) in str(err.value)


def test_a_deeply_nested_pointer_is_a_corrupt_output(store):
    c = _commit(store, {"a.bin": b"1"})
    store._b.put(pointer_key("r1", "score", 1), b"[" * 200_000)
    with pytest.raises(CorruptOutputError, match="pointer is not JSON"):
        store.open("r1", "score", 1)
    assert c.attempt_id
