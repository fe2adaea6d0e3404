"""Checkpoint save + load through the store against a raw copy of the same bytes, in one run.

    .venv/bin/python bench/store.py                                  # file:// and s3://, 50/500/2000 MB
    .venv/bin/python bench/store.py --backends file --sizes 50 500 --repeats 5
    .venv/bin/python bench/store.py --before main                    # also time the store of git ref main

For each backend and size a checkpoint-like folder (config.json + safetensors-sized shards of at
most 256 MB of random bytes) is saved with ``Store.begin -> put_dir -> commit`` and loaded into a
fresh folder with ``Store.open -> get_dir``; the raw baseline moves the same files in the same
run: ``shutil.copyfile`` each way for file://, boto3's ``upload_file`` / ``download_file``
(default transfer manager) against the same SeaweedFS server on loopback for s3://.  Each repeat
times raw and store back to back (same load); the median of the repeats is reported, in wall
seconds and in CPU seconds of this process (its threads included; for s3:// also the SeaweedFS
server's CPU).  ``ratio`` = raw time / store time (1.0: as fast as the raw copy).

On file:// a load trusts the seal each file got when the store wrote it (store/seal.py: its
digest, size, mtime and inode) and copies it in the kernel without hashing; each repeat also
saves and loads with ``verify = "full"`` (``MASKGRPO_STORE_VERIFY=full``: every byte hashed on
load too), reported as ``store_full`` and ``ratio_full``.  Every variant (raw, each digest, each
mode) is its own save + load round, and their order rotates by one each repeat: on a VM whose
balloon takes back freed memory (bench/README.md) a round's cost depends on how long ago the one
before it freed its pages, so a fixed order would favour whichever round came second.

The store is timed once per per-file digest of ``--digests`` (default both: xxh3_128, the
default of new commits, and sha256, the option; store/digest.py), each in the same repeat as the
raw copy, so ``store``, ``ratio``, ``digest_only`` and ``bound_ratio_cpu`` are keyed by digest.
For file:// each digest of the same files alone is timed too, for two floors of a store that
copies like the raw baseline and hashes in a separate read (the design before the one-pass
mapped copy of store/backend.py, which reads each byte once and so can beat them):
``bound_ratio_cpu_full`` = raw CPU / (raw CPU + 2 x digest CPU), every byte hashed on save and
on load, and ``bound_ratio_cpu`` = raw CPU / (raw CPU + digest CPU), on save only (sealed loads).

``--before REF`` extracts ``src/`` of that git ref (``git archive``, no worktree) and times its
store in a child process on the same folders and server.  The 2000 MB case is skipped when the
disk has less than 4x its size free.  Writes bench/results/store.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SHARD = 256 << 20
VERIFY_MODES = ("seal", "full")  # file:// read modes timed (store/seal.py)


def cpu_s(server_pid: int | None = None) -> float:
    """CPU seconds of this process (all threads), plus the server's when given."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    total = r.ru_utime + r.ru_stime
    if server_pid:
        import psutil

        try:
            proc = psutil.Process(server_pid)
            c = proc.cpu_times()
            total += c.user + c.system + sum(
                (k.cpu_times().user + k.cpu_times().system) for k in proc.children(recursive=True))
        except psutil.Error:
            pass
    return total


def make_checkpoint(folder: Path, size_mb: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bench", "size_mb": size_mb}))
    left, i, files = size_mb << 20, 0, [folder / "config.json"]
    n = -(-left // SHARD)
    while left > 0:
        chunk = min(SHARD, left)
        path = folder / f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        with open(path, "wb") as f:
            for off in range(0, chunk, 1 << 24):
                f.write(os.urandom(min(1 << 24, chunk - off)))
        files.append(path)
        left -= chunk
        i += 1
    return files


WARM_BYTES = 0  # --warm: resident memory made before each timed phase (see warm_memory)


def warm_memory(nbytes: int) -> None:
    """Touch ``nbytes`` of fresh memory and free it, so the next allocations find resident
    pages: on a VM whose balloon reports free memory to the host (free page reporting), pages
    free for ~2 s go back and cost a host fault each when used again (0.8 GB/s here), which
    would be charged to whichever phase came after the longest pause."""
    if nbytes:
        buf = bytearray(nbytes)
        buf[::4096] = b"\1" * len(range(0, nbytes, 4096))  # one byte a page faults it in
        del buf


def timed(fn, server_pid=None) -> tuple[float, float]:
    """(wall s, CPU s) of ``fn()``, started with no dirty pages (``os.sync`` first, untimed): the
    writeback of an earlier round's bytes must not be charged to this one."""
    os.sync()
    warm_memory(WARM_BYTES)
    w0, c0 = time.perf_counter(), cpu_s(server_pid)
    fn()
    return time.perf_counter() - w0, cpu_s(server_pid) - c0


def store_round(uri: str, folder: Path, work: Path, rnd: int, server_pid=None,
                digest: str | None = None, verify: str | None = None) -> dict:
    """One save + load through the store (the code importable as ``maskgrpo``); ``digest``: the
    per-file digest of the commit (None: the store's default, and the only way older code runs);
    ``verify``: the file:// read mode (store/seal.py), None for the backend's own."""
    from maskgrpo.store import open_store

    store = open_store(uri) if digest is None else open_store(uri, digest=digest)
    store.check_reachable()  # untimed, as a stage does first: the raw client is warm too
    if verify is not None:
        store._b.verify = verify
    out = work / f"load-{rnd}"

    def save():
        att = store.begin("bench", "update", rnd, f"h{rnd}")
        att.put_dir("policy", folder)
        att.commit()

    def load():
        store.open("bench", "update", rnd).get_dir("policy", out)

    sw, sc = timed(save, server_pid)
    lw, lc = timed(load, server_pid)
    shutil.rmtree(out, ignore_errors=True)
    store._b.delete_prefix("bench")
    return {"save_wall": sw, "save_cpu": sc, "load_wall": lw, "load_cpu": lc}


def raw_round(backend: str, folder: Path, work: Path, rnd: int, s3=None, server_pid=None) -> dict:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    dst, back = work / f"raw-{rnd}", work / f"raw-back-{rnd}"
    if backend == "file":
        def save():
            dst.mkdir(parents=True)
            for p in files:
                shutil.copyfile(p, dst / p.name)

        def load():
            back.mkdir(parents=True)
            for p in files:
                shutil.copyfile(dst / p.name, back / p.name)
    else:
        client, bucket, prefix = s3
        key = f"{prefix}/raw-{rnd}"

        def save():
            for p in files:
                client.upload_file(str(p), bucket, f"{key}/{p.name}")

        def load():
            back.mkdir(parents=True)
            for p in files:
                client.download_file(bucket, f"{key}/{p.name}", str(back / p.name))
    sw, sc = timed(save, server_pid)
    lw, lc = timed(load, server_pid)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.rmtree(back, ignore_errors=True)
    if backend == "s3":
        for p in files:
            client.delete_object(Bucket=bucket, Key=f"{key}/{p.name}")
    return {"save_wall": sw, "save_cpu": sc, "load_wall": lw, "load_cpu": lc}


def summarize(rows: list[dict]) -> dict:
    out = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    for kind in ("wall", "cpu"):
        out[f"total_{kind}"] = statistics.median(r[f"save_{kind}"] + r[f"load_{kind}"] for r in rows)
    return out


def ratios(raw: dict, store: dict) -> dict:
    return {k: raw[k] / store[k] if store[k] > 0 else None for k in store}


def before_code(ref: str, dest: Path) -> Path:
    """``src/`` of git ``ref`` unpacked under ``dest`` (git archive: no worktree is created)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def child_main(args) -> None:
    """--child: time the store only (importing whichever maskgrpo PYTHONPATH gives)."""
    rows = [store_round(args.uri, Path(args.folder), Path(args.work), 1000 + i, args.server_pid)
            for i in range(args.repeats)]
    print(json.dumps(rows))


def main() -> None:
    global WARM_BYTES  # --warm, per case size (read by timed)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", nargs="+", default=["file", "s3"], choices=["file", "s3"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[50, 500, 2000], help="MB")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--digests", nargs="+", default=["xxh3_128", "sha256"],
                    choices=["xxh3_128", "sha256"], help="per-file digests of the store to time")
    ap.add_argument("--big-repeats", type=int, default=1, help="repeats of sizes >= 1000 MB")
    ap.add_argument("--part-mb", type=int, help="S3 part size of the store (default: s3.PART_SIZE)")
    ap.add_argument("--range-mb", type=int, help="S3 ranged-GET size (default: s3.RANGE_SIZE)")
    ap.add_argument("--warm", type=float, default=0.0, metavar="X",
                    help="before each timed phase, touch and free X times the case's bytes")
    ap.add_argument("--before", metavar="REF", help="also time the store of this git ref")
    ap.add_argument("--work", help="scratch folder (default: a temp folder, removed)")
    ap.add_argument("--out", type=Path, default=RESULTS / "store.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--uri", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(args)

    sys.path.insert(0, str(ROOT / "src"))
    if args.part_mb:
        from maskgrpo.store import s3 as s3_mod

        s3_mod.PART_SIZE = args.part_mb << 20
    if args.range_mb:
        from maskgrpo.store import s3 as s3_mod

        s3_mod.RANGE_SIZE = args.range_mb << 20
    from maskgrpo.store.testing import TEST_BUCKET, create_bucket, s3_client, seaweedfs_server

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-store-"))
    result = {"environment": {"cpu_count": os.cpu_count(), "load_average_start": os.getloadavg(),
                              "python": sys.version.split()[0]},
              "repeats": args.repeats, "digests": args.digests, "before_ref": args.before, "part_mb": args.part_mb, "range_mb": args.range_mb,
              "cases": []}
    before_src = before_code(args.before, work / "before") if args.before else None
    try:
        for backend in args.backends:
            server = None
            if backend == "s3":
                server = seaweedfs_server(work / "weed")
                endpoint, env = server.__enter__()
                create_bucket(endpoint, env, TEST_BUCKET)
                os.environ.update(env)
                client = s3_client(endpoint, env)
                import psutil

                weed = [c for c in psutil.Process().children() if "weed" in c.name()]
                server_pid = weed[0].pid if weed else None
            else:
                server_pid, client = None, None
            try:
                for size in args.sizes:
                    free = shutil.disk_usage(work).free
                    if size >= 1000 and free < 4 * (size << 20):
                        result["cases"].append({"backend": backend, "size_mb": size,
                                                "skipped": f"only {free >> 20} MB free"})
                        continue
                    WARM_BYTES = int(args.warm * (size << 20))
                    folder = work / f"ckpt-{size}"
                    make_checkpoint(folder, size)
                    uri = (f"file://{work}/store-{size}" if backend == "file"
                           else f"s3://{TEST_BUCKET}/b-{uuid.uuid4().hex[:8]}")
                    prefix = f"raw-{uuid.uuid4().hex[:8]}"
                    repeats = args.big_repeats if size >= 1000 else args.repeats
                    modes = VERIFY_MODES if backend == "file" else ("seal",)
                    variants = [("raw", None)] + [(d, m) for m in modes for d in args.digests]
                    rows: dict = {v: [] for v in variants}
                    for i in range(repeats):  # each variant in each place of the order in turn
                        for j, (d, mode) in enumerate(variants[i % len(variants):]
                                                      + variants[:i % len(variants)]):
                            rnd = i * len(variants) + j
                            rows[d, mode].append(
                                raw_round(backend, folder, work, rnd, (client, TEST_BUCKET, prefix),
                                          server_pid) if d == "raw" else
                                store_round(uri, folder, work, rnd, server_pid, digest=d,
                                            verify=mode if backend == "file" else None))
                    raw = summarize(rows["raw", None])
                    case = {"backend": backend, "size_mb": size, "repeats": repeats,
                            "load_average": os.getloadavg(), "raw": raw}
                    for mode in modes:
                        tag = "" if mode == "seal" else "_full"
                        st = {d: summarize(rows[d, mode]) for d in args.digests}
                        case[f"store{tag}"] = st
                        case[f"ratio{tag}"] = {d: ratios(raw, st[d]) for d in st}
                    if backend == "file":  # the floors: every byte hashed once or twice
                        from maskgrpo.store.backend import hash_file

                        files = sorted(p for p in folder.iterdir() if p.is_file())
                        case["digest_only"] = {}
                        case["bound_ratio_cpu"], case["bound_ratio_cpu_full"] = {}, {}
                        for d in args.digests:
                            hw, hc = zip(*(timed(lambda: [hash_file(p, d) for p in files])
                                           for _ in range(repeats)))
                            case["digest_only"][d] = {"wall": statistics.median(hw),
                                                      "cpu": statistics.median(hc)}
                            for key, times in (("bound_ratio_cpu", 1), ("bound_ratio_cpu_full", 2)):
                                case[key][d] = raw["total_cpu"] / (
                                    raw["total_cpu"] + times * case["digest_only"][d]["cpu"])
                    if before_src is not None:
                        env = {**os.environ, "PYTHONPATH": str(before_src)}
                        got = subprocess.run(
                            [sys.executable, __file__, "--child", "--uri", uri, "--folder",
                             str(folder), "--work", str(work), "--repeats", str(repeats)]
                            + (["--server-pid", str(server_pid)] if server_pid else []),
                            env=env, check=True, capture_output=True, text=True)
                        old = summarize(json.loads(got.stdout.strip().splitlines()[-1]))
                        case["before"] = old
                        case["before_ratio"] = ratios(raw, old)
                    result["cases"].append(case)
                    print(json.dumps({k: case[k] for k in ("backend", "size_mb")}
                                     | {f"{r}_total_{kind}_{d}": case[r][d][f"total_{kind}"]
                                        for r in ("ratio", "ratio_full") if r in case
                                        for d in args.digests for kind in ("wall", "cpu")}
                                     | ({"before_ratio_total_wall":
                                         case["before_ratio"]["total_wall"]}
                                        if "before_ratio" in case else {})), flush=True)
                    shutil.rmtree(folder, ignore_errors=True)
                    shutil.rmtree(work / f"store-{size}", ignore_errors=True)
            finally:
                if server is not None:
                    server.__exit__(None, None, None)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    result["environment"]["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
