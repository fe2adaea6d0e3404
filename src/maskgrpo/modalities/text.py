"""The text modality: left-padded prompts, EOS-filled completions (docs/algorithm.md, "Sequences").

Prompts are left-padded with the pad id, so every completion starts at the same column P;
completions are the answer, then EOS to the fixed length L_o. SFT noises the completion with
LLaDA's 1/t objective (core/sft.py, ``text_noise``); rollouts and evaluation use the semi-AR
low-confidence sampler (core/text_sampler.py); the estimators score the completion up to and
including its first EOS, with the AR ramp starting at column P; rewards get the decoded text.
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from maskgrpo.core.importance import EstimatorInput, completion_loss_valid
from maskgrpo.core.kv_cache import CachedLogitsFn
from maskgrpo.core.sampling import LogitsFn
from maskgrpo.core.sft import SftNoise, text_noise
from maskgrpo.core.text_sampler import sample_text
from maskgrpo.tasks import Example, get_task

from .base import Generated, SftData, check_sampler

SAMPLE_BATCH_ROWS = 256


def encode_prompts(tokenizer: Any, prompts: list[str], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, P) left-padded to ``length`` (default: the longest), valid (B, P) bool)."""
    ids = tokenizer.encode_batch_left_padded(prompts, length)
    return ids, ids != tokenizer.pad_id


def encode_answers(tokenizer: Any, answers: list[str], length: int) -> torch.Tensor:
    """(B, L_o): answer + EOS, EOS-filled."""
    return torch.tensor([tokenizer.encode_completion(a, length) for a in answers], dtype=torch.long)


class TextModality:
    name = "text"
    eval_repeats = 1

    def __init__(self, image: Any = None, task: Any = None, special_tokens: Any = None):
        self.task = task  # (special_tokens: the tokenizer reads them, models/loading.py)

    def completion_length(self) -> int:
        """L_o of the SFT targets: the task's completion length."""
        return get_task(self.task.name, **self.task.params).completion_length

    def tiny_shape(self, tokenizer: Any, examples: list[Example]) -> tuple[int, int]:
        return tokenizer.vocab_size, max(len(e.prompt) for e in examples) + self.completion_length()

    def mask_id(self, tokenizer: Any) -> int:
        return tokenizer.mask_id

    def sft_data(self, tokenizer: Any, examples: list[Example], targets: list[str]) -> SftData:
        prompt_ids, _ = encode_prompts(tokenizer, [e.prompt for e in examples])
        answers = encode_answers(tokenizer, targets, self.completion_length())
        data = torch.cat([prompt_ids, answers], dim=1)  # (D, L)
        return SftData(data, torch.arange(prompt_ids.shape[1], data.shape[1]), None)

    def sft_noise(self, tokenizer: Any, x: torch.Tensor, data: SftData, sft: Any, generator: torch.Generator) -> SftNoise:
        return text_noise(x, data.target_positions.to(x.device), tokenizer.mask_id, sft.min_t, generator)

    def prompt_width(self, tokenizer: Any, prompts: list[str]) -> int | None:
        return tokenizer.encode_batch_left_padded(prompts).shape[1]

    def generate(self, logits_fn: LogitsFn, tokenizer: Any, prompts: list[str], sampler: Any,
                 generator: torch.Generator, *, device: torch.device, width: int | None = None,
                 progress: bool = True, cached_logits_fn: CachedLogitsFn | None = None) -> Generated:
        check_sampler(self.name, sampler)
        prompt_ids, valid = encode_prompts(tokenizer, prompts, width)
        prompt_ids, valid = prompt_ids.to(device), valid.to(device)
        s = sampler
        chunks, forwards = [], 0
        for start in tqdm(range(0, len(prompts), SAMPLE_BATCH_ROWS), desc="sample", disable=not progress, leave=False):
            rows = slice(start, start + SAMPLE_BATCH_ROWS)
            out = sample_text(
                logits_fn, prompt_ids[rows], gen_length=s.gen_length, steps=s.steps, block_length=s.block_length,
                mask_id=tokenizer.mask_id, eos_id=tokenizer.eos_id, temperature=s.temperature, cfg_scale=s.cfg_scale,
                prompt_valid=valid[rows], remasking=s.remasking, threshold=s.threshold, early_exit=s.early_exit,
                generator=generator, cache=s.cache, cached_logits_fn=cached_logits_fn,
            )
            chunks.append(out.tokens)
            forwards += int(out.row_forwards.sum())
        completions = torch.cat(chunks)
        return Generated(torch.cat([prompt_ids, completions], dim=1), prompt_ids.shape[1], forwards / max(len(prompts), 1))

    def estimator_input(self, tokenizer: Any, input_ids: torch.Tensor, prompt_length: int,
                        row_ids: torch.Tensor) -> EstimatorInput:
        prompt_valid = input_ids != tokenizer.pad_id
        prompt_valid[:, prompt_length:] = False
        return EstimatorInput(
            input_ids=input_ids,
            target_positions=torch.arange(prompt_length, input_ids.shape[1], device=input_ids.device),
            row_ids=row_ids,
            prompt_valid=prompt_valid,
            loss_valid=completion_loss_valid(input_ids[:, prompt_length:], tokenizer.eos_id),
            ramp_start=prompt_length,
        )

    def decode(self, tokenizer: Any, input_ids: torch.Tensor, prompt_length: int) -> list[str]:
        return [tokenizer.decode(row) for row in input_ids[:, prompt_length:].cpu().tolist()]

    def reward_inputs(self, completions: list[str]) -> list:
        return completions

    def report_files(self, rows: list[dict], num_samples: int) -> dict[str, bytes]:
        return {}
