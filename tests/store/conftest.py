"""Store fixtures: a session-wide SeaweedFS S3 server on loopback, and a fresh ``store`` per
test on each backend (``file`` always; ``s3`` unless the weed binary is missing)."""

from __future__ import annotations

import uuid

import pytest

from maskgrpo.store import open_store
from maskgrpo.store.s3 import ENDPOINT_VARS
from maskgrpo.store.testing import SeaweedUnavailable, create_bucket, seaweedfs_server

BUCKET = "maskgrpo-test"


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """(endpoint_url, env) of a running SeaweedFS with bucket BUCKET."""
    try:
        with seaweedfs_server(tmp_path_factory.mktemp("weed")) as (endpoint, env):
            create_bucket(endpoint, env, BUCKET)
            yield endpoint, env
    except SeaweedUnavailable as e:
        pytest.skip(f"no SeaweedFS S3 server: {e}")


@pytest.fixture
def s3_env(seaweed, monkeypatch):
    """Point the process environment at the SeaweedFS server; returns the env dict."""
    _, env = seaweed
    for var in (*ENDPOINT_VARS, "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def s3_store(s3_env):
    return open_store(f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def file_store(tmp_path):
    return open_store(f"file://{tmp_path}/runs")


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")
