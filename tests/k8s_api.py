"""A real Kubernetes API server for the tests, and KFP's backend compiler.

``../shared/k8s`` (relative to the repo root; CI has it) holds kube-apiserver v1.36 + etcd,
``kfpc`` (KFP 2.17's API-server compile path and Argo's validation) and the Kubeflow Trainer
CRDs. ``tests/conftest.py`` starts ONE API server per session (fixture ``kube``) through
``cluster.sh`` and stops it at the end. There is no controller-manager, scheduler or kubelet:
objects are validated, admitted (PodSecurity, RBAC) and stored, but nothing runs.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import yaml
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parents[1]
SHARED_K8S = ROOT.parent / "shared" / "k8s"
CLUSTER_SH = SHARED_K8S / "cluster.sh"
CRDS = SHARED_K8S / "crds"
ABSENT = f"{SHARED_K8S} is absent: the real kube-apiserver, kfpc and Trainer CRDs come from ../shared/k8s"


def available() -> bool:
    return CLUSTER_SH.is_file()


def kfpc_path() -> Path:
    """The unpacked kfpc binary (cached by cluster.sh)."""
    out = subprocess.run([str(CLUSTER_SH), "bin", "kfpc"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def read_env(env_file: Path) -> dict[str, str]:
    env = {}
    for line in env_file.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


class Kube:
    """A started API server: its env (KUBECONFIG, K8S_*), typed and dynamic clients, helpers."""

    def __init__(self, directory: Path, env: dict[str, str], start_seconds: float):
        from kubernetes import client, config, dynamic

        self.directory, self.env, self.start_seconds = directory, env, start_seconds
        self.kubeconfig = Path(env["KUBECONFIG"])
        self.api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        self.core = client.CoreV1Api(self.api_client)
        self.rbac = client.RbacAuthorizationV1Api(self.api_client)
        self.authz = client.AuthorizationV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.extensions = client.ApiextensionsV1Api(self.api_client)
        self.dynamic = dynamic.DynamicClient(self.api_client)

    # -- objects ------------------------------------------------------------------------------

    def namespace(self, name: str, *, restricted: bool = True) -> str:
        """Create namespace ``name`` (PodSecurity ``restricted`` enforced unless told otherwise)
        and its ``default`` ServiceAccount, as kube-controller-manager would (none runs here)."""
        labels = {"pod-security.kubernetes.io/enforce": "restricted",
                  "pod-security.kubernetes.io/enforce-version": "latest"} if restricted else {}
        self.core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": name, "labels": labels}})
        self.service_account(name, "default")
        return name

    def create(self, obj: dict[str, Any], *, dry_run: bool = False, namespace: str | None = None) -> dict[str, Any]:
        """Create any object with strict field validation (unknown or duplicate fields are errors)."""
        resource = self.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        params = [("fieldValidation", "Strict")] + ([("dryRun", "All")] if dry_run else [])
        ns = namespace or obj.get("metadata", {}).get("namespace") if resource.namespaced else None
        return resource.create(body=obj, namespace=ns, query_params=params).to_dict()

    def service_account(self, namespace: str, name: str) -> str:
        """Create a ServiceAccount (new namespaces have none here); returns its RBAC user name."""
        self.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        return f"system:serviceaccount:{namespace}:{name}"

    def kubeconfig_for(self, namespace: str, service_account: str, path: Path) -> Path:
        """A kubeconfig that authenticates as ``service_account`` (a TokenRequest token)."""
        token = self.core.create_namespaced_service_account_token(
            service_account, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
        cfg = yaml.safe_load(self.kubeconfig.read_text())
        cfg["users"] = [{"name": "admin", "user": {"token": token}}]
        cfg["contexts"][0]["context"]["namespace"] = namespace
        path.write_text(yaml.safe_dump(cfg))
        return path

    def allowed(self, user: str, verb: str, group: str, resource: str, namespace: str, *,
                subresource: str = "") -> bool:
        """The server's own SubjectAccessReview (works for KFP's virtual resources too)."""
        sa = user.split(":")
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{sa[2]}"] if user.startswith("system:serviceaccount:") else []
        review = self.authz.create_subject_access_review({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": groups, "resourceAttributes": {
                "namespace": namespace, "verb": verb, "group": group, "resource": resource,
                "subresource": subresource}}})
        return bool(review.status.allowed)

    # -- CRDs ---------------------------------------------------------------------------------

    def apply_crds(self, directory: Path, *, files: str = "*.yaml", timeout: float = 60.0) -> list[str]:
        """Create or replace every CRD in ``directory`` (``files``) and wait until each is Established."""
        names = []
        for path in sorted(directory.glob(files)):
            for doc in yaml.safe_load_all(path.read_text()):
                if not doc or doc["kind"] != "CustomResourceDefinition":
                    continue
                name = doc["metadata"]["name"]
                try:
                    current = self.extensions.read_custom_resource_definition(name)
                except ApiException as err:
                    if err.status != 404:
                        raise
                    self.extensions.create_custom_resource_definition(doc)
                else:
                    doc["metadata"]["resourceVersion"] = current.metadata.resource_version
                    self.extensions.replace_custom_resource_definition(name, doc)
                names.append(name)
        for name in names:
            for _ in wait(timeout, f"CRD {name} Established"):
                crd = self.extensions.read_custom_resource_definition_status(name)
                if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
                    break
        self.dynamic.resources.invalidate_cache()  # discover the new kinds
        return names


def wait(timeout: float, what: str, step: float = 0.1) -> Iterator[int]:
    """Yield until the caller breaks; raise TimeoutError after ``timeout`` s (a bound, not a measure)."""
    deadline = time.monotonic() + timeout
    i = 0
    while time.monotonic() < deadline:
        yield i
        i += 1
        time.sleep(step)
    raise TimeoutError(f"{what}: not reached within {timeout:.0f}s")


def start(directory: Path) -> Kube:
    """Start the API server through cluster.sh; raise with its log tail if it does not come up."""
    t0 = time.monotonic()
    out = subprocess.run([str(CLUSTER_SH), "start", str(directory)], capture_output=True, text=True, timeout=240)
    if out.returncode != 0:
        raise RuntimeError(f"cluster.sh start failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    env_file = Path(out.stdout.strip().splitlines()[-1])
    return Kube(directory, read_env(env_file), time.monotonic() - t0)


def stop(directory: Path) -> None:
    subprocess.run([str(CLUSTER_SH), "stop", str(directory)], check=False, capture_output=True, timeout=60)
