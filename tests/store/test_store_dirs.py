"""put_dir / get_dir: checkpoint folders, verified, and not fetched again when unchanged."""

from __future__ import annotations

import os

import pytest

from maskgrpo.store import CorruptOutputError, StoreError
from maskgrpo.store.dircache import INDEX_NAME
from maskgrpo.store.layout import attempt_prefix


def _checkpoint(root, shard_mb=4):
    """A save_pretrained-like folder: config, two shards, a nested tokenizer, hidden junk."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"hidden_size": 8}')
    for i in (1, 2):
        (root / f"model-0000{i}-of-00002.safetensors").write_bytes(os.urandom(shard_mb << 20))
    (root / "tokenizer").mkdir(exist_ok=True)
    (root / "tokenizer" / "vocab.json").write_text('{"a": 0}')
    (root / ".cache").mkdir(exist_ok=True)
    (root / ".cache" / "junk").write_text("skipped")
    return root


def _counting_fetches(store, monkeypatch):
    calls = []
    real = store._b.get_file

    def counted(key, path, **kw):
        calls.append(key.rsplit("/", 1)[-1])
        return real(key, path, **kw)
    monkeypatch.setattr(store._b, "get_file", counted)
    return calls


def test_put_dir_get_dir_round_trip_and_cache(store, tmp_path, monkeypatch):
    src = _checkpoint(tmp_path / "ckpt")
    with store.begin("r1", "update", 1, "h") as att:
        att.put_dir("policy", src)
        att.put_json("metrics.json", {"loss": 1.0})
    c = store.open("r1", "update", 1)
    assert c.manifest["dirs"] == ["policy"]
    assert "policy/tokenizer/vocab.json" in c.files() and "policy/.cache/junk" not in c.files()

    calls = _counting_fetches(store, monkeypatch)
    dst = c.get_dir("policy", tmp_path / "local")
    assert sorted(calls) == ["config.json", "model-00001-of-00002.safetensors",
                             "model-00002-of-00002.safetensors", "vocab.json"]
    for rel in ("config.json", "model-00002-of-00002.safetensors", "tokenizer/vocab.json"):
        assert (dst / rel).read_bytes() == (src / rel).read_bytes()

    calls.clear()
    c.get_dir("policy", dst)                                   # unchanged: nothing fetched
    assert calls == []
    (dst / "config.json").write_text('{"hidden_size": 9}')     # local edit: only it is fetched
    c.get_dir("policy", dst)
    assert calls == ["config.json"]
    assert (dst / "config.json").read_text() == '{"hidden_size": 8}'
    assert (dst / INDEX_NAME).exists()


def test_get_dir_removes_stale_files_it_wrote_and_keeps_others(store, tmp_path):
    src = _checkpoint(tmp_path / "a", shard_mb=1)
    with store.begin("r1", "update", 1, "h") as att:
        att.put_dir("policy", src)
    dst = store.open("r1", "update", 1).get_dir("policy", tmp_path / "local")
    (dst / "mine.txt").write_text("user file")
    (src / "model-00002-of-00002.safetensors").unlink()
    with store.begin("r1", "update", 2, "h") as att:
        att.put_dir("policy", src)
    store.open("r1", "update", 2).get_dir("policy", dst)
    assert not (dst / "model-00002-of-00002.safetensors").exists()
    assert (dst / "mine.txt").read_text() == "user file"


def test_get_dir_refuses_a_corrupt_file_and_leaves_no_partial_copy(store, tmp_path):
    src = _checkpoint(tmp_path / "a", shard_mb=1)
    with store.begin("r1", "update", 1, "h") as att:
        att.put_dir("policy", src)
    c = store.open("r1", "update", 1)
    key = f"{attempt_prefix('r1', 'update', 1, c.attempt_id)}/policy/config.json"
    store._b.put(key, b'{"hidden_size": 7}')                   # same size, other bytes
    with pytest.raises(CorruptOutputError, match=store.digest) as e:
        c.get_dir("policy", tmp_path / "local")
    assert c.url("policy/config.json") in str(e.value)
    assert not (tmp_path / "local" / "config.json").exists()
    assert not [p for p in (tmp_path / "local").iterdir() if p.name.startswith(".tmp-")]


def test_put_dir_errors(store, tmp_path):
    att = store.begin("r1", "update", 1, "h")
    with pytest.raises(StoreError, match="not a folder"):
        att.put_dir("policy", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    att.put_dir("empty", tmp_path / "empty")                   # an empty folder is recorded
    att.put_bytes("x.json", b"{}")
    with pytest.raises(StoreError, match="immutable"):
        att.put_bytes("empty/late.bin", b"1")                  # cannot add into a put_dir folder
    c = att.commit()
    assert c.get_dir("empty", tmp_path / "out").is_dir()
    with pytest.raises(StoreError, match="not a folder of"):
        c.get_dir("x.json", tmp_path / "out2")


def test_file_put_dir_of_10mb_is_near_free(file_store, tmp_path):
    src = _checkpoint(tmp_path / "ckpt", shard_mb=5)           # ~10 MB
    with file_store.begin("r1", "update", 1, "h") as att:
        att.put_dir("policy", src)
    c = file_store.open("r1", "update", 1)
    fetched: list[str] = []
    get_file = c._backend.get_file

    def counting(key, tmp, **kwargs):
        fetched.append(key)
        return get_file(key, tmp, **kwargs)

    c._backend.get_file = counting
    c.get_dir("policy", tmp_path / "local")
    first = list(fetched)
    c.get_dir("policy", tmp_path / "local")
    # each file is read once; the second get_dir finds them all fresh and reads nothing
    assert len(first) == len(set(first)) == sum(k.startswith("policy/") for k in c.manifest["files"]), first
    assert fetched == first
