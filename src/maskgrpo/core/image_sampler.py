"""Image samplers over VQ-code slots (docs/algorithm.md §2.2 and §2.3).

Both fill the N masked image slots of a sequence in T steps, with classifier-free guidance
z = (1 + w) z_cond - w z_uncond, where the unconditional sequence (the caller builds it, e.g.
from the empty prompt) has the same image slots. Logits are restricted to the codebook slice
[code_offset, code_offset + codebook_size), so only image codes can be sampled.

1. ``maskgit``: MMaDA's default cosine sampler. Every masked slot draws a candidate; candidates
   are scored by log p + tau_s g (g Gumbel); the n_mask = clamp(floor(N cos(pi r / 2)), 1,
   undecoded - 1) lowest-scoring slots stay masked, the rest are committed; all are committed at
   the last step, r = (s + 1) / T. Deterministic counts, confidence-greedy: low diversity.
   ``maskgit_noise``:
   - "mmada" (MMaDA's ``t2i_generate``, docs/algorithm.md §10): candidates from softmax(z)
     whatever tau (tau only scales the noise), and the noise temperature compounds,
     tau_s = tau prod_{i <= s} (1 - (i + 1) / T) (T = 12: .917, .764, .573, .382, .223, ...).
   - "linear" (default, the pipelines' choice): candidates from softmax(z / tau), argmax at
     tau = 0 (a deterministic evaluation), noise tau (1 - r).
   ``float32_count`` reproduces MMaDA's float32 cosine: floor(N cos(pi/3)) = N/2 - 1 at r = 2/3
   (the exact cosine gives N/2). Off by default: the count is the formula's, float64.
2. ``emerge`` (MaskGRPO): the exact MDLM ancestral step under kappa(r) = cos(pi r / 2). Each
   still-masked slot is revealed with probability (k_t - k_s) / k_t, where k_t = kappa(s / T) and
   k_s = kappa((s + 1) / T), as a full-temperature sample from p; every slot is revealed at the
   last step. Random reveal order, hence diverse groups.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .sampling import LogitsFn, classifier_free_guidance, gumbel_noise, sample_tokens


class ImageSample(NamedTuple):
    tokens: torch.Tensor  # (B, L) the sequences with every image slot filled (token ids, not codes)
    row_forwards: torch.Tensor  # (B,) model evaluations per row (CFG counts 2)


def _code_logits(
    logits_fn: LogitsFn, x: torch.Tensor, uncond: torch.Tensor | None, positions: torch.Tensor,
    cfg_scale: float, code_offset: int, codebook_size: int,
) -> torch.Tensor:
    """Guided logits over the codebook at ``positions`` (B, N) -> (B, N, K) float32."""
    if uncond is not None and cfg_scale > 0.0:
        both = logits_fn(torch.cat([x, uncond]), torch.cat([positions, positions]))
        both = both[..., code_offset:code_offset + codebook_size].float()
        return classifier_free_guidance(both[: len(x)], both[len(x):], cfg_scale)
    return logits_fn(x, positions)[..., code_offset:code_offset + codebook_size].float()


@torch.no_grad()
def sample_image(
    logits_fn: LogitsFn,
    input_ids: torch.Tensor,  # (B, L) image slots hold mask_id
    image_positions: torch.Tensor,  # (N,) columns of the image slots
    *,
    steps: int,
    mask_id: int,
    code_offset: int,
    codebook_size: int,
    sampler: str = "emerge",
    cfg_scale: float = 0.0,
    uncond_ids: torch.Tensor | None = None,  # (B, L) the unconditional sequence, for CFG
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    maskgit_noise: str = "linear",
    float32_count: bool = False,
) -> ImageSample:
    """Fill the masked image slots with ``sampler`` ("emerge" or "maskgit")."""
    if sampler not in ("emerge", "maskgit"):
        raise ValueError(f"image sampler must be 'emerge' or 'maskgit', got {sampler!r}")
    if maskgit_noise not in ("linear", "mmada"):
        raise ValueError(f"maskgit_noise must be 'linear' or 'mmada', got {maskgit_noise!r}")
    mmada = sampler == "maskgit" and maskgit_noise == "mmada"
    noise_scales = maskgit_noise_scales(temperature, steps, maskgit_noise)
    if cfg_scale > 0.0 and uncond_ids is None:
        raise ValueError("cfg_scale > 0 needs uncond_ids (the unconditional sequence)")
    x = input_ids.clone()
    uncond = uncond_ids.clone() if uncond_ids is not None else None
    batch, num_slots = x.shape[0], image_positions.numel()
    positions = image_positions.expand(batch, -1)  # (B, N)
    evaluations = 2 if (cfg_scale > 0.0 and uncond is not None) else 1
    row_forwards = torch.zeros(batch, dtype=torch.long, device=x.device)
    gen_device = generator.device if generator is not None else "cpu"
    for step in range(steps):
        masked = x[:, image_positions] == mask_id  # (B, N)
        if not masked.any():
            break
        logits = _code_logits(logits_fn, x, uncond, positions, cfg_scale, code_offset, codebook_size)  # (B, N, K)
        row_forwards += evaluations
        candidates = sample_tokens(logits, 1.0 if mmada else temperature, generator)  # (B, N) codes
        last = step == steps - 1
        if sampler == "emerge":
            k_t = math.cos(math.pi / 2 * step / steps)
            k_s = math.cos(math.pi / 2 * (step + 1) / steps)
            reveal_prob = 1.0 if last else (k_t - k_s) / k_t
            u = torch.rand(masked.shape, generator=generator, dtype=torch.float64, device=gen_device).to(x.device)
            commit = masked & (u < reveal_prob)
        else:
            ratio = (step + 1) / steps
            log_p = torch.log_softmax(logits, dim=-1).gather(-1, candidates.unsqueeze(-1)).squeeze(-1).double()  # (B, N)
            score = log_p + noise_scales[step] * gumbel_noise(log_p.shape, generator, x.device)
            score = torch.where(masked, score, torch.full_like(score, torch.inf))  # committed slots stay
            undecoded = masked.sum(1)  # (B,)
            target = maskgit_masked_count(num_slots, ratio, float32_count)
            keep_masked = torch.clamp(torch.full_like(undecoded, target), min=1)
            keep_masked = torch.minimum(keep_masked, (undecoded - 1).clamp(min=0))
            if last:
                keep_masked = torch.zeros_like(keep_masked)
            order = score.argsort(dim=1)  # ascending: lowest scores first
            ranks = torch.empty_like(order)
            ranks.scatter_(1, order, torch.arange(num_slots, device=x.device).expand_as(order))
            commit = masked & (ranks >= keep_masked.unsqueeze(1))
        new_tokens = (candidates + code_offset).to(x.dtype)
        slots = x[:, image_positions]
        slots = torch.where(commit, new_tokens, slots)
        x[:, image_positions] = slots
        if uncond is not None:
            uncond[:, image_positions] = slots
    return ImageSample(tokens=x, row_forwards=row_forwards)


def maskgit_noise_scales(temperature: float, steps: int, noise: str = "linear") -> list[float]:
    """The confidence-noise temperature of each MaskGIT step s = 0..T-1: tau (1 - (s + 1) / T)
    ("linear") or tau prod_{i <= s} (1 - (i + 1) / T) ("mmada", MMaDA reassigns it in the loop)."""
    scales, current = [], temperature
    for step in range(steps):
        factor = 1.0 - (step + 1) / steps
        current = current * factor if noise == "mmada" else temperature * factor
        scales.append(current)
    return scales


def maskgit_masked_count(num_slots: int, ratio: float, float32: bool = False) -> int:
    """floor(N cos(pi r / 2)): slots still masked after the step at progress r (before the clamp);
    ``float32`` computes it as MMaDA does (a float32 cosine and product)."""
    if float32:
        r = torch.tensor(ratio, dtype=torch.float32)
        return int(torch.floor(torch.cos(r * (math.pi * 0.5)) * num_slots))
    return math.floor(num_slots * math.cos(math.pi / 2 * ratio))
