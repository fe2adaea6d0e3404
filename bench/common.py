"""Shared helpers for the benchmarks in bench/ (not tests): a toy text policy warm-started with
the masked-diffusion SFT objective, a forward-counting ``LogitsFn``, timing, and JSON output.

SFT objective (docs/algorithm.md §5, text): t ~ U(1e-3, 1) per row, completion tokens masked with
probability t (prompt never), loss = sum over masked tokens of CE / t, divided by the number of
completion tokens. Written here so the benchmarks do not depend on the pipeline stages.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from maskgrpo.core.sft import sft_loss_share, text_noise
from maskgrpo.models.tiny import TinyMDM, TinyMDMConfig

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class TextData:
    prompt_ids: torch.Tensor  # (B, P) left-padded
    completion_ids: torch.Tensor  # (B, L_o) text + EOS, EOS-filled tail
    answers: list[str]
    source: str  # what produced the prompts


def parse_task(text: str) -> tuple[str, dict]:
    """``"chain:steps=6"`` -> ("chain", {"steps": 6}): a task name and its integer parameters."""
    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        params[key] = int(value)
    return name, params


def toy_text_data(n: int, split: str, seed: int, task_name: str = "sort", completion_length: int | None = None):
    """(tokenizer, TextData) from ``maskgrpo.tasks`` (or random digit prompts if it is absent);
    ``task_name`` may carry integer parameters, ``"chain:steps=6"``."""
    try:
        from maskgrpo.tasks import CharTokenizer, get_task
    except ImportError:  # the tasks package is optional for this benchmark
        return None, _random_data(n, seed, completion_length or 16)
    tokenizer = CharTokenizer()
    name, params = parse_task(task_name)
    task = get_task(name, **params)
    length = completion_length or task.completion_length
    examples = task.examples(split, n, seed)
    prompts = tokenizer.encode_batch_left_padded([e.prompt for e in examples])
    completions = torch.tensor([tokenizer.encode_completion(e.answer, length) for e in examples])
    return tokenizer, TextData(prompts, completions, [e.answer for e in examples], f"maskgrpo.tasks:{task_name}")


def _random_data(n: int, seed: int, completion_length: int) -> TextData:
    g = torch.Generator().manual_seed(seed)
    digits = torch.randint(3, 13, (n, 8), generator=g)
    completions = torch.full((n, completion_length), 1)
    completions[:, :8] = digits.sort(dim=1).values
    return TextData(digits, completions, [""] * n, "random digit prompts (maskgrpo.tasks missing)")


def new_model(vocab_size: int, hidden: int = 128, layers: int = 2, heads: int = 4, seed: int = 0) -> TinyMDM:
    torch.manual_seed(seed)
    return TinyMDM(TinyMDMConfig(vocab_size=vocab_size, hidden_size=hidden, num_layers=layers, num_heads=heads,
                                 max_position_embeddings=256))


def sft_train(model: TinyMDM, data: TextData, steps: int, *, batch: int = 64, lr: float = 3e-3, seed: int = 0,
              mask_id: int = 2, log_every: int = 0) -> list[float]:
    """Masked-diffusion SFT (core/sft.py, as the SFT stage) for ``steps`` AdamW steps; returns the
    loss curve (printed every ``log_every`` steps when > 0)."""
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    prompt_len = data.prompt_ids.shape[1]
    losses = []
    positions = torch.arange(prompt_len, prompt_len + data.completion_ids.shape[1])
    for _ in range(steps):
        idx = torch.randint(0, len(data.prompt_ids), (batch,), generator=g)
        x = torch.cat([data.prompt_ids[idx], data.completion_ids[idx]], dim=1)  # (b, P + L_o)
        noise = text_noise(x, positions, mask_id, 1e-3, g)  # core/sft.py: the stages' objective
        logits = model(noise.inputs, logits_positions=positions.expand(batch, -1)).logits  # (b, L_o, V), head there only
        loss = sft_loss_share(logits, x[:, prompt_len:], noise, torch.arange(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if log_every and len(losses) % log_every == 0:
            print(f"sft step {len(losses)}/{steps}: loss {sum(losses[-log_every:]) / log_every:.4f}", flush=True)
    model.eval()
    return losses


def forward_flops(config: TinyMDMConfig, queries: int, keys: int, heads: int) -> int:
    """Matmul FLOPs of one row's forward through a TinyMDM-shaped model: per layer and query token
    2 (4 h^2 + 2 m h) (QKV, output projection, MLP of width m) plus 4 keys h (scores and weighted
    values); the LM head 2 h V per position that gets logits. Norms, rotary, softmax: ignored."""
    h, m = config.hidden_size, int(config.mlp_ratio * config.hidden_size)
    layer = queries * (8 * h * h + 4 * m * h) + 4 * queries * keys * h
    return config.num_layers * layer + heads * 2 * h * config.vocab_size


class CountingLogitsFn:
    """The ``LogitsFn`` over a TinyMDM that counts model evaluations (one per row per call) and
    their FLOPs; ``cached_logits`` is the counting ``CachedLogitsFn`` (core/kv_cache.py)."""

    def __init__(self, model: TinyMDM):
        self.model = model
        self.row_forwards = 0
        self.calls = 0
        self.flops = 0

    def _count(self, input_ids: torch.Tensor, queries: int, heads: int) -> None:
        rows, length = input_ids.shape
        self.calls += 1
        self.row_forwards += rows
        self.flops += rows * forward_flops(self.model.config, queries, length, heads)

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        length = input_ids.shape[1]
        self._count(input_ids, length, length if positions is None else positions.shape[1])
        return self.model(input_ids, logits_positions=positions).logits

    def cached_logits(self, input_ids, positions, cache, window):
        start, end = window or (0, input_ids.shape[1])
        self._count(input_ids, end - start, positions.shape[1])
        return self.model.forward_cached(input_ids, logits_positions=positions, cache=cache, window=window)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn, repeats: int, device: torch.device, warmup: bool = True) -> tuple[float, object]:
    """Minimum wall time of ``repeats`` calls (after one warm-up unless ``warmup`` is False) and the last result."""
    if warmup:
        fn()
        synchronize(device)
    result = None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times), result


def environment(device: torch.device) -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def write_result(name: str, result: dict, out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path
