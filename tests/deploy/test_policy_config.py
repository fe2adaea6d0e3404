"""The policy scan (`make policy` -> scripts/policy.sh -> checkov in .venv-policy): every skipped
check is justified in .checkov.yaml, and, where the policy venv exists, the scan passes."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from .conftest import ROOT

CONFIG = ROOT / ".checkov.yaml"
POLICY = ROOT / "scripts" / "policy.sh"


def test_every_skipped_check_has_a_reason():
    lines = CONFIG.read_text().splitlines()
    skips = yaml.safe_load(CONFIG.read_text())["skip-check"]
    assert skips, "no skips: then drop this test"
    for check in skips:
        (i,) = [n for n, ln in enumerate(lines) if re.fullmatch(rf"\s*-\s*{check}\s*(#.*)?", ln)]
        # the comment block right above (skipping sibling entries of a shared reason)
        j = i - 1
        while j >= 0 and re.fullmatch(r"\s*-\s*CKV\w*\s*", lines[j]):
            j -= 1
        reason = []
        while j >= 0 and lines[j].strip().startswith("#"):
            reason.append(lines[j].strip("# "))
            j -= 1
        assert len(" ".join(reason)) > 40, f"{check}: no justification comment above it"


def test_scan_covers_kubernetes_and_dockerfiles():
    text = POLICY.read_text()
    assert "--framework kubernetes" in text and "--framework dockerfile" in text
    assert ".venv-policy" in text and "ci\").glob(\"*-values.yaml\")" in text.replace("'", '"')
    subprocess.run(["bash", "-n", str(POLICY)], check=True)


@pytest.mark.slow
def test_policy_scan_passes():
    """Runs the real scan when the checkov venv was made (`make policy`); ~15 s."""
    checkov = ROOT / ".venv-policy" / "bin" / "checkov"
    if not checkov.exists():
        pytest.skip("run `make policy` once to create .venv-policy (checkov clashes with kfp's pins)")
    proc = subprocess.run(["bash", str(POLICY)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "CHECKOV_VERSION": checkov_version(checkov)}, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.count("Failed checks: 0") == 2, proc.stdout[-4000:]


def checkov_version(checkov) -> str:
    return subprocess.run([str(checkov), "--version"], capture_output=True, text=True).stdout.strip()
