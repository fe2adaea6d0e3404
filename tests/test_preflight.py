"""Pre-flight (maskgrpo/preflight.py): `maskgrpo validate` and `maskgrpo run` refuse a pipeline whose
model source or dataset is missing, one line per problem naming the field and URI, exit 2, before
any store is written; reachable sources pass. S3 cases run against the real SeaweedFS fixture."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from shared_data import SUDOKU, needs

from maskgrpo.cli import main
from maskgrpo.preflight import check_dataset, check_model_source, check_sources
from maskgrpo.specs import RunSpec
from maskgrpo.store import open_store
from maskgrpo.store.testing import TEST_BUCKET

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "toy-text.yaml"


def errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


def test_validate_refuses_a_missing_dataset_naming_the_field(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    code = main(["validate", str(PIPELINE), "--set", "task.name=countdown", "--set", f"task.params={{path: {missing}}}"])
    assert code == 2
    assert errors(capsys) == [f"maskgrpo: error: task.params.path: dataset file not found: {missing}"]


def test_validate_and_run_refuse_a_missing_model_folder_before_writing(tmp_path, capsys):
    store = tmp_path / "runs"
    for cmd in (["validate"], ["run", "--store", str(store)]):
        code = main([cmd[0], str(PIPELINE), *cmd[1:], "--set", f"model.source={tmp_path / 'no-model'}",
                     "--set", f"task.params={{path: {tmp_path / 'x.jsonl'}}}", "--set", "task.name=prompt-answer"])
        assert code == 2
        assert errors(capsys) == [  # both problems, one line each, the field first
            f"maskgrpo: error: model.source: '{tmp_path / 'no-model'}' is neither builtin:tiny, a store URI nor an existing folder",
            f"maskgrpo: error: task.params.path: dataset file not found: {tmp_path / 'x.jsonl'}",
        ]
    assert not store.exists()  # run stopped before the store was touched


def test_offline_skips_the_check(tmp_path, capsys):
    assert main(["validate", str(PIPELINE), "--offline", "--set", f"model.source={tmp_path / 'no-model'}"]) == 0


@needs(SUDOKU)
def test_a_present_dataset_file_passes(tmp_path):
    # d1's 500-row sudoku file: 445 train / 55 eval rows; a model folder with its own tokenizer
    run = RunSpec.model_validate({"name": "x", "model": {"source": str(tmp_path)}, "task": {
        "name": "sudoku", "params": {"path": str(SUDOKU)}, "train_size": 445, "eval_size": 55}})
    assert check_sources(run) == []


@needs(SUDOKU)
def test_a_small_local_file_is_read_for_sizes_and_the_tiny_tokenizer():
    """The default sizes (2000 / 200) and builtin:tiny on d1's sudoku file: each of the three would
    stop the run at its first stage (SFT), after the store and orchestrator are up."""
    run = RunSpec.model_validate({"name": "x", "task": {"name": "sudoku", "params": {"path": str(SUDOKU)}}})
    problems = check_sources(run)
    assert [line.split(":")[0] for line in problems] == ["task.train_size", "task.eval_size", "task.params.path"]
    assert problems[0].endswith("holds 445 examples") and problems[1].endswith("holds 55 examples")
    assert "has characters '\\nFPST' that builtin:tiny's character tokenizer lacks" in problems[2]


def _rows(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(r + "\n" for r in rows))
    return path


def test_a_users_prompt_answer_file_is_checked_before_running(tmp_path, capsys):
    doc = ["--set", "task.name=prompt-answer", "--set", "task.train_size=3", "--set", "task.eval_size=1"]
    good = [f'{{"prompt": "sort:{d}=", "answer": "{"".join(sorted(d))}"}}' for d in ("321", "213", "132")]
    data = _rows(tmp_path / "mine.jsonl", good)
    evals = _rows(tmp_path / "eval.jsonl", ['{"prompt": "sort:312=", "answer": "123"}'])
    ok = [*doc, "--set", f"task.params={{path: {data}, eval_path: {evals}}}"]
    assert main(["validate", str(PIPELINE), *ok]) == 0
    capsys.readouterr()
    assert main(["validate", str(PIPELINE), *ok, "--set", "task.train_size=4"]) == 2
    assert errors(capsys)[0].startswith("maskgrpo: error: task.train_size: 4 asked, but the train split of ")
    _rows(data, [*good, '{"prompt": "Sort: 9", "answer": "9"}'])  # an upper-case letter and a new row
    assert main(["validate", str(PIPELINE), *ok]) == 2
    assert errors(capsys) == ["maskgrpo: error: task.params.path: prompt 'Sort: 9' has characters 'S' that builtin:tiny's "
                              "character tokenizer lacks (it knows '0123456789abcdefghijklmnopqrstuvwxyz+-*/=()<>,.:;|? '): "
                              "rewrite the data or use a model with its own tokenizer"]
    _rows(data, [*good, '{"prompt": "sort:987654321=", "answer": "123456789"}'])  # 10 tokens: the samplers make 8
    assert main(["validate", str(PIPELINE), *ok]) == 2
    assert errors(capsys) == [f"maskgrpo: error: {f}.gen_length: 8 is shorter than the longest answer in the data "
                              "(10 tokens with its EOS: '123456789')" for f in ("rl.sampler", "evaluate.sampler")]
    _rows(data, [*good, '{"prompt": "sort:1="}'])  # a row without its answer: named by file and row
    assert main(["validate", str(PIPELINE), *ok]) == 2
    assert errors(capsys) == [f"maskgrpo: error: task.params.path: {data}: row 4: column 'answer' is missing "
                              "(columns: ['prompt'])"]


def test_a_file_over_the_read_limit_is_only_checked_to_exist(tmp_path, monkeypatch):
    import maskgrpo.preflight as preflight

    data = _rows(tmp_path / "mine.jsonl", ['{"prompt": "Sort: 9", "answer": "9"}'])
    run = RunSpec.model_validate({"name": "x", "task": {"name": "prompt-answer", "params": {"path": str(data)}}})
    assert len(check_sources(run)) == 3  # sizes (1 row) and the upper-case letter
    monkeypatch.setattr(preflight, "READ_LIMIT", data.stat().st_size - 1)
    assert check_sources(run) == []  # read at the first stage instead


def test_store_uri_model_source_missing_and_present(tmp_path):
    uri = f"file://{tmp_path}/models"
    assert check_model_source("model.source", f"{uri}/absent") == [
        f"model.source: '{uri}/absent': no imported checkpoint (maskgrpo import) there"]
    assert check_model_source("model.source", f"{uri}/run1/update/3") == [
        f"model.source: '{uri}/run1/update/3': no committed update output there"]
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    from maskgrpo.models.loading import import_checkpoint

    source = import_checkpoint(folder, uri, "present")
    assert check_model_source("model.source", source) == []


def test_registry_ref_needs_a_version_unless_first_tick(tmp_path):
    store = f"file://{tmp_path}"
    assert check_model_source("model.source", "registry:toy@v3", store) == [
        f"model.source: 'registry:toy@v3': no version 3 of model 'toy': {store}/_registry/toy/versions/000003.json "
        "does not exist (versions: none)"]
    assert check_model_source("model.source", "registry:toy@previous", store) == [
        f"model.source: 'registry:toy@previous': the registry of 'toy' in {store} has no version 'previous'"]
    assert check_model_source("model.source", "registry:toy@champion", store, initial="builtin:tiny") == []


@pytest.mark.s3
def test_s3_dataset_object_missing_and_present(s3_env):
    prefix = f"s3://{TEST_BUCKET}/preflight-{uuid.uuid4().hex[:8]}"
    good = f"{prefix}/data/train.jsonl"
    open_store(f"{prefix}/data")._b.put("train.jsonl", b'{"prompt": "a", "answer": "b"}\n')
    assert check_dataset("task.params.path", good) == []
    assert check_dataset("task.params.eval_path", f"{prefix}/data/eval.jsonl") == [
        f"task.params.eval_path: dataset object not found: {prefix}/data/eval.jsonl"]
    assert check_model_source("model.source", f"{prefix}/models/llada") == [
        f"model.source: '{prefix}/models/llada': no imported checkpoint (maskgrpo import) there"]


def test_a_generated_task_too_small_for_the_sizes_is_refused(capsys):
    """countdown-lite with numbers 1-6 and targets up to 20 holds 2009 problems: 1813 train, 196 eval."""
    doc = ["--set", "task.name=countdown-lite", "--set", "task.params={max_number: 6, max_target: 20}"]
    assert main(["validate", str(PIPELINE), *doc, "--set", "task.train_size=1500", "--set", "task.eval_size=150"]) == 0
    capsys.readouterr()
    assert main(["validate", str(PIPELINE), *doc, "--set", "task.train_size=1900"]) == 2
    assert errors(capsys) == [
        "maskgrpo: error: task.train_size: 1900 asked, but the train split of CountdownLiteTask(max_number=6, "
        "max_target=20) holds 1813 problems",
        "maskgrpo: error: task.eval_size: 200 asked, but the eval split of CountdownLiteTask(max_number=6, "
        "max_target=20) holds 196 problems",
    ]
