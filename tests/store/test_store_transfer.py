"""Issue 21 item 1: bytes move in one hashing pass. file:// hashes and writes each chunk of a
read-only mapping (a kernel copy beside a hash of the same open file when it cannot map); s3:// sends objects over ``part_size`` as concurrent multipart uploads and
fetches them as concurrent ranged GETs of one version. Digests must equal hashlib's over the
same bytes, reassembly must be exact, and a corrupted part must be caught on read. Part sizes are
shrunk to S3's 5 MiB minimum so the multipart paths run on small objects (SeaweedFS, real)."""

from __future__ import annotations

import errno
import hashlib
import os
import random

import pytest
import xxhash

from maskgrpo.store import backend as backend_mod
from maskgrpo.store.backend import CHUNK, copy_file_hashing, hash_file, map_transfers
from maskgrpo.store.errors import CorruptOutputError, StoreError, TooLargeError
from maskgrpo.store.layout import attempt_prefix
from maskgrpo.store.testing import TEST_BUCKET, s3_client

PART = 5 << 20  # S3's smallest part


def _reference(digest: str, data: bytes) -> str:
    """The digest computed by its own library in one call (not through store/digest.py)."""
    return xxhash.xxh3_128_hexdigest(data) if digest == "xxh3_128" else hashlib.sha256(data).hexdigest()


def _bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture(params=["mapped", "threaded", "inline"])
def copy_mode(request, monkeypatch):
    """Every path of copy_file_hashing: one pass through a mapping (any non-empty file here), or
    a kernel copy beside a hash thread, or one after the other."""
    monkeypatch.setattr(backend_mod, "MAP_MIN", 1 if request.param == "mapped" else 1 << 40)
    monkeypatch.setattr(backend_mod, "_THREAD_MIN", 0 if request.param == "threaded" else 1 << 40)
    return request.param


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 5])
def test_copy_file_hashing_equals_hashlib_and_copies_exactly(tmp_path, size, copy_mode):
    data = _bytes(size, size)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    assert copy_file_hashing(src, dst, digest="sha256") == (size, hashlib.sha256(data).hexdigest())
    assert dst.read_bytes() == data
    assert hash_file(src, "sha256") == (size, hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("write_size", [backend_mod.READ_WRITE, backend_mod.SAVE_WRITE, 4097])
def test_every_write_size_of_the_mapped_copy_copies_exactly(tmp_path, write_size):
    data = _bytes(3 * CHUNK + 5, 7)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    got = copy_file_hashing(src, dst, digest="xxh3_128", write_size=write_size)
    assert got == (len(data), _reference("xxh3_128", data)) and dst.read_bytes() == data


def test_copy_file_hashing_falls_back_when_the_kernel_copy_is_refused(tmp_path, monkeypatch,
                                                                      copy_mode):
    data = _bytes(2 * CHUNK + 7, 1)
    src = tmp_path / "src"
    src.write_bytes(data)

    def refuse(*_args):
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    assert copy_file_hashing(src, tmp_path / "a", digest="sha256")[1] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "a").read_bytes() == data
    monkeypatch.setattr(os, "sendfile", refuse)  # and the read/write loop after that
    assert copy_file_hashing(src, tmp_path / "b", digest="sha256")[1] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "b").read_bytes() == data


def test_copy_file_hashing_refuses_a_file_over_max_bytes_unread(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.write_bytes(b"x" * 1000)
    calls = []
    monkeypatch.setattr(backend_mod, "_kernel_copy", lambda *a: calls.append(a) or 0)
    with pytest.raises(TooLargeError, match="the-uri has more than 999 bytes"):
        copy_file_hashing(src, tmp_path / "dst", max_bytes=999, what="the-uri", digest="sha256")
    assert calls == [] and not (tmp_path / "dst").exists()


def test_copy_file_hashing_raises_when_copy_and_hash_disagree(tmp_path, monkeypatch):
    """A file that changes length between the kernel copy and the hash is refused, not recorded."""
    monkeypatch.setattr(backend_mod, "MAP_MIN", 1 << 40)
    src = tmp_path / "src"
    src.write_bytes(b"y" * 5000)
    real = backend_mod._kernel_copy
    monkeypatch.setattr(backend_mod, "_kernel_copy", lambda s, d, n: real(s, d, 4000))
    with pytest.raises(StoreError, match="changed while it was copied"):
        copy_file_hashing(src, tmp_path / "dst", digest="sha256")


def test_copy_file_hashing_refuses_a_file_that_grows_while_mapped(tmp_path, monkeypatch):
    """The mapped pass copies the length fstat gave; a writer appending meanwhile is caught."""
    src = tmp_path / "src"
    src.write_bytes(_bytes(3 * CHUNK, 2))
    real = backend_mod._copy_mapped

    def grow_midway(fd, fout, size, digest, write_size):
        with open(src, "ab") as f:
            f.write(b"more")
        return real(fd, fout, size, digest, write_size)

    monkeypatch.setattr(backend_mod, "_copy_mapped", grow_midway)
    with pytest.raises(StoreError, match="changed while it was copied"):
        copy_file_hashing(src, tmp_path / "dst", digest="sha256")


def test_copy_file_hashing_falls_back_when_the_file_cannot_be_mapped(tmp_path, monkeypatch):
    data = _bytes(2 * CHUNK + 3, 4)
    src = tmp_path / "src"
    src.write_bytes(data)

    def refuse(*_args, **_kwargs):
        raise OSError(errno.ENODEV, "no mmap here")

    monkeypatch.setattr(backend_mod.mmap, "mmap", refuse)
    assert copy_file_hashing(src, tmp_path / "dst", digest="sha256") == (len(data), hashlib.sha256(data).hexdigest())
    assert (tmp_path / "dst").read_bytes() == data


def test_map_transfers_keeps_order_and_pools_only_two_or_more_large_items():
    """Small items run in the caller's thread; large ones in a pool only when there are two."""
    import threading

    def where(item):
        return item, threading.current_thread() is threading.main_thread()

    items, sizes = ["a", "b", "c", "d"], [10, 5000, 20, 7000]
    assert map_transfers(where, items, sizes, serial_below=1000, workers=2) == [
        ("a", True), ("b", False), ("c", True), ("d", False)]
    assert map_transfers(where, items, [10, 5000, 20, 30], 1000, 2) == [
        (i, True) for i in items]  # one large item: no pool at all
    assert [on_main for _, on_main in map_transfers(where, items, sizes, 0, 8)] == [False] * 4
    assert map_transfers(where, [], [], 0, 8) == []


def _folder(tmp_path, sizes: dict[str, int]):
    folder = tmp_path / "ckpt"
    for i, (name, size) in enumerate(sizes.items()):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(_bytes(size, 100 + i))
    return folder


@pytest.mark.parametrize("digest", ["xxh3_128", "sha256"])
def test_put_dir_digests_equal_hashlib_and_get_dir_returns_the_bytes(store, tmp_path, copy_mode,
                                                                     digest):
    sizes = {"config.json": 17, "model-1.safetensors": 3 * CHUNK + 11, "sub/empty.bin": 0}
    folder = _folder(tmp_path, sizes)
    store.digest = digest  # what open_store(uri, digest=...) sets
    with store.begin("r1", "update", 1, "h") as att:
        att.put_dir("policy", folder)
    c = store.open("r1", "update", 1)
    for name in sizes:
        data = (folder / name).read_bytes()
        assert c.manifest["files"][f"policy/{name}"] == {"size": len(data), digest: _reference(digest, data)}
    out = c.get_dir("policy", tmp_path / "out")
    for name in sizes:
        assert (out / name).read_bytes() == (folder / name).read_bytes()


def _count_calls(backend, monkeypatch) -> list[tuple[str, dict]]:
    calls: list[tuple[str, dict]] = []
    real = backend.fs._call_s3

    async def counting(method, *args, **kwargs):
        calls.append((method, {k: v for k, v in kwargs.items() if k != "Body"}))
        return await real(method, *args, **kwargs)

    monkeypatch.setattr(backend.fs, "_call_s3", counting)
    return calls


def _object_key(store, c, name: str) -> str:
    return (store.uri[len(f"s3://{TEST_BUCKET}/"):] + "/"
            + attempt_prefix(c.run_id, c.stage, c.round, c.attempt_id) + f"/{name}")


@pytest.mark.s3
@pytest.mark.parametrize("size", [2 * PART + 12345, 2 * PART])
def test_s3_multipart_round_trip_reassembles_exactly(s3_store, s3_env, tmp_path, monkeypatch, size):
    s3_store._b.part_size = s3_store._b.range_size = PART
    folder = _folder(tmp_path, {"big.bin": size, "small.json": 100})
    data = (folder / "big.bin").read_bytes()
    calls = _count_calls(s3_store._b, monkeypatch)
    with s3_store.begin("r1", "update", 1, "h") as att:
        att.put_dir("policy", folder)
    c = s3_store.open("r1", "update", 1)
    assert c.manifest["files"]["policy/big.bin"]["xxh3_128"] == _reference("xxh3_128", data)
    parts = -(-size // PART)
    assert [m for m, _ in calls].count("upload_part") == parts
    head = s3_client(s3_env["MASKGRPO_S3_ENDPOINT_URL"], s3_env).head_object(
        Bucket=TEST_BUCKET, Key=_object_key(s3_store, c, "policy/big.bin"))
    assert head["ETag"].strip('"').endswith(f"-{parts}") and head["ContentLength"] == size
    calls.clear()
    out = c.get_dir("policy", tmp_path / "out")
    assert (out / "big.bin").read_bytes() == data
    ranges = sorted(kw["Range"] for m, kw in calls if m == "get_object" and "Range" in kw)
    assert ranges == sorted(f"bytes={s}-{min(size, s + PART) - 1}" for s in range(0, size, PART))
    big = [kw for m, kw in calls if m == "get_object" and kw["Key"].endswith("/big.bin")]
    assert len(big) == parts and all(kw["IfMatch"] == head["ETag"] for kw in big)


@pytest.mark.s3
def test_s3_a_corrupted_part_is_detected_and_leaves_no_file(s3_store, s3_env, tmp_path):
    s3_store._b.part_size = s3_store._b.range_size = PART
    folder = _folder(tmp_path, {"big.bin": 2 * PART + 99})
    with s3_store.begin("r1", "update", 1, "h") as att:
        att.put_dir("policy", folder)
    c = s3_store.open("r1", "update", 1)
    bad = bytearray((folder / "big.bin").read_bytes())
    bad[PART + 7] ^= 0xFF  # one byte in the second part; same size
    s3_client(s3_env["MASKGRPO_S3_ENDPOINT_URL"], s3_env).put_object(
        Bucket=TEST_BUCKET, Key=_object_key(s3_store, c, "policy/big.bin"), Body=bytes(bad))
    with pytest.raises(CorruptOutputError, match="does not match its manifest") as err:
        c.get_dir("policy", tmp_path / "out")
    assert c.url("policy/big.bin") in str(err.value)
    assert not (tmp_path / "out" / "big.bin").exists()
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".tmp")] == []


@pytest.mark.s3
def test_s3_a_failed_part_aborts_the_multipart_upload(s3_store, s3_env, tmp_path, monkeypatch):
    s3_store._b.part_size = s3_store._b.range_size = PART
    folder = _folder(tmp_path, {"big.bin": 3 * PART})
    real = s3_store._b.fs._call_s3

    async def failing(method, *args, **kwargs):
        if method == "upload_part" and kwargs["PartNumber"] == 2:
            raise OSError(errno.EIO, "injected part failure")
        return await real(method, *args, **kwargs)

    monkeypatch.setattr(s3_store._b.fs, "_call_s3", failing)
    att = s3_store.begin("r1", "update", 1, "h")
    with pytest.raises(StoreError, match="injected part failure"):
        att.put_dir("policy", folder)
    client = s3_client(s3_env["MASKGRPO_S3_ENDPOINT_URL"], s3_env)
    prefix = s3_store.uri[len(f"s3://{TEST_BUCKET}/"):]
    pending = client.list_multipart_uploads(Bucket=TEST_BUCKET, Prefix=prefix).get("Uploads", [])
    assert pending == []
    assert s3_store.committed("r1", "update", 1) is None


@pytest.mark.s3
def test_s3_an_object_over_max_bytes_is_refused_before_any_get(s3_store, tmp_path, monkeypatch):
    s3_store._b.part_size = s3_store._b.range_size = PART
    s3_store._b.put("x/big.bin", _bytes(PART + 1, 3))
    calls = _count_calls(s3_store._b, monkeypatch)
    with pytest.raises(TooLargeError, match="has more than 1000 bytes"):
        s3_store._b.get_file("x/big.bin", tmp_path / "f", max_bytes=1000, digest="sha256")
    assert [m for m, _ in calls] == ["head_object"]
    assert s3_store._b.get_file("x/missing.bin", tmp_path / "g", digest="sha256") is None
