"""submit_run / schedule_run against a stand-in for the KFP API server.

A stand-in because no KFP API server can run here (it needs MySQL, MLMD, object storage and a
cluster to run on). What KFP's backend does with the package is checked by its own compile path
(kfpc, test_kfpc.py); the chart's submitter RBAC by a real kube-apiserver (tests/deploy/
test_chart_k8s.py), and the last test here ties both to the calls kfp.Client really makes.

``FakeKfpApi`` stands in for the KFP v2beta1 API server: a real HTTP server on loopback that
implements the few endpoints kfp.Client calls (healthz, experiments list/create, runs create,
recurringruns create) and records every request, so the tests assert the bodies kfp.Client sent:
the pipeline spec, parameters, experiment, cron and concurrency.
"""

import json
import threading
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from maskgrpo.runners.kfp import kfp_cron, schedule_run, submit_run
from maskgrpo.specs import RunSpec


class FakeKfpApi:
    def __init__(self, existing_experiments=()):
        self.requests = []
        self.experiments = {f"exp-{i}": name for i, name in enumerate(existing_experiments)}
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                url = urlparse(self.path)
                api.requests.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                                     "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                return url.path, parse_qs(url.query), body

            def do_GET(self):
                path, query, _ = self._record()
                if path == "/apis/v2beta1/healthz":
                    return self._reply(200, {"multi_user": False})
                if path == "/apis/v2beta1/experiments":
                    wanted = json.loads(query["filter"][0])["predicates"][0]["stringValue"]
                    found = [{"experiment_id": i, "display_name": n} for i, n in api.experiments.items() if n == wanted]
                    return self._reply(200, {"experiments": found} if found else {})
                self._reply(404, {"error": f"no route {path}"})

            def do_POST(self):
                path, _, body = self._record()
                if path == "/apis/v2beta1/experiments":
                    exp_id = f"exp-{len(api.experiments)}"
                    api.experiments[exp_id] = body["display_name"]
                    return self._reply(200, {"experiment_id": exp_id, **body})
                if path == "/apis/v2beta1/runs":
                    return self._reply(200, {"run_id": "run-123", **body})
                if path == "/apis/v2beta1/recurringruns":
                    return self._reply(200, {"recurring_run_id": "rr-456", **body})
                self._reply(404, {"error": f"no route {path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def posts(self, path):
        return [r for r in self.requests if r["method"] == "POST" and r["path"] == path]


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/kfp/context.json from the user
    for var in ("KF_PIPELINES_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_ENDPOINT",
                "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME", "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)


RUN = RunSpec.model_validate({"name": "toy", "rl": {"rounds": 1}, "cluster": {"store": "s3://b/runs"}})


def test_submit_sends_the_compiled_spec_parameters_and_experiment():
    with FakeKfpApi() as api:
        run_id = submit_run(RUN, host=api.host, experiment="nightly", run_id="toy-42", image="reg/img:2")
    assert run_id == "run-123"
    (exp,) = api.posts("/apis/v2beta1/experiments")
    assert exp["body"]["display_name"] == "nightly"
    (run,) = api.posts("/apis/v2beta1/runs")
    body = run["body"]
    assert body["experiment_id"] == "exp-0" and body["display_name"] == "toy-42"
    assert body["runtime_config"]["parameters"] == {"run_id": "toy-42"}
    pipeline = body["pipeline_spec"]["pipeline_spec"]
    assert pipeline["pipelineInfo"]["name"] == "toy"
    assert pipeline["root"]["inputDefinitions"]["parameters"]["run_id"]["defaultValue"] == "toy-42"
    assert {e["container"]["image"] for e in pipeline["deploymentSpec"]["executors"].values()} == {"reg/img:2"}
    assert "exec-update-1" in body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "authorization" not in run["headers"]


def test_submit_reuses_an_existing_experiment_and_defaults_it_to_the_pipeline_name():
    with FakeKfpApi(existing_experiments=["toy"]) as api:
        submit_run(RUN, host=api.host)
    assert api.posts("/apis/v2beta1/experiments") == []
    (run,) = api.posts("/apis/v2beta1/runs")
    assert run["body"]["experiment_id"] == "exp-0"
    assert run["body"]["runtime_config"]["parameters"] == {"run_id": "toy"}  # default run id = pipeline name


def test_token_from_environment_is_sent_as_bearer(monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "tok-abc")
    with FakeKfpApi() as api:
        submit_run(RUN, host=api.host)
    (run,) = api.posts("/apis/v2beta1/runs")
    assert run["headers"]["authorization"] == "Bearer tok-abc"


def test_service_account_token_file(monkeypatch, tmp_path):
    token = tmp_path / "token"
    token.write_text("sa-token-xyz\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    with FakeKfpApi() as api:
        submit_run(RUN, host=api.host)
    (run,) = api.posts("/apis/v2beta1/runs")
    assert run["headers"]["authorization"] == "Bearer sa-token-xyz"
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="KF_PIPELINES_SA_TOKEN_PATH=.*missing: no such token file"):
        submit_run(RUN, host="http://127.0.0.1:9")


def test_schedule_sends_cron_concurrency_and_a_per_tick_run_id():
    with FakeKfpApi() as api:
        rr = schedule_run(RUN, host=api.host, cron="30 2 * * 1-5", max_concurrency=2, experiment="retrain")
    assert rr == "rr-456"
    (exp,) = api.posts("/apis/v2beta1/experiments")
    assert exp["body"]["display_name"] == "retrain"
    (req,) = api.posts("/apis/v2beta1/recurringruns")
    body = req["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * 1-5"  # five fields -> KFP's six
    assert str(body["max_concurrency"]) == "2"  # an int64 field: JSON number or string
    assert body["no_catchup"] is True and body["mode"] == "ENABLE"
    assert body["experiment_id"] == "exp-0"
    assert body["runtime_config"]["parameters"] == {"run_id": "toy-[[ScheduledTime]]"}
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "toy"


def test_schedule_validates_before_contacting_the_server():
    with pytest.raises(ValueError, match="--max-concurrency 0: KFP accepts 1 to 10"):
        schedule_run(RUN, host="http://127.0.0.1:9", cron="0 3 * * *", max_concurrency=0)
    with pytest.raises(ValueError, match="hours field: 24 is outside 0-23"):
        schedule_run(RUN, host="http://127.0.0.1:9", cron="0 24 * * *")


@pytest.mark.parametrize("given, expected", [
    ("0 3 * * *", "0 0 3 * * *"),
    ("*/15 * * * *", "0 */15 * * * *"),
    ("0 0 9 ? * MON-FRI", "0 0 9 ? * MON-FRI"),
    ("  5 4   1 JAN *  ", "0 5 4 1 JAN *"),
    ("@daily", "@daily"),
    ("@every 6h", "@every 6h"),
])
def test_kfp_cron_accepts(given, expected):
    assert kfp_cron(given) == expected


@pytest.mark.parametrize("given, message", [
    ("0 3 * *", "expected 5 fields .* got 4"),
    ("1 2 3 4 5 6 7", "got 7"),
    ("60 * * * *", "minutes field: 60 is outside 0-59"),
    ("0 0 0 * *", "day of month field: 0 is outside 1-31"),
    ("0 0 * 13 *", "month field: 13 is outside 1-12"),
    ("0 0 * * FUNDAY", "day of week field: 'FUNDAY' is not a number or one of SUN"),
    ("0 5-2 * * *", "hours field: range '5-2' runs backwards"),
    ("*/0 * * * *", "minutes field: step '0' must be a positive number"),
    ("? * * * *", r"minutes field: '\?' is only allowed"),
    ("@sometimes", "unknown descriptor"),
])
def test_kfp_cron_rejects(given, message):
    with pytest.raises(ValueError, match=message):
        kfp_cron(given)


# KFP's v2beta1 REST calls -> the (resource, verb) its multi-user mode authorises them as
AUTHORISED_AS = {("GET", "/apis/v2beta1/experiments"): ("experiments", "list"),
                 ("POST", "/apis/v2beta1/experiments"): ("experiments", "create"),
                 ("POST", "/apis/v2beta1/runs"): ("runs", "create"),
                 ("POST", "/apis/v2beta1/recurringruns"): ("recurringruns", "create")}


def test_the_chart_grants_the_submitter_exactly_the_calls_submit_and_schedule_make():
    helm_python = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) is not installed")
    import yaml

    with FakeKfpApi() as api:
        submit_run(RUN, host=api.host)
        schedule_run(RUN, host=api.host, cron="0 3 * * *")
    called = {AUTHORISED_AS[r["method"], r["path"]] for r in api.requests if r["path"] != "/apis/v2beta1/healthz"}
    chart = helm_python.Chart.load(Path(__file__).resolve().parents[3] / "charts" / "maskgrpo")
    try:
        rendered = chart.render({}, name="maskgrpo", namespace="kubeflow")
    finally:
        chart.close()
    (role,) = [d for d in yaml.safe_load_all(rendered["maskgrpo/templates/rbac.yaml"]) if d and d["kind"] == "Role"]
    granted = {(res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]}
    assert granted - {("jobs", "create")} == called  # jobs: the same recurring runs in KFP's older API
