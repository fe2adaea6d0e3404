"""Suite-wide settings and fixtures: Prefect runs ephemeral, quiet and isolated in a temporary
PREFECT_HOME; one SeaweedFS S3 server on loopback for the whole session (``seaweed``) and
``s3_env``, which points the process environment at it."""

from __future__ import annotations

import os
import tempfile

import pytest

from maskgrpo.store.testing import TEST_BUCKET, SeaweedUnavailable, create_bucket, seaweedfs_server, set_s3_env

# Before anything imports prefect: a private home (database) per test session, no telemetry,
# a startup timeout that suits a loaded 2-core machine.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="maskgrpo-prefect-"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """(endpoint_url, env) of a running SeaweedFS with bucket TEST_BUCKET (skips if weed is missing)."""
    try:
        with seaweedfs_server(tmp_path_factory.mktemp("weed")) as (endpoint, env):
            create_bucket(endpoint, env, TEST_BUCKET)
            yield endpoint, env
    except SeaweedUnavailable as e:
        pytest.skip(f"no SeaweedFS S3 server: {e}")


@pytest.fixture
def s3_env(seaweed, monkeypatch):
    """Point the process environment at the SeaweedFS server; returns the env dict."""
    return set_s3_env(seaweed[1], monkeypatch)


@pytest.fixture(scope="session")
def kube(tmp_path_factory):
    """One real kube-apiserver + etcd for the session (tests/k8s_api.py), stopped at the end;
    skips only when ../shared/k8s is absent (CI has it)."""
    import k8s_api  # tests/k8s_api.py

    if not k8s_api.available():
        pytest.skip(k8s_api.ABSENT)
    directory = tmp_path_factory.mktemp("kube-apiserver")
    try:
        yield k8s_api.start(directory)
    finally:
        k8s_api.stop(directory)


@pytest.fixture(scope="session")
def kfpc():
    """Path of kfpc, KFP 2.17's backend compile path + Argo validation (tests/k8s_api.py)."""
    import k8s_api

    if not k8s_api.available():
        pytest.skip(k8s_api.ABSENT)
    return k8s_api.kfpc_path()


@pytest.fixture
def closing_listener():
    """(endpoint_url, counter) of a loopback TCP listener that accepts each connection and closes
    it at once, never answering: an unreachable service whose connection attempts are counted
    (``counter["n"]``), so a test bounds the work a client does before giving up, not its time."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    counter = {"n": 0}

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed at teardown
                return
            counter["n"] += 1
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", counter
    try:
        server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close alone does not)
    except OSError:
        pass
    server.close()
    thread.join(timeout=5)
