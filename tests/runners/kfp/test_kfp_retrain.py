"""The retraining DAG on KFP (runners/kfp/pipeline.py, 8): resolve first and alone at the root,
every later task under resolve's ``skip`` dsl.If (a held lease ends the run as skipped), promote
only under the gate's dsl.If, the small CPU steps sized like the launcher. kfpc (KFP's own
backend compile and Argo's validation) checks the same package: tests/runners/kfp/test_kfpc.py."""

from pathlib import Path

import yaml

from maskgrpo.runners.kfp import compile_run
from maskgrpo.specs import load_run_spec

ROOT = Path(__file__).resolve().parents[3]


def condition(tasks: dict) -> tuple[str, dict]:
    (name,) = [k for k in tasks if k.startswith("condition-")]
    return name, tasks[name]


def test_the_tick_runs_only_when_the_lease_is_free_and_promotes_only_when_the_gate_says_so(tmp_path):
    out = compile_run(load_run_spec(ROOT / "pipelines" / "toy-retrain.yaml", ["rl.rounds=2"]), tmp_path / "p.yaml")
    spec, _platform = list(yaml.safe_load_all(out.read_text()))
    root = spec["root"]["dag"]["tasks"]
    name, lease_free = condition(root)
    assert sorted(root) == sorted(["resolve", name])  # nothing but resolve runs outside the lease check
    assert lease_free["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--resolve-skip'] == 'false'"
    assert lease_free["inputs"]["parameters"]["pipelinechannel--resolve-skip"]["taskOutputParameter"] == {
        "outputParameterKey": "skip", "producerTask": "resolve"}
    assert lease_free["dependentTasks"] == ["resolve"]
    resolve_comp = spec["components"][root["resolve"]["componentRef"]["name"]]
    assert resolve_comp["outputDefinitions"]["parameters"]["skip"]["parameterType"] == "STRING"

    tasks = spec["components"][lease_free["componentRef"]["name"]]["dag"]["tasks"]
    assert {"sft", "rollout-1", "update-2", "evaluate-0", "evaluate-2", "gate"} <= set(tasks) and "promote" not in tasks
    assert sorted(tasks["gate"]["dependentTasks"]) == ["evaluate-0", "evaluate-2"]
    _, cond = condition(tasks)
    assert cond["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--gate-promote'] == 'true'"
    assert cond["inputs"]["parameters"]["pipelinechannel--gate-promote"]["taskOutputParameter"] == {
        "outputParameterKey": "promote", "producerTask": "gate"}
    inner = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["promote"]
    gate_comp = spec["components"][tasks["gate"]["componentRef"]["name"]]
    assert gate_comp["outputDefinitions"]["parameters"]["promote"]["parameterType"] == "STRING"
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-resolve"]["container"]["resources"]["memoryLimit"] == 0.536870912  # 512Mi
    assert "--skip-path" in executors["exec-resolve"]["container"]["args"]
    assert executors["exec-promote"]["container"]["command"] == ["python", "-m", "maskgrpo.stages.promote"]


def test_a_pipeline_without_retrain_has_no_lease_condition(tmp_path):
    out = compile_run(load_run_spec(ROOT / "pipelines" / "toy-text.yaml"), tmp_path / "p.yaml")
    spec, _platform = list(yaml.safe_load_all(out.read_text()))
    assert not [k for k in spec["root"]["dag"]["tasks"] if k.startswith("condition-")]
