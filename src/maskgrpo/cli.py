"""The ``maskgrpo`` command line.

    maskgrpo run PIPELINE.yaml [--store URI] [--run-id ID] [--set key=value ...] [--resume] [--runner plain|prefect] [--log-format text|json] [--threads N]
    maskgrpo validate PIPELINE.yaml [--set key=value ...] [--store URI] [--offline]   document + sources and datasets exist
    maskgrpo config PIPELINE.yaml [--set key=value ...]    the resolved document, defaults included
    maskgrpo list tasks|rewards|estimators|samplers       registered names, one-line descriptions, params
    maskgrpo plan PIPELINE.yaml [--dump DIR] [--store URI] [--run-id ID]   the stage calls; their spec JSON files
    maskgrpo show RUN_URI                       e.g. file://./runs/toy-text-20261129-101500
    maskgrpo compile PIPELINE.yaml -o PACKAGE.yaml [--image IMAGE] [--run-id ID] [--store URI]
    maskgrpo submit PIPELINE.yaml --host URL [--experiment NAME] [--namespace NS] ...
    maskgrpo schedule PIPELINE.yaml (--host URL | --local) --cron EXPR [--max-concurrency N] ...
    maskgrpo gc STORE_URI [--run-id ID] [--dry-run] [--min-age SECONDS]
    maskgrpo merge ADAPTER_DIR OUT_DIR [--base BASE_DIR]    fold LoRA adapters into full weights
    maskgrpo import CHECKPOINT_DIR STORE_URI/NAME           commit a checkpoint folder as a model.source
    maskgrpo export SOURCE OUT_DIR [--base SOURCE]          a run's checkpoint (store URI or folder), LoRA merged
    maskgrpo serve-reward NAME [--host 127.0.0.1] [--port 8000]   a registered reward over HTTP/JSON
    maskgrpo models list|show|promote|rollback|export|gc STORE_URI [NAME ...]   the model registry
    maskgrpo retrain-ticks PIPELINE.yaml --ticks N [--bad-tick K]   simulate scheduled retraining
    maskgrpo serve-sandbox [--host 127.0.0.1] [--port 8001]      the code reward's sandbox, without credentials

Exit status: 0 success, 2 invalid document or arguments (nothing was written), 1 a failure while
running (the message names the stage, file or URI), 130/143 a run stopped by SIGINT/SIGTERM
(resumable; the message gives the command). Tracebacks only with --debug.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from maskgrpo import __version__

DEFAULT_STORE = "file://./runs"
# optional dependency (top-level module) -> the extra of pyproject.toml that installs it
EXTRAS = {"kfp": "cluster", "kubernetes": "cluster", "prefect": "local", "matplotlib": "local", "s3fs": "s3",
          "boto3": "s3", "peft": "train", "deepspeed": "train"}


def _fail(message: str, code: int = 1) -> int:
    print(f"maskgrpo: error: {message}", file=sys.stderr)
    return code


def _load(args: argparse.Namespace):
    """The validated pipeline document of ``args`` (and its --run-id, checked before anything starts)."""
    from maskgrpo.specs import check_run_id, load_run_spec

    if getattr(args, "run_id", None):
        check_run_id(args.run_id)
    return load_run_spec(args.pipeline, args.set)


def _preflight(args: argparse.Namespace, run) -> int:
    """Every model source and dataset of ``run`` exists (maskgrpo/preflight.py): 0, or 2 after one
    line per problem. ``--offline`` skips it."""
    if getattr(args, "offline", False):
        return 0
    from maskgrpo.preflight import check_sources

    problems = check_sources(run, args.store)
    for line in problems:
        _fail(line)
    return 2 if problems else 0


def cmd_plan(args: argparse.Namespace) -> int:
    """The stage calls of a document in order; ``--dump DIR``: each call's spec as DIR/NN-<name>.json,
    runnable as ``python -m maskgrpo.stages.<kind> --spec @DIR/NN-<name>.json``."""
    from maskgrpo.plan import build_plan
    from maskgrpo.store import open_store

    run = _load(args)
    store_uri = open_store(args.store).uri  # normalised; nothing is contacted
    calls = build_plan(run, args.run_id or run.name, store_uri)
    out = Path(args.dump) if args.dump else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    width = len(str(len(calls) - 1))
    for i, call in enumerate(calls):
        after = f"  after {', '.join(call.after)}" if call.after else ""
        line = f"{i:0{width}d}  {call.name:<16} {call.kind:<9} -> {call.ref}{after}"
        if out is not None:
            path = out / f"{i:0{width}d}-{call.name}.json"
            path.write_text(call.spec.model_dump_json(indent=2) + "\n")
            line += f"\n      python -m maskgrpo.stages.{call.kind} --spec @{path}"
        print(line)
    print(f"{len(calls)} stage calls of {run.name}, run id {args.run_id or run.name}, store {store_uri}"
          + (f"; specs in {out}/" if out is not None else ""))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    run = _load(args)
    if code := _preflight(args, run):
        return code
    print(f"{args.pipeline}: valid ({run.name}: task {run.task.name}, {run.rl.rounds} rounds, estimator {run.rl.estimator})")
    return 0


def _resume_command(args: argparse.Namespace, store_uri: str, run_id: str) -> str:
    parts = ["maskgrpo", "run", str(args.pipeline), "--store", store_uri, "--run-id", run_id, "--resume"]
    for item in args.set:
        parts += ["--set", item]
    if args.runner != "plain":
        parts += ["--runner", args.runner]
    return " ".join(shlex.quote(p) for p in parts)


def cmd_run(args: argparse.Namespace) -> int:
    run = _load(args)  # the document and --run-id, before any store or orchestrator is touched
    if args.resume and not args.run_id:
        return _fail("--resume needs the --run-id of the run to resume", 2)
    if code := _preflight(args, run):  # sources and datasets, before any store is written or runner started
        return code
    from maskgrpo.threads import apply_threads

    threads = apply_threads(args.threads)  # torch's intra-op threads, for every stage of this run
    from maskgrpo.runners.local.plain import Interrupted, default_run_id, stop_on_signals
    from maskgrpo.runners.local.output import Output
    from maskgrpo.store import open_store

    store = open_store(args.store)
    run_id = args.run_id or default_run_id(run)
    store.check_reachable()
    if not args.resume and run_id in store.list_runs():
        return _fail(f"run {run_id!r} already exists in {store.uri}; pass --resume to continue it, or another --run-id", 2)
    out = Output(args.log_format)
    out.event("run", f"maskgrpo {__version__}: running {run.name} as {run_id} in {store.uri} ({threads} torch thread{'s' * (threads != 1)})",
              pipeline=run.name, run_id=run_id, store=store.uri, runner=args.runner, version=__version__, threads=threads)
    with stop_on_signals():
        try:
            if args.runner == "prefect":
                from maskgrpo.runners.local.flow import configure_prefect

                configure_prefect()
                from maskgrpo.runners.local.flow import run_pipeline_flow

                summary = run_pipeline_flow.with_options(name=f"maskgrpo-{run.name}")(
                    str(args.pipeline), store.uri, run_id, list(args.set), args.resume, args.log_format
                )
            else:
                from maskgrpo.runners.local.plain import run_pipeline

                summary = run_pipeline(run, store.uri, run_id, echo=out.line, on_start=out.stage_start,
                                       on_done=out.stage_done)
        except Interrupted as stop:
            where = f" during {stop.stage}" if stop.stage else ""
            out.error(f"stopped by {stop}{where}: the running stage was abandoned, committed stages are kept; "
                      f"resume with: {_resume_command(args, store.uri, run_id)}")
            return stop.exit_code
    from maskgrpo.runners.local.report import CURVE, REPORT, SUMMARY, format_table

    if summary.get("skipped"):
        return 0
    base = store.url(run_id)
    out.event("summary", f"{format_table(summary)}\nsummary: {base}/{SUMMARY}\nreport:  {base}/{REPORT} ({CURVE})",
              summary=summary)
    return 0


def _split_run_uri(uri: str) -> tuple[str, str]:
    root, _, run_id = uri.rstrip("/").rpartition("/")
    if not root or not run_id:
        raise ValueError(f"{uri!r} is not a run URI (<store>/<run_id>)")
    return root, run_id


def cmd_show(args: argparse.Namespace) -> int:
    from maskgrpo.store import StoreError, open_store

    root, run_id = _split_run_uri(args.run_uri)
    store = open_store(root)
    store.check_reachable()
    stages = store.list_stages(run_id)
    if not stages:
        return _fail(f"no run {run_id!r} in {store.uri} (runs there: {', '.join(store.list_runs()) or 'none'})")
    print(f"run {run_id} in {store.uri}")
    for s in stages:
        state = "committed" if s["committed"] else "uncommitted"
        print(f"  {s['stage']:<12} round {s['round']!s:<4} {state:<12} {s.get('n_files', 0):>3} files  {s.get('total_bytes', 0) / 1e6:8.2f} MB")
        if s["committed"]:  # each folder of the output (a checkpoint: what `maskgrpo merge` takes)
            committed = store.open(run_id, s["stage"], s["round"])
            for folder in committed.manifest.get("dirs", []):
                url = committed.url(folder)
                print(f"    {folder}: {url[len('file://'):] if url.startswith('file://') else url}")
    try:
        summary = json.loads(store.read_run_file(run_id, "summary.json"))
    except StoreError:
        print("  (no summary.json yet: the run has not finished)")
        return 0
    from maskgrpo.runners.local.report import format_table

    print(format_table(summary))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from maskgrpo.runners.kfp import compile_run

    path = compile_run(_load(args), Path(args.output), image=args.image, run_id=args.run_id, store=args.store)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


@contextmanager
def _kfp_host(host: str) -> Iterator[None]:
    """One line for an unreachable or failing KFP API, not urllib3's retry traceback."""
    import warnings
    from urllib.parse import urlsplit

    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in host:
        raise ValueError(f"--host {host!r}: expected the KFP API URL, http(s)://host[:port][/path]")

    warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline", category=FutureWarning)
    import urllib3

    try:
        yield
    except urllib3.exceptions.HTTPError as err:
        reason = getattr(err, "reason", None) or err
        raise RuntimeError(f"cannot reach the KFP API at {host}: {reason}") from None


def cmd_submit(args: argparse.Namespace) -> int:
    from maskgrpo.runners.kfp import submit_run

    with _kfp_host(args.host):
        run_id = submit_run(_load(args), host=args.host, experiment=args.experiment, namespace=args.namespace,
                            image=args.image, run_id=args.run_id, store=args.store)
    print(f"submitted: KFP run {run_id}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    if args.local:
        from maskgrpo.runners.local.schedule import schedule_local

        schedule_local(Path(args.pipeline), args.cron, store=args.store or DEFAULT_STORE, overrides=list(args.set))
        return 0
    if not args.host:
        return _fail("schedule needs --host URL (KFP) or --local (Prefect)", 2)
    from maskgrpo.runners.kfp import schedule_run

    with _kfp_host(args.host):
        recurring = schedule_run(_load(args), host=args.host, cron=args.cron, max_concurrency=args.max_concurrency,
                                 experiment=args.experiment, namespace=args.namespace, image=args.image,
                                 run_id=args.run_id, store=args.store)
    print(f"scheduled: KFP recurring run {recurring}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from maskgrpo.store import open_store

    store = open_store(args.store)
    store.check_reachable()
    removed = store.gc(args.run_id, dry_run=args.dry_run, min_age_s=args.min_age)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(removed)} orphan attempt(s)", *removed, sep="\n  ")
    return 0


def _pins(value: str | None) -> dict | bool:
    """--trust-remote-code: the {file: sha256} pins as JSON text or @file (what `import` prints)."""
    if not value:
        return False
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        pins = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"--trust-remote-code: expected the JSON object of pins printed by `maskgrpo import`, got {value!r}") from None
    if not isinstance(pins, dict):
        raise ValueError("--trust-remote-code: expected a JSON object {file: sha256}")
    return pins


def cmd_merge(args: argparse.Namespace) -> int:
    from maskgrpo.models.lora import merge_adapters

    out = merge_adapters(args.adapter_dir, args.out_dir, args.base, trust_remote_code=_pins(args.trust_remote_code))
    print(f"wrote merged checkpoint {out}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from maskgrpo.store import open_store

    store = open_store(args.store)
    if args.models_command == "list":
        names = store.models()
        if not names:
            print(f"no models registered in {store.uri}")
        for name in names:
            reg = store.registry(name)
            a = reg.aliases()
            print(f"{name:<24} champion v{a['champion']}  previous v{a['previous']}  "
                  f"{len(reg.version_numbers())} version(s), {len(reg.orphans())} orphan(s)")
        return 0
    reg = store.registry(args.name)
    if args.models_command == "show":
        version = reg.resolve(args.version)
        if version is None:
            return _fail(f"model {args.name!r} has no {args.version} in {store.uri}")
        a = reg.aliases()
        print(f"model {args.name} in {store.uri}: champion v{a['champion']}, previous v{a['previous']}")
        for doc in reg.lineage(version):
            m, gate = doc.get("metrics", {}), doc.get("gate", {})
            snap = doc.get("data_snapshot") or {}
            print(f"  v{doc['version']}  parent v{doc.get('parent')}  run {doc['run_id']}  accuracy {m.get('accuracy')}  "
                  f"gate {gate.get('decision')} {gate.get('diff', 0):+.3f}  data {len(snap.get('files', []))} file(s)  "
                  f"pipeline {doc.get('pipeline_hash', '')[:12]}  code {doc.get('code_version')}")
            print(f"      checkpoint {doc['checkpoint']['uri']}")
        for h in a.get("history", [])[-10:]:
            print(f"  {h['at']}  {h['event']:<8} champion v{h['champion']}  previous v{h['previous']}")
        return 0
    if args.models_command == "promote":
        expected = reg.aliases()["champion"] if args.expected is None else args.expected
        reg.promote(reg.resolve(args.version), expected, reason=f"manual: {args.reason}")
    elif args.models_command == "rollback":
        reg.rollback()
    elif args.models_command == "gc":
        removed = reg.gc(dry_run=args.dry_run, min_age_s=args.min_age)
        print(f"{'would remove' if args.dry_run else 'removed'} {len(removed)} orphan version(s)", *removed, sep="\n  ")
        return 0
    elif args.models_command == "export":
        export_version(store, reg, args.version, Path(args.out_dir), args.base, args.trust_remote_code)
        return 0
    a = reg.aliases()
    print(f"model {args.name}: champion v{a['champion']}, previous v{a['previous']}")
    return 0


def export_version(store, reg, ref: str, out_dir: Path, base: str | None, trust_remote_code: str | None) -> Path:
    """A version's checkpoint as a plain transformers folder through `maskgrpo export` (LoRA merged)."""
    version = reg.resolve(ref)
    if version is None:
        raise ValueError(f"model {reg.name!r} has no {ref}")
    pinned = reg.checkpoint(version)  # verifies the pin
    current = store.committed(pinned.run_id, pinned.stage, pinned.round)
    if current is None or current.attempt_id != pinned.attempt_id:
        raise RuntimeError(f"version {version} of {reg.name!r}: {pinned.uri} is no longer the committed output of "
                           f"{pinned.run_id}/{pinned.stage}/{pinned.round}")
    source = f"{store.uri.rstrip('/')}/{pinned.run_id}/{pinned.stage}/{pinned.round}"
    cmd_export(argparse.Namespace(source=source, out_dir=str(out_dir), base=base, trust_remote_code=trust_remote_code))
    return out_dir


def cmd_retrain_ticks(args: argparse.Namespace) -> int:
    from maskgrpo.runners.local.flow import configure_prefect
    from maskgrpo.threads import apply_threads

    apply_threads()  # the default rule of threads.py, as `maskgrpo run` without --threads

    configure_prefect()
    from maskgrpo.runners.local.schedule import format_ticks, simulate_ticks

    rows = simulate_ticks(args.pipeline, ticks=args.ticks, store=args.store, data_dir=Path(args.data_dir),
                          bad_ticks=tuple(args.bad_tick), overrides=list(args.set))
    print(format_ticks(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from maskgrpo.models.adapters import adapter_for
    from maskgrpo.models.remote_code import code_digests
    from maskgrpo.models.loading import import_checkpoint

    folder = Path(args.checkpoint_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such checkpoint folder")
    adapter = adapter_for(folder) if (folder / "config.json").exists() else None  # a VQ decoder may have none
    root, _, name = args.dest.rstrip("/").rpartition("/")
    if "://" not in root or not name:
        raise ValueError(f"import destination {args.dest!r}: expected <store-root>/<name>, e.g. s3://maskgrpo/models/llada-8b-instruct")
    source = import_checkpoint(folder, root, name)
    print(f"imported {folder} as {source} (use it as model.source)")
    pins = code_digests(folder)
    if adapter in ("llada", "mmada"):
        print(f"model_type {adapter}: loaded by maskgrpo's native class; its code files are not run "
              f"({', '.join(pins) or 'none'}): no trust_remote_code needed")
    elif pins:
        print("it holds code files; to run them (review them first), pin them in the pipeline's model section:\n"
              f"  trust_remote_code: {json.dumps(pins)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import shutil

    from maskgrpo.models.lora import ADAPTER_CONFIG, merge_adapters
    from maskgrpo.models.loading import local_source

    src, out = local_source(args.source), Path(args.out_dir)
    if not (src / ADAPTER_CONFIG).exists():
        shutil.copytree(src, out, dirs_exist_ok=True)  # full weights already
        print(f"wrote checkpoint {out} (full weights, copied)")
        return 0
    base = args.base or json.loads((src / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{src / ADAPTER_CONFIG} names no base model: pass --base")
    merge_adapters(src, out, local_source(base), trust_remote_code=_pins(args.trust_remote_code))
    print(f"wrote merged checkpoint {out} (LoRA adapters of {args.source} folded into {base})")
    return 0


def cmd_serve_reward(args: argparse.Namespace) -> int:
    from maskgrpo.rewards import get_reward
    from maskgrpo.rewards.server import serve_reward

    get_reward(args.name)  # an unknown name fails now, listing the valid ones
    print(f"serving reward {args.name!r} on http://{args.host}:{args.port}/ (POST JSON; GET /health)", flush=True)
    try:
        serve_reward(args.name, args.host, args.port)
    except OSError as err:  # a bad --host, a port in use or privileged
        raise RuntimeError(f"cannot serve on {args.host}:{args.port}: {err.strerror or err}") from None
    return 0


def _signature(fn, keyword_only: bool) -> str:
    """``name=default, ...`` of the parameters a document may set (``params``)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ""
    kinds = (inspect.Parameter.KEYWORD_ONLY,) if keyword_only else (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}"
                     for p in params if p.kind in kinds and p.name != "self")


def _first_line(obj) -> str:
    return ((obj.__doc__ or "").strip().splitlines() or [""])[0]


def cmd_list(args: argparse.Namespace) -> int:
    from typing import get_args

    from maskgrpo.specs import ImageSamplerSpec, RlSpec, TextSamplerSpec

    rows: list[tuple[str, str, str]] = []
    if args.what in ("tasks", "rewards"):
        if args.what == "tasks":
            from maskgrpo.tasks import _REGISTRY as registry
        else:
            from maskgrpo.rewards import _REGISTRY as registry
        for name in registry.names():
            try:
                obj = registry.load(name)
            except ImportError as err:  # an optional dependency of that one entry
                rows.append((name, "", f"(cannot import: {err})"))
                continue
            modality = getattr(obj, "modality", None) if args.what == "tasks" else None
            rows.append((name, _signature(obj, keyword_only=args.what == "rewards"),
                         (f"[{modality}] " if isinstance(modality, str) else "") + _first_line(obj)))
    elif args.what == "estimators":
        import re

        from maskgrpo.core import importance  # the module docstring describes each estimator

        for name in get_args(RlSpec.model_fields["estimator"].annotation):
            found = re.search(rf"``{name}``: (.*?)(?:\n\d\. |\n\n)", importance.__doc__ or "", flags=re.S)
            rows.append((name, "", " ".join(found.group(1).split()) if found else ""))
    else:  # samplers
        for name in get_args(TextSamplerSpec.model_fields["remasking"].annotation):
            rows.append((f"text/{name}", "", "rl.sampler.remasking: semi-AR text sampling, " + name.replace("_", " ")))
        field = ImageSamplerSpec.model_fields["sampler"]
        for name in get_args(field.annotation):
            rows.append((f"image/{name}", "", f"image sampler {name!r}; {field.description}"))
    width = max(len(r[0]) for r in rows)
    for name, params, text in rows:
        print(f"{name:<{width}}  {text}" + (f"\n{'':<{width}}  params: {params}" if params else ""))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    print(yaml.safe_dump(_load(args).model_dump(mode="json"), sort_keys=False, width=110), end="")
    return 0


def cmd_serve_sandbox(args: argparse.Namespace) -> int:
    from maskgrpo.rewards.sandbox_service import make_sandbox_server, serve_forever

    server = make_sandbox_server(args.host, args.port, insecure=args.insecure)  # checks its layers first
    print(f"serving the code sandbox on http://{args.host}:{server.server_address[1]}/run", flush=True)
    serve_forever(server, "sandbox")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskgrpo", description="MaskGRPO for masked diffusion models, as a pipeline.",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"maskgrpo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def doc(p: argparse.ArgumentParser, sets: bool = True) -> None:
        p.add_argument("pipeline", type=Path, help="pipeline document (RunSpec YAML)")
        if sets:
            p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="override a field, e.g. --set rl.rounds=2 (repeatable)")

    def cluster(p: argparse.ArgumentParser) -> None:
        p.add_argument("--image", help="container image of the stages (default: cluster.image)")
        p.add_argument("--run-id", help="run id in the store (default: the pipeline name)")
        p.add_argument("--store", help="s3:// store URI (default: cluster.store)")

    def offline(p: argparse.ArgumentParser) -> None:
        p.add_argument("--offline", action="store_true",
                       help="skip the pre-flight check that every model source and dataset (file, s3://, registry:) exists")

    p = sub.add_parser("run", help="run a pipeline on this machine (in this process, or --runner prefect; local or s3 store)",
                       epilog="Tracking: TensorBoard event files beside the run (the tracking extra); with "
                              "MLFLOW_TRACKING_URI=http(s)://... also an MLflow run (MLFLOW_EXPERIMENT_NAME).")
    doc(p)
    p.add_argument("--store", default=DEFAULT_STORE, help=f"store URI, file:// or s3:// (default {DEFAULT_STORE})")
    p.add_argument("--run-id", help="run id (default <name>-<date>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue --run-id: committed stages are not recomputed")
    p.add_argument("--runner", choices=["plain", "prefect"], default="plain",
                   help="plain: the plan in this process (default, starts at once); prefect: each stage a Prefect "
                        "task (a server at PREFECT_API_URL, else Prefect's ephemeral server, slow to start)")
    p.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="text: a line per stage (live bars on a terminal); json: one JSON object per event")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch intra-op threads in every stage (default: $OMP_NUM_THREADS if set, else the cores "
                        "this process may use, at most 8; 1 is fastest on a machine busy with other work)")
    offline(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a pipeline document and that its model sources and datasets exist; "
                       "print each error with its field path")
    doc(p)
    p.add_argument("--store", default=DEFAULT_STORE, help=f"store whose registry registry: sources name (default {DEFAULT_STORE})")
    offline(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="list the stage calls in order; --dump DIR writes each one's spec JSON "
                       "(python -m maskgrpo.stages.KIND --spec @FILE runs one)")
    doc(p)
    p.add_argument("--store", default=DEFAULT_STORE, help=f"store URI the specs name (default {DEFAULT_STORE})")
    p.add_argument("--run-id", help="run id the specs name (default: the pipeline name)")
    p.add_argument("--dump", metavar="DIR", help="write each stage call's spec as DIR/NN-<name>.json")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("config", help="print the resolved document: every field, defaults included (YAML)")
    doc(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("list", help="the registered tasks, rewards (with their params), estimators or samplers")
    p.add_argument("what", choices=["tasks", "rewards", "estimators", "samplers"])
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="show a run's stages and summary")
    p.add_argument("run_uri", help="<store>/<run_id>, e.g. file://./runs/toy-text-20261129-101500")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("compile", help="compile to a Kubeflow Pipelines package (deterministic YAML)")
    doc(p)
    p.add_argument("-o", "--output", required=True, help="package path to write")
    cluster(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("submit", help="compile and start a run on a KFP cluster")
    doc(p)
    p.add_argument("--host", required=True, help="KFP API URL")
    p.add_argument("--experiment", help="KFP experiment (default: the pipeline name)")
    p.add_argument("--namespace", help="KFP namespace (multi-user installs)")
    cluster(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("schedule", help="retrain on a schedule: a KFP recurring run, or --local with Prefect")
    doc(p)
    p.add_argument("--host", help="KFP API URL")
    p.add_argument("--local", action="store_true", help="serve a Prefect deployment of the local flow instead")
    p.add_argument("--cron", required=True, help="cron expression (5 fields, or KFP's 6 with seconds first)")
    p.add_argument("--max-concurrency", type=int, default=1, help="concurrent runs allowed (KFP)")
    p.add_argument("--experiment", help="KFP experiment")
    p.add_argument("--namespace", help="KFP namespace")
    cluster(p)
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("gc", help="remove orphan attempts (crashed or superseded writes) from a store")
    p.add_argument("store", help="store URI")
    p.add_argument("--run-id", help="only this run")
    p.add_argument("--dry-run", action="store_true", help="list, do not delete")
    p.add_argument("--min-age", type=float, default=3600.0, metavar="SECONDS",
                   help="spare attempts younger than this: a writer may still be running (default 3600)")
    p.set_defaults(func=cmd_gc)

    def merged_into(p: argparse.ArgumentParser, base_help: str) -> None:
        p.add_argument("out_dir", help="folder to write the merged transformers checkpoint to")
        p.add_argument("--base", help=base_help)
        p.add_argument("--trust-remote-code", metavar="PINS", help="run the base's own code: its {file: sha256} pins (JSON or @file)")

    p = sub.add_parser("merge", help="fold a LoRA checkpoint's adapters into full weights")
    p.add_argument("adapter_dir", help="checkpoint folder holding the PEFT adapters")
    merged_into(p, "base checkpoint folder (default: the one recorded in the adapter config)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("models", help="the model registry in a store: list, show, promote, rollback, export, gc")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    m = msub.add_parser("list", help="registered models and their aliases")
    m.add_argument("store", help="store URI")
    m = msub.add_parser("show", help="a version (default: the champion), its lineage and the alias history")
    m.add_argument("store", help="store URI")
    m.add_argument("name", help="model name")
    m.add_argument("version", nargs="?", default="champion", help="champion, previous or a version number")
    m = msub.add_parser("promote", help="make a version the champion (compare-and-swap against the current one)")
    m.add_argument("store", help="store URI")
    m.add_argument("name", help="model name")
    m.add_argument("version", help="version number to promote")
    m.add_argument("--expected", type=int, help="refuse unless the champion is still this version (default: as read now)")
    m.add_argument("--reason", default="", help="recorded in the alias history")
    m = msub.add_parser("rollback", help="champion <- previous")
    m.add_argument("store", help="store URI")
    m.add_argument("name", help="model name")
    m = msub.add_parser("export", help="write a version as a transformers folder (LoRA adapters merged, as `export`)")
    m.add_argument("store", help="store URI")
    m.add_argument("name", help="model name")
    merged_into(m, "LoRA: base model source (default: the one recorded in the adapter config)")
    m.add_argument("--version", default="champion", help="champion (default), previous or a version number")
    m = msub.add_parser("gc", help="remove orphan versions (registered, never promoted)")
    m.add_argument("store", help="store URI")
    m.add_argument("name", help="model name")
    m.add_argument("--dry-run", action="store_true", help="list, do not delete")
    m.add_argument("--min-age", type=float, default=3600.0, metavar="SECONDS", help="spare younger versions (default 3600)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("retrain-ticks", help="simulate N ticks of scheduled retraining locally (a data drop per tick)")
    doc(p)
    p.add_argument("--ticks", type=int, default=3, help="ticks to run (default 3)")
    p.add_argument("--store", default=DEFAULT_STORE, help=f"store URI (default {DEFAULT_STORE})")
    p.add_argument("--data-dir", default="data/toy-retrain", help="folder the data drops land in (default data/toy-retrain)")
    p.add_argument("--bad-tick", type=int, action="append", default=[], metavar="K",
                   help="tick whose data drop has corrupted answers (repeatable): the gate must reject it")
    p.add_argument("--json", help="also write the tick table as JSON here")
    p.set_defaults(func=cmd_retrain_ticks)
    p = sub.add_parser("import", help="commit a transformers checkpoint folder to a store, as a model.source")
    p.add_argument("checkpoint_dir", help="local checkpoint folder (config.json, safetensors, tokenizer), e.g. a hub download")
    p.add_argument("dest", help="<store-root>/<name>, e.g. s3://maskgrpo/models/llada-8b-instruct")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="a checkpoint as a plain transformers folder, LoRA adapters merged into the base")
    p.add_argument("source", help="a run's checkpoint: <store>/<run_id>/<stage>/<round> or a local folder")
    merged_into(p, "base model source (default: the one recorded in the adapter config; store URI or folder)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve-reward", help="serve a registered reward function over HTTP (JSON, images as base64 PNG)")
    p.add_argument("name", help="reward registry name")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    p.set_defaults(func=cmd_serve_reward)

    p = sub.add_parser("serve-sandbox", help="run model code for the code reward in a process without credentials "
                       "(set MASKGRPO_SANDBOX_URL for the score stage); refuses to start unless every isolation layer holds")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=_port, default=8001, help="port (default 8001)")
    p.add_argument("--insecure", action="store_true",
                   help="UNSAFE: start even when an isolation layer is missing or credentials are in the environment")
    p.set_defaults(func=cmd_serve_sandbox)
    return parser


EXIT_CODES = """exit status:
  0    success
  1    a failure while running (the message names the stage, file or URI); a committed stage stays
  2    invalid document or arguments: nothing was written
  130  interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM: committed stages stay, the message
       says how to resume
every error is one line; --debug shows the traceback"""


def _flag_wording(args: argparse.Namespace, err: Exception) -> str:
    """On the commands with ``--trust-remote-code`` (merge, export, models export), a refusal of the
    model loaders names that flag, not the pipeline field (models/remote_code.py)."""
    from maskgrpo.models.remote_code import RemoteCodeError

    return err.for_flag() if hasattr(args, "trust_remote_code") and isinstance(err, RemoteCodeError) else str(err)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    from maskgrpo.store import StoreError

    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C outside a run (a run handles its own, see cmd_run)
        if args.debug:
            raise
        return _fail("interrupted", 130)
    except BrokenPipeError:  # `maskgrpo show ... | head`: the reader left; not an error
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (Python flushes stdout again at exit)
        except OSError:
            pass
        return 0
    except ModuleNotFoundError as err:  # an optional dependency: name the extra that brings it
        if args.debug:
            raise
        extra = EXTRAS.get((err.name or "").split(".")[0])
        if extra is None:
            return _fail(f"{err} (run with --debug for the traceback)", 1)
        return _fail(f"`maskgrpo {args.command}` needs the {extra!r} extra (no module {err.name!r}): "
                     f"pip install 'maskgrpo[{extra}]'", 1)
    except ValueError as err:  # invalid documents and arguments: nothing was written
        if args.debug:
            raise
        return _fail(_flag_wording(args, err), 2)
    except (StoreError, FileNotFoundError, RuntimeError) as err:
        if args.debug:
            raise
        return _fail(str(err), 1)
    except Exception as err:  # noqa: BLE001  (anything else: still one line; --debug for the traceback)
        if args.debug:
            raise
        return _fail(f"{type(err).__name__}: {err} (run with --debug for the traceback)", 1)


if __name__ == "__main__":
    raise SystemExit(main())
