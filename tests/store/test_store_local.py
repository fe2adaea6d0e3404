"""file:// specifics: URI forms, cross-process commit races, lazy imports."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys

import pytest

from maskgrpo.store import StoreUnreachableError, open_store


def test_uri_forms_normalise_to_absolute_file_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    want = f"file://{tmp_path}/runs"
    for uri in ("file://./runs", "./runs", "runs", f"file://{tmp_path}/runs", f"{tmp_path}/runs"):
        assert open_store(uri).uri == want, uri
    assert open_store("./runs").url("r1/summary.json") == want + "/r1/summary.json"


def test_check_reachable_creates_root_or_names_it(tmp_path):
    open_store(str(tmp_path / "new" / "runs")).check_reachable()
    assert (tmp_path / "new" / "runs").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreUnreachableError, match=str(blocker)):
        open_store(str(blocker / "runs")).check_reachable()


def _commit_in_process(root, i, start, queue):
    store = open_store(root)
    att = store.begin("race", "update", 1, "same")
    att.put_json("out.json", {"writer": i})
    start.wait()
    c = att.commit()
    queue.put((att.attempt_id, att.won, c.attempt_id))


def test_processes_racing_on_one_pointer_exactly_one_wins(tmp_path):
    ctx = mp.get_context("spawn")
    n, start, queue = 4, ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_commit_in_process, args=(str(tmp_path), i, start, queue))
             for i in range(n)]
    for p in procs:
        p.start()
    start.set()
    results = [queue.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    winners = [own for own, won, _ in results if won]
    assert len(winners) == 1 and {got for _, _, got in results} == set(winners)
    assert open_store(str(tmp_path)).open("race", "update", 1).attempt_id == winners[0]


def test_importing_the_store_loads_no_s3fs_boto3_or_torch():
    code = ("import os, sys; os.environ.pop('AWS_ACCESS_KEY_ID', None);"
            "import maskgrpo.store, maskgrpo.store.testing;"
            "heavy = {'s3fs', 'boto3', 'torch'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
