"""Issue 21 item 1: a file:// store file carries the digest it was written with (store/seal.py),
and a read trusts it only while the file is provably the one written (size, mtime, inode);
anything else, or ``MASKGRPO_STORE_VERIFY=full``, hashes every byte.  Real ext4/tmpfs xattrs;
the one stand-in is a filesystem without user xattrs, simulated by refusing ``setxattr``."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import shutil

import pytest
import xxhash

from maskgrpo.store import backend as backend_mod
from maskgrpo.store import local as local_mod
from maskgrpo.store import open_store, seal
from maskgrpo.store.errors import CorruptOutputError, StoreError
from maskgrpo.store.layout import attempt_prefix

SIZE = (3 << 20) + 11  # over MAP_MIN: the mapped copy on save


def _commit_one(tmp_path):
    """(store, committed output, the stored file's path, its bytes): one put_dir of one file."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    data = random.Random(0).randbytes(SIZE)
    (folder / "model.safetensors").write_bytes(data)
    store = open_store(f"file://{tmp_path}/runs")
    with store.begin("r1", "update", 1, "h") as att:
        att.put_dir("policy", folder)
    c = store.open("r1", "update", 1)
    stored = (tmp_path / "runs" / attempt_prefix("r1", "update", 1, c.attempt_id)
              / "policy" / "model.safetensors")
    return store, c, stored, data


@pytest.fixture
def committed(tmp_path):
    probe = tmp_path / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.maskgrpo.probe", b"1")
    except OSError as e:
        pytest.skip(f"{tmp_path} has no user xattrs ({e.strerror}): seals are never written "
                    "there and every read hashes (test_without_user_xattrs_... covers that)")
    return _commit_one(tmp_path)


def _hashed_reads(monkeypatch) -> list:
    """Record every read that hashes (copy_file_hashing in local.py)."""
    calls: list = []
    real = local_mod.copy_file_hashing

    def spy(src, dst, *args, **kwargs):
        calls.append(dst)
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(local_mod, "copy_file_hashing", spy)
    return calls


def test_put_dir_seals_each_file_with_its_digest_size_mtime_and_inode(committed):
    _, _, stored, data = committed
    st = os.stat(stored)
    want = f"v1 xxh3_128 {xxhash.xxh3_128_hexdigest(data)} {SIZE} {st.st_mtime_ns} {st.st_ino}"
    assert os.getxattr(stored, seal.XATTR) == want.encode()


def test_an_intact_seal_is_read_without_hashing_and_copies_exactly(committed, tmp_path,
                                                                   monkeypatch):
    _, c, _, data = committed
    hashed = _hashed_reads(monkeypatch)
    out = c.get_dir("policy", tmp_path / "out")
    assert (out / "model.safetensors").read_bytes() == data
    assert hashed == []


def test_a_rewrite_breaks_the_seal_and_is_caught(committed, tmp_path, monkeypatch):
    _, c, stored, data = committed
    with open(stored, "r+b") as f:  # same size, one byte changed, right after the commit
        f.seek(SIZE // 2)
        f.write(bytes([data[SIZE // 2] ^ 1]))
    hashed = _hashed_reads(monkeypatch)
    with pytest.raises(CorruptOutputError, match="does not match its manifest") as err:
        c.get_dir("policy", tmp_path / "out")
    assert c.url("policy/model.safetensors") in str(err.value) and len(hashed) == 1
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_verify_full_hashes_a_file_whose_mtime_was_put_back(committed, tmp_path, monkeypatch):
    """The seal's stated blind spot (bytes changed and the mtime restored on purpose):
    MASKGRPO_STORE_VERIFY=full reads every byte and catches it."""
    _, _, stored, data = committed
    st = os.stat(stored)
    with open(stored, "r+b") as f:
        f.write(bytes([data[0] ^ 1]))
    os.utime(stored, ns=(st.st_atime_ns, st.st_mtime_ns))
    monkeypatch.setenv(seal.ENV_VAR, "full")
    store = open_store(f"file://{tmp_path}/runs")
    with pytest.raises(CorruptOutputError, match="does not match its manifest"):
        store.open("r1", "update", 1).get_dir("policy", tmp_path / "out")


def test_a_forged_seal_still_meets_the_manifest(committed, tmp_path):
    _, c, stored, _ = committed
    st = os.stat(stored)
    forged = f"v1 xxh3_128 {'0' * 32} {st.st_size} {st.st_mtime_ns} {st.st_ino}".encode()
    os.setxattr(stored, seal.XATTR, forged)
    with pytest.raises(CorruptOutputError, match="does not match its manifest"):
        c.get_dir("policy", tmp_path / "out")


def test_a_copied_store_is_hashed_new_inodes_void_the_seals(committed, tmp_path, monkeypatch):
    _, c, stored, data = committed
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "runs", copy)  # copy2: bytes, mtime and xattrs, new inodes
    moved = copy / stored.relative_to(tmp_path / "runs")
    assert os.getxattr(moved, seal.XATTR) == os.getxattr(stored, seal.XATTR)
    hashed = _hashed_reads(monkeypatch)
    out = open_store(f"file://{copy}").open("r1", "update", 1).get_dir("policy", tmp_path / "o")
    assert (out / "model.safetensors").read_bytes() == data and len(hashed) == 1


def test_another_algorithm_is_hashed(committed, tmp_path):
    store, c, _, data = committed
    key = f"{attempt_prefix('r1', 'update', 1, c.attempt_id)}/policy/model.safetensors"
    got = store._b.get_file(key, tmp_path / "f", digest="sha256")
    assert got == (SIZE, hashlib.sha256(data).hexdigest())


def test_without_user_xattrs_nothing_is_sealed_and_reads_hash(tmp_path, monkeypatch):
    """Stand-in: no filesystem without user xattrs is mounted here, so setxattr is refused."""
    def refuse(*_args, **_kwargs):
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", refuse)
    _, c, stored, data = _commit_one(tmp_path)
    monkeypatch.undo()
    assert seal.XATTR not in os.listxattr(stored)
    hashed = _hashed_reads(monkeypatch)
    out = c.get_dir("policy", tmp_path / "out")
    assert (out / "model.safetensors").read_bytes() == data and len(hashed) == 1


def test_a_sealed_file_that_grows_while_copied_is_refused(committed, tmp_path, monkeypatch):
    _, c, stored, _ = committed
    real = backend_mod._kernel_copy

    def growing(src_fd, dst_fd, count):
        with open(stored, "ab") as f:
            f.write(b"more")
        return real(src_fd, dst_fd, count)

    monkeypatch.setattr(backend_mod, "_kernel_copy", growing)
    with pytest.raises(StoreError, match="changed while it was copied"):
        c.get_dir("policy", tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_bad_verify_mode_is_refused_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(seal.ENV_VAR, "sometimes")
    with pytest.raises(StoreError, match="MASKGRPO_STORE_VERIFY='sometimes': use one of seal, full"):
        open_store(f"file://{tmp_path}/runs")
