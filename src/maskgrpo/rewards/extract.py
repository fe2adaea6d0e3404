"""Answer extraction shared by the reward functions.

Implements:
1. ``completion_text``: a completion as plain text; TRL's conversational form
   (``[{"role": "assistant", "content": ...}]``) is accepted too.
2. ``extract_answer``: the content of the last ``<answer>...</answer>`` (d1's
   ``extract_solution``: last match, stripped), or the bare completion for the toy tasks, whose
   completions carry no tags. ``answer_tag=None`` (default) picks by whether a tag is present;
   ``True`` requires it (missing -> None, as d1 scores it 0); ``False`` never looks for it.
3. ``last_boxed``: the argument of the last ``\\boxed{...}`` / ``\\fbox{...}`` with balanced
   braces (also ``\\boxed 5``), as the MATH benchmark's ``last_boxed_only_string`` does.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["completion_text", "extract_answer", "last_boxed", "check_lengths"]

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def completion_text(completion: Any) -> str:
    """Plain text of a completion (a string or a list of chat messages).

    >>> completion_text("42"), completion_text([{"role": "assistant", "content": "42"}])
    ('42', '42')
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    if completion is None:
        return ""
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


def extract_answer(completion: str, answer_tag: bool | None = None) -> str | None:
    """The answer part of a completion (see the module docstring for ``answer_tag``).

    >>> extract_answer("think <answer> 1+2 </answer> <answer>3*4</answer>")
    '3*4'
    >>> extract_answer(" 01234 "), extract_answer("01234", answer_tag=True)
    ('01234', None)
    """
    if answer_tag is not False:
        matches = _ANSWER_RE.findall(completion)
        if matches:
            return matches[-1].strip()
        if answer_tag:
            return None
    return completion.strip()


def last_boxed(text: str) -> str | None:
    """Argument of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if absent.

    >>> last_boxed(r"so \\boxed{1} then \\boxed{\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> last_boxed(r"\\boxed 7"), last_boxed("no box"), last_boxed(r"\\boxed{unclosed")
    ('7', None, None)
    """
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    rest = text[idx:]
    rest = rest[len("\\boxed"):] if rest.startswith("\\boxed") else rest[len("\\fbox"):]
    if rest.startswith(" "):  # "\boxed 7": the argument runs to the next "$" or space
        return re.split(r"[\s$]", rest.strip(), maxsplit=1)[0] or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None


def check_lengths(fn: str, completions: list[Any], **columns: list[Any]) -> None:
    """Every column must be a list aligned with ``completions``."""
    n = len(completions)
    for name, col in columns.items():
        if col is None or isinstance(col, (str, bytes)) or not hasattr(col, "__len__"):
            raise ValueError(f"{fn}: column {name!r} must be a list aligned with completions")
        if len(col) != n:
            raise ValueError(f"{fn}: column {name!r} has {len(col)} rows but there are {n} completions")
