"""The commit protocol, run against file:// and a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from maskgrpo.store import (
    CorruptOutputError, NotCommittedError, StoreError, open_store,
)
from maskgrpo.store.layout import attempt_prefix, pointer_key


def _commit(store, run="r1", stage="score", rnd=1, spec_hash="h1", payload=None):
    att = store.begin(run, stage, rnd, spec_hash, meta={"who": "test"})
    att.put_json("scores.json", payload if payload is not None else {"mean": 0.5})
    return att, att.commit()


def test_round_trip_of_every_typed_helper(store):
    t = {"ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),  # (B=2, L=3)
         "logp": torch.tensor([[-0.5, -1.0, -2.0]])}
    with store.begin("r1", "rollout", 1, "h1", meta={"n": 2}) as att:
        att.put_bytes("raw.bin", b"\x00\x01\xff")
        att.put_json("metrics.json", {"loss": 1.25, "tags": ["a"]})
        att.put_jsonl("samples.jsonl", [{"i": 0, "text": "héllo"}, {"i": 1, "text": "x"}])
        att.put_tensors("rollout.safetensors", t, metadata={"policy_version": "3"})
    c = store.open("r1", "rollout", 1)
    assert att.committed.attempt_id == c.attempt_id and att.won is True
    assert c.files() == ["metrics.json", "raw.bin", "rollout.safetensors", "samples.jsonl"]
    assert c.get_bytes("raw.bin") == b"\x00\x01\xff"
    assert c.get_json("metrics.json") == {"loss": 1.25, "tags": ["a"]}
    assert c.get_jsonl("samples.jsonl")[0]["text"] == "héllo"
    back = c.get_tensors("rollout.safetensors")
    assert torch.equal(back["ids"], t["ids"]) and torch.equal(back["logp"], t["logp"])
    assert c.get_tensors_metadata("rollout.safetensors") == {"policy_version": "3"}
    assert c.spec_hash == "h1" and c.meta == {"n": 2}
    assert c.manifest["files"]["raw.bin"]["size"] == 3
    assert c.uri == store.url(attempt_prefix("r1", "rollout", 1, c.attempt_id))


def test_views_of_one_buffer_are_stored(store):
    buf = torch.arange(10.0)
    with store.begin("r1", "rollout", 2, "h") as att:
        att.put_tensors("t.safetensors", {"a": buf[:5], "b": buf[5:]})
    back = store.open("r1", "rollout", 2).get_tensors("t.safetensors")
    assert back["b"].tolist() == [5.0, 6.0, 7.0, 8.0, 9.0]


def test_readers_see_only_committed_attempts(store):
    att = store.begin("r1", "score", 1, "h1")
    att.put_json("scores.json", {"mean": 0.1})
    assert store.committed("r1", "score", 1) is None          # written but not committed
    assert not store.is_done("r1", "score", 1, "h1")
    att.commit()
    assert store.is_done("r1", "score", 1, "h1")
    assert not store.is_done("r1", "score", 1, "other-hash")
    # a second, uncommitted attempt with a new spec is invisible to readers
    att2 = store.begin("r1", "score", 1, "h2")
    att2.put_json("scores.json", {"mean": 0.9})
    assert store.open("r1", "score", 1).get_json("scores.json") == {"mean": 0.1}


def test_missing_pointer_is_not_committed_and_names_the_uri(store):
    with pytest.raises(NotCommittedError) as e:
        store.open("r9", "update", 4)
    assert store.url("r9/update/4/_POINTER.json") in str(e.value)


def test_exception_in_context_commits_nothing_and_gc_removes_the_orphan(store):
    with pytest.raises(RuntimeError, match="boom"):
        with store.begin("r1", "update", 1, "h1") as att:
            att.put_bytes("weights.bin", b"x" * 100)
            raise RuntimeError("boom")
    assert store.committed("r1", "update", 1) is None
    with pytest.raises(StoreError, match="aborted"):
        att.put_bytes("more.bin", b"y")
    kept_att, kept = _commit(store, stage="update", rnd=2)
    assert store.gc("r1", min_age_s=3600) == []                 # too young to collect
    assert store.gc("r1", dry_run=True, min_age_s=0) == [att.uri]
    assert store.gc("r1", min_age_s=0) == [att.uri]
    assert store._b.find(attempt_prefix("r1", "update", 1, att.attempt_id)) == {}
    assert store.open("r1", "update", 2).get_json("scores.json") == {"mean": 0.5}
    assert store.gc(min_age_s=0) == []


def test_files_are_immutable_within_an_attempt(store):
    att = store.begin("r1", "score", 1, "h1")
    att.put_bytes("a.bin", b"1")
    with pytest.raises(StoreError, match="immutable"):
        att.put_bytes("a.bin", b"2")
    with pytest.raises(StoreError, match="immutable"):
        att.put_bytes("a.bin/inner", b"2")
    with pytest.raises(ValueError, match="reserved"):
        att.put_bytes("_MANIFEST.json", b"{}")
    att.commit()
    with pytest.raises(StoreError, match="committed"):
        att.put_bytes("b.bin", b"3")


def test_flipped_byte_raises_corrupt_output_naming_the_file(store):
    _, c = _commit(store, payload={"mean": 0.25})
    key = f"{attempt_prefix('r1', 'score', 1, c.attempt_id)}/scores.json"
    data = bytearray(store._b.get(key))
    data[3] ^= 0x01                                              # same size, another digest
    store._b.put(key, bytes(data))
    with pytest.raises(CorruptOutputError, match=f"fails its {store.digest} check") as e:
        store.open("r1", "score", 1).get_json("scores.json")
    assert c.url("scores.json") in str(e.value)


def test_truncated_and_missing_files_raise_corrupt_output(store):
    att = store.begin("r1", "score", 1, "h1")
    att.put_bytes("a.bin", b"abcdef")
    att.put_bytes("b.bin", b"ghijkl")
    c = att.commit()
    prefix = attempt_prefix("r1", "score", 1, c.attempt_id)
    store._b.put(f"{prefix}/a.bin", b"abc")
    with pytest.raises(CorruptOutputError, match="3 bytes, its manifest says 6"):
        c.get_bytes("a.bin")
    store._b.delete_prefix(f"{prefix}/b.bin")
    with pytest.raises(CorruptOutputError, match="missing") as e:
        c.get_bytes("b.bin")
    assert c.url("b.bin") in str(e.value)
    with pytest.raises(StoreError, match="not part of"):
        c.get_bytes("never-put.bin")


def test_tampered_or_missing_manifest_is_detected(store):
    _, c = _commit(store)
    mkey = f"{attempt_prefix('r1', 'score', 1, c.attempt_id)}/_MANIFEST.json"
    doc = json.loads(store._b.get(mkey))
    doc["files"]["scores.json"]["size"] = 1
    store._b.put(mkey, json.dumps(doc).encode())
    with pytest.raises(CorruptOutputError, match="changed after commit") as e:
        store.open("r1", "score", 1)
    assert store.url(mkey) in str(e.value)
    store._b.delete_prefix(mkey)
    with pytest.raises(CorruptOutputError, match="missing"):
        store.open("r1", "score", 1)
    store._b.put(pointer_key("r1", "score", 1), b"not json")
    with pytest.raises(CorruptOutputError, match="bad pointer"):
        store.committed("r1", "score", 1)


def test_backend_cas_refuses_a_stale_token(cas_store):
    b, key = cas_store._b, "r1/x/-/_POINTER.json"
    assert b.put_cas(key, b"v1", None)               # create
    assert not b.put_cas(key, b"v1-again", None)     # create-only: exists
    data, tok1 = b.get_versioned(key)
    assert data == b"v1"
    assert b.put_cas(key, b"v2", tok1)
    assert not b.put_cas(key, b"v3", tok1)           # tok1 is stale now
    assert b.get(key) == b"v2"
    assert b.put_create("r1/once.json", b"a") and not b.put_create("r1/once.json", b"b")
    assert b.get("r1/once.json") == b"a"


def _race(store, n, spec_hashes, rnd):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def worker(i):
        try:
            att = store.begin("race", "rollout", rnd, spec_hashes[i])
            att.put_json("out.json", {"writer": i})
            barrier.wait()
            c = att.commit()
            results[i] = (att.attempt_id, att.won, c.attempt_id)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.parametrize("rnd", [1, 2])
def test_concurrent_commits_same_spec_exactly_one_wins(cas_store, rnd):
    store = cas_store
    n = 6
    results = _race(store, n, ["same"] * n, rnd)
    winners = [own for own, won, _ in results if won]
    assert len(winners) == 1, results                 # exactly one pointer write succeeded
    # ... and every racer, winner or loser, got the winner's committed output back
    assert {got for _, _, got in results} == {winners[0]}
    c = store.open("race", "rollout", rnd)
    assert c.attempt_id == winners[0]
    assert c.get_json("out.json")["writer"] in range(n)
    # the n - 1 losers are orphans that gc removes
    assert len(store.gc("race", min_age_s=0)) == n - 1


def test_concurrent_commits_new_specs_replace_and_last_cas_wins(store):
    n = 4
    results = _race(store, n, [f"spec{i}" for i in range(n)], 7)
    assert all(won for _, won, _ in results)          # rule (a): a new spec replaces
    c = store.open("race", "rollout", 7)
    assert c.attempt_id in {own for own, _, _ in results}
    writer = c.get_json("out.json")["writer"]
    assert c.spec_hash == f"spec{writer}"             # pointer, manifest and files agree


def test_same_spec_recommit_is_idempotent_new_spec_supersedes(store):
    a1, c1 = _commit(store, payload={"v": 1})
    a2, c2 = _commit(store, payload={"v": 2})          # same spec hash: loses cleanly
    assert a2.won is False and c2.attempt_id == c1.attempt_id
    assert store.open("r1", "score", 1).get_json("scores.json") == {"v": 1}
    a3, c3 = _commit(store, spec_hash="h2", payload={"v": 3})
    assert a3.won is True and store.open("r1", "score", 1).get_json("scores.json") == {"v": 3}
    assert sorted(store.gc("r1", min_age_s=0)) == sorted([a1.uri, a2.uri])


def test_run_files_overwrite_and_listings(store):
    uri = store.write_run_file("r1", "summary.json", b'{"a": 1}')
    assert uri == store.url("r1/summary.json")
    store.write_run_file("r1", "summary.json", b'{"a": 2}')
    assert store.read_run_file("r1", "summary.json") == b'{"a": 2}'
    with pytest.raises(NotCommittedError, match="report.md"):
        store.read_run_file("r1", "report.md")
    _commit(store, stage="sft", rnd=None)
    _commit(store, stage="score", rnd=1)
    store.begin("r1", "update", 1, "h").put_bytes("w.bin", b"1")     # never committed
    _commit(store, run="r2", stage="sft", rnd=None)
    assert store.list_runs() == ["r1", "r2"]
    rows = store.list_stages("r1")
    assert [(r["stage"], r["round"], r["committed"]) for r in rows] == [
        ("sft", None, True), ("score", 1, True), ("update", 1, False)]
    assert rows[0]["n_files"] == 1 and rows[0]["total_bytes"] > 0 and rows[0]["n_attempts"] == 1
    assert rows[2]["n_attempts"] == 1 and rows[2]["attempt_id"] is None


def test_begin_validates_its_arguments(store):
    with pytest.raises(ValueError, match="spec_hash"):
        store.begin("r1", "sft", None, "")
    with pytest.raises(ValueError, match="meta"):
        store.begin("r1", "sft", None, "h", meta={"x": object()})
    with pytest.raises(ValueError, match="run id"):
        store.begin("r/1", "sft", None, "h")


def test_unknown_scheme_lists_the_valid_ones():
    with pytest.raises(StoreError, match=r"valid schemes are file://, s3://"):
        open_store("gs://bucket/x")


def test_backend_cas_loses_no_update_under_contention(cas_store):
    # 4 threads x 10 read-modify-write increments through put_cas: a lost update would leave
    # the counter below 40; a CAS that let two writers through would too.
    b, key = cas_store._b, "r1/counter/-/_POINTER.json"
    assert b.put_cas(key, b"0", None)

    def worker():
        done = 0
        while done < 10:
            data, token = b.get_versioned(key)
            done += b.put_cas(key, str(int(data) + 1).encode(), token)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.get(key) == b"40"
