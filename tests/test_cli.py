"""The CLI's argument-level behaviour and failures that need no finished run: an unreachable S3
endpoint fails after one probe naming the endpoint, writes nothing; --version; exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from maskgrpo import __version__
from maskgrpo.cli import main
from maskgrpo.store.s3 import ENDPOINT_VARS

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "toy-text.yaml"


def test_unreachable_s3_endpoint_fails_after_one_probe_naming_it(monkeypatch, capsys, tmp_path, closing_listener):
    endpoint, connections = closing_listener
    for var in (*ENDPOINT_VARS, "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MASKGRPO_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-not-real")
    monkeypatch.chdir(tmp_path)
    code = main(["run", str(PIPELINE), "--store", "s3://bucket/x", "--run-id", "r1"])
    err = capsys.readouterr().err
    assert code == 1, err
    # only the quick reachability probe ran (4 connections measured in tests/store/test_store_s3.py),
    # not the retrying calls of a stage
    assert 1 <= connections["n"] <= 4, connections
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
