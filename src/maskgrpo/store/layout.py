"""Where things live in a store: pure functions, no I/O.

Layout under a store root (``file:///abs/runs`` or ``s3://bucket/prefix``)::

    <run_id>/<name>                                   run files (summary.json, report.md, ...)
    <run_id>/<stage>/<round>/_POINTER.json            names the committed attempt (CAS-advanced)
    <run_id>/<stage>/<round>/<attempt_id>/...         one writer's private, immutable files
    <run_id>/<stage>/<round>/<attempt_id>/_MANIFEST.json   written last, create-only

``<round>`` is the decimal round number, or ``-`` for stages without one.  Run ids and stage
names are single path segments without dots, so a run file name (which must carry an
extension, e.g. ``summary.json``) can never collide with a stage folder.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

POINTER_NAME = "_POINTER.json"
MANIFEST_NAME = "_MANIFEST.json"
NO_ROUND = "-"

# The run-id grammar, the one rule specs/stages.py and the KFP compiler check too: a run id is a path
# segment of every key, so what the store refuses must fail at validation, not at the first write.
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
_ID_RE = re.compile(RUN_ID_PATTERN)
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=@-]{0,254}$")
_ATTEMPT_RE = re.compile(r"^(\d{8}T\d{6}Z)-[0-9a-f]{12}$")


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValueError(
            f"invalid {kind} {value!r}: use letters, digits, '_' and '-' (no dots or slashes), "
            "starting with a letter or digit, at most 128 characters"
        )
    return value


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a valid single path segment, else raise ValueError."""
    return _check_id("run id", run_id)


def check_stage(stage: str) -> str:
    """Return ``stage`` if it is a valid stage name, else raise ValueError."""
    return _check_id("stage name", stage)


def round_segment(round: int | None) -> str:
    """``None`` -> ``"-"``; a non-negative int -> its decimal string."""
    if round is None:
        return NO_ROUND
    if isinstance(round, bool) or not isinstance(round, int) or round < 0:
        raise ValueError(f"invalid round {round!r}: use a non-negative int or None")
    return str(round)


def parse_round(segment: str) -> int | None:
    """Inverse of :func:`round_segment`; raises ValueError for anything else."""
    if segment == NO_ROUND:
        return None
    if segment.isdigit() and (segment == "0" or not segment.startswith("0")):
        return int(segment)
    raise ValueError(f"not a round folder: {segment!r}")


def check_name(name: str) -> str:
    """A file name inside an attempt or a run: '/'-separated segments, none empty, '.', '..',
    or starting with '.'; returns it unchanged."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid file name {name!r}: must be a non-empty string")
    for seg in name.split("/"):
        if not _SEGMENT_RE.match(seg):
            raise ValueError(
                f"invalid file name {name!r}: segment {seg!r} must start with a letter, digit or "
                "'_' and use only letters, digits and . _ + = @ -"
            )
    return name


def stage_prefix(run_id: str, stage: str, round: int | None) -> str:
    """``"<run_id>/<stage>/<round>"``; round ``None`` -> ``"<run_id>/<stage>/-"``.

    >>> stage_prefix("r1", "rollout", 3), stage_prefix("r1", "sft", None)
    ('r1/rollout/3', 'r1/sft/-')
    """
    return f"{check_run_id(run_id)}/{check_stage(stage)}/{round_segment(round)}"


def pointer_key(run_id: str, stage: str, round: int | None) -> str:
    """Key of the stage output's pointer object."""
    return f"{stage_prefix(run_id, stage, round)}/{POINTER_NAME}"


def attempt_prefix(run_id: str, stage: str, round: int | None, attempt_id: str) -> str:
    """Key prefix (no trailing slash) of one attempt's files."""
    return f"{stage_prefix(run_id, stage, round)}/{check_attempt_id(attempt_id)}"


def run_file_key(run_id: str, name: str) -> str:
    """``"<run_id>/<name>"``, e.g. ``run_file_key("r1", "summary.json") == "r1/summary.json"``.

    The first segment of ``name`` must contain a dot (an extension) so it cannot shadow a stage.
    """
    check_name(name)
    first = name.split("/", 1)[0]
    if "." not in first:
        raise ValueError(
            f"invalid run file name {name!r}: its first segment needs an extension "
            "(e.g. 'report.md') so it cannot collide with a stage folder"
        )
    return f"{check_run_id(run_id)}/{name}"


def new_attempt_id(now: datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-<12 hex>``: sortable by creation time, unique by its random suffix."""
    now = now or datetime.now(timezone.utc)
    return f"{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(6)}"


def check_attempt_id(attempt_id: str) -> str:
    """Return ``attempt_id`` if it has the :func:`new_attempt_id` shape, else raise ValueError."""
    if not isinstance(attempt_id, str) or not _ATTEMPT_RE.match(attempt_id):
        raise ValueError(f"invalid attempt id {attempt_id!r}")
    return attempt_id


def attempt_created(attempt_id: str) -> datetime | None:
    """Creation time encoded in an attempt id, or None if it is not an attempt id."""
    m = _ATTEMPT_RE.match(attempt_id)
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
