"""Contract: every stage main accepts the arguments the KFP components pass it.

The components (components.py) call ``python -m maskgrpo.stages.<kind>`` with --spec, --run-id,
--metrics-path, --summary-path and --executor-input; a flag the main does not know would fail the
pod at argparse. Checked through each existing stage module's ``--help``, in one interpreter.
"""

import importlib.util
import subprocess
import sys

import pytest

from maskgrpo.runners.kfp.components import STAGE_KINDS

FLAGS = ("--spec", "--run-id", "--metrics-path", "--summary-path", "--executor-input")
PRESENT = [k for k in STAGE_KINDS if importlib.util.find_spec(f"maskgrpo.stages.{k}") is not None]

SCRIPT = """
import contextlib, io, runpy, sys
for kind in sys.argv[1:]:
    sys.argv = [f"maskgrpo.stages.{kind}", "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module(f"maskgrpo.stages.{kind}", run_name="__main__")
        except SystemExit:
            pass
    print(f"=== {kind}"); print(out.getvalue())
"""


@pytest.mark.skipif(not PRESENT, reason="no stage modules yet")
def test_stage_mains_accept_the_component_arguments():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *PRESENT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    helps = dict(part.split("\n", 1) for part in proc.stdout.split("=== ")[1:])
    missing = {kind: [f for f in FLAGS if f not in helps.get(kind, "")] for kind in PRESENT}
    assert not any(missing.values()), f"stage mains lack component flags: {missing}"
