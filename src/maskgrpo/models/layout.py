"""The MMaDA text-to-image sequence layout, shared by the tiny model and MMaDA-8B (docs/algorithm.md §1).

Implements:
1. ``ImageLayout``: the ids and sizes of one layout. A sequence is
   ``[pad ... pad, <|t2i|>, (bos), text ..., eos] [<|soi|>] [N image slots] [<|eoi|>]``:
   a left-padded text segment of ``text_slots`` tokens, then ``<|soi|>``, N image slots (image
   token id = ``code_offset + code``) and ``<|eoi|>``. Image log-probs use the codebook slice
   ``vocab_slice = (code_offset, codebook_size)`` only.
2. ``ImageLayout.mmada()``: 257 text slots, 1024 slots (32x32), codebook 8192, offset 126349,
   mask 126336, specials from MMaDA's reserved token mapping (soi 126084, eoi 126085,
   t2i 126088) and LLaDA's bos/eos (126080/126081) (``MMADA_IDS``). Keyword ids override them
   (the RunSpec's ``model.special_tokens``); every id must lie inside MMaDA-8B's vocabulary
   (``MMADA_VOCAB``, 126464 text ids + 8192 codes).
3. ``ImageLayout.after_vocab(vocab_size, ...)``: the tiny model's layout. Its vocabulary is the
   character tokenizer's ids, then ``<|t2i|>``, ``<|soi|>``, ``<|eoi|>``, then the codebook, so
   ``CharTokenizer`` keeps its text behaviour and the model's vocabulary is
   ``layout.vocab_size``.
4. Pure torch builders: ``build_sequences`` (text ids -> (B, L) with masked or given image slots),
   ``unconditional`` (the empty prompt, for CFG and condition dropout), ``codes_of`` (image slot
   tokens -> codes).

Deviation: MMaDA pads the text segment on the right in some code paths; here it is left-padded,
as every prompt in maskgrpo, so the image slots always start at column ``text_slots + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = ["ImageLayout", "LayoutError", "MMADA_IDS", "MMADA_VOCAB"]

# MMaDA-8B's ids (ImageLayout field -> id) and the rows of its embedding.
MMADA_IDS = {"codebook_size": 8192, "code_offset": 126349, "mask_id": 126336, "pad_id": 126081, "eos_id": 126081,
             "t2i_id": 126088, "soi_id": 126084, "eoi_id": 126085, "bos_id": 126080}
MMADA_VOCAB = 126464 + 8192


class LayoutError(ValueError):
    """An inconsistent layout; ``field`` is the ImageLayout field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ImageLayout:
    text_slots: int  # length of the left-padded text segment (task token, bos, text, eos included)
    image_slots: int  # N: VQ-code slots of one image (e.g. 32 x 32)
    codebook_size: int  # K: number of image codes
    code_offset: int  # image token id = code_offset + code
    mask_id: int
    pad_id: int
    eos_id: int
    t2i_id: int
    soi_id: int
    eoi_id: int
    bos_id: int | None = None  # omitted from the text segment when None

    def __post_init__(self) -> None:
        for name in ("text_slots", "image_slots", "codebook_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ImageLayout.{name} must be >= 1, got {getattr(self, name)}")
        if self.text_slots < self.overhead:
            raise ValueError(f"ImageLayout.text_slots ({self.text_slots}) is smaller than its special tokens ({self.overhead})")
        codes = range(self.code_offset, self.code_offset + self.codebook_size)
        specials = {"mask_id": self.mask_id, "pad_id": self.pad_id, "eos_id": self.eos_id, "t2i_id": self.t2i_id,
                    "soi_id": self.soi_id, "eoi_id": self.eoi_id, "bos_id": self.bos_id}
        for name, value in specials.items():
            if value is not None and value in codes:
                raise LayoutError(name, f"ImageLayout.{name} ({value}) falls inside the codebook ids {codes.start}..{codes.stop - 1}")
        markers = {"mask_id": self.mask_id, "t2i_id": self.t2i_id, "soi_id": self.soi_id, "eoi_id": self.eoi_id}
        for name, value in markers.items():
            same = [other for other, v in markers.items() if v == value and other != name]
            if same:
                raise LayoutError(name, f"ImageLayout.{name} ({value}) equals {same[0]}: the mask and the image markers are distinct ids")

    # ---------------------------------------------------------------- constructors

    @classmethod
    def mmada(cls, text_slots: int = 257, image_slots: int = 1024, **ids: int | None) -> ImageLayout:
        """MMaDA-8B's layout (512 px images, 32 x 32 MAGVIT-v2 codes); ``ids`` (fields of
        ``MMADA_IDS``, None = MMaDA's) override its ids, all inside ``MMADA_VOCAB``."""
        unknown = sorted(set(ids) - set(MMADA_IDS))
        if unknown:
            raise TypeError(f"ImageLayout.mmada: no id {unknown[0]!r}; ids: {', '.join(MMADA_IDS)}")
        chosen = {**MMADA_IDS, **{k: v for k, v in ids.items() if v is not None}}
        layout = cls(text_slots=text_slots, image_slots=image_slots, **chosen)
        if layout.vocab_size > MMADA_VOCAB:
            field = max(chosen, key=lambda k: chosen[k] + (chosen["code_offset"] if k == "codebook_size" else 0))
            raise LayoutError(field, f"ImageLayout ids reach {layout.vocab_size - 1}, outside MMaDA-8B's vocabulary "
                                     f"of {MMADA_VOCAB} ids (0..{MMADA_VOCAB - 1})")
        return layout

    @classmethod
    def after_vocab(cls, vocab_size: int, *, text_slots: int, image_slots: int, codebook_size: int,
                    mask_id: int, pad_id: int, eos_id: int) -> ImageLayout:
        """A layout appended to a text vocabulary of ``vocab_size`` ids (the tiny model's)."""
        return cls(text_slots=text_slots, image_slots=image_slots, codebook_size=codebook_size,
                   code_offset=vocab_size + 3, mask_id=mask_id, pad_id=pad_id, eos_id=eos_id,
                   t2i_id=vocab_size, soi_id=vocab_size + 1, eoi_id=vocab_size + 2)

    # ---------------------------------------------------------------- derived values

    @property
    def overhead(self) -> int:
        """Special tokens inside the text segment: <|t2i|>, (bos), eos."""
        return 2 + (self.bos_id is not None)

    @property
    def max_text_tokens(self) -> int:
        return self.text_slots - self.overhead

    @property
    def image_start(self) -> int:
        """Column of the first image slot (after the text segment and <|soi|>)."""
        return self.text_slots + 1

    @property
    def seq_len(self) -> int:
        return self.text_slots + self.image_slots + 2

    @property
    def vocab_size(self) -> int:
        """The smallest vocabulary that holds every id of the layout."""
        ids = [self.mask_id, self.pad_id, self.eos_id, self.t2i_id, self.soi_id, self.eoi_id, self.bos_id or 0]
        return max(max(ids) + 1, self.code_offset + self.codebook_size)

    @property
    def vocab_slice(self) -> tuple[int, int]:
        """(offset, size) of the codebook logits: image log-probs use only these."""
        return (self.code_offset, self.codebook_size)

    def image_positions(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(N,) columns of the image slots."""
        return torch.arange(self.image_start, self.image_start + self.image_slots, device=device)

    # ---------------------------------------------------------------- builders

    def text_segment(self, text_ids: Sequence[int]) -> list[int]:
        """One left-padded text segment of ``text_slots`` ids."""
        text_ids = list(text_ids)
        if len(text_ids) > self.max_text_tokens:
            raise ValueError(f"prompt has {len(text_ids)} tokens; the layout's text segment holds {self.max_text_tokens}")
        head = [self.t2i_id] + ([self.bos_id] if self.bos_id is not None else [])
        body = head + text_ids + [self.eos_id]
        return [self.pad_id] * (self.text_slots - len(body)) + body

    def build_sequences(self, text_ids: Sequence[Sequence[int]], codes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) sequences; image slots hold ``code_offset + codes`` (codes (B, N)) or mask_id."""
        batch = len(text_ids)
        out = torch.empty(batch, self.seq_len, dtype=torch.long)
        out[:, : self.text_slots] = torch.tensor([self.text_segment(t) for t in text_ids], dtype=torch.long).view(batch, -1)
        out[:, self.text_slots] = self.soi_id
        out[:, -1] = self.eoi_id
        if codes is None:
            out[:, self.image_start:-1] = self.mask_id
        else:
            if codes.shape != (batch, self.image_slots):
                raise ValueError(f"codes must be (B, N) = ({batch}, {self.image_slots}), got {tuple(codes.shape)}")
            if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
                raise ValueError(f"codes must lie in [0, {self.codebook_size})")
            out[:, self.image_start:-1] = codes.long() + self.code_offset
        return out

    def unconditional(self, sequences: torch.Tensor) -> torch.Tensor:
        """The same sequences with the empty prompt (CFG's z_uncond, condition dropout); (B, L)."""
        out = sequences.clone()
        out[:, : self.text_slots] = torch.tensor(self.text_segment([]), dtype=sequences.dtype, device=sequences.device)
        return out

    def codes_of(self, sequences: torch.Tensor) -> torch.Tensor:
        """Image codes of filled sequences; (B, L) -> (B, N). A slot that is not a code -> ValueError."""
        slots = sequences[:, self.image_start:self.image_start + self.image_slots] - self.code_offset
        if slots.numel() and (int(slots.min()) < 0 or int(slots.max()) >= self.codebook_size):
            raise ValueError("an image slot holds a token outside the codebook (still masked?)")
        return slots
