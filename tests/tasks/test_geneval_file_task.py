"""The ``geneval`` task (tasks/geneval_files.py) on the real GenEval metadata, and dataset files
read from store URIs (tasks/files.py ``local_copy``; ``file://`` on loopback-free local disk)."""

import json

import pytest

from shared_data import GENEVAL, needs

from maskgrpo.tasks import get_task, list_tasks
from maskgrpo.tasks.files import local_copy

needs_geneval = needs(GENEVAL)

ROWS = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "counting", "include": [{"class": "cow", "count": 2}], "exclude": [{"class": "cow", "count": 3}],
     "prompt": "a photo of two cows"},
    {"tag": "position", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}],
     "prompt": "a photo of a dog left of a cat"},
    {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@needs_geneval
def test_every_row_of_the_real_benchmark_parses():
    lines = [json.loads(line) for line in GENEVAL.read_text().splitlines() if line.strip()]
    task = get_task("geneval", path=str(GENEVAL), eval_permille=1000)  # the whole file is the eval split
    examples = task.split_examples("eval")
    assert len(lines) == 553 and len(examples) == 553 and task.split_size("train") == 0
    by_prompt = {row["prompt"]: row for row in lines}
    for ex in examples:
        # prompt = the metadata's prompt; the column is the row itself (the file has no fields
        # beyond tag/include/exclude/prompt, and to_json writes count explicitly as the file does)
        assert ex.answer == "" and ex.columns == {"metadata": by_prompt[ex.prompt]}
    assert {ex.columns["metadata"]["tag"] for ex in examples} == {
        "single_object", "two_object", "counting", "colors", "position", "color_attr"}
    assert task.completion_length == 32 * 32  # MMaDA: 1024 image slots


@needs_geneval
def test_the_benchmark_file_loads_and_the_default_reward_is_http():
    task = get_task("geneval", path=str(GENEVAL))
    assert task.path == GENEVAL and task.reward == "http"
    assert task.split_size("train") + task.split_size("eval") == 553
    # the same seed draws the same examples; different seeds, other orders
    assert task.examples("eval", 5, seed=1) == task.examples("eval", 5, seed=1)


def test_eval_path_holds_out_its_prompts_and_rows_are_validated(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ROWS)
    evals = write_jsonl(tmp_path / "eval.jsonl", ROWS[:1])
    task = get_task("geneval", path=str(train), eval_path=str(evals), grid_size=16)
    assert [e.prompt for e in task.split_examples("eval")] == ["a photo of a bench"]
    assert [e.prompt for e in task.split_examples("train")] == [r["prompt"] for r in ROWS[1:]]
    assert task.completion_length == 256 and "geneval" in list_tasks()
    position = task.split_examples("train")[1].columns["metadata"]
    assert position["include"][1]["position"] == ["left of", 0]

    bad = write_jsonl(tmp_path / "bad.jsonl", ROWS[:2] + [{"tag": "x", "include": [], "prompt": "p"}])
    with pytest.raises(ValueError, match=r"bad.jsonl:3.include: expected a non-empty list"):
        get_task("geneval", path=str(bad)).split_examples("train")
    with pytest.raises(ValueError, match="grid_size must be a positive integer"):
        get_task("geneval", path=str(train), grid_size=0)
    with pytest.raises(ValueError, match=r"task 'geneval' has no parameter 'completion_length'"):
        get_task("geneval", path=str(train), completion_length=5)


def test_store_uris_are_read_through_the_store_backend(tmp_path):
    bucket = tmp_path / "bucket" / "datasets" / "geneval"
    bucket.mkdir(parents=True)
    write_jsonl(bucket / "train.jsonl", ROWS)
    write_jsonl(bucket / "eval.jsonl", ROWS[3:])
    root = f"file://{tmp_path / 'bucket'}/datasets/geneval"
    task = get_task("geneval", path=f"{root}/train.jsonl", eval_path=f"{root}/eval.jsonl")
    assert task.split_size("train") == 3 and task.split_examples("eval")[0].prompt == "a photo of a red car"
    assert f"{root}/train.jsonl" in repr(task)  # the URI is kept as given (pathlib would drop a slash)

    # GSM8K reads its URIs the same way (llada-gsm8k.yaml names s3:// datasets)
    gsm = [{"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"} for i in range(5)]
    write_jsonl(bucket / "gsm.jsonl", gsm)
    assert get_task("gsm8k", path=f"{root}/gsm.jsonl", eval_permille=0).split_size("train") == 5

    with pytest.raises(FileNotFoundError, match=f"dataset file not found: {root}/nope.jsonl"):
        get_task("geneval", path=f"{root}/nope.jsonl").split_examples("train")
    (bucket / "broken.jsonl").write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(ValueError, match=f"{root}/broken.jsonl:2: not JSON"):  # the URI, not the temporary copy
        get_task("geneval", path=f"{root}/broken.jsonl").split_examples("train")


def test_local_copy_removes_the_download_and_passes_local_paths_through(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    with local_copy(tmp_path / "a.jsonl") as local:
        assert local == tmp_path / "a.jsonl"
    with local_copy(f"file://{tmp_path}/a.jsonl") as local:
        assert local != tmp_path / "a.jsonl" and local.read_text() == "{}\n"
    assert not local.exists()
    with pytest.raises(ValueError, match="expected <scheme>://<bucket or folder>/.../<file>"):
        with local_copy("s3://"):
            pass
