"""maskgrpo.specs: cross-field rules, extra="forbid", frozen models, descriptions, spec_hash, --set
overrides, and the ``maskgrpo validate`` / ``maskgrpo run`` behaviour on bad documents
(exit 2, ``<file>: <field.path>: <reason>``, nothing written)."""

from __future__ import annotations

import typing
import warnings
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from maskgrpo.cli import main
from maskgrpo.specs import (
    STAGE_SPECS, RlSpec, RunSpec, StageResources, TextSamplerSpec, TinyModelSpec, format_validation_error,
    load_run_spec, spec_hash,
)

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))


def errors_of(fn, *args, **kwargs) -> str:
    with pytest.raises(ValidationError) as info:
        fn(*args, **kwargs)
    return format_validation_error(info.value, "doc.yaml")


# ---------------------------------------------------------------------------------------------
# Cross-field rules: each with a passing neighbour, so the rule (not something else) is what fails
# ---------------------------------------------------------------------------------------------


def test_block_length_must_divide_gen_length():
    TextSamplerSpec(gen_length=16, block_length=8, steps=16)  # 16 = 2 * 8
    msg = errors_of(TextSamplerSpec, gen_length=16, block_length=5, steps=16)  # 16 = 3 * 5 + 1
    assert "block_length (5) must divide gen_length (16)" in msg


def test_steps_divisible_by_number_of_blocks():
    TextSamplerSpec(gen_length=16, block_length=4, steps=8)  # 4 blocks, 2 steps each
    msg = errors_of(TextSamplerSpec, gen_length=16, block_length=4, steps=6)  # 6 / 4 blocks = 1.5
    assert "steps (6) must be divisible by the number of blocks (4)" in msg


@pytest.mark.parametrize("bad", [0, 1])
def test_group_size_at_least_two(bad):
    RlSpec(group_size=2, prompts_per_round=32, minibatch_size=64)  # 32 * 2 = 64 completions
    msg = errors_of(RlSpec, group_size=bad, minibatch_size=1)
    assert "group_size" in msg and "greater than or equal to 2" in msg


@pytest.mark.parametrize("rate,ok", [(0.0, True), (0.6, True), (0.999, True), (1.0, False), (-0.1, False)])
def test_min_mask_rate_in_zero_one(rate, ok):
    if ok:
        assert RlSpec(min_mask_rate=rate).min_mask_rate == rate
    else:
        assert "min_mask_rate" in errors_of(RlSpec, min_mask_rate=rate)


def test_minibatch_at_most_completions_per_round():
    RlSpec(prompts_per_round=4, group_size=4, minibatch_size=16)  # 4 * 4 = 16: equal is fine
    msg = errors_of(RlSpec, prompts_per_round=4, group_size=4, minibatch_size=17)
    assert "minibatch_size (17) exceeds the completions per round (16)" in msg


def test_heads_divide_hidden():
    TinyModelSpec(hidden_size=96, num_heads=4)  # 96 = 4 * 24
    assert "num_heads (5) must divide hidden_size (96)" in errors_of(TinyModelSpec, hidden_size=96, num_heads=5)


def test_accelerator_count_needs_type():
    StageResources(accelerator_count=1, accelerator_type="nvidia.com/gpu")
    StageResources(accelerator_count=0)
    assert "accelerator_count > 0 needs accelerator_type" in errors_of(StageResources, accelerator_count=2)


def test_builtin_tiny_needs_sft():
    RunSpec(name="x", model={"source": "/ckpt"}, sft={"enabled": False})  # a checkpoint may skip SFT
    msg = errors_of(RunSpec, name="x", sft={"enabled": False})
    assert "builtin:tiny" in msg and "enable sft" in msg


@pytest.mark.parametrize("name,ok", [
    ("toy-text", True), ("a", True), ("a1-b2", True), ("x" * 63, True),
    ("Toy", False), ("-toy", False), ("toy-", False), ("toy_text", False), ("toy.text", False), ("x" * 64, False), ("", False),
])
def test_name_is_a_dns_label(name, ok):
    if ok:
        assert RunSpec(name=name).name == name
    else:
        assert errors_of(RunSpec, name=name).startswith("doc.yaml: name: ")


# ---------------------------------------------------------------------------------------------
# Model hygiene: extra="forbid", frozen, every field described (walk every model)
# ---------------------------------------------------------------------------------------------


def test_typo_names_the_field():
    msg = errors_of(RunSpec.model_validate, {"name": "x", "rl": {"group_sise": 4}})
    assert msg == "doc.yaml: rl.group_sise: Extra inputs are not permitted"


def test_frozen():
    run = RunSpec(name="x")
    with pytest.raises(ValidationError, match="frozen"):
        run.seed = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        run.rl.sampler.steps = 3  # type: ignore[misc]


def _models(root: type[BaseModel], seen: set) -> None:
    if root in seen:
        return
    seen.add(root)
    for field in root.model_fields.values():
        stack = [field.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                _models(tp, seen)
            stack.extend(typing.get_args(tp))


def all_models() -> list[type[BaseModel]]:
    seen: set = set()
    for root in (RunSpec, *STAGE_SPECS.values()):
        _models(root, seen)
    return sorted(seen, key=lambda m: m.__name__)


def test_walk_reaches_the_nested_models():
    names = {m.__name__ for m in all_models()}
    assert {"RunSpec", "RlSpec", "TextSamplerSpec", "TinyModelSpec", "Toleration", "StageResources",
            "SftSpec", "RolloutSpec", "ScoreSpec", "UpdateSpec", "EvaluateSpec"} <= names


@pytest.mark.parametrize("model", all_models(), ids=lambda m: m.__name__)
def test_every_field_described_forbid_frozen(model):
    undescribed = [n for n, f in model.model_fields.items() if not (f.description or "").strip()]
    assert undescribed == [], f"{model.__name__}: fields without a description: {undescribed}"
    assert model.model_config.get("extra") == "forbid"
    assert model.model_config.get("frozen") is True


# ---------------------------------------------------------------------------------------------
# spec_hash
# ---------------------------------------------------------------------------------------------


def test_spec_hash_stable_and_sensitive():
    a = RunSpec(name="x", rl={"lr": 1e-4})
    b = RunSpec.model_validate({"rl": {"lr": 0.0001}, "name": "x"})  # same values, other key order
    assert spec_hash(a) == spec_hash(b)
    assert len(spec_hash(a)) == 64 and int(spec_hash(a), 16) >= 0  # hex sha256
    # a defaulted field written out explicitly is the same spec
    assert spec_hash(RunSpec(name="x", seed=0)) == spec_hash(RunSpec(name="x"))
    changed = {spec_hash(RunSpec(name="x", rl={"lr": 1e-4, "min_mask_rate": 0.61})),
               spec_hash(RunSpec(name="x", rl={"lr": 1e-4, "sampler": {"temperature": 0.9}})),
               spec_hash(RunSpec(name="y", rl={"lr": 1e-4})),
               spec_hash(RunSpec(name="x", rl={"lr": 1e-4}, seed=1))}
    assert len(changed) == 4 and spec_hash(a) not in changed


# ---------------------------------------------------------------------------------------------
# --set overrides
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def doc(tmp_path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nrl:\n  rounds: 3\n")
    return path


def test_set_nested_and_yaml_typed(doc):
    run = load_run_spec(doc, [
        "rl.sampler.temperature=0.5",  # float
        "rl.rounds=7",  # int
        "sft.enabled=true",  # bool
        "task.params={length: 4}",  # a mapping
        "reward.functions=[{name: sort_dense, weight: 2}]",  # a list of models
    ])
    assert run.rl.sampler.temperature == 0.5 and run.rl.rounds == 7 and run.sft.enabled is True
    assert run.task.params == {"length": 4}
    assert run.reward.functions[0].name == "sort_dense" and run.reward.functions[0].weight == 2.0
    assert load_run_spec(doc, ["description='x=y'"]).description == "x=y"  # only the first '=' splits
    assert load_run_spec(doc, ["seed=  5"]).seed == 5


def test_set_addresses_list_items(doc):
    one = "reward.functions=[{name: sort_dense}]"
    run = load_run_spec(doc, [one, "reward.functions.0.params.answer_tag=true", "reward.functions.-1.weight=3"])
    assert run.reward.functions[0].params == {"answer_tag": True} and run.reward.functions[0].weight == 3.0
    assert load_run_spec(doc, [one, "reward.functions.0={name: sort_exact}"]).reward.functions[0].name == "sort_exact"
    assert load_run_spec(doc, ["model.lora.r=4", "model.source=/x"]).model.lora.r == 4  # null/absent: a new mapping


def test_set_bad_paths(doc):
    with pytest.raises(ValueError, match=r"rl\.nope: Extra inputs are not permitted"):
        load_run_spec(doc, ["rl.nope=1"])
    with pytest.raises(ValueError, match=r"--set rl.rounds.x: rl.rounds is not a mapping or a list"):
        load_run_spec(doc, ["rl.rounds.x=1"])
    with pytest.raises(ValueError, match=r"--set reward.functions.5.weight: reward.functions has 1 item\(s\): no index 5"):
        load_run_spec(doc, ["reward.functions=[{name: sort_dense}]", "reward.functions.5.weight=1"])
    with pytest.raises(ValueError, match=r"--set reward.functions.first.weight: reward.functions is a list: 'first' is no index"):
        load_run_spec(doc, ["reward.functions=[{name: sort_dense}]", "reward.functions.first.weight=1"])
    with pytest.raises(ValueError, match=r"--set rl.rounds: not valid YAML: .* at line 1, column 6"):
        load_run_spec(doc, ["rl.rounds=[1, 2"])
    with pytest.raises(ValueError, match=r"--set rl..rounds: empty key"):
        load_run_spec(doc, ["rl..rounds=1"])
    with pytest.raises(ValueError, match="expected dotted.key=value"):
        load_run_spec(doc, ["rl.rounds"])
    with pytest.raises(ValueError, match=r"rl\.rounds: Input should be a valid integer"):
        load_run_spec(doc, ["rl.rounds=three"])


# ---------------------------------------------------------------------------------------------
# maskgrpo validate / run on good and bad documents
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_validate_shipped_pipelines(path, capsys, tmp_path):
    # toy pipelines pass the pre-flight too (their data ship with the package); the real-model ones
    # name s3:// checkpoints and datasets of the cluster's store, and toy-retrain's data files are
    # written by `maskgrpo retrain-ticks`, so those are checked --offline here
    offline = [] if path.name.startswith("toy-") and path.name != "toy-retrain.yaml" else ["--offline"]
    assert main(["validate", str(path), "--store", str(tmp_path), *offline]) == 0
    assert f"{path}: valid" in capsys.readouterr().out


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_shipped_pipelines_validate_and_dump_without_a_warning(path):
    # Pydantic warns (UserWarning "Pydantic serializer warnings") when a union member's serializer
    # gets a value it does not expect; the sampler union with its wrap serializers is where that
    # would show. Validating, dumping (python and JSON), re-validating the dump, and the same for
    # every stage spec of the plan must stay silent.
    from maskgrpo.plan import build_plan

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = load_run_spec(path)
        run.model_dump()
        assert RunSpec.model_validate_json(run.model_dump_json()) == run
        calls = build_plan(run, run_id="r1", store="file:///unused")
        for call in calls:
            call.spec.model_dump()
            assert STAGE_SPECS[call.spec.kind].model_validate_json(call.spec.model_dump_json()) == call.spec
    assert calls and [str(w.message) for w in caught] == []


BAD_DOCUMENTS = {
    "typo": ("name: x\nrl:\n  group_sise: 4\n", "rl.group_sise: Extra inputs are not permitted"),
    "blocks": ("name: x\nrl:\n  sampler: {gen_length: 8, block_length: 3, steps: 8}\n",
               "rl.sampler: Value error, block_length (3) must divide gen_length (8)"),
    "group": ("name: x\nrl: {group_size: 1, minibatch_size: 8}\n", "rl.group_size: Input should be greater than or equal to 2"),
    "gamma": ("name: x\nrl: {min_mask_rate: 1.0}\n", "rl.min_mask_rate: Input should be less than 1"),
    "minibatch": ("name: x\nrl: {prompts_per_round: 2, group_size: 2, minibatch_size: 5}\n",
                  "rl: Value error, minibatch_size (5) exceeds the completions per round (4)"),
    "heads": ("name: x\nmodel: {tiny: {hidden_size: 30, num_heads: 4}}\n",
              "model.tiny: Value error, num_heads (4) must divide hidden_size (30)"),
    "accel": ("name: x\ncluster: {resources: {update: {accelerator_count: 1}}}\n",
              "cluster.resources.update: Value error, accelerator_count > 0 needs accelerator_type"),
    "nosft": ("name: x\nsft: {enabled: false}\n", "(document): Value error, model.source 'builtin:tiny' is untrained"),
    "name": ("name: Toy_Text\n", "name: String should match pattern"),
    "missing-name": ("seed: 1\n", "name: Field required"),
    "type": ("name: x\nseed: -1\n", "seed: Input should be greater than or equal to 0"),
    "not-a-mapping": ("- a\n- b\n", "a pipeline document is a mapping, got list"),
    "not-yaml": ("name: [x\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_validate_bad_document(case, tmp_path, capsys):
    text, expected = BAD_DOCUMENTS[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"maskgrpo: error: {path}: {expected}" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # validate wrote nothing


def test_validate_reports_every_error_one_per_line(tmp_path, capsys):
    path = tmp_path / "two.yaml"
    path.write_text("name: x\nseed: -1\nrl: {group_sise: 3}\n")
    assert main(["validate", str(path)]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert lines[0] == f"maskgrpo: error: {path}: seed: Input should be greater than or equal to 0"
    assert lines[1] == f"{path}: rl.group_sise: Extra inputs are not permitted"


def test_validate_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such pipeline document" in capsys.readouterr().err


def test_run_invalid_document_writes_nothing(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_DOCUMENTS["minibatch"][0])
    store_dir = tmp_path / "runs"
    assert main(["run", str(path), "--store", f"file://{store_dir}", "--run-id", "r1"]) == 2
    assert "minibatch_size (5) exceeds" in capsys.readouterr().err
    assert not store_dir.exists()
    # a valid document with a bad --set is refused the same way
    good = ROOT / "pipelines" / "toy-text.yaml"
    assert main(["run", str(good), "--store", f"file://{store_dir}", "--set", "rl.sampler.block_length=3"]) == 2
    assert "rl.sampler: Value error, block_length (3) must divide gen_length (8)" in capsys.readouterr().err
    assert not store_dir.exists()


def test_geneval_protocol_preset_sets_the_papers_evaluation():
    # docs/algorithm.md §10: both samplers at tau 1, 32 steps, CFG 3.5, MMaDA's compounding noise, 4 images per prompt.
    toy = load_run_spec(ROOT / "pipelines" / "toy-image.yaml")
    run = load_run_spec(ROOT / "pipelines" / "toy-image.yaml", ["image.eval_protocol=geneval"])
    s = run.evaluate.sampler
    assert (s.temperature, s.steps, s.cfg_scale, s.maskgit) == (1.0, 32, 3.5, "mmada")
    assert s.sampler == toy.evaluate.sampler.sampler  # the protocol fixes the settings, not which sampler
    assert run.image.eval_images_per_prompt == 4
    assert run.rl.sampler == toy.rl.sampler  # rollouts untouched
