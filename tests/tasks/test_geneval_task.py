"""tasks/geneval.py: codec, detector, GenEval schema (real metadata too) and the toy generator."""

import doctest
from pathlib import Path

import pytest

import maskgrpo.tasks.geneval as geneval
from maskgrpo.rewards.geneval import geneval_strict
from maskgrpo.tasks import get_task
from maskgrpo.tasks.geneval import (
    GenEvalMetadata, detect_objects, grid_to_png, grid_to_text, load_geneval_metadata, png_to_grid, relation_holds,
    text_to_grid,
)

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "benchmarks" / "geneval_evaluation_metadata.jsonl"

# A red plus (rows 0-2, cols 0-2), a blue square (rows 5-6, cols 5-6), one stray yellow cell.
GRID = [
    [0, 1, 0, 0, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0, 0, 0],
    [0, 1, 0, 0, 0, 0, 0, 4],
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 3, 3, 0],
    [0, 0, 0, 0, 0, 3, 3, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
]


def test_codec_round_trips_text_and_png():
    text = grid_to_text(GRID)
    assert len(text) == 64 and text[:8] == "01000000"
    assert text_to_grid(text, 8) == GRID
    assert png_to_grid(grid_to_png(GRID, cell=5), 8) == GRID  # nearest palette colour at cell centres
    with pytest.raises(ValueError, match="expected 8x8 = 64"):
        text_to_grid(text[:-1], 8)
    with pytest.raises(ValueError, match="outside the codes"):
        text_to_grid("9" * 64, 8)


def test_detector_finds_shapes_colours_and_stray_cells():
    found = sorted(detect_objects(GRID), key=lambda o: o.color)
    assert [(o.cls, o.color) for o in found] == [("square", "blue"), ("plus", "red"), (None, "yellow")]
    blue, red = found[0], found[1]
    assert red.center == (1.0, 1.0) and blue.center == (5.5, 5.5)
    # red is left of blue: 5.5 - 1.0 = 4.5 >= 1 cell; and above it.
    assert relation_holds(red, "left of", blue) and relation_holds(red, "above", blue)
    assert not relation_holds(red, "right of", blue)


def test_diamond_is_one_component_under_8_connectivity():
    grid = [[0] * 8 for _ in range(8)]
    for r, c in [(0, 1), (1, 0), (1, 2), (2, 1)]:
        grid[r][c] = 2
    assert [(o.cls, o.color) for o in detect_objects(grid)] == [("diamond", "green")]


def test_schema_round_trip_and_errors():
    doc = {"tag": "position", "include": [{"class": "bar", "count": 1}, {"class": "plus", "count": 1, "position": ["left of", 0]}],
           "prompt": "a plus left of a bar"}
    assert GenEvalMetadata.from_json(doc).to_json() == doc
    with pytest.raises(ValueError, match=r"include\[1\].position: index 5"):
        GenEvalMetadata.from_json({**doc, "include": [doc["include"][0], {"class": "x", "count": 1, "position": ["above", 5]}]})
    with pytest.raises(ValueError, match=r"include\[0\].count"):
        GenEvalMetadata.from_json({"tag": "t", "include": [{"class": "x", "count": -1}]})


@pytest.mark.skipif(not REAL.is_file(), reason="real GenEval metadata not present under ../shared/data/benchmarks")
def test_every_row_of_the_real_geneval_metadata_parses():
    rows = load_geneval_metadata(REAL)
    assert len(rows) == len([line for line in REAL.read_text().splitlines() if line.strip()])
    assert {r.tag for r in rows} == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    assert all(r.prompt and r.include for r in rows)


def test_generator_covers_every_tag_with_references_the_detector_accepts():
    task = get_task("toy-geneval")
    problems = task.split_problems("train") + task.split_problems("eval")
    assert len(problems) == task.space_size() == 1004
    tags = {p.columns["metadata"]["tag"] for p in problems}
    assert tags == set(geneval.TAGS)
    # every reference grid passes the strict check of its own metadata
    sample = problems[::10]
    assert geneval_strict([p.prompt for p in sample], [p.answer for p in sample],
                          metadata=[p.columns["metadata"] for p in sample]) == [1.0] * len(sample)
    train = {p.prompt for p in task.split_problems("train")}
    assert not train & {p.prompt for p in task.split_problems("eval")}


def test_examples_are_seeded_and_validated():
    task = get_task("toy-geneval", grid_size=8, tags=["counting"])
    a, b = task.examples("train", 5, seed=1), task.examples("train", 5, seed=1)
    assert a == b and all(e.columns["metadata"]["tag"] == "counting" for e in a)
    with pytest.raises(ValueError, match="valid tags"):
        get_task("toy-geneval", tags=["nope"])


def test_doctests():
    result = doctest.testmod(geneval)
    assert result.attempted > 0 and result.failed == 0
