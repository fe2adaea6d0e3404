"""Per-file digests (store/digest.py): new commits name their algorithm in each manifest entry;
outputs committed before (entries ``{"size", "sha256"}``, download indexes keyed ``sha256``) stay
readable, resumable and verified with sha256; a flipped byte is caught under either algorithm."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import xxhash

from maskgrpo.store import CorruptOutputError, StoreError, open_store
from maskgrpo.store import digest as digests
from maskgrpo.store.dircache import INDEX_NAME
from maskgrpo.store.layout import MANIFEST_NAME, attempt_prefix, pointer_key
from maskgrpo.store.manifest import InvalidDocument, dumps, parse_manifest

AID = "20260101T000000Z-0123456789ab"
FILES = {"scores.json": b'{"mean": 0.5}', "policy/config.json": b'{"hidden_size": 8}',
         "policy/model.safetensors": bytes(range(256)) * 4096}  # 1 MiB


def _old_output(store, run="r1", stage="update", rnd=1, spec_hash="h1") -> None:
    """A stage output as the store wrote it before per-file digests were named: every entry
    ``{"size", "sha256"}``, written with the backend's own primitives (no Attempt)."""
    prefix = attempt_prefix(run, stage, rnd, AID)
    for name, data in FILES.items():
        store._b.put(f"{prefix}/{name}", data)
    manifest = {
        "format": "maskgrpo.manifest/1", "run_id": run, "stage": stage, "round": rnd,
        "attempt_id": AID, "spec_hash": spec_hash, "package_version": "0.1.0", "meta": {},
        "created": "2026-01-01T00:00:00.000+00:00", "committed": "2026-01-01T00:00:01.000+00:00",
        "files": {n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                  for n, d in sorted(FILES.items())},
        "dirs": ["policy"],
    }
    mbytes = dumps(manifest)
    assert store._b.put_create(f"{prefix}/{MANIFEST_NAME}", mbytes)
    pointer = {"format": "maskgrpo.pointer/1", "attempt_id": AID, "spec_hash": spec_hash,
               "manifest_sha256": hashlib.sha256(mbytes).hexdigest(),
               "committed_at": manifest["committed"], "n_files": len(FILES),
               "total_bytes": sum(map(len, FILES.values()))}
    assert store._b.put_cas(pointer_key(run, stage, rnd), dumps(pointer), None)


def _flip(store, c, name: str) -> None:
    key = f"{attempt_prefix(c.run_id, c.stage, c.round, c.attempt_id)}/{name}"
    data = bytearray(store._b.get(key))
    data[len(data) // 2] ^= 0x01                                # same size, one bit off
    store._b.put(key, bytes(data))


def test_an_output_committed_in_the_old_format_resumes_loads_and_verifies(store, tmp_path):
    _old_output(store)
    assert store.digest == "xxh3_128"                           # new commits would use xxh3
    assert store.is_done("r1", "update", 1, "h1")               # resume skips the stage
    c = store.open("r1", "update", 1)
    assert c.get_json("scores.json") == {"mean": 0.5}
    out = c.get_dir("policy", tmp_path / "out")
    assert (out / "model.safetensors").read_bytes() == FILES["policy/model.safetensors"]
    index = json.loads((out / INDEX_NAME).read_text())
    assert index["config.json"]["sha256"] == hashlib.sha256(FILES["policy/config.json"]).hexdigest()
    _flip(store, c, "scores.json")
    with pytest.raises(CorruptOutputError, match="fails its sha256 check"):
        c.get_json("scores.json")
    _flip(store, c, "policy/model.safetensors")
    with pytest.raises(CorruptOutputError, match="sha256"):
        c.get_dir("policy", tmp_path / "fresh")


@pytest.mark.parametrize("digest", ["xxh3_128", "sha256"])
def test_a_flipped_byte_is_caught_under_each_algorithm(store, tmp_path, digest):
    store.digest = digest
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(os.urandom(3 << 20))
    with store.begin("r1", "update", 1, "h") as att:
        att.put_json("metrics.json", {"loss": 1.0})
        att.put_dir("policy", src)
    c = store.open("r1", "update", 1)
    assert set(c.manifest["files"]["policy/model.safetensors"]) == {"size", digest}
    _flip(store, c, "metrics.json")
    with pytest.raises(CorruptOutputError, match=f"fails its {digest} check") as e:
        c.get_json("metrics.json")
    assert c.url("metrics.json") in str(e.value)
    _flip(store, c, "policy/model.safetensors")
    with pytest.raises(CorruptOutputError, match=digest):
        c.get_dir("policy", tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_an_old_index_entry_never_vouches_for_a_new_algorithm_entry(file_store, tmp_path):
    """The same bytes, first fetched from an old sha256 output, then wanted by an xxh3_128
    output: the index entry (keyed sha256) does not match, so the file is fetched and checked."""
    _old_output(file_store)
    local = file_store.open("r1", "update", 1).get_dir("policy", tmp_path / "local")
    with file_store.begin("r1", "update", 2, "h2") as att:
        att.put_dir("policy", local)
    c = file_store.open("r1", "update", 2)
    fetched = []
    real = c._backend.get_file
    c._backend.get_file = lambda key, tmp, **kw: fetched.append((key, kw["digest"])) or real(key, tmp, **kw)
    c.get_dir("policy", local)
    assert sorted(k.rsplit("/", 1)[1] for k, _ in fetched) == ["config.json", "model.safetensors"]
    assert {d for _, d in fetched} == {"xxh3_128"}
    index = json.loads((local / INDEX_NAME).read_text())
    assert set(index["model.safetensors"]) == {"xxh3_128", "size", "mtime_ns"}
    fetched.clear()
    c.get_dir("policy", local)                                  # now fresh under xxh3_128
    assert fetched == []


def test_store_option_and_environment_choose_the_digest(tmp_path, monkeypatch):
    monkeypatch.delenv(digests.ENV_VAR, raising=False)
    assert open_store(str(tmp_path)).digest == "xxh3_128"
    monkeypatch.setenv(digests.ENV_VAR, "sha256")
    assert open_store(str(tmp_path)).digest == "sha256"
    assert open_store(str(tmp_path), digest="xxh3_128").digest == "xxh3_128"
    monkeypatch.setenv(digests.ENV_VAR, "md5")
    with pytest.raises(StoreError, match="valid store digests: xxh3_128, sha256"):
        open_store(str(tmp_path))


def test_digests_equal_their_libraries():
    data = b"maskgrpo" * 1000
    assert digests.hexdigest("sha256", data) == hashlib.sha256(data).hexdigest()
    assert digests.hexdigest("xxh3_128", data) == xxhash.xxh3_128_hexdigest(data)
    assert len(digests.hexdigest("xxh3_128", b"")) == 32


def _manifest_with(entry: dict) -> bytes:
    return dumps({"format": "maskgrpo.manifest/1", "run_id": "r", "stage": "s", "round": 1,
                  "attempt_id": AID, "spec_hash": "h", "package_version": "0", "meta": {},
                  "created": "t", "committed": "t", "files": {"a.bin": entry}, "dirs": []})


@pytest.mark.parametrize("entry, error", [
    ({"size": 1, "sha256": "0" * 64}, None),
    ({"size": 1, "xxh3_128": "0" * 32}, None),
    ({"size": 1}, "no digest field"),
    ({"size": 1, "md5": "0" * 32}, "no digest field"),
    ({"size": 1, "sha256": "0" * 64, "xxh3_128": "0" * 32}, "more than one digest field"),
    ({"size": 1, "xxh3_128": "0" * 64}, "not a xxh3_128 hex digest"),  # a sha256's length
    ({"size": 1, "sha256": "G" * 64}, "not a sha256 hex digest"),
    ({"size": -1, "sha256": "0" * 64}, "negative size"),
])
def test_manifest_parser_accepts_either_algorithm_and_nothing_else(entry, error):
    parse = lambda: parse_manifest(_manifest_with(entry), run_id="r", stage="s", round=1,  # noqa: E731
                                   attempt_id=AID)
    if error is None:
        assert parse()["files"]["a.bin"] == entry
    else:
        with pytest.raises(InvalidDocument, match=error):
            parse()
