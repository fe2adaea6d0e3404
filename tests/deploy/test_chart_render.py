"""The chart rendered by Helm's own engine for every ci/ scenario: object inventory, Kubernetes
1.33 validation, helm lint, pod security, resources, RBAC, commands, and no secret leaks."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml

from .conftest import (
    CHART_DIR, RELEASE, SCENARIOS, b64, helm_python, objects_of, pod_specs, scenario_values,
)

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) missing")

# What each scenario must render, and why:
#   every scenario: ConfigMap (run document), ServiceAccount, Role + RoleBinding (submitter RBAC),
#     NetworkPolicy x2 (deny ingress, stage-pod egress), Pod (helm test)                   = 7
#   cpu-kind   : + Secret (dev creds) + MinIO PVC, Service, Deployment, NetworkPolicy
#                + bucket Job + submit Job                                                 = 14
#   gpu        : existing Secret; + submit Job + schedule Job (kfp-recurring)
#                + sandbox Service, Deployment, NetworkPolicy                              = 12
#   external-s3: existing Secret; submit off; + CronJob (cronjob mode)                     = 8
COMMON = Counter({"ConfigMap": 1, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "NetworkPolicy": 2, "Pod": 1})
EXPECTED = {
    "cpu-kind": COMMON + Counter({"Secret": 1, "PersistentVolumeClaim": 1, "Service": 1, "Deployment": 1,
                                  "NetworkPolicy": 1, "Job": 2}),
    "gpu": COMMON + Counter({"Job": 2, "Service": 1, "Deployment": 1, "NetworkPolicy": 1}),
    "external-s3": COMMON + Counter({"CronJob": 1}),
}


def test_one_values_file_per_scenario():
    assert SCENARIOS == sorted(EXPECTED)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_renders_the_expected_objects(rendered, scenario):
    kinds = Counter(obj["kind"] for obj in objects_of(rendered[scenario]))
    assert kinds == EXPECTED[scenario]
    assert sum(kinds.values()) == {"cpu-kind": 14, "gpu": 12, "external-s3": 8}[scenario]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_is_valid_kubernetes_1_33(rendered, scenario):
    for obj in objects_of(rendered[scenario]):
        # strict: unknown fields are errors, not warnings
        kubernetes_validate.validate(obj, "1.33.0", strict=True)


def test_kubernetes_validate_catches_a_misspelt_field(rendered):
    """Negative control: the validator does reject what the chart must never emit."""
    job = next(o for o in objects_of(rendered["cpu-kind"]) if o["kind"] == "Job")
    job = json.loads(json.dumps(job))
    job["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.33.0", strict=True)


@pytest.mark.parametrize("scenario", [None, *SCENARIOS])
def test_helm_lint_is_clean(scenario):
    values = scenario_values(scenario) if scenario else None
    report = helm_python.lint(CHART_DIR, values, strict=True, kube_version="v1.33.0")
    assert report["errors"] == []
    # severity 2 = warning, 3 = error; the only message allowed is the informational icon hint
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_is_locked_down_and_sized(rendered, scenario):
    pods = [(obj["metadata"]["name"], spec) for obj in objects_of(rendered[scenario]) for spec in pod_specs(obj)]
    assert pods, "no workloads rendered"
    for name, spec in pods:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert psc["runAsUser"] >= 10000, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["runAsNonRoot"] is True, (name, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, (name, c["name"])
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][part]), (name, c["name"], part)
            # a read-only root needs writable scratch: /tmp (and HOME when set) on emptyDirs
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert mounts.get("/tmp") in empty_dirs, (name, c["name"])
            home = next((e["value"] for e in c.get("env", []) if e["name"] == "HOME"), None)
            if home and home != "/tmp":
                assert mounts.get(home) in empty_dirs, (name, c["name"], home)


def test_long_running_workloads_have_probes(rendered):
    deployments = [o for o in objects_of(rendered["cpu-kind"]) if o["kind"] == "Deployment"]
    assert [d["metadata"]["name"] for d in deployments] == [f"{RELEASE}-minio"]
    for c in deployments[0]["spec"]["template"]["spec"]["containers"]:
        assert c["readinessProbe"]["httpGet"]["path"] == "/minio/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/minio/health/live"


def test_no_secret_value_outside_a_secret(render):
    """A sentinel credential in the dev-secret values may appear only in a Secret's data."""
    key_id, secret = "AKIASENTINEL0000KEY", "sentinel/Secret+Value=do-not-leak-7f3a"
    values = scenario_values("cpu-kind")
    values["store"]["devSecret"] = {"create": True, "accessKeyId": key_id, "secretAccessKey": secret}
    rendered = render(values)
    forms = [key_id, secret, b64(key_id), b64(secret)]

    secrets = [o for o in objects_of(rendered) if o["kind"] == "Secret"]
    assert len(secrets) == 1
    # positive control: the values did reach the Secret (base64 in data)
    assert secrets[0]["data"]["AWS_ACCESS_KEY_ID"] == b64(key_id)
    assert secrets[0]["data"]["AWS_SECRET_ACCESS_KEY"] == b64(secret)

    for template, text in rendered.items():
        if template.endswith("NOTES.txt"):
            assert not any(f in text for f in forms), "NOTES.txt prints a credential"
            continue
        for obj in yaml.safe_load_all(text):
            if not obj:
                continue
            if obj["kind"] == "Secret":
                obj = {k: v for k, v in obj.items() if k not in ("data", "stringData")}
            dumped = json.dumps(obj)
            leaked = [f for f in forms if f in dumped]
            assert not leaked, f"{template}: {obj['kind']} {obj['metadata']['name']} contains {leaked}"


def test_pods_read_credentials_from_the_secret_by_reference(rendered):
    for scenario in SCENARIOS:
        values = scenario_values(scenario)
        secret_name = values["store"].get("existingSecret") or f"{RELEASE}-store"
        if values["store"].get("devSecret", {}).get("create"):
            secret_name = f"{RELEASE}-store"
        for obj in objects_of(rendered[scenario]):
            for spec in pod_specs(obj):
                for c in spec["containers"]:
                    env = {e["name"]: e for e in c.get("env", [])}
                    if "AWS_ACCESS_KEY_ID" not in env:
                        continue
                    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                        assert "value" not in env[key]
                        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": secret_name, "key": key}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_configmap_holds_a_valid_runspec_pointing_at_the_chart_store(rendered, scenario):
    specs = pytest.importorskip("maskgrpo.specs")
    values = scenario_values(scenario)
    (cm,) = [o for o in objects_of(rendered[scenario]) if o["kind"] == "ConfigMap"]
    doc = yaml.safe_load(cm["data"]["pipeline.yaml"])
    run = specs.RunSpec.model_validate(doc)  # cross-field rules too, not only the JSON schema
    assert run.name == values["run"]["name"]
    assert run.cluster.store == values["store"]["uri"]
    expected_secret = f"{RELEASE}-store" if values["store"].get("devSecret", {}).get("create") else values["store"]["existingSecret"]
    assert run.cluster.s3_secret == expected_secret


def _containers(rendered, scenario, kind):
    return [
        (obj, c)
        for obj in objects_of(rendered[scenario])
        if obj["kind"] == kind
        for spec in pod_specs(obj)
        for c in spec["containers"]
    ]


def test_submit_job_compiles_and_submits_the_mounted_document(rendered):
    jobs = {obj["metadata"]["name"]: (obj, c) for obj, c in _containers(rendered, "cpu-kind", "Job")}
    job, c = jobs[f"{RELEASE}-submit"]
    assert c["command"] == ["maskgrpo"]
    # run id <run.name>-r<revision>: the first install is revision 1
    assert c["args"] == ["submit", "/etc/maskgrpo/pipeline.yaml", "--host", "$(KFP_HOST)",
                         "--experiment", "maskgrpo-dev", "--namespace", "kubeflow", "--run-id", "toy-text-kind-r1"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KFP_HOST"] == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert env["KF_PIPELINES_SA_TOKEN_PATH"] == "/var/run/secrets/kubeflow/pipelines/token"
    assert env["MASKGRPO_STORE"] == "s3://maskgrpo/runs"
    assert env["MASKGRPO_S3_ENDPOINT_URL"] == f"http://{RELEASE}-minio.kubeflow.svc.cluster.local:9000"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/etc/maskgrpo"]]["configMap"]["name"] == f"{RELEASE}-run"
    # the KFP token (audience pipelines.kubeflow.org) replaces the API token
    token = volumes[mounts["/var/run/secrets/kubeflow/pipelines"]]["projected"]["sources"][0]
    assert token["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    # hooks: the bucket exists before the run is submitted
    bucket, _ = jobs[f"{RELEASE}-minio-bucket"]
    weight = lambda o: int(o["metadata"]["annotations"]["helm.sh/hook-weight"])  # noqa: E731
    assert weight(bucket) < weight(job)


def test_kfp_recurring_mode_runs_maskgrpo_schedule(rendered):
    (job, c), = [(o, c) for o, c in _containers(rendered, "gpu", "Job") if o["metadata"]["name"] == f"{RELEASE}-schedule"]
    # the five-field cron goes as is: maskgrpo schedule (kfp_cron) prepends KFP's seconds field
    assert c["args"] == ["schedule", "/etc/maskgrpo/pipeline.yaml", "--host", "$(KFP_HOST)", "--cron", "0 2 * * *",
                         "--experiment", "maskgrpo-countdown", "--namespace", "kubeflow"]
    kfp_client = pytest.importorskip("maskgrpo.runners.kfp.client")
    assert kfp_client.kfp_cron(c["args"][c["args"].index("--cron") + 1]) == "0 0 2 * * *"
    assert not [o for o in objects_of(rendered["gpu"]) if o["kind"] == "CronJob"]


def test_cronjob_mode_submits_on_the_cron(rendered):
    ((cron, c),) = _containers(rendered, "external-s3", "CronJob")
    assert cron["spec"]["schedule"] == "30 3 * * 0"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert c["args"][:2] == ["submit", "/etc/maskgrpo/pipeline.yaml"]
    assert c["args"][c["args"].index("--namespace") + 1] == "team-ml"
    # every tick is a fresh run: the run id is the tick's Job name, from the downward API
    assert c["args"][c["args"].index("--run-id") + 1] == "$(MASKGRPO_RUN_ID)"
    (run_id,) = [e for e in c["env"] if e["name"] == "MASKGRPO_RUN_ID"]
    assert run_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MASKGRPO_S3_ENDPOINT_URL"] == "https://s3.storage.internal.example"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_submitter_rbac_is_least_privilege(rendered, scenario):
    objs = objects_of(rendered[scenario])
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    (role,) = [o for o in objs if o["kind"] == "Role"]
    assert role["metadata"]["namespace"] == scenario_values(scenario)["kfp"]["namespace"]
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["pipelines.kubeflow.org"]
        assert "*" not in rule["resources"] and "*" not in rule["verbs"]
        assert not {"delete", "deletecollection", "update", "patch"} & set(rule["verbs"])
    (binding,) = [o for o in objs if o["kind"] == "RoleBinding"]
    (sa,) = [o for o in objs if o["kind"] == "ServiceAccount"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]
    assert sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_test_pod_checks_the_store(rendered, scenario):
    (pod,) = [o for o in objects_of(rendered[scenario]) if o["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    assert c["command"] == ["python", "-c"] and "s3fs" in c["args"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MASKGRPO_STORE"] == scenario_values(scenario)["store"]["uri"]


def test_missing_store_secret_fails_naming_the_key(render):
    values = scenario_values("gpu")
    values["store"]["existingSecret"] = ""
    with pytest.raises(helm_python.HelmError, match="store.existingSecret is required"):
        render(values)


def test_notes_tell_how_to_reach_the_uis(rendered):
    notes = rendered["cpu-kind"]["maskgrpo/templates/NOTES.txt"]
    assert "port-forward svc/ml-pipeline-ui" in notes
    assert f"port-forward svc/{RELEASE}-minio 9001:9001" in notes
    assert f"helm test {RELEASE}" in notes
