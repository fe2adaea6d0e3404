"""The Helm chart's values schema (charts/maskgrpo/values.schema.json), generated.

    python scripts/generate.py           # writes it (with the KFP components)
    python scripts/generate.py --check   # fails when the committed file is stale

Two parts:
1. `run`: the pipeline document, `maskgrpo.specs.RunSpec.model_json_schema()`. Pydantic puts
   sub-models under the schema's own `$defs` and refers to them as `#/$defs/<Name>`; nested under
   `properties.run` those pointers would dangle, so the `$defs` are hoisted to the top level and
   every `$ref` is rewritten to its new place (a reference to the RunSpec root, `#`, becomes
   `#/properties/run`). Helm's validator then resolves them without network access.
2. Everything else (image, store, minio, kfp, submit, schedule, pod settings): written by hand
   below, closed (`additionalProperties: false`) so a misspelt key fails `helm install` with the
   key's path rather than being silently ignored.

The output is deterministic: sorted keys, two-space indent, a trailing newline.
"""

from __future__ import annotations

import copy
import json
from typing import Any

DRAFT = "https://json-schema.org/draft/2020-12/schema"

# A Kubernetes resource quantity, as a string ("500m", "1.5", "8Gi") or a plain number.
_QUANTITY = {
    "anyOf": [
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"},
        {"type": "number", "minimum": 0},
    ]
}
# Five-field cron: minute hour day-of-month month day-of-week (or a @macro).
_CRON = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _obj(properties: dict[str, Any], description: str, required: list[str] | None = None) -> dict[str, Any]:
    """A closed object schema."""
    schema: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def _str(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _bool(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def _int(description: str, minimum: int = 0) -> dict[str, Any]:
    return {"type": "integer", "description": description, "minimum": minimum}


def _resources(description: str) -> dict[str, Any]:
    amounts = {"cpu": _QUANTITY, "memory": _QUANTITY, "ephemeral-storage": _QUANTITY}
    pair = {"type": "object", "properties": amounts, "required": ["cpu", "memory"],
            "additionalProperties": {"$ref": "#/$defs/InfraQuantity"}}
    return _obj({"requests": pair, "limits": pair}, description, required=["requests", "limits"])


def _security_context() -> dict[str, Any]:
    """Container securityContext (core/v1 SecurityContext fields)."""
    caps = _obj({"add": {"type": "array", "items": {"type": "string"}},
                 "drop": {"type": "array", "items": {"type": "string"}}}, "Linux capabilities.")
    return _obj(
        {
            "allowPrivilegeEscalation": _bool("Allow setuid binaries to gain privileges."),
            "appArmorProfile": {"type": "object"},
            "capabilities": caps,
            "privileged": _bool("Run privileged."),
            "procMount": _str("procMount type."),
            "readOnlyRootFilesystem": _bool("Mount the root filesystem read-only."),
            "runAsGroup": _int("GID of the process."),
            "runAsNonRoot": _bool("Refuse to start as UID 0."),
            "runAsUser": _int("UID of the process."),
            "seLinuxOptions": {"type": "object"},
            "seccompProfile": {"$ref": "#/$defs/InfraSeccompProfile"},
            "windowsOptions": {"type": "object"},
        },
        "Container security context of every container the chart creates.",
    )


def _pod_security_context() -> dict[str, Any]:
    """Pod securityContext (core/v1 PodSecurityContext fields)."""
    return _obj(
        {
            "appArmorProfile": {"type": "object"},
            "fsGroup": _int("GID owning mounted volumes."),
            "fsGroupChangePolicy": _str("When to chown volumes.", enum=["OnRootMismatch", "Always"]),
            "runAsGroup": _int("GID of the containers' processes."),
            "runAsNonRoot": _bool("Refuse to start containers as UID 0."),
            "runAsUser": _int("UID of the containers' processes."),
            "seLinuxOptions": {"type": "object"},
            "seccompProfile": {"$ref": "#/$defs/InfraSeccompProfile"},
            "supplementalGroups": {"type": "array", "items": {"type": "integer"}},
            "supplementalGroupsPolicy": _str("Merge or Strict.", enum=["Merge", "Strict"]),
            "sysctls": {"type": "array", "items": {"type": "object"}},
            "windowsOptions": {"type": "object"},
        },
        "Pod security context of every pod the chart creates.",
    )


def infra_schema() -> dict[str, Any]:
    """The hand-written part: every values key except `run`."""
    image = _obj(
        {
            "repository": _str("Image repository.", minLength=1),
            "tag": _str("Image tag; empty means the chart's appVersion; never latest.", **{"not": {"const": "latest"}}),
            "pullPolicy": _str("imagePullPolicy.", enum=["Always", "IfNotPresent", "Never"]),
        },
        "The project image for the chart's own pods.",
        required=["repository", "tag", "pullPolicy"],
    )
    store = _obj(
        {
            "uri": _str("Store root, s3://bucket/prefix.",
                        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$"),
            "endpoint": _str("S3 endpoint URL; empty for AWS or the dev MinIO.",
                             pattern=r"^(|https?://[^\s]+)$"),
            "region": _str("AWS region.", minLength=1),
            "existingSecret": _str("Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
                                   pattern=r"^(|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$"),
            "devSecret": _obj(
                {
                    "create": _bool("Create a development credentials Secret."),
                    "accessKeyId": _str("Dev access key; empty: kept or random."),
                    "secretAccessKey": _str("Dev secret key; empty: kept or random."),
                },
                "A development credentials Secret (never in production).",
                required=["create"],
            ),
        },
        "S3-compatible object storage the stages exchange data through.",
        required=["uri", "existingSecret", "devSecret"],
    )
    minio = _obj(
        {
            "enabled": _bool("Deploy a dev MinIO and create the bucket."),
            "image": _obj(
                {
                    "repository": _str("MinIO image repository.", minLength=1),
                    "tag": _str("MinIO image tag; never latest.", minLength=1, **{"not": {"const": "latest"}}),
                    "pullPolicy": _str("imagePullPolicy.", enum=["Always", "IfNotPresent", "Never"]),
                },
                "MinIO server image.",
                required=["repository", "tag"],
            ),
            "bucket": _str("Bucket to create.", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
            "persistence": _obj(
                {
                    "enabled": _bool("Use a PersistentVolumeClaim."),
                    "storageClass": _str("StorageClass; empty for the default."),
                    "size": _QUANTITY,
                },
                "MinIO data volume.",
            ),
            "console": _obj({"enabled": _bool("Serve the web console on 9001.")}, "MinIO console."),
            "resources": _resources("Resources of the MinIO container."),
        },
        "Single-node MinIO for development.",
        required=["enabled"],
    )
    kfp = _obj(
        {
            "host": _str("KFP API endpoint.", pattern=r"^https?://[^\s]+$"),
            "namespace": _str("Namespace runs are created in.", pattern=_DNS_LABEL),
            "experiment": _str("Experiment name.", minLength=1),
        },
        "The Kubeflow Pipelines API.",
        required=["host", "namespace", "experiment"],
    )
    submit = _obj(
        {
            "enabled": _bool("Submit a run on install and upgrade."),
            "backoffLimit": _int("Job retries."),
            "ttlSecondsAfterFinished": _int("Seconds a finished Job is kept."),
        },
        "The submit Job.",
        required=["enabled"],
    )
    schedule = _obj(
        {
            "enabled": _bool("Turn scheduled retraining on."),
            "cron": _str("Five-field cron (UTC).", pattern=_CRON),
            "mode": _str("Who owns the schedule.", enum=["kfp-recurring", "cronjob"]),
            "concurrencyPolicy": _str("CronJob concurrencyPolicy.", enum=["Allow", "Forbid", "Replace"]),
            "successfulJobsHistoryLimit": _int("Finished Jobs kept."),
            "failedJobsHistoryLimit": _int("Failed Jobs kept."),
        },
        "Scheduled retraining.",
        required=["enabled", "cron", "mode"],
    )
    toleration = _obj(
        {
            "key": {"type": "string"},
            "operator": {"type": "string", "enum": ["Exists", "Equal"]},
            "value": {"type": "string"},
            "effect": {"type": "string", "enum": ["", "NoSchedule", "PreferNoSchedule", "NoExecute"]},
            "tolerationSeconds": {"type": "integer"},
        },
        "A pod toleration.",
    )
    return {
        "image": image,
        "imagePullSecrets": {
            "type": "array",
            "description": "Registry credential Secrets by name.",
            "items": _obj({"name": _str("Secret name.", minLength=1)}, "A Secret reference.", ["name"]),
        },
        "nameOverride": _str("Override the chart name in resource names."),
        "fullnameOverride": _str("Override the full resource name prefix."),
        "serviceAccount": _obj(
            {
                "create": _bool("Create the ServiceAccount."),
                "name": _str("Its name; empty means the full name."),
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "The submitter's ServiceAccount.",
            required=["create"],
        ),
        "rbac": _obj({"create": _bool("Create the submitter's Role and RoleBinding.")}, "RBAC.", ["create"]),
        "networkPolicy": _obj({
            "enabled": _bool("Create the release's NetworkPolicies."),
            "stages": _obj({
                "enabled": _bool("Restrict the stage pods' egress."),
                "podSelector": {"type": "object", "description": "Labels of the stage pods.",
                                "additionalProperties": {"type": "string"}},
                "kfpApps": {"type": "array", "description": "KFP system pods (app label) stages reach.",
                            "items": {"type": "string", "minLength": 1}},
                "storePeers": {"type": "array", "description": "NetworkPolicyPeers of the store.",
                               "items": {"type": "object"}},
                "storePorts": {"type": "array", "description": "Ports of the store peers.",
                               "items": {"type": "integer", "minimum": 1, "maximum": 65535}},
                "extraEgress": {"type": "array", "description": "Extra NetworkPolicyEgressRules.",
                                "items": {"type": "object"}},
            }, "Egress of the stage pods.", ["enabled"]),
        }, "NetworkPolicies.", ["enabled"]),
        "sandbox": _obj({
            "enabled": _bool("Deploy the code reward's sandbox service."),
            "replicas": _int("Replicas.", minimum=1),
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "Service port."},
            "runtimeClassName": _str("RuntimeClass, e.g. gvisor; empty for the default."),
            "seccompProfile": {"$ref": "#/$defs/InfraSeccompProfile"},
            "insecure": _bool("UNSAFE: start without every isolation layer."),
            "resources": _resources("Resources of the sandbox container."),
        }, "The sandbox service (maskgrpo serve-sandbox).", ["enabled"]),
        "store": store,
        "minio": minio,
        "kfp": kfp,
        "submit": submit,
        "schedule": schedule,
        "resources": _resources("Resources of the chart's own containers."),
        "podSecurityContext": _pod_security_context(),
        "securityContext": _security_context(),
        "nodeSelector": {"type": "object", "description": "Node selector for the chart's pods.",
                         "additionalProperties": {"type": "string"}},
        "tolerations": {"type": "array", "description": "Tolerations for the chart's pods.", "items": toleration},
        "affinity": {"type": "object", "description": "Affinity for the chart's pods."},
        # Helm passes `global` to every chart; allow it so umbrella charts can include this one.
        "global": {"type": "object", "description": "Helm global values (unused by this chart)."},
    }


INFRA_DEFS: dict[str, Any] = {
    "InfraQuantity": _QUANTITY,
    "InfraSeccompProfile": _obj(
        {
            "type": _str("Seccomp profile type.", enum=["RuntimeDefault", "Localhost", "Unconfined"]),
            "localhostProfile": _str("Profile file on the node (type Localhost)."),
        },
        "A seccomp profile.",
        required=["type"],
    ),
}


def _rewrite_refs(node: Any, mapping: dict[str, str]) -> Any:
    """Copy `node`, replacing each `$ref` by its new location (`mapping[old] -> new`)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                if value not in mapping:
                    raise ValueError(f"RunSpec schema: unresolvable $ref {value!r}")
                out[key] = mapping[value]
            else:
                out[key] = _rewrite_refs(value, mapping)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, mapping) for item in node]
    return node


def hoist_run_schema(run_schema: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a Pydantic model schema into (schema for `properties.run`, top-level `$defs`).

    `#/$defs/X` (and the older `#/definitions/X`) move to `#/$defs/X`; `#` (the RunSpec itself,
    for recursive models) becomes `#/properties/run`. A name that clashes with the hand-written
    definitions is an error, not a silent overwrite.
    """
    run_schema = copy.deepcopy(run_schema)
    defs = {**run_schema.pop("definitions", {}), **run_schema.pop("$defs", {})}
    run_schema.pop("$schema", None)
    clash = sorted(set(defs) & set(INFRA_DEFS))
    if clash:
        raise ValueError(f"RunSpec schema definitions clash with the chart's: {clash}")
    mapping = {"#": "#/properties/run"}
    for name in defs:
        mapping[f"#/$defs/{name}"] = f"#/$defs/{name}"
        mapping[f"#/definitions/{name}"] = f"#/$defs/{name}"
    return _rewrite_refs(run_schema, mapping), {k: _rewrite_refs(v, mapping) for k, v in defs.items()}


def build_values_schema(run_schema: dict[str, Any]) -> dict[str, Any]:
    """The whole values schema for a given RunSpec JSON schema."""
    run, run_defs = hoist_run_schema(run_schema)
    run["description"] = (
        "The pipeline document (a maskgrpo RunSpec), written to the ConfigMap as pipeline.yaml. "
        + run.get("description", "")
    ).strip()
    return {
        "$schema": DRAFT,
        "title": "maskgrpo chart values",
        "description": "Values of the maskgrpo Helm chart. Generated by scripts/chart_schema.py; "
        "do not edit (run `make generate`).",
        "type": "object",
        "properties": {"run": run, **infra_schema()},
        "required": ["run", "image", "store", "kfp", "resources", "podSecurityContext", "securityContext"],
        "additionalProperties": False,
        "$defs": {**run_defs, **INFRA_DEFS},
    }


def render_values_schema() -> str:
    """values.schema.json's text: deterministic JSON, sorted keys, trailing newline."""
    from maskgrpo.specs import RunSpec  # the lead's module; imported late so this file loads alone

    schema = build_values_schema(RunSpec.model_json_schema())
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
