"""File datasets: readers, column errors, disjoint splits, and the real d1 benchmark files."""

import json

import pytest

from shared_data import COUNTDOWN, SUDOKU, needs

from maskgrpo.tasks import get_task
from maskgrpo.tasks.files import read_csv, read_jsonl, read_parquet, read_records
from maskgrpo.tasks.toy import count_sudoku_solutions

needs_countdown = needs(COUNTDOWN)
needs_sudoku = needs(SUDOKU)

GSM_ROWS = [
    {"question": f"Tom has {i} apples and buys {i + 1} more. How many apples does he have?",
     "answer": f"He has {i} + {i + 1} = {2 * i + 1} apples.\n#### {2 * i + 1:,}"}
    for i in range(1, 41)
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_read_jsonl_and_errors(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"x": 1}\n\n{"x": 2}\n')
    assert read_jsonl(p) == [{"x": 1}, {"x": 2}]
    p.write_text('{"x": 1}\n{"x": \n')
    with pytest.raises(ValueError, match=r"a.jsonl:2: not valid JSON"):
        read_jsonl(p)
    p.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=r"a.jsonl:1: expected a JSON object, got list"):
        read_jsonl(p)
    with pytest.raises(FileNotFoundError, match="dataset file not found: .*nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match=r"unsupported dataset format '.txt'"):
        read_records(tmp_path / "a.txt")


def test_read_csv(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("Puzzle,Solution\n0,1\n")
    assert read_csv(p) == read_records(p) == [{"Puzzle": "0", "Solution": "1"}]


def test_read_parquet_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow is optional")
    import pyarrow.parquet as pq

    p = tmp_path / "m.parquet"
    pq.write_table(pa.table({"problem": ["1+1?", "2+2?"], "answer": ["2", "4"]}), p)
    assert read_parquet(p) == [{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?", "answer": "4"}]
    task = get_task("math500", path=str(p), eval_permille=0)
    assert [e.answer for e in task.examples("train", 2, seed=0)] in (["2", "4"], ["4", "2"])


def test_gsm8k_task(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k.jsonl", GSM_ROWS + GSM_ROWS[:3])  # 3 duplicates dropped
    task = get_task("gsm8k", path=str(path), eval_permille=250)
    train, evals = task.split_examples("train"), task.split_examples("eval")
    assert len(train) + len(evals) == 40 and train and evals
    assert not {e.prompt for e in train} & {e.prompt for e in evals}
    ex = task.examples("train", 5, seed=1)
    assert ex == task.examples("train", 5, seed=1) and ex != task.examples("train", 5, seed=2)
    first = next(e for e in train + evals if "Tom has 1 apples" in e.prompt)
    assert first.answer == "3" and "<reasoning>" in first.prompt and "\\boxed" in first.prompt
    big = next(e for e in train + evals if "Tom has 40 apples" in e.prompt)
    assert big.answer == "81"
    with pytest.raises(ValueError, match=f"the train split has {len(train)}"):
        task.examples("train", len(train) + 1, seed=0)


def test_eval_path_split_is_disjoint(tmp_path):
    train_file = write_jsonl(tmp_path / "train.jsonl", GSM_ROWS[:30])
    eval_file = write_jsonl(tmp_path / "test.jsonl", GSM_ROWS[25:])  # rows 25..29 overlap
    task = get_task("gsm8k", path=str(train_file), eval_path=str(eval_file))
    assert task.split_size("train") == 25 and task.split_size("eval") == 15


def test_column_errors_name_file_row_and_column(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"q": "1+1?", "answer": "#### 2"}])
    with pytest.raises(ValueError, match=r"q.jsonl: row 1: column 'question' is missing \(columns: \['answer', 'q'\]\)"):
        get_task("gsm8k", path=str(path)).split_examples("train")
    assert get_task("gsm8k", path=str(path), question_column="q", eval_permille=0).split_size("train") == 1
    with pytest.raises(ValueError, match="parameter path .* is required"):
        get_task("gsm8k")


def test_math500_answer_from_boxed_solution(tmp_path):
    rows = [{"problem": "Half of one?", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "answer": ""}]
    task = get_task("math500", path=str(write_jsonl(tmp_path / "m.jsonl", rows)), eval_permille=1000)
    (ex,) = task.examples("eval", 1, seed=0)
    assert ex.answer == "\\frac{1}{2}" and ex.prompt.endswith("Problem: Half of one?")


@needs_countdown
def test_real_countdown_file():
    task = get_task("countdown", path=str(COUNTDOWN), eval_permille=1000)
    exs = task.split_examples("eval")
    assert len(exs) == 256 and task.split_size("train") == 0
    first = exs[0]  # {"input": "30,100,93", "output": "23"}
    assert first.columns == {"numbers": [30, 100, 93], "target": 23}
    assert "Numbers: 30, 100, 93\nTarget: 23" in first.prompt
    assert all(e.answer for e in exs)  # a solution was found for every row


@needs_sudoku
def test_real_sudoku_file():
    task = get_task("sudoku", path=str(SUDOKU), eval_permille=1000)
    exs = task.split_examples("eval")
    assert len(exs) == 500
    for e in exs:
        puzzle = e.columns["puzzle"]
        assert e.prompt.endswith(f"Puzzle: {puzzle}") and puzzle.count("0") == 8
        assert count_sudoku_solutions(puzzle) >= 1


@pytest.mark.parametrize("name,source", [("countdown", "countdown_cd3_test.jsonl"), ("sudoku", "sudoku_4x4_test.csv"),
                                         ("geneval", "evaluation_metadata.jsonl"), ("gsm8k", "parameter path")])
def test_a_file_task_without_path_is_refused_naming_its_source(name, source):
    """No dataset ships with the package and no default points outside it (../shared is beside the
    clone, not in an install): a file task without ``path`` is refused, saying what file it needs."""
    with pytest.raises(ValueError, match=rf"task '{name}': parameter path \(the dataset file\) is required: .*") as err:
        get_task(name)
    assert source in str(err.value) and "shared" not in str(err.value)


def test_validate_refuses_a_file_task_without_path_at_task_params(capsys):
    from pathlib import Path

    from maskgrpo.cli import main

    doc = Path(__file__).resolve().parents[2] / "pipelines" / "toy-text.yaml"
    assert main(["validate", str(doc), "--set", "task.name=sudoku", "--set", "task.params={}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task.params" in err[0] and "sudoku_4x4_test.csv" in err[0], err
