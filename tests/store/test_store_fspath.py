"""store/fspath.py: ``escape_of`` answers what ``os.path.realpath`` would (a path leaves its root
only through a symlink), walking only the segments that exist."""

from __future__ import annotations

import os

import pytest

from maskgrpo.store.fspath import escape_of


@pytest.fixture
def tree(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "b" / "f").write_text("x")
    (root / "in").symlink_to(root / "a", target_is_directory=True)  # a link that stays inside
    (root / "out").symlink_to(outside, target_is_directory=True)
    (root / "a" / "leak").symlink_to(outside / "secret")            # a final name that leaves
    return os.path.realpath(root), os.path.realpath(outside)


@pytest.mark.parametrize("rel", ["a/b/f", "a/b/missing/deeper", "new/file", "in/b/f", "a/b/f/x"])
def test_paths_that_stay_inside(tree, rel):
    root, _ = tree
    assert escape_of(root, rel) is None
    real = os.path.realpath(os.path.join(root, rel))
    assert real.startswith(root + os.sep)  # what realpath says too


@pytest.mark.parametrize("rel,target", [("out/x", "x"), ("out", ""), ("a/leak", "secret"),
                                        ("in/leak", "secret")])
def test_paths_that_leave_name_where_they_lead(tree, rel, target):
    root, outside = tree
    assert escape_of(root, rel) == os.path.join(outside, target).rstrip("/")
