"""The S3 requests of one checkpoint save + load through the store, against boto3's bare copy of
the same files (SeaweedFS on loopback), by kind.

    .venv/bin/python bench/store_requests.py            # 50 MB
    .venv/bin/python bench/store_requests.py --size-mb 500

The store's requests are counted on ``S3FileSystem._call_s3`` and ``call_s3`` (the conditional
PutObjects of the commit), boto3's with a botocore ``before-call`` hook.  Prints a table.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=50)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "bench"))
    from store import make_checkpoint

    from maskgrpo.store import open_store
    from maskgrpo.store.testing import TEST_BUCKET, create_bucket, s3_client, seaweedfs_server

    work = Path(tempfile.mkdtemp(prefix="bench-store-requests-"))
    try:
        folder = work / "ckpt"
        files = make_checkpoint(folder, args.size_mb)
        with seaweedfs_server(work / "weed") as (endpoint, env):
            create_bucket(endpoint, env, TEST_BUCKET)
            os.environ.update(env)
            st = open_store(f"s3://{TEST_BUCKET}/c-{uuid.uuid4().hex[:6]}")
            calls: list[tuple[str, str]] = []
            phase = ""
            real_async, real_sync = st._b.fs._call_s3, st._b.fs.call_s3

            async def counting(method, *a, **kw):
                calls.append((phase, method))
                return await real_async(method, *a, **kw)

            def counting_sync(method, *a, **kw):
                calls.append((phase, method))
                return real_sync(method, *a, **kw)

            st._b.fs._call_s3, st._b.fs.call_s3 = counting, counting_sync
            phase = "save: put_dir"
            att = st.begin("bench", "update", 1, "h")
            att.put_dir("policy", folder)
            phase = "save: commit"
            att.commit()
            phase = "load: open"
            c = st.open("bench", "update", 1)
            phase = "load: get_dir"
            c.get_dir("policy", work / "out")

            client = s3_client(endpoint, env)
            raw: collections.Counter = collections.Counter()
            client.meta.events.register("before-call.s3", lambda model, **kw: raw.update([model.name]))
            (work / "back").mkdir()
            for p in files:
                client.upload_file(str(p), TEST_BUCKET, f"raw/{p.name}")
            for p in files:
                client.download_file(TEST_BUCKET, f"raw/{p.name}", str(work / "back" / p.name))
        print(f"store, {args.size_mb} MB save + load: {len(calls)} requests")
        for (ph, method), n in sorted(collections.Counter(calls).items()):
            print(f"  {ph:14s} {method:28s} {n}")
        print(f"boto3 upload_file + download_file: {sum(raw.values())} requests")
        for method, n in sorted(raw.items()):
            print(f"  {method:28s} {n}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
