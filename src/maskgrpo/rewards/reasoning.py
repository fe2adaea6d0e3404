"""GSM8K and MATH rewards (docs/algorithm.md §6; the MaskGRPO reference's LLaDA-style rewards).

Implements, with the TRL signature and ``answer`` the reference final answer:
1. ``gsm8k_reward`` = format + integer + correctness, each also registered alone:
   - ``gsm8k_format``: 0.5 if ``<reasoning>...</reasoning>`` is present (the reference's
     ``soft_format_reward_func``);
   - ``gsm8k_int``: 0.5 if the extracted answer is an integer (the reference's
     ``int_reward_func``; here a leading minus sign and thousands commas are allowed);
   - ``gsm8k_correct``: 2.0 if the extracted answer equals the reference as a number, after
     removing thousands commas, ``$`` and spaces ("1,000" == "1000" == "1000.00").
   The extracted answer is the argument of the last ``\\boxed{}``; departure: when there is no
   box, the content of the last ``<answer>...</answer>`` is used (d1's original GSM8K prompt asks
   for the answer in those tags); the reference falls back to the whole completion.
2. ``math_reward`` = ``math_correct`` (2.0 if the last boxed answer is equivalent to the reference
   under the MATH normalisation, ``maskgrpo.rewards.math_equiv``) + ``math_format`` (0.5 if the
   completion contains ``\\boxed``, else 0.25: the reference's ``boxed_in_answer`` x 0.5).
   A reference written as ``\\boxed{...}`` is unboxed first.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from maskgrpo.rewards.extract import check_lengths, completion_text, extract_answer, last_boxed
from maskgrpo.rewards.math_equiv import is_equiv

__all__ = [
    "extract_final_answer",
    "normalize_number",
    "gsm8k_format",
    "gsm8k_int",
    "gsm8k_correct",
    "gsm8k_reward",
    "math_format",
    "math_correct",
    "math_reward",
]

_REASONING_RE = re.compile(r"<reasoning>.*?</reasoning>", re.DOTALL)


def extract_final_answer(completion: str) -> str | None:
    r"""The last ``\boxed{}`` argument, else the last ``<answer>`` content, else None.

    >>> extract_final_answer(r"<answer>\boxed{1,000}</answer>"), extract_final_answer("<answer> 7 </answer>")
    ('1,000', '7')
    >>> extract_final_answer("just 7") is None
    True
    """
    boxed = last_boxed(completion)
    if boxed is not None:
        return boxed.strip()
    return extract_answer(completion, answer_tag=True)


def normalize_number(text: str | None) -> Decimal | None:
    """A GSM8K answer as an exact number: drops thousands commas, ``$``, spaces, a trailing ``.``.

    >>> normalize_number("1,000"), normalize_number("$ 1000.00"), normalize_number("-3."), normalize_number("x")
    (Decimal('1000'), Decimal('1000.00'), Decimal('-3'), None)
    >>> normalize_number("1,000") == normalize_number("1000.00")
    True
    """
    if text is None:
        return None
    s = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if not re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)", s):
        return None
    try:
        return Decimal(s)  # compared by value: Decimal("1000.00") == Decimal("1000")
    except InvalidOperation:
        return None


def _texts(fn: str, completions: list[Any], **columns: Any) -> list[str]:
    check_lengths(fn, completions, **columns)
    return [completion_text(c) for c in completions]


def gsm8k_format(prompts: list[str], completions: list[Any], **columns: Any) -> list[float]:
    """0.5 if ``<reasoning>...</reasoning>`` is present.

    >>> gsm8k_format(["q"] * 2, ["<reasoning>\\n2+2\\n</reasoning> 4", "4"])
    [0.5, 0.0]
    """
    return [0.5 if _REASONING_RE.search(t) else 0.0 for t in _texts("gsm8k_format", completions)]


def gsm8k_int(prompts: list[str], completions: list[Any], **columns: Any) -> list[float]:
    r"""0.5 if the extracted answer is an integer ("1,000" counts; "2.5" does not).

    >>> gsm8k_int(["q"] * 3, [r"\boxed{1,000}", r"\boxed{2.5}", "1000"])
    [0.5, 0.0, 0.0]
    """
    out = []
    for t in _texts("gsm8k_int", completions):
        ans = extract_final_answer(t)
        ok = ans is not None and re.fullmatch(r"-?\d{1,3}(,\d{3})+|-?\d+", ans.strip()) is not None
        out.append(0.5 if ok else 0.0)
    return out


def gsm8k_correct(prompts: list[str], completions: list[Any], answer: list[Any], **columns: Any) -> list[float | None]:
    r"""2.0 if the extracted answer equals the reference as a number.

    >>> gsm8k_correct(["q"] * 3, [r"\boxed{1,000}", r"\boxed{999}", "1000"], answer=["1000"] * 3)
    [2.0, 0.0, 0.0]
    """
    out: list[float | None] = []
    for t, ref in zip(_texts("gsm8k_correct", completions, answer=answer), answer):
        if ref is None:
            out.append(None)
            continue
        want = normalize_number(str(ref))
        got = normalize_number(extract_final_answer(t))
        if want is None:  # a non-numeric reference: compare the stripped strings
            out.append(2.0 if (extract_final_answer(t) or "").strip() == str(ref).strip() else 0.0)
        else:
            out.append(2.0 if got is not None and got == want else 0.0)
    return out


def gsm8k_reward(prompts: list[str], completions: list[Any], answer: list[Any], **columns: Any) -> list[float | None]:
    r"""``gsm8k_format`` + ``gsm8k_int`` + ``gsm8k_correct`` (at most 3.0).

    >>> good = "<reasoning>\n6 * 7 = 42\n</reasoning>\n<answer>\n\\boxed{42}\n</answer>"
    >>> gsm8k_reward(["q"] * 3, [good, r"\boxed{41}", "no answer"], answer=["42"] * 3)
    [3.0, 0.5, 0.0]
    """
    parts = [
        gsm8k_format(prompts, completions),
        gsm8k_int(prompts, completions),
        gsm8k_correct(prompts, completions, answer=answer),
    ]
    return [None if c is None else f + i + c for f, i, c in zip(*parts)]


def _unbox(ref: str) -> str:
    boxed = last_boxed(ref)
    return boxed if boxed is not None else ref


def math_format(prompts: list[str], completions: list[Any], **columns: Any) -> list[float]:
    r"""0.5 if the completion contains ``\boxed``, else 0.25.

    >>> math_format(["q"] * 2, [r"\boxed{3}", "3"])
    [0.5, 0.25]
    """
    return [0.5 if "\\boxed" in t else 0.25 for t in _texts("math_format", completions)]


def math_correct(prompts: list[str], completions: list[Any], answer: list[Any], **columns: Any) -> list[float | None]:
    r"""2.0 if the last boxed answer is equivalent to the reference (MATH normalisation).

    >>> math_correct(["q"] * 3, [r"so \boxed{\dfrac{1}{2}}", r"\boxed{0.5}", r"1/2"], answer=[r"\frac12"] * 3)
    [2.0, 2.0, 0.0]
    """
    out: list[float | None] = []
    for t, ref in zip(_texts("math_correct", completions, answer=answer), answer):
        if ref is None:
            out.append(None)
            continue
        out.append(2.0 if is_equiv(last_boxed(t), _unbox(str(ref))) else 0.0)
    return out


def math_reward(prompts: list[str], completions: list[Any], answer: list[Any], **columns: Any) -> list[float | None]:
    r"""``math_correct`` + ``math_format`` (at most 2.5).

    >>> math_reward(["q"] * 3, [r"\boxed{(3,4)}", r"\boxed{5}", "(3,4)"], answer=[r"\left(3, 4\right)"] * 3)
    [2.5, 0.5, 0.25]
    """
    correct = math_correct(prompts, completions, answer=answer)
    fmt = math_format(prompts, completions)
    return [None if c is None else c + f for c, f in zip(correct, fmt)]
