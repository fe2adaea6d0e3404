"""The model registry in the store (store/registry.py): immutable versions, CAS-moved aliases,
orphans, the lease; on file:// and on a real S3 server (SeaweedFS, tests/conftest.py)."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from maskgrpo.store import LeaseHeld, PromotionConflict, StoreError, parse_registry_source


def checkpoint(store, run_id):
    with store.begin(run_id, "update", 2, spec_hash="h-" + run_id) as att:
        att.put_json("metrics.json", {"weight_digest": "d-" + run_id})
        return att.commit()


def register(store, reg, run_id, parent=None):
    return reg.register({"run_id": run_id, "checkpoint": store.pin(checkpoint(store, run_id)), "parent": parent})


def test_versions_are_numbered_immutable_and_pinned(store):
    reg = store.registry("toy")
    v1, v2 = register(store, reg, "r1"), register(store, reg, "r2", parent=1)
    assert (v1, v2) == (1, 2) and reg.version_numbers() == [1, 2]
    assert [d["version"] for d in reg.lineage(2)] == [2, 1]
    assert reg.checkpoint(1).get_json("metrics.json") == {"weight_digest": "d-r1"}
    assert reg.find_by_run("r2")["version"] == 2 and reg.find_by_run("nope") is None
    assert "_registry" not in store.list_runs() and store.models() == ["toy"]
    # a later commit at the same stage (another spec) does not change what the version loads
    with store.begin("r1", "update", 2, spec_hash="other") as att:
        att.put_json("metrics.json", {"weight_digest": "changed"})
    assert reg.checkpoint(1).get_json("metrics.json") == {"weight_digest": "d-r1"}


def test_promote_rollback_and_aliases(store):
    reg = store.registry("toy")
    for r in ("r1", "r2", "r3"):
        register(store, reg, r)
    reg.promote(1, expected=None)
    reg.promote(2, expected=1)
    a = reg.promote(3, expected=2)
    assert (a["champion"], a["previous"]) == (3, 2)
    with pytest.raises(PromotionConflict, match="champion is v3, not v1"):
        reg.promote(2, expected=1)
    a = reg.rollback()
    assert (a["champion"], a["previous"]) == (2, 1)
    assert reg.resolve("champion") == 2 and reg.resolve("v3") == 3 and reg.resolve("previous") == 1
    assert [h["event"] for h in a["history"]] == ["promote"] * 3 + ["rollback"]


def test_two_concurrent_promotions_exactly_one_wins(store):
    """Every racer was gated against champion v1; they promote at the same instant (a barrier)."""
    reg = store.registry("toy")
    register(store, reg, "r0")
    reg.promote(1, expected=None)
    racers = 4
    versions = [register(store, reg, f"tick{i}", parent=1) for i in range(racers)]
    barrier = threading.Barrier(racers)

    def promote(v):
        barrier.wait()
        try:
            store.registry("toy").promote(v, expected=1)
            return v
        except PromotionConflict:
            return None

    with ThreadPoolExecutor(racers) as pool:
        results = list(pool.map(promote, versions))
    winners = [v for v in results if v is not None]
    assert len(winners) == 1
    a = reg.aliases()
    assert a["champion"] == winners[0] and a["previous"] == 1
    assert len(a["history"]) == 2  # the first promotion and the one winner: losers changed nothing
    assert set(reg.orphans()) == set(versions) - set(winners)


def test_crash_between_register_and_alias_move_leaves_an_orphan(store):
    reg = store.registry("toy")
    register(store, reg, "r1")
    reg.promote(1, expected=None)
    orphan = register(store, reg, "r2", parent=1)  # ... and the process dies before promote()
    assert reg.aliases()["champion"] == 1
    assert reg.orphans() == [orphan]
    assert reg.gc(min_age_s=3600) == []  # too young: its promotion may still be in flight
    removed = reg.gc(dry_run=True, min_age_s=0)
    assert removed == [reg._b.url(reg._version_key(orphan))] and reg.version_numbers() == [1, 2]
    reg.gc(min_age_s=0)
    assert reg.version_numbers() == [1] and reg.aliases()["champion"] == 1


def test_lease(store):
    reg = store.registry("toy")
    reg.acquire_lease("tick1", ttl_s=600)
    reg.acquire_lease("tick1", ttl_s=600)  # renewing one's own
    with pytest.raises(LeaseHeld, match="'tick1' still holds"):
        reg.acquire_lease("tick2", ttl_s=600)
    assert not reg.release_lease("tick2") and reg.release_lease("tick1")
    reg.acquire_lease("tick2", ttl_s=0.001)
    time.sleep(0.01)  # let tick2's 1 ms lease lapse (on a fast machine the next call comes within 1 ms)
    reg.acquire_lease("tick3", ttl_s=600)  # tick2's lease expired


def test_bad_names_and_references(file_store):
    with pytest.raises(ValueError, match="invalid model name"):
        file_store.registry("Bad_Name")
    with pytest.raises(StoreError, match="no version 4"):
        file_store.registry("toy").get(4)
    assert parse_registry_source("registry:toy@v3") == ("toy", "v3")
    with pytest.raises(ValueError, match="expected registry:<name>@champion"):
        parse_registry_source("registry:toy")


def test_a_version_record_must_be_json(file_store):
    with pytest.raises(ValueError, match="JSON-serialisable"):
        file_store.registry("toy").register({"run_id": "r", "checkpoint": {}, "metrics": {"x": float("nan")}})
    assert json.loads(json.dumps(file_store.registry("toy").aliases()))["champion"] is None
