"""The chart against a real kube-apiserver (../shared/k8s; the session fixture ``kube``).

Each ci/ scenario, rendered by Helm's engine, is applied for real (strict field validation) into
its own namespace labelled ``pod-security.kubernetes.io/enforce=restricted``; a Pod built from
every pod template (Jobs, CronJob, Deployment, the helm test Pod) must be admitted under
``restricted``; ``helm install --dry-run=server`` runs through helm-python-sdk; the submitter's
RBAC is decided by the server's own SubjectAccessReview.

What this cannot show: nothing runs (no controller-manager, scheduler or kubelet), so hooks
never complete, Jobs never start Pods and NetworkPolicies are not enforced.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from .conftest import CHART_DIR, RELEASE, SCENARIOS, helm_python, objects_of, pod_specs, scenario_values

# kinds created before the rest (a Pod naming a ServiceAccount needs it to exist)
FIRST = ("ServiceAccount", "Secret", "ConfigMap", "Role", "RoleBinding")


def scenario_in(namespace: str, scenario: str) -> dict:
    """The scenario's values with the release and the KFP namespace both ``namespace``."""
    values = scenario_values(scenario)
    values["kfp"]["namespace"] = namespace
    return values


def runtime_classes(kube, objects: list[dict]) -> None:
    """The RuntimeClasses the pod templates name (e.g. gVisor's for the sandbox) are a cluster
    prerequisite: create them as the cluster's admin would (admission only needs them to exist)."""
    for name in {spec.get("runtimeClassName") for obj in objects for spec in pod_specs(obj)} - {None}:
        try:
            kube.create({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name},
                         "handler": "runsc"})
        except ApiException as err:
            if err.status != 409:  # already there (another scenario)
                raise


@pytest.fixture(scope="module")
def applied(kube, render):
    """{scenario: (namespace, rendered objects, objects read back from the server)}."""
    out = {}
    for scenario in SCENARIOS:
        ns = kube.namespace(f"chart-{scenario}")
        objects = objects_of(render(scenario_in(ns, scenario), namespace=ns))
        runtime_classes(kube, objects)
        ordered = sorted(objects, key=lambda o: (o["kind"] not in FIRST, FIRST.index(o["kind"]) if o["kind"] in FIRST else 0))
        for obj in ordered:
            kube.create(obj, namespace=ns)
        back = [kube.dynamic.resources.get(api_version=o["apiVersion"], kind=o["kind"])
                .get(name=o["metadata"]["name"], namespace=ns).to_dict() for o in objects]
        out[scenario] = (ns, objects, back)
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_is_stored_by_the_server(applied, scenario):
    ns, objects, back = applied[scenario]
    assert [(o["kind"], o["metadata"]["name"]) for o in back] == [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert all(o["metadata"]["namespace"] == ns for o in back)
    assert len(back) == len(objects) > 0  # the inventory per scenario is test_chart_render's
    # the helm test Pod was created for real, i.e. admitted by PodSecurity restricted
    assert Counter(o["kind"] for o in back)["Pod"] == 1


def pods_from_templates(objects: list[dict], ns: str) -> list[dict]:
    pods = []
    for obj in objects:
        if obj["kind"] == "Pod":
            template = {"metadata": {"labels": obj["metadata"].get("labels", {})}, "spec": obj["spec"]}
        elif pod_specs(obj):
            spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
            template = spec["template"]
        else:
            continue
        pods.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": f"{obj['metadata']['name']}-{obj['kind'].lower()}", "namespace": ns,
                                  "labels": template.get("metadata", {}).get("labels", {})},
                     "spec": template["spec"]})
    return pods


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_pod_from_every_pod_template_is_admitted_under_restricted(kube, applied, scenario):
    ns, objects, _ = applied[scenario]
    pods = pods_from_templates(objects, ns)
    kinds = Counter(o["kind"] for o in objects if pod_specs(o))
    assert len(pods) == sum(kinds.values()) and kinds["Pod"] == 1
    for pod in pods:
        admitted = kube.create(pod, dry_run=True)
        assert admitted["spec"]["securityContext"]["runAsNonRoot"] is True, pod["metadata"]["name"]


def test_restricted_is_enforced_negative_control(kube, applied):
    """A pod template made to break ``restricted`` is refused: the admission above is real."""
    ns, objects, _ = applied["cpu-kind"]
    pod = json.loads(json.dumps(pods_from_templates(objects, ns)[0]))
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(ApiException) as err:
        kube.create(pod, dry_run=True)
    message = json.loads(err.value.body)["message"]
    assert err.value.status == 403 and 'violates PodSecurity "restricted:latest"' in message
    assert "allowPrivilegeEscalation != false" in message


def helm_install_dry_run(kube, ns: str, scenario: str) -> dict:
    config = helm_python.Config(kubeconfig_path=str(kube.kubeconfig), namespace=ns)
    try:
        return config.install(CHART_DIR, RELEASE, scenario_in(ns, scenario), namespace=ns, dry_run="server")
    finally:
        config.close()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_install_dry_run_server(kube, render, scenario):
    ns = kube.namespace(f"helm-{scenario}")
    release = helm_install_dry_run(kube, ns, scenario)
    assert release["status"] == "pending-install"
    manifest = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(release["manifest"]) if d}
    expected = {(o["kind"], o["metadata"]["name"]) for o in objects_of(render(scenario_in(ns, scenario), namespace=ns))
                if "helm.sh/hook" not in o["metadata"].get("annotations", {})}
    assert manifest == expected
    assert kube.core.list_namespaced_config_map(ns).items == []  # a dry run stores nothing


def test_helm_dry_run_server_consults_the_server(kube, applied):
    """Negative control: where the objects already exist (applied without Helm), Helm refuses."""
    with pytest.raises(helm_python.HelmError, match="exists and cannot be imported"):
        helm_install_dry_run(kube, applied["cpu-kind"][0], "cpu-kind")


# -- the submitter's RBAC: SubjectAccessReview by the server ------------------------------------------

KFP = "pipelines.kubeflow.org"
# (group, resource, verb) -> allowed: exactly what `maskgrpo submit` / `schedule` call through
# kfp.Client (list or create the experiment, create the run or the recurring run)
SUBMITTER = {
    (KFP, "experiments", "list"): True, (KFP, "experiments", "create"): True,
    (KFP, "runs", "create"): True, (KFP, "recurringruns", "create"): True, (KFP, "jobs", "create"): True,
    (KFP, "runs", "delete"): False, (KFP, "runs", "get"): False, (KFP, "experiments", "delete"): False,
    (KFP, "recurringruns", "disable"): False, (KFP, "pipelines", "create"): False,
    ("", "secrets", "get"): False, ("", "secrets", "list"): False, ("", "pods", "create"): False,
    ("", "pods", "list"): False, ("", "configmaps", "get"): False, ("", "configmaps", "create"): False,
    ("argoproj.io", "workflows", "create"): False, ("argoproj.io", "workflows", "get"): False,
    ("trainer.kubeflow.org", "trainjobs", "create"): False, ("batch", "jobs", "create"): False,
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_submitter_rbac_by_subject_access_review(kube, applied, scenario):
    ns, objects, _ = applied[scenario]
    (sa,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    user = f"system:serviceaccount:{ns}:{sa['metadata']['name']}"
    got = {key: kube.allowed(user, key[2], key[0], key[1], ns) for key in SUBMITTER}
    assert got == SUBMITTER
    # and nothing outside its namespace
    assert not kube.allowed(user, "create", KFP, "runs", "default")
