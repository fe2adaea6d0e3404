"""The update stage as a Kubeflow Trainer TrainJob: manifest, RBAC, launch-and-wait.

``FakeKubeApi`` stands in for the Kubernetes API server: a real HTTP server on loopback serving
the TrainJob custom-resource endpoints (create, get, delete) that the ``kubernetes`` client
calls, recording each request. A created TrainJob advances one status step per GET, following a
script (e.g. Created -> Created -> Complete), like the Trainer controller would.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kubernetes_validate
import pytest
from kubernetes import client as k8s

from maskgrpo.plan import build_plan
from maskgrpo.runners.kfp.trainer import (
    HASH_LABEL, TrainJobFailed, TrainJobLaunch, TrainJobOptions, launch_and_wait, main, trainer_role,
    trainjob_manifest, trainjob_name,
)
from maskgrpo.specs import RunSpec, StageResources, spec_hash

PREFIX = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/"


class FakeKubeApi:
    def __init__(self, script=("Created", "Complete"), existing=None):
        self.requests, self.objects, self.script = [], {}, list(script)
        self.steps = {}
        if existing is not None:
            self.objects[existing["metadata"]["name"]] = existing
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

            def _parse(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                api.requests.append((self.command, self.path, body))
                assert self.path.startswith(PREFIX), self.path
                parts = self.path[len(PREFIX):].split("?")[0].split("/")  # ns, trainjobs[, name]
                return parts, body

            def _not_found(self, name):
                self._reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                  "code": 404, "message": f'trainjobs.trainer.kubeflow.org "{name}" not found'})

            def do_POST(self):
                (ns, plural), body = self._parse()
                name = body["metadata"]["name"]
                if name in api.objects:
                    return self._reply(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
                api.objects[name] = json.loads(json.dumps(body))  # the record keeps what was sent
                api.steps[name] = 0
                self._reply(201, body)

            def do_GET(self):
                (ns, plural, name), _ = self._parse()
                obj = api.objects.get(name)
                if obj is None:
                    return self._not_found(name)
                if name in api.steps:  # created by this test: advance along the script
                    step = api.script[min(api.steps[name], len(api.script) - 1)]
                    api.steps[name] += 1
                    obj["status"] = {"conditions": [{"type": step, "status": "True", "reason": f"{step}Reason",
                                                     "message": f"job {step.lower()}"}]}
                self._reply(200, obj)

            def do_DELETE(self):
                (ns, plural, name), _ = self._parse()
                if api.objects.pop(name, None) is None:
                    return self._not_found(name)
                api.steps.pop(name, None)
                self._reply(200, {"kind": "Status", "status": "Success"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        config = k8s.Configuration(host=f"http://127.0.0.1:{self.server.server_address[1]}")
        self.api = k8s.CustomObjectsApi(k8s.ApiClient(config))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def methods(self):
        return [m for m, _, _ in self.requests]


GPU = StageResources(cpu="16", memory="200Gi", accelerator_type="nvidia.com/gpu", accelerator_count=8,
                     node_selector={"pool": "h100"},
                     tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
LAUNCH = TrainJobLaunch(options=TrainJobOptions(num_nodes=4, poll_seconds=7), image="reg/maskgrpo:1",
                        s3_secret="creds", resources=GPU)


@pytest.fixture(scope="module")
def update_spec():
    run = RunSpec.model_validate({"name": "big", "rl": {"rounds": 2}})
    return next(c.spec for c in build_plan(run, "big-run", "s3://b/runs") if c.name == "update_2")


def test_manifest(update_spec):
    m = trainjob_manifest(update_spec, LAUNCH, "team-a")
    assert m["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and m["kind"] == "TrainJob"
    assert m["metadata"]["name"] == trainjob_name("big-run", 2) and m["metadata"]["namespace"] == "team-a"
    assert m["metadata"]["labels"][HASH_LABEL] == spec_hash(update_spec)[:32]
    assert m["spec"]["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                       "kind": "ClusterTrainingRuntime"}
    trainer = m["spec"]["trainer"]
    assert trainer["command"] == ["torchrun", "--module", "maskgrpo.stages.update"]
    assert json.loads(trainer["args"][1])["round"] == 2 and trainer["args"][0] == "--spec"
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (4, 8)  # 4 nodes x 8 GPUs = 32 ranks
    assert trainer["resourcesPerNode"]["limits"] == {"cpu": "16", "memory": "200Gi", "nvidia.com/gpu": "8"}
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in trainer["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"name": "creds", "key": "AWS_SECRET_ACCESS_KEY", "optional": False}
    assert env["MASKGRPO_S3_ENDPOINT_URL"]["optional"] is True
    assert all("value" not in e for e in trainer["env"])  # references only, never values
    (override,) = m["spec"]["podTemplateOverrides"]
    assert override["targetJobs"] == [{"name": "node"}]
    assert override["spec"]["nodeSelector"] == {"pool": "h100"}
    assert override["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert override["spec"]["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]


def test_names_are_dns_labels_and_distinct():
    names = {trainjob_name(r, k) for r in ["Run_ID.with.DOTS" * 5, "a", "b"] for k in (1, 2)}
    assert len(names) == 6
    for name in names:
        assert len(name) <= 63 and name[0].isalpha() and all(c.islower() or c.isdigit() or c == "-" for c in name)


def test_rbac_role_is_valid_kubernetes():
    role = trainer_role("team-a")
    kubernetes_validate.validate(role, "1.33.0", strict=True)
    verbs = {v for rule in role["rules"] if "trainer.kubeflow.org" in rule["apiGroups"] for v in rule["verbs"]}
    assert {"create", "get", "delete"} <= verbs


def test_launch_creates_and_waits_until_complete(update_spec):
    sleeps = []
    m = trainjob_manifest(update_spec, LAUNCH, "ns1")
    with FakeKubeApi(script=("Created", "Created", "Complete")) as fake:
        final = launch_and_wait(fake.api, m, poll_seconds=7, sleep=sleeps.append, log=lambda _: None)
    # GET (404: none yet), POST, then three GETs: Created, Created, Complete
    assert fake.methods() == ["GET", "POST", "GET", "GET", "GET"]
    assert fake.requests[1][2] == m
    assert final["status"]["conditions"][0]["type"] == "Complete"
    assert sleeps == [7, 7]  # slept between the polls, not after the last


def test_failed_trainjob_raises_with_reason(update_spec):
    m = trainjob_manifest(update_spec, LAUNCH, "ns1")
    with FakeKubeApi(script=("Created", "Failed")) as fake, pytest.raises(TrainJobFailed, match=r"ns1/mg-.*failed: FailedReason job failed"):
        launch_and_wait(fake.api, m, poll_seconds=1, sleep=lambda _: None, log=lambda _: None)


def test_retry_adopts_a_completed_job_with_the_same_spec(update_spec):
    m = trainjob_manifest(update_spec, LAUNCH, "ns1")
    done = {**m, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    with FakeKubeApi(existing=done) as fake:
        launch_and_wait(fake.api, m, poll_seconds=1, sleep=lambda _: None, log=lambda _: None)
    assert fake.methods() == ["GET", "GET"]  # no create, no delete


def test_retry_replaces_a_failed_job(update_spec):
    m = trainjob_manifest(update_spec, LAUNCH, "ns1")
    failed = {**m, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    with FakeKubeApi(existing=failed, script=("Complete",)) as fake:
        launch_and_wait(fake.api, m, poll_seconds=1, sleep=lambda _: None, log=lambda _: None)
    assert fake.methods() == ["GET", "DELETE", "GET", "POST", "GET"]


def test_timeout(update_spec):
    m = trainjob_manifest(update_spec, LAUNCH, "ns1")
    ticks = iter(range(0, 10_000, 50))
    with FakeKubeApi(script=("Created",)) as fake, pytest.raises(TrainJobFailed, match="not finished after 120s"):
        launch_and_wait(fake.api, m, poll_seconds=1, timeout_seconds=120, sleep=lambda _: None,
                        clock=lambda: next(ticks), log=lambda _: None)


def test_main_runs_the_step_and_writes_kfp_outputs(update_spec, tmp_path):
    out_file = tmp_path / "kfp" / "output_metadata.json"
    argv = ["--spec", update_spec.model_dump_json(), "--launch", LAUNCH.model_copy(
                update={"options": TrainJobOptions(num_nodes=2, poll_seconds=0.01)}).model_dump_json(),
            "--run-id", "override-id", "--namespace", "ns2",
            "--metrics-path", str(tmp_path / "metrics"), "--summary-path", str(tmp_path / "summary.md"),
            "--executor-input", json.dumps({"outputs": {"outputFile": str(out_file)}})]
    with FakeKubeApi(script=("Complete",)) as fake:
        assert main(argv, api=fake.api) == 0
    created = fake.requests[1][2]
    assert created["metadata"]["name"] == trainjob_name("override-id", 2)  # --run-id applied before naming
    assert json.loads(created["spec"]["trainer"]["args"][1])["run_id"] == "override-id"
    assert fake.requests[1][1] == PREFIX + "ns2/trainjobs"
    assert json.loads((tmp_path / "metrics").read_text())["num_nodes"] == 2.0
    assert "TrainJob" in (tmp_path / "summary.md").read_text()
    meta = json.loads(out_file.read_text())["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert meta["num_nodes"] == 2.0 and "trainjob_seconds" in meta
