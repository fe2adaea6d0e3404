"""RunSpec -> a KFP v2 pipeline (the plan's DAG as container tasks) and its compiled package.

    maskgrpo compile pipelines/toy-text.yaml -o toy-text.kfp.yaml [--image IMAGE] [--run-id ID] [--store URI]

1. One task per ``StageCall`` of ``build_plan`` (task key = call name, e.g. ``update-3``), each a
   container component (``components.py``) whose only input is the stage spec JSON; checkpoints
   and rollouts move through the object store as URIs inside the specs, never as KFP artifacts.
2. Rollout shards (``cluster.rollout_shards`` > 1) run as ``dsl.ParallelFor`` over the shard specs
   (precomputed, one JSON per shard); the score task collects their Metrics (``dsl.Collected``),
   which orders it after every shard, and merges the shards from the store.
3. Pods from ``cluster.resources.<kind>``: CPU and memory requests = limits, accelerator type and
   count, node selector, tolerations; a memory-backed ``/dev/shm`` for torch; S3 credentials from
   the Secret ``cluster.s3_secret`` as env vars (``kubernetes.use_secret_as_env``), never inlined.
4. Caching is off for every task (every stage reads and writes the store; the store's own
   spec-hash check decides what to skip); retries ``cluster.retries`` with exponential backoff.
5. The pipeline has one parameter, ``run_id`` (default: ``--run-id``, else the pipeline name), so
   compilation is deterministic (byte-identical YAML). Submitting again with the same run id
   resumes: stages whose committed output matches their spec hash are skipped. A recurring run
   passes ``<run id>-[[ScheduledTime]]`` so each tick trains afresh.
6. Optional: ``trainer=TrainJobOptions(...)`` runs each update as a Kubeflow Trainer TrainJob
   (``trainer.py``), launched and awaited by a small CPU step.
7. One multi-GPU node: with ``model.deepspeed.enabled``, an update (and an SFT) whose pod has
   ``accelerator_count`` > 1 runs ``torchrun --standalone --nproc_per_node <count> -m
   maskgrpo.stages.<kind>``, one DeepSpeed rank per GPU (stages/distributed.py); otherwise the
   command stays ``python -m maskgrpo.stages.<kind>``.
8. Retraining (``retrain`` in the document): resolve (pins the registry champion and the data
   snapshot) -> sft (the champion passed through) -> rounds -> evaluate -> gate (challenger vs
   evaluate_0) -> promote, the last under ``dsl.If(gate.promote == "true")``. Everything after
   resolve sits under ``dsl.If(resolve.skip == "false")``: while the previous tick still holds
   the lease, resolve exits 0 with ``skip`` = true and the holder's name in its summary, and the
   run ends with the rest skipped, not failed. Schedule it with ``max_concurrency`` 1.
"""

# No `from __future__ import annotations`: KFP reads the pipeline signature at runtime.
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

from maskgrpo.plan import StageCall, build_plan
from maskgrpo.specs import RunSpec, StageResources
from maskgrpo.store.layout import RUN_ID_PATTERN

from .components import stage_component
from .trainer import TrainJobLaunch, TrainJobOptions

__all__ = ["build_pipeline", "compile_run", "resolve_target", "stage_command", "S3_SECRET_KEYS", "S3_SECRET_OPTIONAL_KEYS"]

S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_SECRET_OPTIONAL_KEYS = ("MASKGRPO_S3_ENDPOINT_URL", "AWS_REGION")
RETRY_BACKOFF = dict(backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="3600s")
LAUNCHER_RESOURCES = StageResources(cpu="500m", memory="512Mi")
_RUN_ID = re.compile(RUN_ID_PATTERN)  # the store's grammar (store/layout.py): one rule


def resolve_target(run: RunSpec, *, image: str | None = None, run_id: str | None = None,
                   store: str | None = None) -> tuple[str, str, str]:
    """(image, run_id, store) after the command-line overrides, validated with clear errors."""
    image = image or run.cluster.image
    run_id = run_id or run.name
    store = (store or run.cluster.store).rstrip("/")
    if not image or any(c.isspace() for c in image):
        raise ValueError(f"image: {image!r} is not a container image reference (cluster.image or --image)")
    if not _RUN_ID.match(run_id):
        raise ValueError(f"run_id: {run_id!r} must match {_RUN_ID.pattern} (--run-id)")
    if not store.startswith("s3://") or len(store) <= len("s3://"):
        raise ValueError(f"store: {store!r}: a cluster run needs an s3:// store that every pod can reach "
                         "(cluster.store or --store)")
    return image, run_id, store


def _configure(task: dsl.PipelineTask, res: StageResources, *, display: str, retries: int, s3_secret: str) -> None:
    task.set_display_name(display)
    task.set_caching_options(False)
    if retries:
        task.set_retry(retries, **RETRY_BACKOFF)
    task.set_cpu_request(res.cpu).set_cpu_limit(res.cpu)
    task.set_memory_request(res.memory).set_memory_limit(res.memory)
    if res.accelerator_count:
        task.set_accelerator_type(res.accelerator_type).set_accelerator_limit(res.accelerator_count)
    for key, value in sorted(res.node_selector.items()):
        kubernetes.add_node_selector(task, key, value)
    for tol in res.tolerations:
        kubernetes.add_toleration(task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
    kubernetes.use_secret_as_env(task, s3_secret, {k: k for k in S3_SECRET_KEYS})
    kubernetes.use_secret_as_env(task, s3_secret, {k: k for k in S3_SECRET_OPTIONAL_KEYS}, optional=True)


def stage_command(call: StageCall, run: RunSpec, res: StageResources) -> list[str] | None:
    """torchrun over the pod's GPUs for a DeepSpeed update or SFT (either modality) on more than
    one accelerator (module docstring, 7); None keeps the component's default command."""
    if not run.model.deepspeed.enabled or res.accelerator_count <= 1:
        return None
    if call.kind in ("update", "sft"):
        return ["torchrun", "--standalone", "--nproc_per_node", str(res.accelerator_count),
                "-m", f"maskgrpo.stages.{call.kind}"]
    return None


def _rounds_of_shards(calls: list[StageCall]) -> dict[int, list[StageCall]]:
    shards: dict[int, list[StageCall]] = {}
    for call in calls:
        if call.kind == "rollout" and call.spec.num_shards > 1:
            shards.setdefault(call.round, []).append(call)
    return shards


def build_pipeline(run: RunSpec, *, image: str | None = None, run_id: str | None = None, store: str | None = None,
                   trainer: TrainJobOptions | None = None) -> Any:
    """The KFP pipeline (a GraphComponent) of ``run``; compile it with ``kfp.compiler``."""
    image, default_run_id, store = resolve_target(run, image=image, run_id=run_id, store=store)
    calls = build_plan(run, default_run_id, store)
    sharded = _rounds_of_shards(calls)
    shard_names = {c.name for group in sharded.values() for c in group}
    cluster = run.cluster
    launch = None
    if trainer is not None:
        launch = TrainJobLaunch(options=trainer, image=image, s3_secret=cluster.s3_secret,
                                resources=cluster.resources.update, trainer_api=cluster.trainer_api).model_dump_json()

    def body(run_id: str = default_run_id) -> None:
        tasks: dict[str, Any] = {}  # call name -> task; every shard of a round maps to the loop's task
        with ExitStack() as lease_free:  # retraining: every task after resolve runs under its dsl.If
            tick(run_id, tasks, lease_free)

    def tick(run_id: str, tasks: dict[str, Any], lease_free: ExitStack) -> None:
        for call in calls:
            if call.name in tasks:
                continue
            res = getattr(cluster.resources, call.kind, LAUNCHER_RESOURCES)  # resolve/gate/promote: small CPU steps
            component_args: dict[str, Any] = {}
            if call.kind == "update" and launch is not None:
                comp = stage_component("update", image, name=call.name,
                                       command=["python", "-m", "maskgrpo.runners.kfp.trainer"],
                                       extra_args=["--launch", launch])
                res = LAUNCHER_RESOURCES
            else:  # a round's shards share one component and task, named after the round
                sharded_round = call.kind == "rollout" and call.round in sharded
                comp = stage_component(call.kind, image, name=f"rollout_{call.round}" if sharded_round else call.name,
                                       command=stage_command(call, run, res))
            upstream = [tasks[name] for name in call.after if name not in shard_names]
            loops = list(dict.fromkeys(tasks[name] for name in call.after if name in shard_names))
            if loops:  # fan-in after a ParallelFor: only the score stage merges shards
                if call.kind != "score" or len(loops) != 1:
                    raise ValueError(f"{call.name}: only a score stage can wait on one round's sharded rollouts")
                component_args["shards"] = dsl.Collected(loops[0].outputs["metrics"])

            if call.kind == "rollout" and call.round in sharded:
                group = sharded[call.round]
                with dsl.ParallelFor(items=[c.spec.model_dump_json() for c in group],
                                     name=f"rollout_{call.round} x{len(group)} shards") as shard_spec:
                    task = comp(spec=shard_spec, run_id=run_id)
                    display = f"rollout_{call.round} (shard)"
                    for c in group:
                        tasks[c.name] = task
            elif call.kind == "promote":  # only when the gate said so (retraining, module docstring 8)
                with dsl.If(tasks["gate"].outputs["promote"] == "true", name="gate-says-promote"):
                    task = comp(spec=call.spec.model_dump_json(), run_id=run_id)
                    _configure(task, res, display=call.name, retries=cluster.retries, s3_secret=cluster.s3_secret)
                tasks[call.name] = task
                continue
            else:
                task = comp(spec=call.spec.model_dump_json(), run_id=run_id, **component_args)
                display = call.name
                tasks[call.name] = task
            if upstream:
                task.after(*dict.fromkeys(upstream))
            _configure(task, res, display=display, retries=cluster.retries, s3_secret=cluster.s3_secret)
            if call.kind == "resolve":  # the previous tick still holds the lease: skip the rest (module docstring, 8)
                lease_free.enter_context(dsl.If(task.outputs["skip"] == "false", name="lease-free"))

    body.__name__ = run.name.replace("-", "_")
    return dsl.pipeline(name=run.name, description=run.description or f"maskgrpo pipeline {run.name}")(body)


def compile_run(run: RunSpec, output: Path, *, image: str | None = None, run_id: str | None = None,
                store: str | None = None, trainer: TrainJobOptions | None = None) -> Path:
    """Compile ``run`` to a KFP package (IR YAML) at ``output``; deterministic. Returns ``output``."""
    output = Path(output)
    pipeline = build_pipeline(run, image=image, run_id=run_id, store=store, trainer=trainer)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(output))
    return output
