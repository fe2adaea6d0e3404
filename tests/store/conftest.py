"""Store fixtures: a session-wide moto S3 server on loopback (its conditional-write errors differ
from SeaweedFS's; ``seaweed`` and ``s3_env`` are in tests/conftest.py) and a fresh ``store`` per
test on each backend (``file`` always; ``s3`` unless the weed binary is missing; ``moto`` unless
moto is missing)."""

from __future__ import annotations

import uuid

import pytest

from maskgrpo.store import open_store
from maskgrpo.store.testing import TEST_BUCKET, create_bucket, set_s3_env

BUCKET = TEST_BUCKET


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    """(endpoint_url, env) of an in-memory moto S3 server with bucket BUCKET."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    import secrets
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "moto" + secrets.token_hex(4),
           "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16), "AWS_REGION": "us-east-1",
           "MASKGRPO_S3_ENDPOINT_URL": endpoint}
    try:
        create_bucket(endpoint, env, BUCKET)
        yield endpoint, env
    finally:
        server.stop()


@pytest.fixture
def moto_store(moto, monkeypatch):
    set_s3_env(moto[1], monkeypatch)
    return open_store(f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def s3_store(s3_env):
    return open_store(f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def file_store(tmp_path):
    return open_store(f"file://{tmp_path}/runs")


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3), "moto"])
def cas_store(request):
    """``store`` plus moto, for the tests of conditional writes (moto reports a failed
    create-only write differently from SeaweedFS)."""
    return request.getfixturevalue(f"{request.param}_store")
