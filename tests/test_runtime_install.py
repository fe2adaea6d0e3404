"""`make demo` installs only the runtime extras (s3, local, tracking: Makefile's ``install``), while
the suite runs with every extra. This runs the demo's pipeline (fewer steps) in a process where the
other extras' modules cannot be imported, as on a fresh machine after `make demo`: a stage that
imports peft or DeepSpeed on the tiny model's path fails here (it did: ``is_lora`` imported peft)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from maskgrpo.cli import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_EXTRAS = {"s3", "local", "tracking"}  # Makefile: install = .[s3,local,tracking]
ABSENT = sorted(module for module, extra in EXTRAS.items() if extra not in RUNTIME_EXTRAS)

BOOT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # `import name` raises ModuleNotFoundError; importlib.util.find_spec says None
from maskgrpo.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


def test_the_demo_runs_without_the_train_and_cluster_extras(tmp_path):
    assert {"peft", "deepspeed", "kfp", "kubernetes"} <= set(ABSENT)
    store = tmp_path / "runs"
    cmd = [sys.executable, "-c", BOOT, ",".join(ABSENT), "run", str(ROOT / "pipelines" / "toy-text.yaml"),
           "--store", str(store), "--threads", "1", "--run-id", "demo",
           "--set", "sft.steps=20", "--set", "rl.rounds=2", "--set", "evaluate.every=2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = list(store.rglob("summary.json"))
    assert len(summaries) == 1, done.stdout[-2000:]
    summary = json.loads(summaries[0].read_text())
    assert [e["round"] for e in summary["evaluations"]] == [0, 2] and len(summary["rounds"]) == 2
    # the same blocker does refuse what needs those extras, naming the extra
    refused = subprocess.run([sys.executable, "-c", BOOT, ",".join(ABSENT), "compile", str(ROOT / "pipelines" / "toy-text.yaml"),
                              "-o", str(tmp_path / "p.yaml")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert refused.returncode == 1 and "needs the 'cluster' extra" in refused.stderr, refused.stderr
