"""Golden compiled packages: every pipelines/*.yaml, and RunSpec defaults, compile byte for byte.

When a change to the specs, the plan or the compiler is intended, regenerate and review the diff:

    MASKGRPO_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/runners/kfp/test_kfp_golden.py
"""

import os
from pathlib import Path

import pytest
import yaml

from maskgrpo.runners.kfp import compile_run
from maskgrpo.specs import RunSpec, load_run_spec

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "pipelines" / "golden"
UPDATE = os.environ.get("MASKGRPO_UPDATE_GOLDEN") == "1"
DOCUMENTS = sorted((ROOT / "pipelines").glob("*.yaml"))


def cases():
    yield pytest.param(lambda: RunSpec(name="x"), "defaults-x", id="RunSpec-defaults")
    for path in DOCUMENTS:
        yield pytest.param(lambda p=path: load_run_spec(p), path.stem, id=path.name)


@pytest.mark.parametrize("make, stem", list(cases()))
def test_golden_package(tmp_path, make, stem):
    out = compile_run(make(), tmp_path / f"{stem}.yaml")
    golden = GOLDEN / f"{stem}.yaml"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(out.read_bytes())
    assert golden.exists(), f"{golden} missing: run with MASKGRPO_UPDATE_GOLDEN=1 and commit it"
    assert out.read_bytes() == golden.read_bytes(), (
        f"{golden.relative_to(ROOT)} is stale: review `diff` and regenerate with MASKGRPO_UPDATE_GOLDEN=1")


def test_no_orphan_golden_files():
    expected = {"defaults-x.yaml"} | {p.name for p in DOCUMENTS}
    present = {p.name for p in GOLDEN.glob("*.yaml")}
    assert present <= expected, f"golden files without a pipeline document: {sorted(present - expected)}"


def test_golden_packages_are_kfp_ir():
    for path in sorted(GOLDEN.glob("*.yaml")):
        spec, platform = list(yaml.safe_load_all(path.read_text()))
        assert spec["schemaVersion"] == "2.1.0" and spec["pipelineInfo"]["name"], path.name
        assert "kubernetes" in platform["platforms"], path.name
