"""``s3://bucket/prefix`` backend over s3fs (the only module that imports s3fs).

Configuration comes from the environment only, read when the store is opened:
``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN`` optional), or a web
identity / container credential provider set up through the standard ``AWS_*`` variables;
``AWS_REGION`` / ``AWS_DEFAULT_REGION`` optional; the endpoint from ``MASKGRPO_S3_ENDPOINT_URL``,
else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL`` (unset: AWS itself).  Secrets are never
logged and never part of a URI or a repr.

Conditional writes: create-only is ``PutObject`` with ``If-None-Match: *``, compare-and-swap is
``PutObject`` with ``If-Match: <etag>`` (both through ``S3FileSystem._call_s3``).  A failed
precondition surfaces as ``FileExistsError`` on some servers (moto) and ``OSError(EINVAL)`` on
others (SeaweedFS); both, and a 409 ``ConditionalRequestConflict``, are normalised to "lost".
s3fs's listing cache is disabled: other writers change the bucket under us.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from contextlib import contextmanager
from pathlib import Path

import s3fs
from aiobotocore.session import AioSession
from botocore.exceptions import (
    ClientError,
    ConnectionError as BotoConnectionError,
    HTTPClientError,
    NoCredentialsError,
)
from fsspec.asyn import sync

from . import digest as digests
from .backend import CHUNK, read_capped
from .errors import StoreError, StoreUnreachableError, TooLargeError

ENDPOINT_VARS = ("MASKGRPO_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_PROVIDER_VARS = ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                  "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_CONCURRENCY = 8
#: Bytes per part of a multipart upload or a ranged download (S3's minimum is 5 MiB; 8 MiB, as
#: boto3, measured better than 16 MiB on a 50 MB checkpoint: bench/store.py); files up to this
#: size go in one request.  An S3Backend's ``part_size`` overrides it (tests).
PART_SIZE = 8 << 20
#: Bytes per ranged GET of a download; objects up to this size come in one streamed GET.  Larger
#: than the upload part: on a loaded 2-core loopback, 8 MiB ranges cost ~20% more CPU than 32 MiB
#: ones (bench/store.py).  An S3Backend's ``range_size`` overrides it (tests).
RANGE_SIZE = 32 << 20


def s3_options_from_env(environ: dict | None = None) -> dict:
    """s3fs constructor options from the environment (contains secrets: never log it)."""
    env = os.environ if environ is None else environ
    endpoint = next((env[v] for v in ENDPOINT_VARS if env.get(v)), None)
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    opts: dict = {"endpoint_url": endpoint}
    if key and secret:
        opts.update(key=key, secret=secret, token=env.get("AWS_SESSION_TOKEN") or None)
    elif key or secret:
        missing = "AWS_SECRET_ACCESS_KEY" if key else "AWS_ACCESS_KEY_ID"
        raise StoreError(f"S3 credentials are incomplete: {missing} is not set")
    elif not any(env.get(v) for v in _PROVIDER_VARS):
        raise StoreError(
            "no S3 credentials in the environment: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or a web identity via AWS_WEB_IDENTITY_TOKEN_FILE)"
        )
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or (
        "us-east-1" if endpoint else None)
    if region:
        opts["client_kwargs"] = {"region_name": region}
    return opts


_SESSION: AioSession | None = None
_SESSION_LOCK = threading.Lock()


def _shared_session() -> AioSession:
    """The process's one aiobotocore session, shared by every S3FileSystem (each still makes
    its own client, with its own credentials, endpoint, timeouts and connections): a session's
    loader parses the S3 service model once, ~200 ms of CPU here, which a session per store
    paid again on every ``open_store`` and ``check_reachable`` (now ~65 ms a client).  Keys from
    the environment go to each client explicitly; without them (web identity, container
    credentials) the session resolves them once per process and botocore refreshes them."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = AioSession()
        return _SESSION


def _error_code(exc: BaseException) -> str:
    cause = exc if isinstance(exc, ClientError) else exc.__cause__
    if isinstance(cause, ClientError):
        err = cause.response.get("Error", {})
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(err.get("Code") or status or "")
    return ""


def _is_precondition_failure(exc: BaseException) -> bool:
    return isinstance(exc, FileExistsError) or _error_code(exc) in _PRECONDITION_CODES


class S3Backend:
    serial_below = 0  # every file in the pool: a request's latency costs more than a thread

    def __init__(self, bucket: str, prefix: str, options: dict):
        self.bucket, self.prefix = bucket, prefix
        self.endpoint = options.get("endpoint_url") or "AWS S3"
        self.uri = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._options = options
        self.part_size, self.range_size = PART_SIZE, RANGE_SIZE
        self.fs = self._make_fs(connect_timeout=5, read_timeout=60, attempts=3)

    def __repr__(self) -> str:  # never show the options: they hold secrets
        return f"S3Backend({self.uri!r}, endpoint={self.endpoint!r})"

    @classmethod
    def from_uri(cls, uri: str) -> "S3Backend":
        rest = uri[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StoreError(f"invalid store URI {uri!r}: expected s3://bucket[/prefix]")
        return cls(bucket, prefix.strip("/"), s3_options_from_env())

    def _make_fs(self, connect_timeout: float, read_timeout: float, attempts: int):
        fs = s3fs.S3FileSystem(
            **self._options,
            session=_shared_session(),
            skip_instance_cache=True,
            use_listings_cache=False,
            max_concurrency=_CONCURRENCY,
            config_kwargs={"connect_timeout": connect_timeout, "read_timeout": read_timeout,
                           "retries": {"max_attempts": attempts, "mode": "standard"}},
        )
        fs.retries = attempts
        return fs

    def url(self, key: str) -> str:
        return f"{self.uri}/{key}" if key else self.uri

    def _split(self, key: str) -> tuple[str, str]:
        return self.bucket, f"{self.prefix}/{key}" if self.prefix else key

    def _path(self, key: str) -> str:
        return "/".join(self._split(key))

    @contextmanager
    def _errors(self, key: str, what: str):
        """Translate s3fs/botocore errors into StoreErrors naming the URI (FileNotFoundError
        for a missing key passes through for the caller to handle)."""
        url = self.url(key)
        try:
            yield
        except StoreError:
            raise
        except FileNotFoundError as e:
            if _error_code(e) == "NoSuchBucket":
                raise StoreUnreachableError(
                    f"bucket {self.bucket!r} does not exist at {self.endpoint} (while trying to "
                    f"{what} {url})") from None
            raise
        except PermissionError as e:
            raise StoreUnreachableError(
                f"credentials rejected by {self.endpoint} ({e}) while trying to {what} {url}"
            ) from None
        except (BotoConnectionError, HTTPClientError, NoCredentialsError, asyncio.TimeoutError,
                ConnectionError) as e:
            raise StoreUnreachableError(
                f"cannot reach S3 endpoint {self.endpoint} ({type(e).__name__}) while trying to "
                f"{what} {url}") from None
        except OSError as e:
            raise StoreError(f"S3 error while trying to {what} {url}: {e}") from None

    def check_reachable(self) -> None:
        quick = self._make_fs(connect_timeout=2, read_timeout=5, attempts=1)
        with self._errors("", "reach"):
            try:
                quick.call_s3("head_bucket", Bucket=self.bucket)
            except FileNotFoundError:
                raise StoreUnreachableError(
                    f"bucket {self.bucket!r} does not exist at {self.endpoint} ({self.uri})"
                ) from None

    # -- reads ---------------------------------------------------------------------------------
    async def _get_object(self, key: str) -> tuple[bytes, str] | None:
        bucket, k = self._split(key)
        try:
            resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=k)
        except FileNotFoundError as e:
            if _error_code(e) == "NoSuchBucket":
                raise
            return None
        async with resp["Body"] as body:
            data = await body.read()
        return data, resp["ETag"]

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        with self._errors(key, "read"):
            return sync(self.fs.loop, self._get_object, key)

    def get(self, key: str, max_bytes: int | None = None) -> bytes | None:
        if max_bytes is None:
            got = self.get_versioned(key)
            return None if got is None else got[0]
        with self._errors(key, "read"):
            try:
                with self.fs.open(self._path(key), "rb") as f:
                    if f.size is not None and f.size > max_bytes:  # HEAD says so: read nothing
                        raise TooLargeError(f"{self.url(key)} has more than {max_bytes} bytes: refused")
                    return read_capped(f, max_bytes, self.url(key))
            except FileNotFoundError as e:
                if _error_code(e) == "NoSuchBucket":
                    raise
                return None

    def get_many(self, keys: list[str]) -> dict[str, bytes | None]:
        async def all_():
            sem = asyncio.Semaphore(_CONCURRENCY)

            async def one(k):
                async with sem:
                    return await self._get_object(k)
            return await asyncio.gather(*(one(k) for k in keys))

        with self._errors(keys[0] if keys else "", "read"):
            got = sync(self.fs.loop, all_)
        return {k: None if g is None else g[0] for k, g in zip(keys, got)}

    def get_file(self, key: str, local_path: Path, max_bytes: int | None = None,
                 *, digest: str) -> tuple[int, str] | None:
        """Download to ``local_path``; (size, hex ``digest``) of the bytes written, hashed as they
        arrive.
        Objects larger than ``range_size`` come as concurrent ranged GETs of one version (each
        ``If-Match`` the ETag of the first HEAD), streamed to their place in the file in 1 MiB
        chunks; each range is hashed from the file, in order, as soon as all before it landed."""
        with self._errors(key, "download"):
            try:
                return sync(self.fs.loop, self._download, key, str(local_path), max_bytes,
                            digest)
            except FileNotFoundError as e:
                if _error_code(e) == "NoSuchBucket":
                    raise
                return None

    async def _download(self, key: str, local_path: str, max_bytes: int | None, digest: str):
        bucket, k = self._split(key)
        head = await self.fs._call_s3("head_object", Bucket=bucket, Key=k)
        size, etag = int(head["ContentLength"]), head["ETag"]
        if max_bytes is not None and size > max_bytes:  # refused unread
            raise TooLargeError(f"{self.url(key)} has more than {max_bytes} bytes: refused")
        loop = asyncio.get_running_loop()
        h = digests.new(digest)
        part = self.range_size
        fd = os.open(local_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

        def write(chunk: bytes, offset: int) -> None:
            view, done = memoryview(chunk), 0
            while done < len(chunk):
                done += os.pwrite(fd, view[done:], offset + done)

        try:
            if size <= part:  # one GET, streamed: the size is checked while it arrives
                resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=k, IfMatch=etag)
                got = 0
                async with resp["Body"] as body:
                    while chunk := await body.read(CHUNK):
                        got += len(chunk)
                        if max_bytes is not None and got > max_bytes:
                            raise TooLargeError(
                                f"{self.url(key)} has more than {max_bytes} bytes: refused")
                        h.update(chunk)
                        write(chunk, got - len(chunk))
                return got, h.hexdigest()

            async def fetch(start: int, end: int) -> int:  # end exclusive; bytes written
                resp = await self.fs._call_s3("get_object", Bucket=bucket, Key=k, IfMatch=etag,
                                              Range=f"bytes={start}-{end - 1}")
                pos = start
                async with resp["Body"] as body:
                    while chunk := await body.read(CHUNK):  # 1 MiB: stays in the CPU cache
                        if pos + len(chunk) > end:
                            raise StoreError(f"{self.url(key)}: the range {start}-{end - 1} "
                                             "returned more bytes than asked")
                        write(chunk, pos)
                        pos += len(chunk)
                return pos - start

            buf = bytearray(CHUNK)

            def hash_range(start: int, n: int) -> None:  # the written range, in order
                view, off = memoryview(buf), start
                while off < start + n:
                    got = os.preadv(fd, [view[:min(CHUNK, start + n - off)]], off)
                    if not got:
                        break
                    h.update(view[:got])
                    off += got

            window: deque = deque()
            got = 0

            async def drain_one() -> None:
                nonlocal got
                start, task = window.popleft()
                n = await task
                if start != got:  # a short range: the object changed or the server lied
                    raise StoreError(f"{self.url(key)}: range at {start} arrived after only "
                                     f"{got} bytes")
                await loop.run_in_executor(None, hash_range, start, n)
                got += n

            try:
                for start in range(0, size, part):
                    if len(window) >= _CONCURRENCY:
                        await drain_one()
                    window.append((start, asyncio.ensure_future(
                        fetch(start, min(size, start + part)))))
                while window:
                    await drain_one()
            finally:
                for _, task in window:
                    task.cancel()
            return got, h.hexdigest()
        finally:
            os.close(fd)

    def find(self, prefix: str) -> dict[str, int]:
        with self._errors(prefix, "list"):
            try:
                found = self.fs.find(self._path(prefix), detail=True)
            except FileNotFoundError as e:
                if _error_code(e) == "NoSuchBucket":
                    raise
                return {}
        cut = len(f"{self.bucket}/{self.prefix}/" if self.prefix else f"{self.bucket}/")
        return {p[cut:]: int(info.get("size") or 0) for p, info in found.items()
                if info.get("type") != "directory"}

    # -- writes --------------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        with self._errors(key, "write"):
            self.fs.pipe_file(self._path(key), data)

    def _conditional_put(self, key: str, data: bytes, **cond) -> bool:
        bucket, k = self._split(key)
        with self._errors(key, "write"):
            try:
                self.fs.call_s3("put_object", Bucket=bucket, Key=k, Body=data, **cond)
            except OSError as e:
                if _is_precondition_failure(e):
                    return False
                raise
        return True

    def put_create(self, key: str, data: bytes) -> bool:
        return self._conditional_put(key, data, IfNoneMatch="*")

    def put_cas(self, key: str, data: bytes, token: str | None) -> bool:
        if token is None:
            return self._conditional_put(key, data, IfNoneMatch="*")
        return self._conditional_put(key, data, IfMatch=token)

    def put_files(self, items: list[tuple[str, Path]],
                  *, digest: str) -> list[tuple[int, str]]:
        """Upload local files, each hashed (``digest``) while it is read (one pass): a file up to
        ``part_size`` in one PutObject, a larger one as a multipart upload whose parts are read
        in order, hashed and sent concurrently; at most ``_CONCURRENCY`` bodies in memory."""
        async def all_():
            slots = asyncio.Semaphore(_CONCURRENCY)
            return await asyncio.gather(*(self._upload(k, p, slots, digest) for k, p in items))

        with self._errors(items[0][0] if items else "", "upload"):
            return list(sync(self.fs.loop, all_)) if items else []

    async def _upload(self, key: str, local: Path, slots: asyncio.Semaphore,
                      digest: str) -> tuple[int, str]:
        bucket, k = self._split(key)
        loop = asyncio.get_running_loop()
        h = digests.new(digest)
        part = self.part_size
        with open(local, "rb", buffering=0) as f:
            def read_part() -> bytearray:
                # a bytearray body goes to the socket as it is: botocore wraps bytes in a
                # BytesIO, whose size aiohttp takes with getbuffer(), copying the part again
                data = bytearray(part)
                with memoryview(data) as view:
                    n = 0
                    while n < part and (got := f.readinto(view[n:])):
                        n += got
                    h.update(view[:n])
                del data[n:]
                return data

            await slots.acquire()
            try:
                first = await loop.run_in_executor(None, read_part)
                if len(first) < part:  # the whole file
                    await self.fs._call_s3("put_object", Bucket=bucket, Key=k, Body=first)
                    return len(first), h.hexdigest()
            except BaseException:
                slots.release()
                raise
            mpu = await self.fs._call_s3("create_multipart_upload", Bucket=bucket, Key=k)
            uid = mpu["UploadId"]

            async def send(number: int, data: bytes) -> dict:
                try:
                    resp = await self.fs._call_s3("upload_part", Bucket=bucket, Key=k,
                                                  UploadId=uid, PartNumber=number, Body=data)
                    return {"PartNumber": number, "ETag": resp["ETag"]}
                finally:
                    slots.release()

            tasks, size, data = [], 0, first
            try:
                while True:
                    size += len(data)
                    tasks.append(asyncio.ensure_future(send(len(tasks) + 1, data)))
                    if len(data) < part:
                        break
                    await slots.acquire()
                    data = await loop.run_in_executor(None, read_part)
                    if not data:
                        slots.release()
                        break
                parts = await asyncio.gather(*tasks)
                await self.fs._call_s3("complete_multipart_upload", Bucket=bucket, Key=k,
                                       UploadId=uid, MultipartUpload={"Parts": parts})
            except BaseException:
                for t in tasks:
                    t.cancel()
                try:
                    await self.fs._call_s3("abort_multipart_upload", Bucket=bucket, Key=k,
                                           UploadId=uid)
                except Exception:  # noqa: BLE001 (best effort: the original error matters)
                    pass
                raise
            return size, h.hexdigest()

    def delete_prefix(self, prefix: str) -> None:
        with self._errors(prefix, "delete"):
            try:
                self.fs.rm(self._path(prefix), recursive=True)
            except FileNotFoundError:
                pass
