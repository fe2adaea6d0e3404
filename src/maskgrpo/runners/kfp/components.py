"""KFP container components: one per stage kind, all with the same thin interface.

A component is the project's image plus an argv carrying one stage spec (docs/design.md, "Style"):

    python -m maskgrpo.stages.<kind>
        --spec <stage spec JSON>            # the whole input; checkpoints/rollouts are store URIs in it
        --run-id <run id>                   # optional override of spec.run_id ("" = keep): a pipeline
                                            # parameter, so a recurring run can give each tick its own id
        --metrics-path <Metrics path>       # flat JSON {name: number}, uploaded as the Metrics artifact
        --summary-path <Markdown path>      # uploaded as the Markdown artifact the KFP UI renders
        --executor-input <KFP executor input JSON>
                                            # the stage copies its metrics into the executor output
                                            # file named in it (outputs.outputFile) as the Metrics
                                            # artifact's metadata: that is what the KFP UI's scalar
                                            # metrics view reads for container components

The gate component also writes ``promote`` ("true"/"false"), a string output parameter the
pipeline's ``dsl.If`` around the promote task reads; the resolve component writes ``skip``
("true" while the previous tick still holds the retraining lease), read by the ``dsl.If`` around
every later task. The score component also accepts ``shards``, the list of the round's rollout Metrics artifacts
gathered with ``dsl.Collected`` after a ``dsl.ParallelFor`` fan-out. It only orders the score after
every shard (KFP forbids a plain dependency on a task inside a loop); the rollouts themselves are
read from the store, never passed as artifacts.

``render_components()`` turns each into the KFP IR YAML committed under ``components/`` (written by
``scripts/generate.py``), loadable by any KFP pipeline with ``kfp.components.load_component_from_file``.
"""

# No `from __future__ import annotations`: KFP reads the component signatures at runtime.
import tempfile
from pathlib import Path
from typing import List

from kfp import compiler, dsl
from kfp.dsl.container_component_class import ContainerComponent

from maskgrpo.specs import ClusterSpec

__all__ = ["STAGE_KINDS", "DEFAULT_IMAGE", "stage_component", "render_components", "component_name"]

STAGE_KINDS = ("sft", "rollout", "score", "update", "evaluate", "resolve", "gate", "promote")
DEFAULT_IMAGE = ClusterSpec().image


def component_name(name: str) -> str:
    """A KFP-friendly component name: 'rollout_3' -> 'rollout-3' (KFP derives task keys from it)."""
    return name.replace("_", "-").lower()


def _argv(run_id: str, metrics: dsl.Output[dsl.Metrics], summary: dsl.Output[dsl.Markdown], spec: str) -> list:
    return [
        "--spec", spec,
        "--run-id", run_id,
        "--metrics-path", metrics.path,
        "--summary-path", summary.path,
        "--executor-input", dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER,
    ]


def stage_component(kind: str, image: str, *, name: str | None = None,
                    command: list[str] | None = None, extra_args: list[str] | None = None) -> "ContainerComponent":
    """The container component of one stage kind.

    ``name`` names the component (and so the KFP task key), e.g. 'score_3'; ``command`` replaces
    the default ``python -m maskgrpo.stages.<kind>`` (the Trainer launcher and torchrun on a
    multi-GPU pod use it, pipeline.py) and
    ``extra_args`` are appended after the standard arguments.
    """
    if kind not in STAGE_KINDS:
        raise ValueError(f"unknown stage kind {kind!r}; valid: {', '.join(STAGE_KINDS)}")
    if not image:
        raise ValueError("image: empty; give cluster.image in the pipeline document or --image")
    cmd = list(command or ["python", "-m", f"maskgrpo.stages.{kind}"])
    tail = list(extra_args or [])

    if kind == "gate":  # its decision as a string output parameter, for the pipeline's dsl.If around promote
        def fn(spec: str, metrics: dsl.Output[dsl.Metrics], summary: dsl.Output[dsl.Markdown],
               promote: dsl.OutputPath(str), run_id: str = ""):
            return dsl.ContainerSpec(image=image, command=cmd,
                                     args=_argv(run_id, metrics, summary, spec) + ["--promote-path", promote] + tail)
    elif kind == "resolve":  # "true" when the previous tick holds the lease: the pipeline's dsl.If skips the rest
        def fn(spec: str, metrics: dsl.Output[dsl.Metrics], summary: dsl.Output[dsl.Markdown],
               skip: dsl.OutputPath(str), run_id: str = ""):
            return dsl.ContainerSpec(image=image, command=cmd,
                                     args=_argv(run_id, metrics, summary, spec) + ["--skip-path", skip] + tail)
    elif kind == "score":
        def fn(spec: str, metrics: dsl.Output[dsl.Metrics], summary: dsl.Output[dsl.Markdown],
               run_id: str = "", shards: dsl.Input[List[dsl.Metrics]] = None):
            return dsl.ContainerSpec(image=image, command=cmd, args=_argv(run_id, metrics, summary, spec) + tail)
    else:
        def fn(spec: str, metrics: dsl.Output[dsl.Metrics], summary: dsl.Output[dsl.Markdown], run_id: str = ""):
            return dsl.ContainerSpec(image=image, command=cmd, args=_argv(run_id, metrics, summary, spec) + tail)

    fn.__name__ = component_name(name or kind)
    fn.__doc__ = (f"maskgrpo {kind} stage: `{' '.join(cmd)} --spec <{kind} spec JSON>`; "
                  "reads and writes the object store named in the spec.")
    return dsl.container_component(fn)


def render_components(image: str = DEFAULT_IMAGE) -> dict[str, str]:
    """Each stage kind's component as KFP IR YAML text, keyed by kind (deterministic)."""
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in STAGE_KINDS:
            path = Path(tmp) / f"{kind}.yaml"
            compiler.Compiler().compile(stage_component(kind, image), str(path))
            out[kind] = path.read_text()
    return out
