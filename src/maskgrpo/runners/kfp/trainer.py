"""Past one node: the update stage as a Kubeflow Trainer TrainJob, launched and awaited by a KFP step.

With ``TrainJobOptions`` given to ``compile_run``, each ``update_k`` task runs

    python -m maskgrpo.runners.kfp.trainer --launch <TrainJobLaunch JSON> --spec <update spec JSON> ...

in a small CPU pod. It creates a ``trainer.kubeflow.org/v1alpha1`` TrainJob against the
``torch-distributed`` (Cluster)TrainingRuntime: ``num_nodes`` pods, each with the update stage's
GPUs, running ``torchrun --module maskgrpo.stages.update --spec ...`` (torchrun reads the
``PET_*`` rendezvous variables the runtime injects; DeepSpeed runs inside the update stage). The
step then polls the TrainJob until its ``Complete`` or ``Failed`` condition (a ``Suspended`` one,
e.g. queued by Kueue, is waited on), and writes the usual KFP outputs. On timeout it deletes the
TrainJob (freeing its nodes) before failing. The manifest is built here (no ``kubeflow`` SDK
needed) and created with the ``kubernetes`` client, imported only when launching.

Trainer API (``cluster.trainer_api``): the per-pod settings (``/dev/shm``, node selector,
tolerations, ServiceAccount) go into the ``node`` replicated job of the runtime as

- ``v2.3`` (default): ``spec.runtimePatches[{manager, trainingRuntimeSpec.template.spec.
  replicatedJobs[{name: node, template.spec.template.spec: <pod>}]}]``, the form of Trainer v2.2
  and later (checked against the v2.3.0 CRD);
- ``v2.1``: ``spec.podTemplateOverrides[{targetJobs: [{name: node}], spec: <pod>}]`` (v2.1 only;
  v2.2 removed it, v2.0 called it ``podSpecOverrides``, which is not supported).

Image, command, per-node resources and the S3 Secret's env references are ``spec.trainer`` fields
in both.

Idempotence: the TrainJob's name is a pure function of (run_id, round) and it carries the update
spec's hash as a label. A retried step finds the existing TrainJob: a completed one with the same
hash is accepted, a running one is awaited, a failed or stale one is deleted and recreated. The
update stage itself skips when its committed output already matches the spec hash.

RBAC: the step's ServiceAccount (KFP's ``pipeline-runner``, or the run's ``service_account``)
needs ``TRAINER_RBAC_RULES`` in the run's namespace (exactly the calls made here: get, create and
delete on trainjobs); ``trainer_role()`` renders them as a Role.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from maskgrpo.specs import StageResources, TrainerApi, UpdateSpec, spec_hash

from .outputs import write_kfp_outputs

__all__ = [
    "TrainJobOptions", "TrainJobLaunch", "TrainJobFailed", "TRAINER_RBAC_RULES", "GROUP", "VERSION", "PLURAL",
    "trainjob_name", "trainjob_manifest", "trainer_role", "launch_and_wait", "parse_args", "main",
]

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
NODE_JOB = "node"  # the replicated job (and container) of the torch-distributed runtime
HASH_LABEL = "maskgrpo.io/spec-hash"
PATCH_MANAGER = "maskgrpo.io/trainjob-launcher"  # owner of our runtimePatches entry (v2.2+)
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

TRAINER_RBAC_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": [GROUP], "resources": ["trainjobs"], "verbs": ["create", "get", "delete"]},
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainJobOptions(_Model):
    """How the update stage runs past one node."""

    num_nodes: int = Field(2, ge=1, description="Training nodes (pods); each gets the update stage's accelerators.")
    runtime: str = Field("torch-distributed", description="Name of the Trainer runtime the TrainJob references.")
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = Field(
        "ClusterTrainingRuntime", description="Kind of that runtime.")
    service_account: str | None = Field(None, description="ServiceAccount of the training pods (None = the namespace default).")
    poll_seconds: float = Field(30.0, gt=0, description="Seconds between status polls.")
    timeout_seconds: float = Field(0.0, ge=0, description="Give up after this long (0 = wait for the KFP/Argo deadline).")


class TrainJobLaunch(_Model):
    """Everything the launcher step needs besides the update spec (compiled into its argv)."""

    options: TrainJobOptions = Field(description="Node count, runtime and polling.")
    image: str = Field(description="Image of the training pods.")
    s3_secret: str | None = Field(None, description="Secret whose AWS_* / MASKGRPO_S3_ENDPOINT_URL keys become env vars.")
    resources: StageResources = Field(description="Per-node resources, node selector and tolerations (cluster.resources.update).")
    trainer_api: TrainerApi = Field("v2.3", description="TrainJob dialect (cluster.trainer_api).")


class TrainJobFailed(RuntimeError):
    """The TrainJob reached its Failed condition, or the wait timed out."""


def trainjob_name(run_id: str, round_: int) -> str:
    """A DNS-1035 name, unique per (run_id, round): 'mg-<slug>-u<round>-<hash6>'."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")[:30].strip("-") or "run"
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:6]
    return f"mg-{slug}-u{round_}-{digest}"


def _env(s3_secret: str | None) -> list[dict[str, Any]]:
    if not s3_secret:
        return []
    required = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    optional = ("MASKGRPO_S3_ENDPOINT_URL", "AWS_REGION")
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": s3_secret, "key": key, "optional": key in optional}}}
            for key in required + optional]


def trainjob_manifest(spec: UpdateSpec, launch: TrainJobLaunch, namespace: str) -> dict[str, Any]:
    """The TrainJob that runs ``spec`` on ``launch.options.num_nodes`` nodes, in ``launch.trainer_api``'s form."""
    res = launch.resources
    amounts: dict[str, str] = {"cpu": res.cpu, "memory": res.memory}
    if res.accelerator_count:
        amounts[res.accelerator_type] = str(res.accelerator_count)
    pod: dict[str, Any] = {
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
        "containers": [{"name": NODE_JOB, "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}],
    }
    if res.node_selector:
        pod["nodeSelector"] = dict(sorted(res.node_selector.items()))
    if res.tolerations:
        pod["tolerations"] = [t.model_dump(exclude_none=True) for t in res.tolerations]
    if launch.options.service_account:
        pod["serviceAccountName"] = launch.options.service_account
    labels = {"app.kubernetes.io/part-of": "maskgrpo", "maskgrpo.io/round": str(spec.round),
              HASH_LABEL: spec_hash(spec)[:32]}
    if launch.trainer_api == "v2.1":
        overrides = {"podTemplateOverrides": [{"targetJobs": [{"name": NODE_JOB}], "spec": pod}]}
    else:  # v2.3
        node_job = {"name": NODE_JOB, "template": {"spec": {"template": {"spec": pod}}}}
        overrides = {"runtimePatches": [{"manager": PATCH_MANAGER, "trainingRuntimeSpec": {
            "template": {"spec": {"replicatedJobs": [node_job]}}}}]}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": trainjob_name(spec.run_id, spec.round), "namespace": namespace, "labels": labels},
        "spec": {
            "runtimeRef": {"name": launch.options.runtime, "apiGroup": GROUP, "kind": launch.options.runtime_kind},
            "trainer": {
                "image": launch.image,
                "command": ["torchrun", "--module", "maskgrpo.stages.update"],
                "args": ["--spec", spec.model_dump_json()],
                "numNodes": launch.options.num_nodes,
                "numProcPerNode": res.accelerator_count or 1,
                "resourcesPerNode": {"requests": amounts, "limits": amounts},
                "env": _env(launch.s3_secret),
            },
            **overrides,
        },
    }


def trainer_role(namespace: str, name: str = "maskgrpo-trainjob-launcher") -> dict[str, Any]:
    """A namespaced Role granting ``TRAINER_RBAC_RULES`` (bind it to the pipeline's ServiceAccount)."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": namespace}, "rules": TRAINER_RBAC_RULES}


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def launch_and_wait(api: Any, manifest: dict[str, Any], *, poll_seconds: float, timeout_seconds: float = 0.0,
                    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)) -> dict[str, Any]:
    """Create (or adopt) the TrainJob and wait for it; returns the final object.

    ``api`` is a ``kubernetes.client.CustomObjectsApi``. Raises ``TrainJobFailed``: on the
    ``Failed`` condition, or after ``timeout_seconds`` (then the TrainJob is deleted first). A
    ``Suspended`` TrainJob is waited on (its nodes are not held), and logged once per change.
    """
    from kubernetes.client.exceptions import ApiException

    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    want = manifest["metadata"]["labels"][HASH_LABEL]
    where = f"TrainJob {ns}/{name}"

    def delete() -> None:  # Background: the JobSet and pods are garbage-collected after the TrainJob
        try:
            api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, propagation_policy="Background")
        except ApiException as err:
            if err.status != 404:
                raise

    def get() -> dict[str, Any] | None:
        try:
            return api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    existing = get()
    if existing is not None:
        stale = (existing.get("metadata", {}).get("labels") or {}).get(HASH_LABEL) != want
        if stale or _condition(existing, "Failed"):
            log(f"{where}: deleting the {'stale' if stale else 'failed'} job before recreating it")
            delete()
            while get() is not None:
                sleep(poll_seconds)
            existing = None
        else:
            log(f"{where}: adopting the existing job")
    if existing is None:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)
        log(f"{where}: created ({manifest['spec']['trainer']['numNodes']} nodes)")

    start, suspended = clock(), False
    while True:
        obj = get()
        if obj is None:
            raise TrainJobFailed(f"{where}: disappeared while waiting")
        if _condition(obj, "Complete"):
            log(f"{where}: complete")
            return obj
        failed = _condition(obj, "Failed")
        if failed:
            raise TrainJobFailed(f"{where}: failed: {failed.get('reason', '')} {failed.get('message', '')}".strip())
        now_suspended = _condition(obj, "Suspended")
        if bool(now_suspended) != suspended:
            suspended = bool(now_suspended)
            log(f"{where}: suspended ({now_suspended.get('reason', '')}), waiting" if now_suspended else f"{where}: resumed")
        if timeout_seconds and clock() - start > timeout_seconds:
            delete()
            raise TrainJobFailed(f"{where}: not finished after {timeout_seconds:.0f}s (deleted)")
        sleep(poll_seconds)


def _namespace(arg: str | None) -> str:
    if arg:
        return arg
    return NAMESPACE_FILE.read_text().strip() if NAMESPACE_FILE.exists() else "default"


def _api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, UpdateSpec, TrainJobLaunch, dict[str, Any]]:
    """The launcher's argv -> (args, update spec, launch, the TrainJob manifest it creates)."""
    parser = argparse.ArgumentParser(prog="python -m maskgrpo.runners.kfp.trainer",
                                     description="Run the update stage as a Kubeflow Trainer TrainJob and wait for it.")
    parser.add_argument("--spec", required=True, help="the update stage spec as JSON, or @file.json")
    parser.add_argument("--launch", required=True, help="TrainJobLaunch JSON (compiled into the step)")
    parser.add_argument("--run-id", default="", help="override spec.run_id when not empty")
    parser.add_argument("--namespace", help="namespace of the TrainJob (default: this pod's)")
    parser.add_argument("--metrics-path")
    parser.add_argument("--summary-path")
    parser.add_argument("--executor-input")
    args = parser.parse_args(argv)
    text = Path(args.spec[1:]).read_text() if args.spec.startswith("@") else args.spec
    spec = UpdateSpec.model_validate_json(text)
    if args.run_id:
        spec = UpdateSpec.model_validate({**spec.model_dump(), "run_id": args.run_id})
    launch = TrainJobLaunch.model_validate_json(args.launch)
    return args, spec, launch, trainjob_manifest(spec, launch, _namespace(args.namespace))


def main(argv: list[str] | None = None, api: Any = None) -> int:
    """The launcher step: same standard arguments as a stage, plus ``--launch``."""
    args, spec, launch, manifest = parse_args(argv)
    start = time.monotonic()
    try:
        final = launch_and_wait(api or _api(), manifest, poll_seconds=launch.options.poll_seconds,
                                timeout_seconds=launch.options.timeout_seconds)
    except TrainJobFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    seconds = time.monotonic() - start
    meta = manifest["metadata"]
    summary = (f"# update (round {spec.round}) as a TrainJob\n\n| field | value |\n|---|---|\n"
               f"| TrainJob | `{meta['namespace']}/{meta['name']}` |\n| nodes | {launch.options.num_nodes} |\n"
               f"| condition | {_condition(final, 'Complete').get('reason', 'Complete')} |\n| seconds | {seconds:.0f} |\n")
    write_kfp_outputs({"trainjob_seconds": seconds, "num_nodes": launch.options.num_nodes}, summary,
                      metrics_path=args.metrics_path, summary_path=args.summary_path, executor_input=args.executor_input)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
