"""The ``Modality`` interface the stages call (modalities/__init__.py says who owns what).

A modality is built from the stage spec's ``image`` and ``task`` sections (either may be None);
methods that encode or decode take the policy's tokenizer, so the score stage, which has no
policy, can still ask for reward inputs. ``LogitsFn`` is the core's (core/sampling.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import torch

from maskgrpo.core.importance import EstimatorInput
from maskgrpo.core.kv_cache import CachedLogitsFn
from maskgrpo.core.sampling import LogitsFn
from maskgrpo.core.sft import SftNoise
from maskgrpo.tasks import Example


class SftData(NamedTuple):
    inputs: torch.Tensor  # (D, L) clean training sequences
    target_positions: torch.Tensor  # (N,) the columns SFT reconstructs (completion or image slots)
    vocab_slice: tuple[int, int] | None  # (offset, size) of the scored vocabulary; None: all of it


class Generated(NamedTuple):
    input_ids: torch.Tensor  # (B, L) prompt/condition and sampled completion/image
    prompt_length: int  # first column of the sampled part (text: P; image: the first slot)
    forwards_per_row: float  # model evaluations per sampled row


class Modality(Protocol):
    name: str  # "text" | "image": the registry name
    eval_repeats: int  # samples per held-out prompt at evaluation (image: GenEval's protocol)

    def tiny_shape(self, tokenizer: Any, examples: list[Example]) -> tuple[int, int]:
        """(vocab_size, max sequence length) of a fresh builtin:tiny model for this modality."""

    def mask_id(self, tokenizer: Any) -> int:
        """The mask token the samplers, SFT and the estimators write."""

    def sft_data(self, tokenizer: Any, examples: list[Example], targets: list[str]) -> SftData:
        """The clean sequences of (prompt, target) pairs."""

    def sft_noise(self, tokenizer: Any, x: torch.Tensor, data: SftData, sft: Any, generator: torch.Generator) -> SftNoise:
        """One batch of SFT noising (core/sft.py); ``sft`` is the SftSpecPart."""

    def prompt_width(self, tokenizer: Any, prompts: list[str]) -> int | None:
        """A fixed conditioning width for these prompts (so rollout shards concatenate), or None."""

    def generate(self, logits_fn: LogitsFn, tokenizer: Any, prompts: list[str], sampler: Any,
                 generator: torch.Generator, *, device: torch.device, width: int | None = None,
                 progress: bool = True, cached_logits_fn: CachedLogitsFn | None = None) -> Generated:
        """One sample per prompt with ``sampler`` (a spec whose kind must be this modality);
        ``cached_logits_fn``: the model's block KV cache (core/kv_cache.py) for a sampler with a cache."""

    def estimator_input(self, tokenizer: Any, input_ids: torch.Tensor, prompt_length: int,
                        row_ids: torch.Tensor) -> EstimatorInput:
        """What the importance estimators read (targets, valid masks, ramp start, vocab slice)."""

    def decode(self, tokenizer: Any, input_ids: torch.Tensor, prompt_length: int) -> list[str]:
        """The sampled parts as text (image: code text), as samples.jsonl stores them."""

    def reward_inputs(self, completions: list[str]) -> list:
        """What the reward functions receive for these completions (image: decoded images with a decoder)."""

    def report_files(self, rows: list[dict], num_samples: int) -> dict[str, bytes]:
        """Extra files of an evaluation output from its sample rows (prompt, answer, completion;
        image: a labelled PNG grid of the first prompts)."""


def check_sampler(modality: str, sampler: Any) -> None:
    if getattr(sampler, "kind", None) != modality:
        raise ValueError(f"a {getattr(sampler, 'kind', type(sampler).__name__)} sampler in a {modality} run "
                         f"(rl.sampler / evaluate.sampler kind must be {modality!r})")
