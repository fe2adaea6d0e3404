"""components/*.yaml: generated from the package, fresh, and usable from a user-written pipeline."""

import json
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl
from kfp.components import load_component_from_file

from maskgrpo.runners.kfp.components import DEFAULT_IMAGE, STAGE_KINDS, render_components, stage_component

ROOT = Path(__file__).resolve().parents[3]
COMPONENTS = ROOT / "components"


def test_committed_components_are_fresh():
    rendered = render_components()
    assert sorted(rendered) == sorted(STAGE_KINDS)
    stale = [k for k, text in rendered.items()
             if not (COMPONENTS / f"{k}.yaml").exists() or (COMPONENTS / f"{k}.yaml").read_text() != text]
    assert not stale, f"stale components {stale}: run `make generate` (python scripts/generate.py)"


def test_render_is_deterministic():
    assert render_components() == render_components()


@pytest.mark.parametrize("kind", STAGE_KINDS)
def test_component_interface(kind):
    spec, = yaml.safe_load_all((COMPONENTS / f"{kind}.yaml").read_text())
    comp = spec["components"][f"comp-{kind}"]
    params = comp["inputDefinitions"]["parameters"]
    assert params["spec"]["parameterType"] == "STRING" and "isOptional" not in params["spec"]
    assert params["run_id"] == {"defaultValue": "", "isOptional": True, "parameterType": "STRING"}
    assert {k: v["artifactType"]["schemaTitle"] for k, v in comp["outputDefinitions"]["artifacts"].items()} == {
        "metrics": "system.Metrics", "summary": "system.Markdown"}
    assert ("artifacts" in comp["inputDefinitions"]) == (kind == "score")  # score's optional collected shards
    container = spec["deploymentSpec"]["executors"][f"exec-{kind}"]["container"]
    assert container["image"] == DEFAULT_IMAGE
    assert container["command"] == ["python", "-m", f"maskgrpo.stages.{kind}"]
    args = container["args"]
    assert dict(zip(args[::2], args[1::2])) == {
        "--spec": "{{$.inputs.parameters['spec']}}",
        "--run-id": "{{$.inputs.parameters['run_id']}}",
        "--metrics-path": "{{$.outputs.artifacts['metrics'].path}}",
        "--summary-path": "{{$.outputs.artifacts['summary'].path}}",
        "--executor-input": "{{$}}",
        # the gate's decision, read by the dsl.If around the promote task (runners/kfp/pipeline.py)
        **({"--promote-path": "{{$.outputs.parameters['promote'].output_file}}"} if kind == "gate" else {}),
        # "true" while the previous tick holds the lease, read by the dsl.If around every later task
        **({"--skip-path": "{{$.outputs.parameters['skip'].output_file}}"} if kind == "resolve" else {}),
    }


def test_user_pipeline_loads_and_compiles_the_components(tmp_path):
    comps = {k: load_component_from_file(str(COMPONENTS / f"{k}.yaml")) for k in STAGE_KINDS}
    store, run = "s3://team-bucket/runs", "user-run"
    sft_spec = json.dumps({"kind": "sft", "store": store, "run_id": run})

    @dsl.pipeline(name="user-pipeline")
    def user_pipeline(run_id: str = run):
        sft = comps["sft"](spec=sft_spec, run_id=run_id).set_caching_options(False)
        with dsl.ParallelFor(items=["0", "1"]) as shard:
            rollout = comps["rollout"](spec=shard).after(sft)
        comps["score"](spec="{}", shards=dsl.Collected(rollout.outputs["metrics"]))
        comps["evaluate"](spec="{}").after(sft).set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
        comps["update"](spec="{}").after(sft)

    out = tmp_path / "user.yaml"
    compiler.Compiler().compile(user_pipeline, str(out))
    ir = yaml.safe_load(out.read_text())
    tasks = ir["root"]["dag"]["tasks"]
    assert {"sft", "for-loop-2", "score", "evaluate", "update"} <= set(tasks)
    assert json.loads(tasks["sft"]["inputs"]["parameters"]["spec"]["runtimeValue"]["constant"])["store"] == store
    assert tasks["score"]["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]["producerTask"] == "for-loop-2"
    executors = ir["deploymentSpec"]["executors"]
    assert executors["exec-evaluate"]["container"]["resources"]["accelerator"]["resourceCount"] == "1"
    assert executors["exec-update"]["container"]["command"][-1] == "maskgrpo.stages.update"


def test_unknown_kind_and_empty_image_are_refused():
    with pytest.raises(ValueError, match="unknown stage kind 'train'; valid: sft, rollout, score, update, evaluate"):
        stage_component("train", "img")
    with pytest.raises(ValueError, match="image: empty"):
        stage_component("sft", "")
