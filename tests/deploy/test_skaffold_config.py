"""skaffold.yaml: valid against the published v4beta14 schema (no skaffold binary installs here),
and consistent with the images, the chart's values and the Services it renders."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from .conftest import CHART_DIR, RELEASE, ROOT, objects_of, scenario_values

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (dev extra) missing")

SKAFFOLD = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
SCHEMA_PATH = ROOT.parent / "shared" / "schemas" / "skaffold-v4beta14.json"
PROFILES = {p["name"]: p for p in SKAFFOLD["profiles"]}


@pytest.fixture(scope="module")
def validator():
    if not SCHEMA_PATH.exists():
        pytest.skip(f"skaffold schema not found at {SCHEMA_PATH} (shared/schemas is beside the repo in CI)")
    return jsonschema.Draft7Validator(json.loads(SCHEMA_PATH.read_text()))


def test_skaffold_yaml_matches_the_v4beta14_schema(validator):
    assert SKAFFOLD["apiVersion"] == "skaffold/v4beta14"
    errors = [f"{e.json_path}: {e.message[:200]}" for e in validator.iter_errors(SKAFFOLD)]
    assert errors == []


def test_schema_rejects_a_misspelt_release_field(validator):
    """Negative control: the schema is strict enough to catch a typo."""
    broken = copy.deepcopy(SKAFFOLD)
    broken["deploy"]["helm"]["releases"][0]["valueFiles"] = ["x.yaml"]  # should be valuesFiles
    assert list(validator.iter_errors(broken))


def _builds():
    yield "default", SKAFFOLD["build"], SKAFFOLD["deploy"]
    for name, profile in PROFILES.items():
        yield name, profile.get("build", SKAFFOLD["build"]), profile.get("deploy", SKAFFOLD["deploy"])


def test_profiles_exist_and_kind_builds_only_the_cpu_image():
    assert {"kind", "minikube", "gpu"} <= set(PROFILES)
    for name in ("kind", "minikube"):
        build = PROFILES[name]["build"]
        assert [a["image"] for a in build["artifacts"]] == ["maskgrpo-cpu"]
        assert build["local"]["push"] is False  # loaded into the cluster, not pushed
    assert PROFILES["kind"]["activation"] == [{"kubeContext": "kind-.*"}]


def test_every_artifact_builds_a_dockerfile_in_images():
    for name, build, _ in _builds():
        for artifact in build["artifacts"]:
            dockerfile = ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]
            assert dockerfile.is_file(), (name, artifact["image"])
            assert dockerfile.parent == ROOT / "images"


def _template_images(template: str) -> set[str]:
    return set(re.findall(r"\{\{\.IMAGE_(?:REPO|TAG|DIGEST|FULLY_QUALIFIED)_(\w+)\}\}", template))


def _has_key(values: dict, dotted: str) -> bool:
    node = values
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def test_injected_values_exist_and_name_built_images():
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    for name, build, deploy in _builds():
        built = {a["image"].replace("-", "_").replace(".", "_").replace("/", "_") for a in build["artifacts"]}
        for release in deploy["helm"]["releases"]:
            assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
            for path in release.get("valuesFiles", []):
                assert (ROOT / path).is_file(), (name, path)
            templates = release["setValueTemplates"]
            assert {"image.repository", "image.tag", "run.cluster.image"} <= set(templates)
            for key, template in templates.items():
                assert _has_key(defaults, key), (name, key)
                assert _template_images(template) <= built, (name, key, template)
            for key in release.get("setValues", {}):
                assert _has_key(defaults, key), (name, key)
    # the GPU profile runs the stages on the CUDA image, its own pods on the CPU image
    gpu = PROFILES["gpu"]["deploy"]["helm"]["releases"][0]["setValueTemplates"]
    assert _template_images(gpu["run.cluster.image"]) == {"maskgrpo_cuda"}
    assert _template_images(gpu["image.repository"]) == {"maskgrpo_cpu"}


def test_port_forwards_name_services_the_chart_renders(render):
    values = scenario_values("cpu-kind")
    services = {o["metadata"]["name"]: o for o in objects_of(render(values)) if o["kind"] == "Service"}
    for forward in PROFILES["kind"]["portForward"]:
        if forward["namespace"] == "kubeflow" and forward["resourceName"] == "ml-pipeline-ui":
            continue  # KFP's own UI Service (installed with KFP, not by this chart)
        svc = services[forward["resourceName"]]
        assert forward["port"] in [p["port"] for p in svc["spec"]["ports"]]
        assert forward["namespace"] == svc["metadata"]["namespace"]
    assert f"{RELEASE}-minio" in services
    assert any(f["resourceName"] == "ml-pipeline-ui" and f["port"] == 80 for f in PROFILES["kind"]["portForward"])
