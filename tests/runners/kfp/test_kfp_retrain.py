"""The retraining DAG on KFP (runners/kfp/pipeline.py, 8): resolve first, promote only under the
gate's dsl.If, the small CPU steps sized like the launcher."""

from pathlib import Path

import yaml

from maskgrpo.runners.kfp import compile_run
from maskgrpo.specs import load_run_spec

ROOT = Path(__file__).resolve().parents[3]


def test_promote_runs_only_when_the_gate_says_so(tmp_path):
    out = compile_run(load_run_spec(ROOT / "pipelines" / "toy-retrain.yaml", ["rl.rounds=2"]), tmp_path / "p.yaml")
    spec, _platform = list(yaml.safe_load_all(out.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    assert "resolve" in tasks and tasks["sft"]["dependentTasks"] == ["resolve"]
    assert sorted(tasks["gate"]["dependentTasks"]) == ["evaluate-0", "evaluate-2"]
    assert "promote" not in tasks
    (cond_name,) = [k for k in tasks if k.startswith("condition-")]
    cond = tasks[cond_name]
    assert cond["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--gate-promote'] == 'true'"
    assert cond["inputs"]["parameters"]["pipelinechannel--gate-promote"]["taskOutputParameter"] == {
        "outputParameterKey": "promote", "producerTask": "gate"}
    inner = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["promote"]
    gate_comp = spec["components"][tasks["gate"]["componentRef"]["name"]]
    assert gate_comp["outputDefinitions"]["parameters"]["promote"]["parameterType"] == "STRING"
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-resolve"]["container"]["resources"]["memoryLimit"] == 0.536870912  # 512Mi
    assert executors["exec-promote"]["container"]["command"] == ["python", "-m", "maskgrpo.stages.promote"]
