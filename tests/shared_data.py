"""The real benchmark files in ``../shared/data/benchmarks`` (beside the clone; they are not copied
into the repository). Tests that read one skip, naming the file, when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"
COUNTDOWN = BENCHMARKS / "countdown_cd3_test.jsonl"
SUDOKU = BENCHMARKS / "sudoku_4x4_test.csv"
GENEVAL = BENCHMARKS / "geneval_evaluation_metadata.jsonl"
MBPP = BENCHMARKS / "mbpp.jsonl"


def needs(path: Path) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not path.is_file(), reason=f"benchmark file absent: {path}")
