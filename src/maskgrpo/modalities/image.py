"""The image modality: text-to-image in the MMaDA sequence layout (docs/algorithm.md, "Sequences").

1. Layout: ``image_layout`` builds the ``ImageLayout`` of the run (models/layout.py): ``tiny``
   appends ``<|t2i|>``, ``<|soi|>``, ``<|eoi|>`` and the codebook to the tokenizer's vocabulary;
   ``mmada`` uses MMaDA-8B's ids, overridden by the ones ``model.special_tokens`` sets.
2. SFT: MaskGIT cosine slot noising with condition dropout (core/sft.py, ``slot_noise``), CE
   over the masked slots on the codebook logits only.
3. Sampling: the spec's image sampler (emerge or MaskGIT, CFG against the empty prompt) over the
   image slots (core/image_sampler.py). The estimators see the slots as unordered targets
   (``ramp_start`` None: i.i.d. masks) scored with the codebook softmax (the vocabulary slice).
4. Rewards: with ``image.decoder`` the code text is decoded to RGB ``PIL.Image``s through the VQ
   decoder (models/vq.py); without one the rewards get the code text.
5. Report: a PNG grid of the first prompts' evaluation images, a row per prompt with its text
   (and the toy GenEval reference), decoded through ``image.decoder`` when there is one, else
   drawn in the toy palette.
Completions are stored as code text: one digit per slot when K <= 10, else space-separated codes.

Deviation: MMaDA trains its SFT CE over the whole vocabulary; here it is over the codebook slice,
the same distribution the samplers draw from and the estimators score.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from maskgrpo.artifacts import IMAGE_GRID
from maskgrpo.core.image_sampler import sample_image
from maskgrpo.core.importance import EstimatorInput
from maskgrpo.core.kv_cache import CachedLogitsFn
from maskgrpo.core.sampling import LogitsFn
from maskgrpo.core.sft import SftNoise, slot_noise
from maskgrpo.models.layout import ImageLayout
from maskgrpo.tasks import Example

from .base import Generated, SftData, check_sampler

SAMPLE_BATCH_ROWS = 256


def image_layout(image: Any, tokenizer: Any, special_tokens: Any = None) -> ImageLayout:
    """The layout of ``image`` (an ImageSpec) over ``tokenizer``'s vocabulary; 'mmada' with the ids
    ``special_tokens`` (a SpecialTokensSpec) sets, MMaDA-8B's for the others, and the codebook of
    ``image.codebook_size`` (a RunSpec holds it equal to special_tokens.image_codebook_size)."""
    slots = image.grid_size * image.grid_size
    if image.layout == "mmada":
        ids = special_tokens.layout_ids() if special_tokens is not None else {}
        return ImageLayout.mmada(text_slots=image.text_slots, image_slots=slots,
                                 **{"codebook_size": image.codebook_size, **ids})
    return ImageLayout.after_vocab(tokenizer.vocab_size, text_slots=image.text_slots, image_slots=slots,
                                   codebook_size=image.codebook_size, mask_id=tokenizer.mask_id,
                                   pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id)


def codes_to_text(codes: list[int], codebook_size: int) -> str:
    """>>> codes_to_text([0, 3, 1], 5), codes_to_text([12, 7], 8192)
    ('031', '12 7')"""
    return "".join(map(str, codes)) if codebook_size <= 10 else " ".join(map(str, codes))


def text_to_codes(text: str, num_slots: int, codebook_size: int) -> list[int]:
    parts = list(text) if codebook_size <= 10 else text.split()
    if len(parts) != num_slots or not all(p.isdigit() and int(p) < codebook_size for p in parts):
        raise ValueError(f"image text must hold {num_slots} codes in [0, {codebook_size}), got {text[:80]!r}")
    return [int(p) for p in parts]


def toy_images(texts: list[str], grid_size: int, cell: int = 6) -> list | None:
    """Toy-palette code texts as RGB images (None when a text is not a toy grid)."""
    from maskgrpo.tasks.geneval import grid_to_image, text_to_grid

    try:
        return [grid_to_image(text_to_grid(t, grid_size), cell=cell) for t in texts]
    except ValueError:
        return None


def labelled_grid_png(rows: list[tuple[str, list]], thumb: int = 96, label_width: int = 240) -> bytes | None:
    """A PNG contact sheet: one row per prompt, its text wrapped at the left, then its images
    (each scaled to ``thumb`` px high). ``rows``: (label, [PIL images])."""
    import textwrap

    from PIL import Image, ImageDraw

    rows = [(label, images) for label, images in rows if images]
    if not rows:
        return None
    sized = [(label, [im.convert("RGB").resize((max(1, round(im.width * thumb / im.height)), thumb), Image.NEAREST)
                      for im in images]) for label, images in rows]
    width = label_width + max(sum(im.width + 2 for im in images) for _, images in sized) + 2
    sheet = Image.new("RGB", (width, len(sized) * (thumb + 4) + 2), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (label, images) in enumerate(sized):
        y = r * (thumb + 4) + 2
        lines = textwrap.wrap(label, width=label_width // 7)[: max(thumb // 12, 1)]
        draw.multiline_text((4, y + 2), "\n".join(lines), fill=(0, 0, 0), spacing=2)
        x = label_width
        for im in images:
            sheet.paste(im, (x, y))
            x += im.width + 2
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


class ImageModality:
    name = "image"

    def __init__(self, image: Any, task: Any = None, special_tokens: Any = None):
        self.image = image
        self.special_tokens = special_tokens
        self.eval_repeats = self.image.eval_images_per_prompt
        self._decoder: Any = None  # image.decoder, loaded on first use
        self._decoded: dict[str, Any] = {}  # code text -> image, of the last reward_inputs call

    def layout(self, tokenizer: Any) -> ImageLayout:
        return image_layout(self.image, tokenizer, self.special_tokens)

    def tiny_shape(self, tokenizer: Any, examples: list[Example]) -> tuple[int, int]:
        layout = self.layout(tokenizer)
        return layout.vocab_size, layout.seq_len

    def mask_id(self, tokenizer: Any) -> int:
        return self.layout(tokenizer).mask_id

    def encode(self, tokenizer: Any, prompts: list[str], answers: list[str] | None = None) -> torch.Tensor:
        """(B, L) sequences: answers' codes in the image slots, or masked slots when answers is None."""
        layout = self.layout(tokenizer)
        codes = None
        if answers is not None:
            codes = torch.tensor([text_to_codes(a, layout.image_slots, layout.codebook_size) for a in answers], dtype=torch.long)
        return layout.build_sequences([tokenizer.encode(p) for p in prompts], codes)

    def sft_data(self, tokenizer: Any, examples: list[Example], targets: list[str]) -> SftData:
        layout = self.layout(tokenizer)
        return SftData(self.encode(tokenizer, [e.prompt for e in examples], targets), layout.image_positions(),
                       layout.vocab_slice)

    def sft_noise(self, tokenizer: Any, x: torch.Tensor, data: SftData, sft: Any, generator: torch.Generator) -> SftNoise:
        layout = self.layout(tokenizer)
        return slot_noise(x, data.target_positions.to(x.device), layout.mask_id, self.image.min_masking_rate,
                          self.image.cond_dropout, layout.unconditional, generator)

    def prompt_width(self, tokenizer: Any, prompts: list[str]) -> int | None:
        return None  # the layout's text segment has a fixed width

    def generate(self, logits_fn: LogitsFn, tokenizer: Any, prompts: list[str], sampler: Any,
                 generator: torch.Generator, *, device: torch.device, width: int | None = None,
                 progress: bool = True, cached_logits_fn: CachedLogitsFn | None = None) -> Generated:
        check_sampler(self.name, sampler)
        layout = self.layout(tokenizer)
        ids = self.encode(tokenizer, prompts).to(device)
        chunks, forwards = [], 0
        for start in tqdm(range(0, len(prompts), SAMPLE_BATCH_ROWS), desc="images", disable=not progress, leave=False):
            x = ids[start:start + SAMPLE_BATCH_ROWS]
            out = sample_image(
                logits_fn, x, layout.image_positions(device), steps=sampler.steps, mask_id=layout.mask_id,
                code_offset=layout.code_offset, codebook_size=layout.codebook_size, sampler=sampler.sampler,
                cfg_scale=sampler.cfg_scale, uncond_ids=layout.unconditional(x) if sampler.cfg_scale > 0 else None,
                temperature=sampler.temperature, generator=generator, maskgit_noise=sampler.maskgit,
                float32_count=sampler.float32_count,
            )
            chunks.append(out.tokens)
            forwards += int(out.row_forwards.sum())
        return Generated(torch.cat(chunks), layout.image_start, forwards / max(len(prompts), 1))

    def estimator_input(self, tokenizer: Any, input_ids: torch.Tensor, prompt_length: int,
                        row_ids: torch.Tensor) -> EstimatorInput:
        """Targets = the image slots; every slot may enter the loss (no EOS in an image)."""
        layout = self.layout(tokenizer)
        positions = layout.image_positions(input_ids.device)
        prompt_valid = torch.zeros_like(input_ids, dtype=torch.bool)
        prompt_valid[:, : layout.text_slots] = input_ids[:, : layout.text_slots] != layout.pad_id
        loss_valid = torch.ones(input_ids.shape[0], positions.numel(), dtype=torch.bool, device=input_ids.device)
        return EstimatorInput(input_ids, positions, row_ids, prompt_valid, loss_valid, ramp_start=None,
                              vocab_slice=layout.vocab_slice)

    def decode(self, tokenizer: Any, input_ids: torch.Tensor, prompt_length: int) -> list[str]:
        layout = self.layout(tokenizer)
        return [codes_to_text(row, layout.codebook_size) for row in layout.codes_of(input_ids.cpu()).tolist()]

    def reward_inputs(self, completions: list[str]) -> list:
        """Code text decoded to RGB PIL images through ``image.decoder`` (models/vq.py), or as is.
        Each distinct code text is decoded once; the last call's images are kept for
        ``report_files`` (evaluate scores every row, then shows the first ones: no second decode)."""
        if self.image.decoder is None or not completions:
            return completions
        wanted = list(dict.fromkeys(completions))
        missing = [c for c in wanted if c not in self._decoded]
        decoded = dict(zip(missing, self._decode(missing))) if missing else {}
        self._decoded = {c: self._decoded[c] if c in self._decoded else decoded[c] for c in wanted}
        return [self._decoded[c] for c in completions]

    def _decode(self, completions: list[str]) -> list:
        spec = self.image.decoder
        if self._decoder is None:
            from maskgrpo.models.loading import local_source, parse_store_source
            from maskgrpo.models.vq import load_decoder

            if parse_store_source(spec.source) is None and not Path(spec.source).is_dir():
                raise FileNotFoundError(f"image.decoder.source {spec.source!r} is neither a store URI nor a folder")
            device = spec.device if spec.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
            self._decoder = load_decoder(spec.class_path, str(local_source(spec.source)), device)
        from maskgrpo.models.vq import decode_images

        slots = self.image.grid_size * self.image.grid_size
        codes = torch.tensor([text_to_codes(c, slots, self.image.codebook_size) for c in completions], dtype=torch.long)
        return decode_images(self._decoder, codes, spec.batch_size, codebook_size=self.image.codebook_size)

    def report_files(self, rows: list[dict], num_samples: int) -> dict[str, bytes]:
        """The first ``num_samples`` prompts' images as a labelled PNG grid: a row per prompt with
        its text, the toy GenEval reference (when the answer is a toy grid) and then its sampled
        images, decoded through ``image.decoder`` when one is configured (a real VQ decoder, MMaDA's
        MAGVIT-v2), else drawn in the toy palette; none when neither applies."""
        per_prompt = self.eval_repeats
        shown = rows[: max(num_samples, 1) * per_prompt]
        if not shown:
            return {}
        completions = [r["completion"] for r in shown]
        if self.image.decoder is not None:
            images = self.reward_inputs(completions)
        else:
            images = toy_images(completions, self.image.grid_size)
            if images is None:
                return {}
        grid_rows = []
        for start in range(0, len(shown), per_prompt):
            row = shown[start]
            reference = toy_images([str(row.get("answer", ""))], self.image.grid_size) or []
            label = row["prompt"] + ("  (first image: the reference)" if reference else "")
            grid_rows.append((label, reference + images[start:start + per_prompt]))
        grid = labelled_grid_png(grid_rows)
        return {IMAGE_GRID: grid} if grid is not None else {}
