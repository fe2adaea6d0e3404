"""Shared fixtures for the deployment tests: the chart loaded by Helm's own engine (helm-python-sdk)
and each ci/ scenario rendered to a list of Kubernetes objects."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

helm_python = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) is not installed")

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "maskgrpo"
SCENARIOS = sorted(p.name.removesuffix("-values.yaml") for p in (CHART_DIR / "ci").glob("*-values.yaml"))
RELEASE = "maskgrpo"

if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))


def scenario_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART_DIR / "ci" / f"{name}-values.yaml").read_text())


def objects_of(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object in a render (NOTES.txt is text, not a manifest)."""
    objects = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec inside a workload object (none for non-workloads)."""
    kind = obj["kind"]
    if kind == "Pod":
        return [obj["spec"]]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [obj["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="session")
def chart():
    loaded = helm_python.Chart.load(CHART_DIR)
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def render(chart) -> Callable[..., dict[str, str]]:
    """render(values, namespace=...) -> {template: text}, with Helm's engine (schema checked)."""

    def _render(values: dict[str, Any] | None = None, namespace: str = "kubeflow") -> dict[str, str]:
        return chart.render(values or {}, name=RELEASE, namespace=namespace)

    return _render


@pytest.fixture(scope="session")
def rendered(render) -> dict[str, dict[str, str]]:
    """Each scenario rendered once: {scenario: {template: text}}."""
    out = {}
    for name in SCENARIOS:
        values = scenario_values(name)
        out[name] = render(values, namespace=values["kfp"]["namespace"])
    return out
