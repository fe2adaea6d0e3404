"""Every compiled package through KFP's own backend: kfpc (../shared/k8s) runs the KFP 2.17 API
server's compile path (``template.New`` upload validation -> ``RunWorkflow`` ->
``argocompiler.Compile``, and ``ScheduledWorkflow`` for recurring runs) and Argo 4.0.5's
``ValidateWorkflow`` plus a strict unmarshal into Argo's Workflow type.

Packages: every pipelines/*.yaml compiled by the CLI (``maskgrpo compile``, its entry point
called in this process), a sharded-rollout
variant (CLI, ``--set cluster.rollout_shards=3``) and the TrainJob variant (``compile_run(...,
trainer=...)``, the function the CLI calls: the CLI has no TrainJob option). Each package is
checked with the parameters ``maskgrpo submit`` passes and with those ``maskgrpo schedule``
passes (``<run id>-[[ScheduledTime]]``) plus the ScheduledWorkflow; the 8B pipelines (126
templates, 16-25 s each in kfpc) only with the schedule's, and are marked slow.

Not exercised: KFP's driver (how ``kubernetes-config`` becomes pod fields at run time) and
anything that runs: there is no KFP server, Argo controller or kubelet here.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from k8s_api import ROOT

from maskgrpo import cli
from maskgrpo.runners.kfp import compile_run
from maskgrpo.runners.kfp.client import SCHEDULED_RUN_ID_SUFFIX
from maskgrpo.runners.kfp.trainer import TrainJobOptions
from maskgrpo.specs import load_run_spec

SLOW = {"llada-gsm8k", "mmada-t2i"}
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the 8B workflows are ~2 MB of YAML
TOY_TEXT = ROOT / "pipelines" / "toy-text.yaml"


def cases():
    for path in sorted((ROOT / "pipelines").glob("*.yaml")):
        yield path.stem, ["compile", str(path)]
    yield "toy-text-shards3", ["compile", str(TOY_TEXT), "--set", "cluster.rollout_shards=3"]
    yield "toy-text-trainjob", None  # compile_run(..., trainer=...): the CLI has no TrainJob option


CASES = dict(cases())


def compile_package(name: str, out: Path) -> Path:
    """The package of one case, through the CLI's entry point (in this process: one torch import)."""
    package = out / "package.yaml"
    if CASES[name] is None:
        compile_run(load_run_spec(TOY_TEXT), package, trainer=TrainJobOptions(num_nodes=2))
    else:
        assert cli.main([*CASES[name], "-o", str(package)]) == 0
    return package


def check(kfpc, name: str, package: Path) -> dict:
    """kfpc on one package, with submit's and schedule's parameters (schedule's only for the 8B ones)."""
    spec = next(yaml.safe_load_all(package.read_text()))
    run_id = spec["root"]["inputDefinitions"]["parameters"]["run_id"]["defaultValue"]
    checks = {"schedule": {"run_id": run_id + SCHEDULED_RUN_ID_SUFFIX}}
    if name not in SLOW:
        checks["submit"] = {"run_id": run_id}
    result = {"package": package, "run_id": run_id, "kfpc": {}}
    for mode, params in checks.items():
        extra = [str(package.parent / f"{mode}.swf.yaml")] if mode == "schedule" else []
        t0 = time.monotonic()
        proc = subprocess.run([str(kfpc), str(package), str(package.parent / f"{mode}.wf.yaml"), json.dumps(params),
                               *extra], capture_output=True, text=True, timeout=300)
        result["kfpc"][mode] = {"rc": proc.returncode, "out": proc.stdout + proc.stderr,
                                "seconds": time.monotonic() - t0, "params": params, "dir": package.parent}
    return result


@pytest.fixture(scope="module")
def kfpc_results(request, kfpc, tmp_path_factory):
    """The selected cases compiled here, then checked by kfpc in parallel processes (two at a time)."""
    selected = {item.callspec.params["name"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "name" in item.callspec.params}
    selected |= set(CASES) - SLOW  # the negative control and the variant checks need these
    tmp = tmp_path_factory.mktemp("kfpc")
    order = sorted(selected, key=lambda n: n not in SLOW)  # the slow ones first, the toy ones fill in
    packages = {}
    for name in order:
        (tmp / name).mkdir()
        packages[name] = compile_package(name, tmp / name)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(check, kfpc, name, packages[name]) for name in order}
        return {name: f.result() for name, f in futures.items()}


def strings(node) -> set[str]:
    if isinstance(node, dict):
        return set().union(*map(strings, node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*map(strings, node)) if node else set()
    return {node} if isinstance(node, str) else set()


def params(case):
    return pytest.param(case, marks=pytest.mark.slow) if case in SLOW else case


@pytest.mark.parametrize("name", [params(c) for c in CASES])
def test_kfp_backend_accepts_the_package(kfpc_results, name):
    result = kfpc_results[name]
    for mode, check in result["kfpc"].items():
        assert check["rc"] == 0, f"{name} ({mode}): {check['out']}"
        assert check["out"].startswith("OK "), check["out"]
        workflow = yaml.load((check["dir"] / f"{mode}.wf.yaml").read_text(), Loader=LOADER)
        assert workflow["kind"] == "Workflow" and workflow["spec"]["serviceAccountName"] == "pipeline-runner"
        # the run's parameters reach the root DAG driver as its runtime config
        assert json.dumps({"parameterValues": check["params"]}, separators=(",", ":")) in strings(workflow)
    swf = yaml.load((result["kfpc"]["schedule"]["dir"] / "schedule.swf.yaml").read_text(), Loader=LOADER)
    assert swf["kind"] == "ScheduledWorkflow" and swf["spec"]["noCatchup"] is True


def test_kfpc_refuses_a_parameter_the_pipeline_does_not_have(kfpc_results, kfpc):
    """Negative control: kfpc really validates (here: the runtime parameters against the package)."""
    check = kfpc_results["toy-text"]["kfpc"]["submit"]
    proc = subprocess.run([str(kfpc), str(kfpc_results["toy-text"]["package"]), str(check["dir"] / "bad.wf.yaml"),
                           json.dumps({"runid": "x"})], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "parameter(s) provided are not required by pipeline: runid" in proc.stdout + proc.stderr


def test_the_variants_are_what_they_claim(kfpc_results):
    def ir(name):
        return next(yaml.safe_load_all(kfpc_results[name]["package"].read_text()))

    loops = [t for t in ir("toy-text-shards3")["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    assert len(loops) == 8  # one ParallelFor per round
    assert len(json.loads(loops[0]["parameterIterator"]["items"]["raw"])) == 3
    executors = ir("toy-text-trainjob")["deploymentSpec"]["executors"]
    launchers = [e["container"]["args"] for e in executors.values()
                 if e["container"]["command"] == ["python", "-m", "maskgrpo.runners.kfp.trainer"]]
    assert len(launchers) == 8
    assert json.loads(launchers[0][launchers[0].index("--launch") + 1])["trainer_api"] == "v2.3"
