"""The image modality of the stages: text-to-image SFT, rollout and evaluation (ALGORITHM.md §1-§5).

The text stages dispatch here when their spec carries an ``image`` section; the rest of the
pipeline (score, update, store layout, report) is shared.

1. Layout: ``image_layout`` builds the ``ImageLayout`` of the run: the tiny model's appends
   ``<|t2i|>``, ``<|soi|>``, ``<|eoi|>`` and the codebook to the character vocabulary (the
   ``CharTokenizer`` is unchanged and saved as before); ``mmada`` uses MMaDA-8B's ids.
2. SFT (MaskGIT style, §5): per example u ~ U(0, 1), mask round(max(cos(pi u / 2), m) N) image
   slots (at least one) chosen uniformly, CE over the masked slots on the codebook logits only
   (no 1/t weight); with probability ``cond_dropout`` the prompt is replaced by the empty prompt
   so classifier-free guidance has an unconditional model to contrast with.
3. Rollout: G images per prompt with the spec's sampler (emerge by default, CFG against the
   empty prompt), then, with the same weights in eval mode, the estimator's log-probs for the mu
   seeded masks over the image slots only (``ramp_start`` None) with the codebook softmax.
4. Evaluation: the eval sampler (MaskGIT, argmax codes by default) on held-out prompts, with
   ``eval_images_per_prompt`` sampled images per prompt (GenEval's protocol draws 4); accuracy is
   the mean over all images, as for text; a PNG grid of the first prompts' images (one row per
   prompt) when the codebook is the toy palette.
Completions are stored as code text: one digit per slot when K <= 10, else space-separated codes.

Deviation: MMaDA trains its SFT CE over the whole vocabulary; here it is over the codebook slice,
the same distribution the samplers draw from and the estimators score.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from maskgrpo.core.image_sampler import sample_image
from maskgrpo.core.importance import EstimatorInput, cache_logprobs
from maskgrpo.models.layout import ImageLayout
from maskgrpo.models.tiny import TinyMDM, TinyMDMConfig
from maskgrpo.specs import ImageSamplerSpec, ImageSpec, ModelSpec, SftSpecPart
from maskgrpo.stages.common import Policy, resolve_device, stage_generator
from maskgrpo.tasks import CharTokenizer, Example

SAMPLE_BATCH_ROWS = 256
GRID_FILE = "images.png"


def image_layout(image: ImageSpec, tokenizer: CharTokenizer) -> ImageLayout:
    slots = image.grid_size * image.grid_size
    if image.layout == "mmada":
        return ImageLayout.mmada(text_slots=image.text_slots, image_slots=slots)
    return ImageLayout.after_vocab(tokenizer.vocab_size, text_slots=image.text_slots, image_slots=slots,
                                   codebook_size=image.codebook_size, mask_id=tokenizer.mask_id,
                                   pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id)


def new_tiny_image_policy(spec: ModelSpec, image: ImageSpec, seed: int) -> Policy:
    """A fresh tiny model whose vocabulary holds the character ids, the specials and the codebook."""
    tokenizer = CharTokenizer()
    layout = image_layout(image, tokenizer)
    torch.manual_seed(seed)  # parameter init only
    config = TinyMDMConfig(
        vocab_size=layout.vocab_size, hidden_size=spec.tiny.hidden_size, num_layers=spec.tiny.num_layers,
        num_heads=spec.tiny.num_heads, dropout=spec.tiny.dropout, max_position_embeddings=max(layout.seq_len, 64),
        mask_token_id=tokenizer.mask_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
    )
    return Policy(TinyMDM(config).to(resolve_device(spec)), tokenizer)


# ------------------------------------------------------------------------------ codes as text


def codes_to_text(codes: list[int], codebook_size: int) -> str:
    """>>> codes_to_text([0, 3, 1], 5), codes_to_text([12, 7], 8192)
    ('031', '12 7')"""
    return "".join(map(str, codes)) if codebook_size <= 10 else " ".join(map(str, codes))


def text_to_codes(text: str, num_slots: int, codebook_size: int) -> list[int]:
    parts = list(text) if codebook_size <= 10 else text.split()
    if len(parts) != num_slots or not all(p.isdigit() and int(p) < codebook_size for p in parts):
        raise ValueError(f"image text must hold {num_slots} codes in [0, {codebook_size}), got {text[:80]!r}")
    return [int(p) for p in parts]


def encode(layout: ImageLayout, tokenizer: CharTokenizer, prompts: list[str], answers: list[str] | None = None) -> torch.Tensor:
    """(B, L) sequences: answers' codes in the image slots, or masked slots when answers is None."""
    codes = None
    if answers is not None:
        codes = torch.tensor([text_to_codes(a, layout.image_slots, layout.codebook_size) for a in answers], dtype=torch.long)
    return layout.build_sequences([tokenizer.encode(p) for p in prompts], codes)


def decode(layout: ImageLayout, sequences: torch.Tensor) -> list[str]:
    return [codes_to_text(row, layout.codebook_size) for row in layout.codes_of(sequences.cpu()).tolist()]


def estimator_input(layout: ImageLayout, input_ids: torch.Tensor, row_ids: torch.Tensor) -> EstimatorInput:
    """Targets = the image slots; every slot may enter the loss (no EOS in an image)."""
    positions = layout.image_positions(input_ids.device)
    prompt_valid = torch.zeros_like(input_ids, dtype=torch.bool)
    prompt_valid[:, : layout.text_slots] = input_ids[:, : layout.text_slots] != layout.pad_id
    return EstimatorInput(input_ids=input_ids, target_positions=positions, row_ids=row_ids, prompt_valid=prompt_valid,
                          loss_valid=torch.ones(input_ids.shape[0], positions.numel(), dtype=torch.bool, device=input_ids.device),
                          ramp_start=None, vocab_slice=layout.vocab_slice)


# ------------------------------------------------------------------------------ SFT


def maskgit_sft_batch(layout: ImageLayout, x: torch.Tensor, min_masking_rate: float, cond_dropout: float,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy inputs (B, L), masked (B, N) bool) for one MaskGIT-style SFT batch."""
    batch, n = x.shape[0], layout.image_slots
    u = torch.rand(batch, generator=generator)
    rate = torch.clamp(torch.cos(math.pi / 2 * u), min=min_masking_rate)  # (B,)
    count = torch.clamp(torch.round(rate * n), min=1).long()  # (B,)
    ranks = torch.rand(batch, n, generator=generator).argsort(dim=1).argsort(dim=1)  # (B, N) a random permutation
    masked = ranks < count.unsqueeze(1)  # (B, N)
    noisy = x.clone()
    slots = noisy[:, layout.image_start:layout.image_start + n]
    noisy[:, layout.image_start:layout.image_start + n] = torch.where(masked.to(x.device), torch.full_like(slots, layout.mask_id), slots)
    drop = torch.rand(batch, generator=generator) < cond_dropout  # (B,)
    if drop.any():
        noisy[drop.to(x.device)] = layout.unconditional(noisy[drop.to(x.device)])
    return noisy, masked.to(x.device)


def train_image_sft(policy: Policy, layout: ImageLayout, examples: list[Example], part: SftSpecPart, image: ImageSpec,
                    targets: list[str], seed: int, progress: bool = True) -> list[float]:
    """Train in place on (prompt, target image text); returns the loss of every step."""
    device = policy.device
    data = encode(layout, policy.tokenizer, [e.prompt for e in examples], targets).to(device)  # (D, L)
    positions = layout.image_positions(device)
    offset, size = layout.vocab_slice
    generator = stage_generator(seed, salt=1)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=part.lr, weight_decay=part.weight_decay)
    policy.model.train()
    losses = []
    for _ in tqdm(range(part.steps), desc="sft (image)", disable=not progress, leave=False):
        idx = torch.randint(len(data), (part.batch_size,), generator=generator)
        x = data[idx]  # (B, L)
        noisy, masked = maskgit_sft_batch(layout, x, image.min_masking_rate, image.cond_dropout, generator)
        logits = policy.logits(noisy, positions.expand(len(x), -1))[..., offset:offset + size].float()  # (B, N, K)
        target = x[:, positions] - offset  # (B, N)
        ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, N)
        loss = (ce * masked).sum() / masked.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach().item())
    policy.model.eval()
    return losses


# ------------------------------------------------------------------------------ sampling


def generate(policy: Policy, layout: ImageLayout, prompts: list[str], sampler: ImageSamplerSpec, generator: torch.Generator,
             progress: bool = True) -> tuple[torch.Tensor, float]:
    """One image per prompt: (sequences (B, L), model evaluations per image)."""
    ids = encode(layout, policy.tokenizer, prompts).to(policy.device)
    policy.model.eval()
    chunks, forwards = [], 0
    for start in tqdm(range(0, len(prompts), SAMPLE_BATCH_ROWS), desc="images", disable=not progress, leave=False):
        x = ids[start:start + SAMPLE_BATCH_ROWS]
        out = sample_image(
            policy.logits, x, layout.image_positions(policy.device), steps=sampler.steps, mask_id=layout.mask_id,
            code_offset=layout.code_offset, codebook_size=layout.codebook_size, sampler=sampler.sampler,
            cfg_scale=sampler.cfg_scale, uncond_ids=layout.unconditional(x) if sampler.cfg_scale > 0 else None,
            temperature=sampler.temperature, generator=generator, maskgit_noise=sampler.maskgit,
            float32_count=sampler.float32_count,
        )
        chunks.append(out.tokens)
        forwards += int(out.row_forwards.sum())
    return torch.cat(chunks), forwards / max(len(prompts), 1)


def cache_old_logprobs(policy: Policy, layout: ImageLayout, estimator: str, inp: EstimatorInput, seeds: list[int],
                       options, chunk_rows: int):
    return cache_logprobs(policy.logits, estimator, inp, seeds, layout.mask_id, chunk_rows=chunk_rows, config=options)


def image_grid_png(texts: list[str], grid_size: int, columns: int = 8) -> bytes | None:
    """A PNG contact sheet of toy-palette images (None when a text is not a toy grid)."""
    import io

    from PIL import Image

    from maskgrpo.tasks.geneval import grid_to_image, text_to_grid

    try:
        images = [grid_to_image(text_to_grid(t, grid_size), cell=6) for t in texts]
    except ValueError:
        return None
    if not images:
        return None
    w, h = images[0].size
    rows = math.ceil(len(images) / columns)
    sheet = Image.new("RGB", (columns * (w + 2), rows * (h + 2)), (128, 128, 128))
    for k, im in enumerate(images):
        sheet.paste(im, ((k % columns) * (w + 2) + 1, (k // columns) * (h + 2) + 1))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()



# ------------------------------------------------------------------------------ the stages' image paths


def run_sft(spec, store, digest: str):
    """``sft.run`` for an image spec (not yet committed): a fresh tiny image model (or a checkpoint), MaskGIT SFT."""
    from maskgrpo.stages import sft
    from maskgrpo.stages.common import load_policy_dir, remember_policy
    from maskgrpo.stages.data import load_examples

    start = time.perf_counter()
    examples = load_examples(spec.task, "train", spec.data_seed)
    if spec.model.source == "builtin:tiny":
        policy = new_tiny_image_policy(spec.model, spec.image, spec.seed)
    else:
        policy = load_policy_dir(spec.model.source, spec.model)
    layout = image_layout(spec.image, policy.tokenizer)
    targets = sft.sft_targets(examples, spec.sft.label_noise, spec.seed)
    losses = train_image_sft(policy, layout, examples, spec.sft, spec.image, targets, spec.seed) if spec.sft.enabled else []
    result = sft.sft_result(policy, losses, start)
    remember_policy(sft.commit_sft(spec, store, digest, policy, result, losses), policy)
    return result


def run_rollout(spec, store, output: str, digest: str):
    """``rollout.run`` for an image spec (not yet committed): G images per prompt + cached old (and reference) log-probs."""
    from maskgrpo.stages import rollout
    from maskgrpo.stages.common import load_policy
    from maskgrpo.stages.data import load_examples

    start = time.perf_counter()
    rl = spec.rl
    policy = load_policy(store, spec.run_id, spec.policy, spec.model)
    layout = image_layout(spec.image, policy.tokenizer)
    train = load_examples(spec.task, "train", spec.data_seed)
    examples, groups = rollout.round_prompts(train, rl, spec.seed, spec.shard, spec.num_shards)
    repeated = [e for e in examples for _ in range(rl.group_size)]
    generator = stage_generator(spec.seed + spec.shard, salt=5)
    input_ids, forwards = generate(policy, layout, [e.prompt for e in repeated], spec.image.rollout, generator)
    row_ids = torch.tensor([g * rl.group_size + i for g in groups for i in range(rl.group_size)])
    inp = estimator_input(layout, input_ids, row_ids.to(input_ids.device))
    seeds = rollout.mask_seeds(spec.seed, rl.num_iterations)
    options = rollout.estimator_options(rl)
    old = cache_old_logprobs(policy, layout, rl.estimator, inp, seeds, options, rl.logprob_chunk_rows)
    tensors = {
        "input_ids": input_ids.cpu(), "row_ids": row_ids, "mask_seeds": torch.tensor(seeds, dtype=torch.int64),
        "prompt_length": torch.tensor([layout.image_start]), "old_logprobs": old.logprobs.cpu(),
        "loss_masks": old.loss_masks.cpu(), "masked": old.masked.cpu(),
    }
    if spec.reference is not None and rl.beta > 0:
        reference = load_policy(store, spec.run_id, spec.reference, spec.model)
        reference.model.eval()
        tensors["ref_logprobs"] = cache_old_logprobs(reference, layout, rl.estimator, inp, seeds, options, rl.logprob_chunk_rows).logprobs.cpu()
    group_of = [g for g in groups for _ in range(rl.group_size)]
    samples = [
        {"row": int(r), "group": g, "prompt": e.prompt, "answer": e.answer, "columns": e.columns, "completion": c}
        for r, g, e, c in zip(row_ids.tolist(), group_of, repeated, decode(layout, input_ids))
    ]
    result = rollout.RolloutResult(rows=len(samples), forwards_per_completion=forwards,
                                   completion_length_mean=float(layout.image_slots), wall_seconds=time.perf_counter() - start)
    with store.begin(spec.run_id, output, spec.round, digest) as attempt:
        attempt.put_tensors(rollout.ROLLOUT_FILE, tensors, metadata={"policy": spec.policy or "", "estimator": rl.estimator, "modality": "image"})
        attempt.put_jsonl(rollout.SAMPLES_FILE, samples)
        attempt.put_json("metrics.json", result.model_dump(exclude={"skipped"}))
        attempt.commit()
    return result


def evaluation_rows(spec, store) -> tuple[list[dict], float, dict[str, bytes]]:
    """``evaluate.run``'s generation for an image spec: (rows to score, model evaluations per
    image, extra files: the PNG grid of the first prompts' images, one row per prompt)."""
    from maskgrpo.stages.common import load_policy
    from maskgrpo.stages.data import load_examples

    policy = load_policy(store, spec.run_id, spec.policy, spec.model)
    layout = image_layout(spec.image, policy.tokenizer)
    examples = load_examples(spec.task, "eval", spec.data_seed)[: spec.evaluate.size or spec.task.eval_size]
    per_prompt = spec.image.eval_images_per_prompt
    repeated = [e for e in examples for _ in range(per_prompt)]  # prompt-major: a prompt's images are adjacent
    generator = stage_generator(spec.seed, salt=13)
    input_ids, forwards = generate(policy, layout, [e.prompt for e in repeated], spec.image.evaluate, generator, progress=False)
    completions = decode(layout, input_ids)
    rows = [{"prompt": e.prompt, "answer": e.answer, "columns": e.columns, "completion": c} for e, c in zip(repeated, completions)]
    grid = image_grid_png(completions[: max(spec.evaluate.num_samples, 1) * per_prompt], spec.image.grid_size,
                          columns=per_prompt if per_prompt > 1 else 8)
    return rows, forwards, ({GRID_FILE: grid} if grid is not None else {})
