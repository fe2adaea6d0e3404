"""MLflow logging of a local run, against a REAL MLflow tracking server on loopback (sqlite backend
store, a local folder as artifact destination behind the server's artifact proxy), read back
through MLflow's own client: params = the resolved pipeline document, per-round metric history,
artifacts (report, plots, samples), tags (run id, lineage).

The server and client run from a separate venv (``mlflow`` pins graphql-core and pyarrow against
Prefect's pins, so it cannot join the project's venv), built once under the cache folder
``$MASKGRPO_TEST_CACHE`` (default ``~/.cache/maskgrpo-tests``) with pip from the package registry;
the test is skipped, saying why, only when that install fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from maskgrpo.runners.local.mlflow_tracking import flatten

MLFLOW = "mlflow>=2.14,<4"
pytestmark = pytest.mark.slow  # the venv (first time), the server's start and a tiny run: ~1 min


def mlflow_python() -> Path:
    cache = Path(os.environ.get("MASKGRPO_TEST_CACHE", Path.home() / ".cache" / "maskgrpo-tests"))
    venv = cache / "mlflow-venv"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import mlflow, sys; sys.exit(0 if mlflow.__version__ >= '2.14' else 1)"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", MLFLOW], capture_output=True, text=True)
    if install.returncode != 0 or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip(f"cannot install {MLFLOW!r} into {venv}: {install.stderr.strip().splitlines()[-1:]}")
    return python


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    python = mlflow_python()
    root = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [str(python), "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    try:
        yield python, uri, root
    finally:  # the server's whole process group (uvicorn and its workers)
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        except ProcessLookupError:
            pass
        log.close()


READ_BACK = r"""
import json, sys
from pathlib import Path
from mlflow.tracking import MlflowClient
client = MlflowClient(sys.argv[1])
exp = client.get_experiment_by_name(sys.argv[2])
(run,) = client.search_runs([exp.experiment_id], filter_string="tags.`maskgrpo.run_id` = 'tracked'")
rid = run.info.run_id
history = {k: [(m.step, m.value) for m in client.get_metric_history(rid, k)]
           for k in ("evaluate/accuracy", "update/kl", "score/zero_std_ratio", "time/update_seconds", "summary/gain")}
names = sorted(a.path for a in client.list_artifacts(rid)) + sorted(a.path for a in client.list_artifacts(rid, "samples"))
local = client.download_artifacts(rid, "report.md", sys.argv[3])
print(json.dumps({"status": run.info.status, "params": run.data.params, "tags": run.data.tags, "history": history,
                  "artifacts": names, "report": Path(local).read_text()}))
"""


def test_a_run_logs_params_metrics_artifacts_and_tags_to_a_real_mlflow_server(mlflow_server, run_args, tmp_path,
                                                                              monkeypatch, capsys):
    from maskgrpo.cli import main
    from maskgrpo.specs import load_run_spec

    python, uri, root = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "maskgrpo-test")
    store = tmp_path / "runs"
    assert main(["run", *run_args, "--store", f"file://{store}", "--run-id", "tracked"]) == 0
    capsys.readouterr()
    got = json.loads(subprocess.run([str(python), "-c", READ_BACK, uri, "maskgrpo-test", str(tmp_path / "dl")],
                                    capture_output=True, text=True, check=True).stdout)
    summary = json.loads((store / "tracked" / "summary.json").read_text())
    # params: the resolved document, flattened (what `maskgrpo config` prints, with the overrides)
    expected = flatten(load_run_spec(run_args[0], run_args[2::2]).model_dump(mode="json"))
    assert got["params"] == expected
    assert got["params"]["rl.group_size"] == "4" and got["params"]["sft.steps"] == "20"
    stored = yaml.safe_load((store / "tracked" / "pipeline.yaml").read_text())
    assert flatten(stored) == expected  # the same document is stored with the run
    # metrics: per-round history with steps, equal to the summary (MLflow keeps float64)
    history = got["history"]
    assert history["evaluate/accuracy"] == [[e["round"], e["accuracy"]] for e in summary["evaluations"]]
    assert history["update/kl"] == [[r["round"], r["kl"]] for r in summary["rounds"]]
    assert history["score/zero_std_ratio"] == [[r["round"], r["zero_std_ratio"]] for r in summary["rounds"]]
    assert [s for s, _ in history["time/update_seconds"]] == [1, 2]
    assert history["summary/gain"] == [[2, summary["gain"]]]
    # artifacts: report, plots, summary, the document, both evaluations' samples
    for name in ("report.md", "summary.json", "curve.png", "pipeline.yaml", "plot-reward.png", "plot-stage_time.png",
                 "samples/round-0.jsonl", "samples/round-2.jsonl"):
        assert name in got["artifacts"], name
    assert got["report"] == (store / "tracked" / "report.md").read_text()
    # tags: run id, where the run lives, lineage
    tags = got["tags"]
    assert tags["maskgrpo.run_id"] == "tracked" and tags["maskgrpo.pipeline"] == "toy-text"
    assert tags["maskgrpo.run_uri"] == f"file://{store}/tracked"
    assert tags["maskgrpo.model_source"] == got["params"]["model.source"]
    assert got["status"] == "FINISHED"
    # a resume (every stage committed) continues the same MLflow run: still one run with this run id
    assert main(["run", *run_args, "--store", f"file://{store}", "--run-id", "tracked", "--resume"]) == 0
    again = json.loads(subprocess.run([str(python), "-c", READ_BACK, uri, "maskgrpo-test", str(tmp_path / "dl2")],
                                      capture_output=True, text=True, check=True).stdout)
    assert again["status"] == "FINISHED" and again["params"] == expected
    assert again["history"]["update/kl"] == history["update/kl"]  # skipped stages log nothing again
    assert len(again["history"]["summary/gain"]) == 2


def test_an_unreachable_server_is_one_line_before_any_stage(run_args, tmp_path, monkeypatch, capsys):
    from maskgrpo.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    assert main(["run", *run_args, "--store", f"file://{tmp_path}", "--run-id", "x"]) == 1
    captured = capsys.readouterr()
    assert "[  1/" not in captured.out  # no stage ran
    (line,) = captured.err.strip().splitlines()
    assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{port} is not reachable" in line


def test_a_non_http_tracking_uri_is_refused_clearly(run_args, tmp_path, monkeypatch, capsys):
    from maskgrpo.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    assert main(["run", *run_args, "--store", f"file://{tmp_path}", "--run-id", "x"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "MLFLOW_TRACKING_URI='sqlite:///mlflow.db'" in line and "http(s) URL" in line


def test_flatten_joins_keys_and_dumps_lists_as_json():
    assert flatten({"a": {"b": 1, "c": [1, {"d": 2}], "e": None, "f": "x", "g": {}}, "h": True}) == {
        "a.b": "1", "a.c": '[1, {"d": 2}]', "a.e": "null", "a.f": "x", "a.g": "{}", "h": "true"}
