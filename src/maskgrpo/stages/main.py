"""The entry point every ``python -m maskgrpo.stages.<kind>`` shares."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from maskgrpo.specs import format_validation_error
from maskgrpo.stages.outputs import write_kfp_outputs
from maskgrpo.store import Store, open_store

log = logging.getLogger("maskgrpo")


def read_spec_arg(value: str) -> dict[str, Any]:
    """--spec takes JSON text or @path to a JSON file."""
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--spec is not valid JSON: {err}") from None


def split_flags(argv: list[str] | None, own: tuple[str, ...], shared: tuple[str, ...] = ()) -> tuple[argparse.Namespace, list[str]]:
    """A stage's own output flags (e.g. resolve's ``--skip-path``) taken out of ``argv`` in either
    spelling (``--f V``, ``--f=V``), plus the values of ``shared`` flags that stay for
    ``stage_main`` (e.g. ``--summary-path``): (values, the arguments ``stage_main`` parses)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    mine = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in own:
        mine.add_argument(flag)
    values, rest = mine.parse_known_args(argv)
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in shared:
        common.add_argument(flag, default="" if flag == "--run-id" else None)
    vars(values).update(vars(common.parse_known_args(rest)[0]))
    return values, rest


def stage_main(kind: str, spec_cls: type[BaseModel], run: Callable[[Any, Store], BaseModel], argv: list[str] | None = None) -> int:
    """Parse ``--spec``, validate, open the store, run, write the KFP UI outputs (stages/outputs.py)."""
    parser = argparse.ArgumentParser(prog=f"python -m maskgrpo.stages.{kind}", description=f"Run the {kind} stage.")
    parser.add_argument("--spec", required=True, help="the stage spec as JSON, or @file.json")
    parser.add_argument("--run-id", default="", help="override the spec's run_id (KFP passes the pipeline's run_id parameter)")
    parser.add_argument("--metrics-path", help="write the stage's scalar metrics here as flat JSON")
    parser.add_argument("--summary-path", help="write a Markdown summary here")
    parser.add_argument("--executor-input", help="KFP executor input ({{$}}): metrics go to its output file")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help="set by the deepspeed launcher (stages/distributed.py); torchrun sets LOCAL_RANK instead")
    args = parser.parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    raw = read_spec_arg(args.spec)
    if args.run_id:
        raw["run_id"] = args.run_id
    try:
        spec = spec_cls.model_validate(raw)
    except ValidationError as err:
        print(format_validation_error(err, "--spec"), file=sys.stderr)
        return 2
    from maskgrpo.threads import apply_threads

    log.info("%s: %d torch threads", kind, apply_threads())  # $MASKGRPO_THREADS, $OMP_NUM_THREADS or the cores (threads.py)
    start = time.perf_counter()
    from maskgrpo.stages.retrain import resolved_spec  # a retraining tick's pinned champion and data

    store = open_store(spec.store)
    result = run(resolved_spec(spec, store), store)
    payload = result.model_dump(mode="json")
    if payload.get("skipped"):  # the output is already committed with this spec: say so, once
        print(f"{kind} round {spec.round} of run {spec.run_id}: skipped, its output in {spec.store} is already "
              "committed with this spec's hash (nothing recomputed; change the spec or the run id to recompute)",
              file=sys.stderr)
    log.info("%s round %d done in %.1fs", kind, spec.round, time.perf_counter() - start)
    rows = "\n".join(f"| {k} | {v} |" for k, v in payload.items())
    summary = f"# {kind} (run {spec.run_id}, round {spec.round})\n\n| field | value |\n|---|---|\n{rows}\n"
    write_kfp_outputs(payload, summary, metrics_path=args.metrics_path, summary_path=args.summary_path,
                      executor_input=args.executor_input)
    return 0
