"""IR checks of compiled pipelines: task names per round, pods, secrets, retries, ParallelFor.

The package is read back as KFP IR (two YAML documents: the pipeline spec and the Kubernetes
platform spec) and checked field by field against the RunSpec that produced it.
"""

import json

import pytest
import yaml

from maskgrpo.runners.kfp import compile_run
from maskgrpo.runners.kfp.trainer import TrainJobOptions
from maskgrpo.specs import RunSpec

GPU = {"cpu": "8", "memory": "64Gi", "accelerator_type": "nvidia.com/gpu", "accelerator_count": 2,
       "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb", "pool": "gpu"},
       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}


def run_spec(rounds=3, shards=1, every=0, retries=2):
    return RunSpec.model_validate({
        "name": "ir-test", "rl": {"rounds": rounds}, "evaluate": {"every": every},
        "cluster": {"image": "registry.example/maskgrpo:test", "store": "s3://bucket/runs", "s3_secret": "creds",
                    "rollout_shards": shards, "retries": retries,
                    "resources": {"rollout": GPU, "update": GPU, "score": {"cpu": "2", "memory": "8Gi"}}},
    })


def compile_ir(tmp_path, run, **kwargs):
    path = compile_run(run, tmp_path / "p.yaml", **kwargs)
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def tasks_of(spec):
    return spec["root"]["dag"]["tasks"]


def test_task_names_and_dependencies_per_round(tmp_path):
    spec, _ = compile_ir(tmp_path, run_spec(rounds=3))
    tasks = tasks_of(spec)
    # sft, evaluate_0, 3 x (rollout, score, update), evaluate_3 (every=0: only the last round) = 12
    assert sorted(tasks) == sorted(["sft", "evaluate-0", "rollout-1", "score-1", "update-1", "rollout-2", "score-2",
                                    "update-2", "rollout-3", "score-3", "update-3", "evaluate-3"])
    assert {t["taskInfo"]["name"] for t in tasks.values()} >= {"sft", "rollout_1", "update_3", "evaluate_3"}
    deps = {name: t.get("dependentTasks", []) for name, t in tasks.items()}
    assert deps["sft"] == [] and deps["evaluate-0"] == ["sft"]
    assert deps["rollout-1"] == ["sft"] and deps["score-1"] == ["rollout-1"] and deps["update-1"] == ["score-1"]
    assert deps["rollout-2"] == ["update-1"] and deps["evaluate-3"] == ["update-3"]
    # the stage spec travels as one JSON constant; its round and policy reference follow the plan
    update2 = json.loads(tasks["update-2"]["inputs"]["parameters"]["spec"]["runtimeValue"]["constant"])
    assert (update2["kind"], update2["round"], update2["policy"], update2["optimizer_from"]) == ("update", 2, "update/1", "update/1")
    assert update2["store"] == "s3://bucket/runs" and update2["run_id"] == "ir-test"


def test_run_id_is_a_parameter_with_the_compiled_default(tmp_path):
    spec, _ = compile_ir(tmp_path, run_spec(rounds=1), run_id="exp-7", store="s3://other/prefix/")
    assert spec["root"]["inputDefinitions"]["parameters"]["run_id"]["defaultValue"] == "exp-7"
    for task in tasks_of(spec).values():
        assert task["inputs"]["parameters"]["run_id"] == {"componentInputParameter": "run_id"}
        constant = json.loads(task["inputs"]["parameters"]["spec"]["runtimeValue"]["constant"])
        assert constant["run_id"] == "exp-7" and constant["store"] == "s3://other/prefix"  # trailing / dropped


def test_containers_resources_and_argv(tmp_path):
    spec, _ = compile_ir(tmp_path, run_spec(rounds=1), image="override/image:1")
    executors = spec["deploymentSpec"]["executors"]
    rollout = executors["exec-rollout-1"]["container"]
    assert rollout["image"] == "override/image:1"
    assert rollout["command"] == ["python", "-m", "maskgrpo.stages.rollout"]
    assert rollout["args"][:2] == ["--spec", "{{$.inputs.parameters['spec']}}"]
    assert "--metrics-path" in rollout["args"] and "--executor-input" in rollout["args"]
    res = rollout["resources"]
    assert (res["accelerator"]["resourceType"], res["accelerator"]["resourceCount"]) == ("nvidia.com/gpu", "2")
    assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == ("8", "8")
    assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == ("64Gi", "64Gi")
    score = executors["exec-score-1"]["container"]["resources"]
    assert "accelerator" not in score and score["resourceCpuLimit"] == "2" and score["resourceMemoryLimit"] == "8Gi"
    # the defaults for a stage the document did not size: 1 CPU, 4Gi
    assert executors["exec-sft"]["container"]["resources"]["resourceMemoryLimit"] == "4Gi"


def test_retry_and_caching(tmp_path):
    spec, _ = compile_ir(tmp_path, run_spec(rounds=1, retries=3))
    for name, task in tasks_of(spec).items():
        assert task["retryPolicy"] == {"maxRetryCount": 3, "backoffDuration": "30s", "backoffFactor": 2.0,
                                       "backoffMaxDuration": "3600s"}, name
        assert task["cachingOptions"] == {}, name  # enableCache absent = false
    spec0, _ = compile_ir(tmp_path, run_spec(rounds=1, retries=0))
    assert all("retryPolicy" not in t for t in tasks_of(spec0).values())


def test_secrets_node_selectors_tolerations_and_shm(tmp_path):
    _, platform = compile_ir(tmp_path, run_spec(rounds=1))
    assert set(platform) == {f"exec-{n}" for n in ["sft", "evaluate-0", "rollout-1", "score-1", "update-1", "evaluate-1"]}
    for name, ex in platform.items():
        required, optional = ex["secretAsEnv"]
        assert required["secretName"] == "creds" and not required.get("optional")
        assert {k["envVar"] for k in required["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert optional["optional"] is True
        assert {k["envVar"] for k in optional["keyToEnv"]} == {"MASKGRPO_S3_ENDPOINT_URL", "AWS_REGION"}
        assert ex["emptyDirMounts"] == [{"medium": "Memory", "mountPath": "/dev/shm", "volumeName": "dshm"}]
    gpu = platform["exec-update-1"]
    assert gpu["nodeSelector"]["labels"] == GPU["node_selector"]
    assert gpu["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "nodeSelector" not in platform["exec-score-1"] and "tolerations" not in platform["exec-score-1"]


def test_no_secret_value_in_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sentinel-secret-value-123")
    path = compile_run(run_spec(rounds=1), tmp_path / "p.yaml")
    assert "sentinel-secret-value-123" not in path.read_text()


def test_rollout_shards_fan_out_with_parallel_for_and_fan_in_at_score(tmp_path):
    spec, platform = compile_ir(tmp_path, run_spec(rounds=2, shards=4))
    tasks = tasks_of(spec)
    loops = {name: t for name, t in tasks.items() if "parameterIterator" in t}
    assert len(loops) == 2  # one ParallelFor per round
    for k, (name, loop) in enumerate(sorted(loops.items(), key=lambda kv: kv[1]["taskInfo"]["name"]), start=1):
        assert loop["taskInfo"]["name"] == f"rollout_{k} x4 shards"
        items = [json.loads(s) for s in json.loads(loop["parameterIterator"]["items"]["raw"])]
        assert [(s["round"], s["shard"], s["num_shards"]) for s in items] == [(k, i, 4) for i in range(4)]
        assert loop["dependentTasks"] == (["sft"] if k == 1 else [f"update-{k - 1}"])
        # score_k waits on the loop through the collected Metrics of its shards
        score = tasks[f"score-{k}"]
        assert score["dependentTasks"] == [name]
        assert score["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]["producerTask"] == name
        inner = spec["components"][loop["componentRef"]["name"]]
        assert inner["outputDefinitions"]["artifacts"][f"pipelinechannel--rollout-{k}-metrics"]["isArtifactList"]
    assert "exec-rollout-1" in platform and platform["exec-rollout-1"]["nodeSelector"]["labels"]["pool"] == "gpu"


def test_compile_is_deterministic(tmp_path):
    run = run_spec(rounds=2, shards=2)
    a = compile_run(run, tmp_path / "a.yaml").read_bytes()
    b = compile_run(run, tmp_path / "b.yaml").read_bytes()
    assert a == b


@pytest.mark.parametrize("kwargs, message", [
    ({"store": "file://./runs"}, "store: 'file://./runs': a cluster run needs an s3:// store"),
    ({"run_id": "bad id"}, "run_id: 'bad id' must match"),
    ({"image": "has space:1"}, "image: 'has space:1'"),
])
def test_bad_targets_fail_naming_the_option(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        compile_run(run_spec(rounds=1), tmp_path / "p.yaml", **kwargs)
    assert not (tmp_path / "p.yaml").exists()


def test_update_as_trainjob_launcher(tmp_path):
    spec, platform = compile_ir(tmp_path, run_spec(rounds=1), trainer=TrainJobOptions(num_nodes=4))
    update = spec["deploymentSpec"]["executors"]["exec-update-1"]["container"]
    assert update["command"] == ["python", "-m", "maskgrpo.runners.kfp.trainer"]
    launch = json.loads(update["args"][update["args"].index("--launch") + 1])
    assert launch["options"]["num_nodes"] == 4 and launch["resources"]["accelerator_count"] == 2
    assert launch["s3_secret"] == "creds" and launch["image"] == "registry.example/maskgrpo:test"
    # the launcher pod itself is small and GPU-free; the GPUs are asked for by the TrainJob
    assert "accelerator" not in update["resources"] and update["resources"]["resourceCpuLimit"] == "500m"
    assert "nodeSelector" not in platform["exec-update-1"]
    assert spec["deploymentSpec"]["executors"]["exec-rollout-1"]["container"]["command"][-1] == "maskgrpo.stages.rollout"


def _commands(spec) -> dict[str, list[str]]:
    return {name: ex["container"]["command"] for name, ex in spec["deploymentSpec"]["executors"].items()}


def _with(run: RunSpec, **update) -> RunSpec:
    return RunSpec.model_validate({**run.model_dump(mode="json"), **update})


def test_deepspeed_update_and_sft_on_one_multi_gpu_node_run_under_torchrun(tmp_path):
    run = run_spec(rounds=1)
    four = {**GPU, "accelerator_count": 4}
    ds = _with(run, model={**run.model.model_dump(mode="json"), "deepspeed": {"enabled": True, "zero_stage": 3}},
               cluster={**run.cluster.model_dump(mode="json"),
                        "resources": {**run.cluster.resources.model_dump(mode="json"), "update": four, "sft": GPU}})
    commands = _commands(compile_ir(tmp_path, ds)[0])
    assert commands["exec-update-1"] == ["torchrun", "--standalone", "--nproc_per_node", "4", "-m", "maskgrpo.stages.update"]
    assert commands["exec-sft"] == ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "maskgrpo.stages.sft"]
    assert commands["exec-rollout-1"] == ["python", "-m", "maskgrpo.stages.rollout"]  # not a DeepSpeed stage
    # one accelerator (or none): the plain command, even with DeepSpeed on
    one = _with(ds, cluster={**ds.cluster.model_dump(mode="json"),
                             "resources": {**ds.cluster.resources.model_dump(mode="json"),
                                           "update": {**GPU, "accelerator_count": 1}, "sft": {"cpu": "2", "memory": "8Gi"}}})
    commands = _commands(compile_ir(tmp_path, one)[0])
    assert commands["exec-update-1"] == ["python", "-m", "maskgrpo.stages.update"]
    assert commands["exec-sft"] == ["python", "-m", "maskgrpo.stages.sft"]
    # DeepSpeed off: the plain command on a multi-GPU pod (run_spec's update asks for 2)
    assert _commands(compile_ir(tmp_path, run)[0])["exec-update-1"] == ["python", "-m", "maskgrpo.stages.update"]
    # a Trainer TrainJob launches the ranks itself: the KFP step stays the launcher
    trainer = _commands(compile_ir(tmp_path, ds, trainer=TrainJobOptions(num_nodes=2))[0])
    assert trainer["exec-update-1"] == ["python", "-m", "maskgrpo.runners.kfp.trainer"]


def test_llada_gsm8k_update_runs_under_torchrun_on_its_8_gpus(tmp_path):
    from pathlib import Path

    from maskgrpo.specs import load_run_spec

    run = load_run_spec(Path(__file__).resolve().parents[3] / "pipelines" / "llada-gsm8k.yaml")
    assert run.model.deepspeed.enabled and run.cluster.resources.update.accelerator_count == 8
    commands = _commands(compile_ir(tmp_path, run)[0])
    updates = {name: cmd for name, cmd in commands.items() if name.startswith("exec-update-")}
    assert updates and all(cmd == ["torchrun", "--standalone", "--nproc_per_node", "8", "-m", "maskgrpo.stages.update"]
                           for cmd in updates.values())
    assert commands["exec-sft"] == ["python", "-m", "maskgrpo.stages.sft"]  # its pod has one GPU
