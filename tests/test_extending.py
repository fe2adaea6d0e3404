"""docs/extending.md is what runs: its files (the ``# file:`` blocks) are written out as a throwaway
package, installed into a fresh virtual environment layered over this one (no network:
``--no-deps --no-build-isolation``), and the toy pipeline runs with the package's task (over a
jsonl file made here) and its TRL-style reward, found through their entry points."""

from __future__ import annotations

import json
import random
import re
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from maskgrpo.artifacts import SCORES
from maskgrpo.store import open_store

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
TINY = ["sft.steps=10", "rl.rounds=1", "rl.prompts_per_round=4", "rl.group_size=4", "rl.minibatch_size=16"]


def doc_files(text: str) -> dict[str, str]:
    """``path -> content`` of every fenced block whose first line is ``# file: <path>``."""
    blocks = re.findall(r"```[a-z]*\n# file: (\S+)\n(.*?)```", text, flags=re.S)
    return {path: body for path, body in blocks}


@pytest.mark.slow
def test_the_documented_plugin_installs_and_runs_a_pipeline(tmp_path):
    files = doc_files(DOC.read_text())
    assert set(files) == {"mg_reverse/__init__.py", "pyproject.toml"}
    pkg = tmp_path / "mg-reverse"
    for rel, body in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(body)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    # layered over the current environment (what --system-site-packages does for a base Python)
    (purelib / "_outer.pth").write_text("\n".join([str(ROOT / "src"), sysconfig.get_paths()["purelib"],
                                                   *site.getsitepackages()]) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", str(pkg)], check=True, capture_output=True, text=True)

    rng = random.Random(0)
    rows = []
    for _ in range(400):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(3, 5)))
        rows.append({"prompt": f"reverse:{digits}=", "answer": digits[::-1]})
    data = tmp_path / "reverse.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    sets = [*TINY, f"task={{name: reverse, params: {{path: {data}}}, train_size: 60, eval_size: 8}}",
            "reward.functions=[{name: reverse_exact, params: {partial_credit: 0.5}}]"]
    args = [arg for s in sets for arg in ("--set", s)]
    pipeline = str(ROOT / "pipelines" / "toy-text.yaml")

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), "-m", "maskgrpo.cli", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)

    typo = cli("validate", pipeline, *args, "--set", "reward.functions.0.params={partial_credt: 0.5}")
    assert typo.returncode == 2 and "has no parameter 'partial_credt'" in typo.stderr, typo.stderr
    run = cli("run", pipeline, "--store", f"file://{tmp_path / 'runs'}", "--run-id", "plugin", *args)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "[  6/6] evaluate_1" in run.stdout
    # the plugin reward scored every rollout of round 1 (16 = 4 prompts x G=4)
    scores = open_store(f"file://{tmp_path / 'runs'}").open("plugin", "score", 1).get_tensors(SCORES)
    assert scores["reward.reverse_exact"].shape == (16,)
    check = subprocess.run([str(python), "-c", "from mg_reverse import reverse_exact as r; "
                            "print(r(['p'] * 2, ['321', '391'], answer=['321'] * 2, partial_credit=0.5))"],
                           env=env, capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "[1.0, 0.3333333333333333]"
    # the plugin is installed in the throwaway venv only
    assert subprocess.run([sys.executable, "-c", "import mg_reverse"], capture_output=True).returncode != 0
