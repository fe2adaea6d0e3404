"""TrainJobs against a real kube-apiserver with Kubeflow Trainer's own CRDs (../shared/k8s).

Every TrainJob the launcher creates is built here exactly as the launcher builds it: from the
compiled package's launcher step (its argv, with KFP's placeholders filled as KFP's launcher
would) through ``trainer.parse_args``. The server decodes them strictly against the shipped CRD,
so a renamed TrainJob field fails these tests.

No Trainer controller (nor controller-manager or kubelet) runs: the server validates, admits and
stores TrainJobs, and the tests patch a TrainJob's status the way the Trainer controller would.
Trainer v2.3.0 and v2.1.0 define the same CRD names, so the v2.1 test replaces the TrainJob CRD
in place on the same server and restores v2.3.0's afterwards (within the one test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from k8s_api import CRDS, ROOT, wait
from kubernetes.client.exceptions import ApiException

from maskgrpo.runners.kfp import compile_run
from maskgrpo.runners.kfp.trainer import (
    GROUP, PLURAL, VERSION, TrainJobOptions, launch_and_wait, parse_args, trainer_role, trainjob_name,
)
from maskgrpo.specs import load_run_spec

V23, V21 = CRDS / "trainer-v2.3.0", CRDS / "trainer-v2.1.0"
PIPELINES = ("toy-text", "llada-gsm8k")
OPTIONS = TrainJobOptions(num_nodes=2, service_account="trainer-nodes")
LAUNCHER_SA = "pipeline-runner"  # KFP's default step identity
# the CRD's own defaults, the only fields the server adds to a TrainJob's spec
CRD_DEFAULTS = {"managedBy": "trainer.kubeflow.org/trainjob-controller", "suspend": False}


def compile_with_trainer(name: str, api: str, tmp: Path) -> Path:
    """pipelines/<name>.yaml with updates as TrainJobs; the update pods also get a node selector."""
    run = load_run_spec(ROOT / "pipelines" / f"{name}.yaml")
    data = run.model_dump()
    data["cluster"]["trainer_api"] = api
    data["cluster"]["resources"]["update"]["node_selector"] = {"pool": "train"}
    return compile_run(type(run).model_validate(data), tmp / f"{name}-{api}.yaml", trainer=OPTIONS)


def launcher_argvs(package: Path, run_id: str, tmp: Path) -> dict[str, list[str]]:
    """Every launcher step's argv by task, its placeholders filled as KFP's launcher fills them."""
    spec = next(yaml.safe_load_all(package.read_text()))
    executors = spec["deploymentSpec"]["executors"]
    out = {}
    for task_name, task in spec["root"]["dag"]["tasks"].items():
        comp = spec["components"][task["componentRef"]["name"]]
        if "executorLabel" not in comp:  # a ParallelFor's sub-DAG (sharded rollouts)
            continue
        container = executors[comp["executorLabel"]]["container"]
        if container["command"] != ["python", "-m", "maskgrpo.runners.kfp.trainer"]:
            continue
        params = {k: v["runtimeValue"]["constant"] if "runtimeValue" in v else run_id
                  for k, v in task["inputs"]["parameters"].items()}
        fill = {f"{{{{$.inputs.parameters['{k}']}}}}": v for k, v in params.items()}
        fill |= {"{{$.outputs.artifacts['metrics'].path}}": str(tmp / task_name / "metrics"),
                 "{{$.outputs.artifacts['summary'].path}}": str(tmp / task_name / "summary.md"),
                 "{{$}}": json.dumps({"outputs": {"outputFile": str(tmp / task_name / "output_metadata.json")}})}
        out[task_name] = [fill.get(arg, arg) for arg in container["args"]]
    return out


def trainjobs(package: Path, run_id: str, namespace: str, tmp: Path) -> list[dict]:
    return [parse_args([*argv, "--namespace", namespace])[3] for argv in launcher_argvs(package, run_id, tmp).values()]


def dry_run(kube, manifest: dict) -> dict:
    return kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, manifest["metadata"]["namespace"], PLURAL, manifest, dry_run="All", field_validation="Strict")


def refusal(kube, manifest: dict) -> str:
    with pytest.raises(ApiException) as err:
        dry_run(kube, manifest)
    return json.loads(err.value.body)["message"]


def serve_trainjob_crd(kube, directory: Path, probe: dict) -> None:
    """Install ``directory``'s TrainJob CRD (replacing the current one) and wait until ``probe``
    is accepted, i.e. the server decodes with the new schema."""
    kube.apply_crds(directory, files="trainjobs.yaml")
    for _ in wait(60, f"{directory.name} schema served"):
        try:
            dry_run(kube, probe)
            break
        except ApiException:
            continue


@contextmanager
def trainer_v2_1(kube, probe_v21: dict, probe_v23: dict):
    """Trainer v2.1.0's TrainJob CRD in place of v2.3.0's (same name) for the block, then v2.3.0's again."""
    serve_trainjob_crd(kube, V21, probe_v21)
    try:
        yield
    finally:
        serve_trainjob_crd(kube, V23, probe_v23)


@pytest.fixture(scope="module")
def trainer(kube, tmp_path_factory):
    """Trainer v2.3.0 CRDs and the torch-distributed ClusterTrainingRuntime on the server, a
    namespace with the launcher's Role bound to its ServiceAccount, and every TrainJob the
    launcher would create, per (pipeline, trainer_api)."""
    tmp = tmp_path_factory.mktemp("trainjobs")
    packages = {(name, api): compile_with_trainer(name, api, tmp) for name in PIPELINES for api in ("v2.3", "v2.1")}
    ns = kube.namespace("trainer")
    kube.apply_crds(V23)
    kube.custom.create_cluster_custom_object(
        GROUP, VERSION, "clustertrainingruntimes", yaml.safe_load((V23 / "torch-distributed-runtime.yaml").read_text()),
        field_validation="Strict")
    user = kube.service_account(ns, LAUNCHER_SA)
    kube.rbac.create_namespaced_role(ns, trainer_role(ns))
    kube.rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "maskgrpo-trainjob-launcher"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "maskgrpo-trainjob-launcher"},
        "subjects": [{"kind": "ServiceAccount", "name": LAUNCHER_SA, "namespace": ns}]})
    jobs = {key: trainjobs(path, f"run-{key[0]}", ns, tmp / "outputs") for key, path in packages.items()}
    return {"ns": ns, "user": user, "jobs": jobs, "tmp": tmp, "packages": packages}


@pytest.mark.parametrize("name", PIPELINES)
def test_every_trainjob_is_accepted_strictly_by_trainer_v2_3(kube, trainer, name):
    jobs = trainer["jobs"][name, "v2.3"]
    assert len(jobs) == {"toy-text": 8, "llada-gsm8k": 40}[name]  # one per update round
    for job in jobs:
        stored = dry_run(kube, job)
        # nothing pruned or rewritten: the per-pod settings reach the runtime's node job
        assert stored["spec"] == CRD_DEFAULTS | job["spec"], job["metadata"]["name"]
        node = stored["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
        pod = node["template"]["spec"]["template"]["spec"]
        assert node["name"] == "node" and pod["nodeSelector"] == {"pool": "train"}
        assert pod["serviceAccountName"] == "trainer-nodes" and pod["volumes"][0]["emptyDir"] == {"medium": "Memory"}
        assert {t["key"] for t in pod.get("tolerations", [])} == ({"nvidia.com/gpu"} if name == "llada-gsm8k" else set())
        env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in stored["spec"]["trainer"]["env"]}
        assert env["AWS_SECRET_ACCESS_KEY"] == "maskgrpo-s3"
    if name == "llada-gsm8k":
        assert stored["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"


def test_one_trainjob_created_for_real_reads_back_unchanged(kube, trainer):
    job = trainer["jobs"]["llada-gsm8k", "v2.3"][0]
    ns, name = trainer["ns"], job["metadata"]["name"]
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, job, field_validation="Strict")
    try:
        back = kube.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        assert back["spec"] == CRD_DEFAULTS | job["spec"]
        assert back["metadata"]["labels"] == job["metadata"]["labels"]
    finally:
        kube.custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def test_v2_3_refuses_the_v2_1_form_and_a_renamed_field(kube, trainer):
    """Negative controls: strict decoding is on, so a field renamed by Trainer is caught."""
    old = trainer["jobs"]["toy-text", "v2.1"][0]
    assert 'unknown field "spec.podTemplateOverrides"' in refusal(kube, old)
    job = json.loads(json.dumps(trainer["jobs"]["toy-text", "v2.3"][0]))
    job["spec"]["trainer"]["resourcesPerNodes"] = job["spec"]["trainer"].pop("resourcesPerNode")
    assert 'unknown field "spec.trainer.resourcesPerNodes"' in refusal(kube, job)


def test_the_v2_1_option_against_trainer_v2_1_crds(kube, trainer):
    v21 = [job for name in PIPELINES for job in trainer["jobs"][name, "v2.1"]]
    v23 = trainer["jobs"]["toy-text", "v2.3"][0]
    with trainer_v2_1(kube, v21[0], v23):
        for job in v21:
            stored = dry_run(kube, job)
            assert stored["spec"] == CRD_DEFAULTS | job["spec"], job["metadata"]["name"]
            (override,) = stored["spec"]["podTemplateOverrides"]
            assert override["targetJobs"] == [{"name": "node"}] and override["spec"]["nodeSelector"] == {"pool": "train"}
        assert 'unknown field "spec.runtimePatches"' in refusal(kube, v23)
    assert 'unknown field "spec.podTemplateOverrides"' in refusal(kube, v21[0])  # v2.3.0 is back


# what trainer.py calls (get, create, delete on trainjobs) and nothing else
RBAC = [("get", "trainjobs", "", True), ("create", "trainjobs", "", True), ("delete", "trainjobs", "", True),
        ("update", "trainjobs", "", False), ("patch", "trainjobs", "", False), ("list", "trainjobs", "", False),
        ("patch", "trainjobs", "status", False), ("update", "trainjobs", "status", False),
        ("create", "clustertrainingruntimes", "", False), ("create", "trainingruntimes", "", False)]
CORE_DENIED = [("get", "secrets"), ("list", "secrets"), ("create", "pods"), ("get", "pods"), ("get", "configmaps")]


def test_the_launcher_role_allows_exactly_what_trainer_py_does(kube, trainer):
    ns, user = trainer["ns"], trainer["user"]
    got = [(verb, res, sub, kube.allowed(user, verb, GROUP, res, ns, subresource=sub)) for verb, res, sub, _ in RBAC]
    assert got == RBAC
    assert not any(kube.allowed(user, verb, "", res, ns) for verb, res in CORE_DENIED)
    assert not kube.allowed(user, "create", GROUP, "trainjobs", "default")  # only its own namespace


# -- the launcher process against the server ------------------------------------------------------


class Launcher:
    """``python -m maskgrpo.runners.kfp.trainer`` as a subprocess, as the launcher's ServiceAccount."""

    def __init__(self, argv: list[str], kubeconfig: Path):
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(ROOT / "src")}
        self.proc = subprocess.Popen([sys.executable, "-m", "maskgrpo.runners.kfp.trainer", *argv], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    def wait_for(self, text: str) -> None:
        for _ in wait(60, f"launcher line {text!r}"):
            if any(text in line for line in list(self.lines)) or self.proc.poll() is not None:
                break
        assert any(text in line for line in self.lines), self.lines

    def finish(self) -> int:
        rc = self.proc.wait(timeout=120)
        self.reader.join(timeout=10)
        return rc


def condition(type_: str, reason: str, message: str) -> dict:
    """A metav1.Condition as the Trainer controller writes it."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": type_, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now}


def set_status(kube, ns: str, name: str, *conditions: dict) -> None:
    kube.custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, PLURAL, name,
                                                      {"status": {"conditions": list(conditions)}})


def test_launcher_against_the_api_server(kube, trainer):
    """Four launcher processes at once, as the launcher's ServiceAccount (a TokenRequest token),
    each driven by status patches: complete, failed, suspended then complete, timeout."""
    ns, tmp = trainer["ns"], trainer["tmp"]
    kubeconfig = kube.kubeconfig_for(ns, LAUNCHER_SA, tmp / "launcher.kubeconfig")
    package = trainer["packages"]["toy-text", "v2.3"]
    cases = ("complete", "failed", "suspended", "timeout")
    procs, names = {}, {}
    for case in cases:
        run_id, out = f"launch-{case}", tmp / f"launch-{case}"
        argv = launcher_argvs(package, run_id, out)["update-1"]
        launch = json.loads(argv[argv.index("--launch") + 1])
        launch["options"] |= {"poll_seconds": 0.2, "timeout_seconds": 2 if case == "timeout" else 0}
        argv[argv.index("--launch") + 1] = json.dumps(launch)
        procs[case] = Launcher([*argv, "--namespace", ns], kubeconfig)
        names[case] = trainjob_name(run_id, 1)
    for case in cases:
        procs[case].wait_for("created (2 nodes)")
        created = kube.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, names[case])
        assert created["spec"]["runtimePatches"][0]["manager"] == "maskgrpo.io/trainjob-launcher"

    set_status(kube, ns, names["complete"], condition("Complete", "JobsCompleted", "TrainJob is completed"))
    set_status(kube, ns, names["failed"], condition("Failed", "JobsFailed", "node-0 exited with 1"))
    set_status(kube, ns, names["suspended"], condition("Suspended", "Suspended", "TrainJob is suspended"))
    procs["suspended"].wait_for("suspended (Suspended), waiting")
    assert procs["suspended"].proc.poll() is None  # a suspended job is waited on, not failed
    set_status(kube, ns, names["suspended"], {**condition("Suspended", "Resumed", "TrainJob is resumed"), "status": "False"},
               condition("Complete", "JobsCompleted", "TrainJob is completed"))

    rc = {case: procs[case].finish() for case in cases}
    assert rc == {"complete": 0, "failed": 1, "suspended": 0, "timeout": 1}, {c: procs[c].lines for c in cases}
    assert procs["failed"].lines[-1].strip() == f"error: TrainJob {ns}/{names['failed']}: failed: JobsFailed node-0 exited with 1"
    assert procs["timeout"].lines[-1].strip().endswith("not finished after 2s (deleted)")
    assert not any("Traceback" in line for p in procs.values() for line in p.lines)
    for case in ("complete", "suspended"):
        metrics = json.loads((tmp / f"launch-{case}" / "update-1" / "metrics").read_text())
        assert metrics["num_nodes"] == 2.0
    # the timed-out job was deleted by the launcher; the others stay for inspection
    with pytest.raises(ApiException) as gone:
        kube.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, names["timeout"])
    assert gone.value.status == 404
    for case in ("complete", "failed", "suspended"):
        kube.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, names[case])


# -- retries: adopt or replace an existing TrainJob (launch_and_wait in process, as the admin) --------


def existing(kube, trainer, run_id: str, *, status: dict | None = None, stale: bool = False) -> tuple[dict, str]:
    """Create the TrainJob a retried step would find; returns (the manifest it would create, old uid)."""
    argv = launcher_argvs(trainer["packages"]["toy-text", "v2.3"], run_id, trainer["tmp"] / run_id)["update-1"]
    manifest = parse_args([*argv, "--namespace", trainer["ns"]])[3]
    old = json.loads(json.dumps(manifest))
    if stale:
        old["metadata"]["labels"]["maskgrpo.io/spec-hash"] = "0" * 32
    ns, name = trainer["ns"], manifest["metadata"]["name"]
    uid = kube.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, old)["metadata"]["uid"]
    if status:
        set_status(kube, ns, name, status)
    return manifest, uid


def test_a_retry_adopts_a_completed_trainjob_of_the_same_spec(kube, trainer):
    manifest, uid = existing(kube, trainer, "retry-done", status=condition("Complete", "JobsCompleted", "done"))
    final = launch_and_wait(kube.custom, manifest, poll_seconds=0.05, log=lambda _: None)
    assert final["metadata"]["uid"] == uid  # adopted: not recreated


@pytest.mark.parametrize("case", ["failed", "stale"])
def test_a_retry_replaces_a_failed_or_stale_trainjob(kube, trainer, case):
    status = condition("Failed", "JobsFailed", "oom") if case == "failed" else None
    manifest, uid = existing(kube, trainer, f"retry-{case}", status=status, stale=case == "stale")
    ns, name = trainer["ns"], manifest["metadata"]["name"]

    def controller(_seconds):  # between polls: complete the recreated job, as the controller would
        try:
            obj = kube.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException:
            return
        if obj["metadata"]["uid"] != uid and not obj.get("status", {}).get("conditions"):
            set_status(kube, ns, name, condition("Complete", "JobsCompleted", "done"))

    log: list[str] = []
    final = launch_and_wait(kube.custom, manifest, poll_seconds=0.05, sleep=controller, log=log.append)
    assert final["metadata"]["uid"] != uid and final["metadata"]["labels"] == manifest["metadata"]["labels"]
    assert f"deleting the {case} job before recreating it" in log[0]
