"""Issue 14, item 4: hostile pipeline documents. Every float field refuses NaN/inf, every size
has a bound, YAML bombs are refused, and a seeded mutator (hypothesis is not a dependency) throws
400 mutated documents at validation: each is accepted or refused with field-path errors, never a
traceback, and nothing accepted holds a NaN or an infinity."""

from __future__ import annotations

import copy
import math
import random
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from maskgrpo.specs import RunSpec, format_validation_error, load_run_spec, load_yaml

from test_specs import all_models  # noqa: E402 (tests/ is on sys.path: rootdir conftest)

ROOT = Path(__file__).resolve().parents[1]
BASES = [load_yaml(p.read_text(), str(p)) for p in sorted((ROOT / "pipelines").glob("*.yaml"))]
HOSTILE = [math.nan, math.inf, -math.inf, 1e10, 1e308, 2**20, 2**64, -1, 0, -0.0, "", "nan", "1e999",
           "x" * 5000, None, [], {}, True, [[[[[[1]]]]]], {"__class__": 1}, "\x00", 3.5, "builtin:tiny"]


def _float_fields() -> list[tuple[type[BaseModel], str]]:
    out = []
    for model in all_models():
        for name, field in model.model_fields.items():
            args = {field.annotation, *typing.get_args(field.annotation)}
            if float in args:
                out.append((model, name))
    return out


def _finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_float_field_refuses_nan_and_inf(value):
    fields = _float_fields()
    assert len(fields) >= 18, fields  # the issue counted 18 that accepted NaN
    for model, name in fields:
        tuple_field = typing.get_origin(model.model_fields[name].annotation) is tuple
        with pytest.raises(ValidationError, match="finite number"):
            model.model_validate({name: [value, value] if tuple_field else value})
    # betas and reward params (floats inside containers) too
    with pytest.raises(ValidationError, match="finite"):
        RunSpec.model_validate({"name": "x", "rl": {"betas": [0.9, value]}})
    with pytest.raises(ValidationError, match="finite"):
        RunSpec.model_validate({"name": "x", "reward": {"functions": [
            {"name": "http", "params": {"url": "http://x/", "timeout": value}}]}})


@pytest.mark.parametrize("path,value", [
    ("sft.batch_size", 1e10), ("model.tiny.hidden_size", 2**20), ("rl.group_size", 10**6),
    ("rl.rounds", 10**9), ("rl.sampler.gen_length", 10**7), ("task.train_size", 10**12),
    ("cluster.rollout_shards", 10**5), ("seed", 2**64),
])
def test_sizes_have_documented_upper_bounds(path, value):
    doc = copy.deepcopy(BASES[0])
    node = doc
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate(doc)
    message = format_validation_error(info.value)
    assert path in message and "less than or equal" in message, message


def test_yaml_alias_bomb_is_refused_fast(tmp_path):
    # 1.2 KB, x9 per level: 9**9 = 387 M nodes once expanded (before: 14 s and 871 MB for less)
    levels = ["a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    doc = tmp_path / "bomb.yaml"
    doc.write_text("\n".join(levels) + "\nname: bomb\nreward: {functions: [{name: http, params: "
                   "{url: 'http://x/', junk: *a8}}]}\n")
    assert len(doc.read_bytes()) < 1300
    with pytest.raises(ValueError, match="aliases expand to more than 100,000 nodes"):
        load_run_spec(doc)
    with pytest.raises(ValueError, match="nested too deeply"):
        load_yaml("[" * 50_000, "deep.yaml")
    with pytest.raises(ValueError, match="--set rl.rounds: YAML aliases"):
        load_run_spec(ROOT / "pipelines" / "toy-text.yaml", [
            "rl.rounds=" + "{" + ", ".join(f"k{i}: &k{i} " + ("[" + ", ".join([f"*k{i - 1}"] * 9) + "]"
                                                             if i else "[1]") for i in range(9)) + "}"])
    # ordinary anchors still work
    assert load_yaml("x: &g {a: 1}\ny: *g\n") == {"x": {"a": 1}, "y": {"a": 1}}


@pytest.mark.parametrize("params,where", [
    ({"url": "http://x/", "api_key": "abc123"}, "params.api_key"),
    ({"url": "http://x/", "headers": {"Authorization": "Bearer s3cr3tvalue"}}, "params.headers.Authorization"),
    ({"url": "http://user:hunter2@x/"}, "params.url"),
    ({"url": "http://x/", "extra": ["AKIAABCDEFGHIJKLMNOP"]}, "params.extra[0]"),
    ({"url": "http://x/", "headers_env": {"Authorization": "Bearer abcdefghijkl"}}, "params.headers_env.Authorization"),
])
def test_secret_looking_reward_params_are_refused(params, where):
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate({"name": "x", "reward": {"functions": [{"name": "http", "params": params}]}})
    message = format_validation_error(info.value)
    assert f"{where} looks like a secret" in message and "environment variable" in message, message


def test_the_sanctioned_way_to_name_a_secret_is_accepted():
    spec = RunSpec.model_validate({"name": "x", "reward": {"functions": [
        {"name": "http", "params": {"url": "http://x/", "headers_env": {"Authorization": "REWARD_API_AUTH"},
                                    "timeout": 5}}]}})
    assert spec.reward.functions[0].params["headers_env"] == {"Authorization": "REWARD_API_AUTH"}


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _mutate(doc, rng: random.Random):
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(doc) if p]
        path = rng.choice(paths)
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = rng.random()
        if action < 0.75:
            parent[path[-1]] = copy.deepcopy(rng.choice(HOSTILE))
        elif action < 0.85 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[rng.choice(["x", "lr ", "__init__", "rounds"])] = rng.choice(HOSTILE)
    return doc


def test_fuzz_validate_never_tracebacks_and_never_accepts_nan():
    rng = random.Random(14)
    tried = accepted = 0
    for _ in range(400):
        doc = _mutate(rng.choice(BASES), rng)
        tried += 1
        try:
            spec = RunSpec.model_validate(doc)
        except ValidationError as err:
            lines = format_validation_error(err, "fuzz.yaml").splitlines()
            assert lines and all(line.startswith("fuzz.yaml: ") for line in lines)
            continue
        except ValueError as err:  # a rule outside pydantic's own errors: still one message
            assert str(err)
            continue
        accepted += 1
        assert _finite(spec.model_dump(mode="json")), doc
    print(f"fuzz: {tried} documents, {accepted} accepted, {tried - accepted} refused with field paths")
    assert tried == 400 and 0 < accepted < tried
