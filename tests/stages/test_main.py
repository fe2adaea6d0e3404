"""stages/main.py: the shared stage entry point's argument split for stages with their own flags."""

from __future__ import annotations

from maskgrpo.stages.main import split_flags


def test_own_flags_leave_in_either_spelling_and_shared_ones_stay():
    argv = ["--spec", "@s.json", "--skip-path=/o/skip", "--summary-path", "/o/s.md", "--run-id", "r1"]
    values, rest = split_flags(argv, ("--skip-path",), ("--summary-path", "--run-id", "--metrics-path"))
    assert (values.skip_path, values.summary_path, values.run_id, values.metrics_path) == ("/o/skip", "/o/s.md", "r1", None)
    assert rest == ["--spec", "@s.json", "--summary-path", "/o/s.md", "--run-id", "r1"]
    values, rest = split_flags(["--skip-path", "/o/skip", "--spec", "{}"], ("--skip-path",), ("--run-id",))
    assert (values.skip_path, values.run_id, rest) == ("/o/skip", "", ["--spec", "{}"])
    assert split_flags(["--spec", "{}"], ("--promote-path",))[0].promote_path is None
