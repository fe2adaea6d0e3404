"""Golden compiled packages, byte for byte, for the small pipelines only (toy-text and toy-image
at least: one per modality; a small pipeline with a DAG of its own may add one).

KFP's own backend checks every package (test_kfpc.py) and test_kfp_compile.py checks the IR
field by field, so the goldens are kept only where they check something those cannot:

- determinism across processes: the golden was written by another process (and machine), and
  compiling must reproduce it byte for byte (submit/schedule rely on it: same package, same run);
- that a change meant to leave existing documents alone does: the stage spec JSON, hence spec
  hashes and resuming a run's store, and every pod field (any kfp / kfp-kubernetes upgrade too);
  an intended change shows as a reviewable diff of ~120 KB.

The 8B pipelines' (1.1-1.3 MB each, no one reviews such a diff) and RunSpec-defaults' goldens
were dropped; goldens over MAX_BYTES are refused. When a change to the specs, the plan or the
compiler is intended, regenerate and review the diff:

    MASKGRPO_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/runners/kfp/test_kfp_golden.py
"""

import os
from pathlib import Path

import pytest
import yaml

from maskgrpo.runners.kfp import compile_run
from maskgrpo.specs import load_run_spec

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "pipelines" / "golden"
UPDATE = os.environ.get("MASKGRPO_UPDATE_GOLDEN") == "1"
REQUIRED = {"toy-text", "toy-image"}
STEMS = sorted(REQUIRED | {p.stem for p in GOLDEN.glob("*.yaml")})
MAX_BYTES = 300_000


@pytest.mark.parametrize("stem", STEMS)
def test_golden_package(tmp_path, stem):
    out = compile_run(load_run_spec(ROOT / "pipelines" / f"{stem}.yaml"), tmp_path / f"{stem}.yaml")
    golden = GOLDEN / f"{stem}.yaml"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(out.read_bytes())
    assert golden.exists(), f"{golden} missing: run with MASKGRPO_UPDATE_GOLDEN=1 and commit it"
    assert out.read_bytes() == golden.read_bytes(), (
        f"{golden.relative_to(ROOT)} is stale: review `diff` and regenerate with MASKGRPO_UPDATE_GOLDEN=1")


@pytest.mark.parametrize("stem", STEMS)
def test_goldens_are_small_kfp_ir_of_a_pipeline_document(stem):
    golden = GOLDEN / f"{stem}.yaml"
    assert (ROOT / "pipelines" / f"{stem}.yaml").exists(), f"{golden.name}: no pipeline document"
    assert golden.stat().st_size <= MAX_BYTES, f"{golden.name}: too large to review; kfpc and the IR tests cover it"
    spec, platform = list(yaml.safe_load_all(golden.read_text()))
    assert spec["schemaVersion"] == "2.1.0" and spec["pipelineInfo"]["name"] == stem
    assert "kubernetes" in platform["platforms"]
