"""A character tokenizer for the tiny built-in model (docs/algorithm.md §9).

Implements:
1. ids 0 = ``<pad>``, 1 = ``<eos>``, 2 = ``<mask>``, then one id per character, in order;
2. prompts left-padded with pad (docs/algorithm.md §1: "Prompts are left-padded");
3. completions as text + EOS, the unused tail filled with EOS (docs/algorithm.md §1), so the answer
   ends at the first EOS;
4. ``save``/``load`` as a plain ``tokenizer.json`` (JSON, never pickle).

``DEFAULT_CHARS`` covers every toy task's prompts and answers (digits, lowercase letters and the
punctuation ``+-*/=()<>,.:;|? ``): 52 characters, so ``vocab_size`` is 55 (<= 64 + mask + EOS).
``_`` is reserved: ``decode`` shows the mask token as ``_``.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from pathlib import Path

import torch

from maskgrpo.core.sequences import eos_filled, left_pad

__all__ = ["DEFAULT_CHARS", "CharTokenizer"]

DEFAULT_CHARS = string.digits + string.ascii_lowercase + "+-*/=()<>,.:;|? "
_MAX_CHARS = 61  # 61 characters + 3 specials = 64 ids
_FILENAME = "tokenizer.json"
_FORMAT = "maskgrpo.CharTokenizer"


class CharTokenizer:
    """One id per character plus pad / eos / mask.

    >>> tok = CharTokenizer()
    >>> tok.encode("1+2=")
    [4, 39, 5, 43]
    >>> tok.decode([4, 39, 5, 43, 2, 1, 4])
    '1+2=_'
    >>> tok.encode_completion("3", 4)
    [6, 1, 1, 1]
    """

    PAD, EOS, MASK = "<pad>", "<eos>", "<mask>"
    pad_id: int = 0
    eos_id: int = 1
    mask_id: int = 2

    def __init__(self, chars: str = DEFAULT_CHARS) -> None:
        if not isinstance(chars, str) or not chars:
            raise ValueError(f"chars must be a non-empty string, got {chars!r}")
        if len(set(chars)) != len(chars):
            dupes = sorted({c for c in chars if chars.count(c) > 1})
            raise ValueError(f"chars has duplicate characters: {dupes!r}")
        if len(chars) > _MAX_CHARS:
            raise ValueError(f"chars has {len(chars)} characters; at most {_MAX_CHARS} (vocab <= 64)")
        if "_" in chars:
            raise ValueError("chars must not contain '_': decode() shows the mask token as '_'")
        self.chars = chars
        self._to_id = {c: i + 3 for i, c in enumerate(chars)}
        self.vocab_size = len(chars) + 3

    def __repr__(self) -> str:
        return f"CharTokenizer(chars={self.chars!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars

    def __hash__(self) -> int:
        return hash(self.chars)

    def encode(self, text: str) -> list[int]:
        """Character ids of ``text`` (no specials added). Unknown character -> ValueError."""
        try:
            return [self._to_id[c] for c in text]
        except KeyError as err:
            raise ValueError(
                f"character {err.args[0]!r} is not in the tokenizer's vocabulary "
                f"(text {text!r}; known characters {self.chars!r})"
            ) from None

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Text of ``ids``: stops at the first EOS, skips pad, shows mask as ``_``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i == self.pad_id:
                continue
            if i == self.mask_id:
                out.append("_")
            elif 3 <= i < self.vocab_size:
                out.append(self.chars[i - 3])
            else:
                raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        return "".join(out)

    def decode_batch(self, ids: torch.Tensor | Iterable[Iterable[int]]) -> list[str]:
        """``decode`` applied to every row."""
        return [self.decode(row) for row in ids]

    def encode_batch_left_padded(self, texts: list[str], length: int | None = None) -> torch.Tensor:
        """(B, L) long tensor, each row left-padded with ``pad_id``; ``length`` None = longest."""
        return left_pad([self.encode(t) for t in texts], self.pad_id, length, labels=texts)

    def encode_completion(self, text: str, length: int) -> list[int]:
        """``text`` + EOS, then EOS up to ``length`` (docs/algorithm.md §1). Too long -> ValueError."""
        return eos_filled(self.encode(text), self.eos_id, length, label=text)

    def save(self, directory: str | Path) -> None:
        """Write ``<directory>/tokenizer.json`` (creates the directory)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        doc = {
            "format": _FORMAT,
            "version": 1,
            "specials": [self.PAD, self.EOS, self.MASK],
            "chars": self.chars,
        }
        (directory / _FILENAME).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> CharTokenizer:
        """Read ``<directory>/tokenizer.json`` written by ``save``."""
        path = Path(directory) / _FILENAME
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no tokenizer at {path}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a maskgrpo CharTokenizer file (format {doc.get('format')!r})"
                             if isinstance(doc, dict) else f"{path} is not a JSON object")
        if doc.get("specials") != [cls.PAD, cls.EOS, cls.MASK]:
            raise ValueError(f"{path}: unexpected specials {doc.get('specials')!r}")
        if not isinstance(doc.get("chars"), str):
            raise ValueError(f"{path}: field 'chars' must be a string")
        return cls(doc["chars"])
