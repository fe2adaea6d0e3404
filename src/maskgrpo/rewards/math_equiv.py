"""MATH answer normalisation and equivalence (Hendrycks et al. 2021, "Measuring Mathematical
Problem Solving With the MATH Dataset": the ``is_equiv`` / ``strip_string`` rules of its
evaluation code, used unchanged by d1 and MaskGRPO for MATH500). Written from the rules:

1. drop line breaks, ``\\!``; ``\\\\`` -> ``\\``; ``tfrac``/``dfrac`` -> ``frac``;
   drop ``\\left``/``\\right``, degrees (``^{\\circ}``, ``^\\circ``), ``\\$``, ``\\%`` and ``%``;
2. drop units on the right (everything from ``\\text{ ``);
3. leading-zero decimals: ``" ."`` -> ``" 0."``, ``"{."`` -> ``"{0."``, a leading ``.`` -> ``0.``;
4. ``k = 5`` -> ``5`` when the left side has at most 2 characters;
5. ``\\sqrt3`` -> ``\\sqrt{3}``; remove spaces; ``\\frac12`` -> ``\\frac{1}{2}``;
6. ``0.5`` -> ``\\frac{1}{2}``; ``a/b`` with integer a, b -> ``\\frac{a}{b}``.
Two answers are equivalent when their normalised strings are equal. Departure: where the
original code raises (e.g. two ``\\text{ `` units) and falls back to raw comparison, this one
keeps the text before the first ``\\text{ ``.
"""

from __future__ import annotations

import re

__all__ = ["strip_string", "is_equiv"]


def _fix_fracs(s: str) -> str:
    r"""\frac12 -> \frac{1}{2}, \frac1{72} -> \frac{1}{72}, \fracab -> \frac{a}{b}."""
    head, *parts = s.split("\\frac")
    out = [head]
    for part in parts:
        out.append("\\frac")
        if part.startswith("{"):
            out.append(part)
            continue
        if len(part) < 2:
            return s  # malformed: leave the whole string alone, as the original does
        a, b, rest = part[0], part[1], part[2:]
        out.append("{" + a + "}" + (b + rest if b == "{" else "{" + b + "}" + rest))
    return "".join(out)


def _fix_a_slash_b(s: str) -> str:
    m = re.fullmatch(r"(-?\d+)/(-?\d+)", s)
    if m and s == f"{int(m.group(1))}/{int(m.group(2))}":
        return "\\frac{" + m.group(1) + "}{" + m.group(2) + "}"
    return s


def _fix_sqrt(s: str) -> str:
    head, *parts = s.split("\\sqrt")
    out = [head]
    for part in parts:
        if part and part[0] != "{":
            out.append("\\sqrt{" + part[0] + "}" + part[1:])
        else:
            out.append("\\sqrt" + part)
    return "".join(out)


def strip_string(s: str) -> str:
    r"""Normalise a MATH answer string (rules in the module docstring).

    >>> strip_string(r"\dfrac12"), strip_string(" .5 "), strip_string("x = 3")
    ('\\frac{1}{2}', '\\frac{1}{2}', '3')
    >>> strip_string(r"10\%"), strip_string(r"90^\circ"), strip_string(r"5 \text{ cm}"), strip_string("3/4")
    ('10', '90', '5', '\\frac{3}{4}')
    """
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    if "\\text{ " in s:
        s = s.split("\\text{ ")[0]
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


def is_equiv(a: str | None, b: str | None) -> bool:
    r"""Equal after ``strip_string``; None is equivalent to nothing (the original says both-None
    is equivalent, which would reward a missing answer against a missing reference).

    >>> is_equiv(r"\frac{1}{2}", "0.5"), is_equiv(r"\left( 3, 4 \right)", "(3,4)"), is_equiv("2", "3")
    (True, True, False)
    >>> is_equiv(None, None)
    False
    """
    if a is None or b is None:
        return False
    return strip_string(a) == strip_string(b)
