"""The CLI's argument-level behaviour and failures that need no finished run: an unreachable S3
endpoint fails within seconds naming the endpoint, writes nothing; --version; exit codes."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from maskgrpo import __version__
from maskgrpo.cli import main
from maskgrpo.store.s3 import ENDPOINT_VARS

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "toy-text.yaml"


def closed_port() -> int:
    with socket.socket() as s:  # bound then released: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_s3_endpoint_fails_fast_naming_it(monkeypatch, capsys, tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    for var in (*ENDPOINT_VARS, "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MASKGRPO_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-not-real")
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    code = main(["run", str(PIPELINE), "--store", "s3://bucket/x", "--run-id", "r1"])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 1, err
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert endpoint in err
    assert "test-secret-not-real" not in err
    assert list(tmp_path.iterdir()) == []  # no local fallback store appeared


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"maskgrpo {__version__}"


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_show_rejects_a_bare_name(capsys):
    assert main(["show", "runid-only"]) == 2
    assert "'runid-only' is not a run URI" in capsys.readouterr().err
