"""The update stage as a Kubeflow Trainer TrainJob: the manifest per Trainer API, names, the Role.

The launcher's calls (create, adopt, replace, wait, time out) are tested against a real
kube-apiserver with Trainer's CRDs in test_kfp_trainer_k8s.py.
"""

import json

import kubernetes_validate
import pytest
from pydantic import ValidationError

from maskgrpo.plan import build_plan
from maskgrpo.runners.kfp.trainer import (
    HASH_LABEL, TrainJobLaunch, TrainJobOptions, trainer_role, trainjob_manifest, trainjob_name,
)
from maskgrpo.specs import RunSpec, StageResources, format_validation_error, spec_hash

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
    assert "podTemplateOverrides" not in m["spec"]  # v2.3 is the default
    (patch,) = m["spec"]["runtimePatches"]
    assert patch["manager"] == "maskgrpo.io/trainjob-launcher"
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    assert node["template"]["spec"]["template"]["spec"] == POD


# the per-pod settings, the same in both Trainer APIs
POD = {"volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
       "containers": [{"name": "node", "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}],
       "nodeSelector": {"pool": "h100"},
       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}


def test_manifest_v2_1_keeps_podTemplateOverrides(update_spec):
    v23 = trainjob_manifest(update_spec, LAUNCH, "team-a")
    v21 = trainjob_manifest(update_spec, LAUNCH.model_copy(update={"trainer_api": "v2.1"}), "team-a")
    assert v21["spec"]["podTemplateOverrides"] == [{"targetJobs": [{"name": "node"}], "spec": POD}]
    assert "runtimePatches" not in v21["spec"]
    # everything else is the same TrainJob
    assert {k: v for k, v in v21["spec"].items() if k != "podTemplateOverrides"} == \
        {k: v for k, v in v23["spec"].items() if k != "runtimePatches"}
    assert v21["metadata"] == v23["metadata"]


def test_unknown_trainer_api_is_refused_naming_the_field():
    with pytest.raises(ValidationError) as err:
        RunSpec.model_validate({"name": "x", "cluster": {"trainer_api": "v2.0"}})
    assert format_validation_error(err.value) == "cluster.trainer_api: Input should be 'v2.3' or 'v2.1'"
    with pytest.raises(ValidationError, match="trainer_api"):
        TrainJobLaunch.model_validate({**json.loads(LAUNCH.model_dump_json()), "trainer_api": "v2.2"})


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
