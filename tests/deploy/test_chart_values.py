"""values.yaml and values.schema.json: commented, generated from RunSpec and fresh, and bad values
rejected by Helm's own schema validation with a message naming the key."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from .conftest import CHART_DIR, ROOT, SCENARIOS, helm_python, scenario_values

import chart_schema  # scripts/chart_schema.py (conftest puts scripts/ on sys.path)

VALUES = CHART_DIR / "values.yaml"
SCHEMA = CHART_DIR / "values.schema.json"


def test_values_yaml_points_editors_at_the_schema():
    assert VALUES.read_text().splitlines()[0] == "# yaml-language-server: $schema=values.schema.json"


def test_every_values_key_is_commented():
    """Each `key:` line has a comment on it or on the line(s) right above (list items excepted)."""
    lines = VALUES.read_text().splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][\w.-]*):", line)
        if not m or "#" in line:
            continue
        above = lines[i - 1].strip() if i else ""
        if not above.startswith("#"):
            uncommented.append(f"line {i + 1}: {line.strip()}")
    assert uncommented == []


def test_schema_file_is_what_the_generator_renders():
    text = chart_schema.render_values_schema()
    assert SCHEMA.read_text() == text, "values.schema.json is stale: run `make generate`"
    # deterministic form: sorted keys, 2-space indent, trailing newline
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert chart_schema.render_values_schema() == text


def test_generate_check_passes():
    """The lead's `scripts/generate.py --check` (also covers the KFP components)."""
    try:
        import maskgrpo.runners.kfp.components  # noqa: F401
    except ImportError as err:
        pytest.skip(f"generate.py also renders KFP components, not importable yet: {err}")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "generate.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert "Traceback" not in proc.stderr, proc.stderr
    # this test owns the chart schema; stale KFP components are tests/runners' concern
    assert "values.schema.json" not in proc.stdout, proc.stdout


def test_run_part_is_runspec():
    from maskgrpo.specs import RunSpec

    schema = json.loads(SCHEMA.read_text())
    run = schema["properties"]["run"]
    assert set(run["properties"]) == set(RunSpec.model_fields)
    assert run["additionalProperties"] is False
    assert "$defs" not in run  # hoisted


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_every_ref_resolves_at_the_top_level():
    schema = json.loads(SCHEMA.read_text())
    refs = set(_refs(schema))
    assert refs, "expected $refs (RunSpec has sub-models)"
    for ref in refs:
        assert ref.startswith("#/$defs/"), ref
        assert ref.removeprefix("#/$defs/") in schema["$defs"], ref


def test_hoisting_rewrites_nested_and_recursive_refs():
    pydantic = pytest.importorskip("pydantic")

    class Leaf(pydantic.BaseModel):
        x: int = pydantic.Field(1, ge=1)

    class Node(pydantic.BaseModel):
        leaf: Leaf = Leaf()
        children: list["Node"] = []

    run, defs = chart_schema.hoist_run_schema(Node.model_json_schema())
    # Node is recursive: pydantic emits {"$ref": "#/$defs/Node"} at the root and inside children
    assert set(defs) == {"Leaf", "Node"}
    assert defs["Node"]["properties"]["children"]["items"] == {"$ref": "#/$defs/Node"}
    assert defs["Node"]["properties"]["leaf"]["$ref"] == "#/$defs/Leaf"
    # a root self-reference '#' moves under properties.run
    run, _ = chart_schema.hoist_run_schema({"type": "object", "properties": {"again": {"$ref": "#"}}})
    assert run["properties"]["again"] == {"$ref": "#/properties/run"}
    with pytest.raises(ValueError, match="clash"):
        chart_schema.hoist_run_schema({"$defs": {"InfraQuantity": {}}})
    with pytest.raises(ValueError, match="unresolvable"):
        chart_schema.hoist_run_schema({"properties": {"a": {"$ref": "#/$defs/Missing"}}})


@pytest.mark.parametrize("scenario", [None, *SCENARIOS])
def test_defaults_and_scenarios_pass_the_schema(chart, scenario):
    values = scenario_values(scenario) if scenario else {}
    chart.validate_schema(chart.merge_values(values))


BAD_VALUES = [
    # (override, the path and reason Helm must name)
    ({"run": {"rl": {"group_size": 1}}}, "at '/run/rl/group_size': minimum: got 1, want 2"),
    ({"image": {"tag": 3}}, "at '/image/tag': got number, want string"),
    ({"image": {"tag": "latest"}}, "at '/image/tag': 'not' failed"),
    ({"imageTag": "v1"}, "additional properties 'imageTag' not allowed"),
    ({"run": {"learning_rate": 0.1}}, "at '/run': additional properties 'learning_rate' not allowed"),
    ({"run": {"name": "Toy_Text"}}, "at '/run/name'"),
    ({"run": {"rl": {"min_mask_rate": 1.0}}}, "at '/run/rl/min_mask_rate'"),
    ({"store": {"uri": "gs://bucket/runs"}}, "at '/store/uri'"),
    ({"schedule": {"mode": "weekly"}}, "at '/schedule/mode'"),
    ({"schedule": {"cron": "every night"}}, "at '/schedule/cron'"),
    # null removes a default key (Helm merges maps): a container without a memory limit
    ({"resources": {"limits": {"memory": None}}}, "at '/resources/limits': missing property 'memory'"),
    ({"securityContext": {"runAsUsr": 1}}, "additional properties 'runAsUsr' not allowed"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_bad_values_are_rejected_naming_the_key(render, override, message):
    with pytest.raises(helm_python.HelmValuesError) as err:
        render(override)
    assert message in str(err.value)
