"""LoRA for the policy (peft): adapters on, reference policy = adapters off, merge for export.

A LoRA checkpoint folder holds the trainable adapters (``adapter_config.json`` +
``adapter_model.safetensors``) and, under ``merged/0``, ``merged/1``, ..., adapters that were
already merged into the base below them, in order (the SFT adapters: docs/design.md, "LoRA and
the reference policy"). Loading = base, then each merged adapter folded in, then the trainable
adapters on top; so "adapters disabled" is the SFT policy, not the pre-SFT base.

1. ``apply_lora(model, r, alpha, dropout, target_modules)``: wraps any adapter's model (models/
   adapters.py) in a peft ``PeftModel``; ``"all-linear"`` is resolved here to every ``nn.Linear``
   except the LM head (peft's own resolver only accepts ``PreTrainedModel``\\ s). Only the
   adapters train; ``save_pretrained`` then writes the adapter folder only
   (``adapter_config.json`` + ``adapter_model.safetensors``).
2. ``reference_logits(model, logits_fn)``: the reference policy of docs/algorithm.md §4 with LoRA: the
   same network called under ``disable_adapter()`` (the base with the merged chain: the SFT
   policy), so no second copy of an 8B model is held.
3. ``load_adapters(base, folder)``: a base model plus a saved adapter folder, trainable.
4. ``merge_adapters(src, dst, base=None)``: folds an adapter checkpoint (its merged chain, then
   its adapters) into full weights (``merge_and_unload``) and writes a plain checkpoint (weights
   + tokenizer files) to ``dst``;
   the base is the adapter config's ``base_model_name_or_path`` (the model source recorded at
   training time) unless given. This is ``maskgrpo merge``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

__all__ = ["apply_lora", "adapter_files", "fold_adapters", "is_lora", "linear_targets", "load_adapters", "merge_adapters",
           "merged_chain", "reference_logits", "write_chain"]

ADAPTER_CONFIG = "adapter_config.json"
MERGED_DIR = "merged"  # merged/<k>/: adapters already folded into the base, in order


def is_lora(model: nn.Module) -> bool:
    """Whether ``model`` carries LoRA adapters (a peft ``PeftModel``). Without peft imported no
    model can be one, so this never imports it: the runtime install (no 'train' extra) runs the
    tiny model's stages, which ask."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def linear_targets(model: nn.Module) -> list[str]:
    """Leaf names of every ``nn.Linear`` except the output head (what 'all-linear' means)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None and hasattr(model, "backbone"):
        head = model.backbone.get_output_embeddings()
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head]
    names = {name.rsplit(".", 1)[-1] for name in linears}
    head_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if m is head}
    # a layer named like the head (LLaDA's blocks' ff_out vs its output ff_out): its full name
    return sorted(names - head_names) + sorted(n for n in linears if n.rsplit(".", 1)[-1] in head_names)


def apply_lora(model: nn.Module, *, r: int, alpha: float, dropout: float,
               target_modules: list[str] | str = "all-linear", base_source: str | None = None) -> nn.Module:
    """Freeze ``model`` and add LoRA adapters (module docstring, 1); ``base_source`` is recorded
    as the adapter config's ``base_model_name_or_path`` for ``merge_adapters``."""
    from peft import LoraConfig, get_peft_model

    targets = linear_targets(model) if target_modules == "all-linear" else list(target_modules)
    if not targets:
        raise ValueError("model.lora.target_modules matched no linear layer")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    peft_model = get_peft_model(model, config)
    if base_source is not None:
        peft_model.peft_config["default"].base_model_name_or_path = base_source
    return peft_model


def load_adapters(base: nn.Module, folder: str | Path, trainable: bool = True) -> nn.Module:
    """``base`` with the adapters saved in ``folder`` (module docstring, 3)."""
    from peft import PeftModel

    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).exists():
        raise FileNotFoundError(f"{folder} holds no LoRA adapters: no {ADAPTER_CONFIG}")
    return PeftModel.from_pretrained(base, folder, is_trainable=trainable)


def adapter_files(model: nn.Module) -> dict[str, bytes]:
    """The files ``save_pretrained`` writes for ``model``'s adapters (config + safetensors)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file() and p.name.startswith("adapter_")}


def fold_adapters(base: nn.Module, files: dict[str, bytes]) -> nn.Module:
    """``base`` with the adapters ``files`` merged into its weights in place (no second copy)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        return load_adapters(base, tmp, trainable=False).merge_and_unload()


def merged_chain(folder: str | Path) -> tuple[dict[str, bytes], ...]:
    """The adapter files under ``folder/merged/<k>`` in order (empty for a plain checkpoint)."""
    root = Path(folder) / MERGED_DIR
    if not root.is_dir():
        return ()
    steps = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    return tuple({f.name: f.read_bytes() for f in step.iterdir() if f.is_file()} for step in steps)


def write_chain(folder: str | Path, chain: tuple[dict[str, bytes], ...]) -> None:
    for k, files in enumerate(chain):
        step = Path(folder) / MERGED_DIR / str(k)
        step.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (step / name).write_bytes(data)


def reference_logits(model: nn.Module, logits_fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A LogitsFn computing ``logits_fn`` with the adapters of ``model`` (a PeftModel) disabled."""
    if not is_lora(model):
        raise TypeError("reference_logits needs a LoRA model; with full fine-tuning the reference is a frozen copy")

    def fn(input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        with model.disable_adapter():
            return logits_fn(input_ids, positions)

    return fn


def merge_adapters(src: str | Path, dst: str | Path, base: str | Path | None = None, *, adapter: str = "auto",
                   trust_remote_code: bool = False, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``src`` (a LoRA checkpoint folder) merged into its base as a full checkpoint at ``dst``.

    ``base``: a local checkpoint folder; default: ``base_model_name_or_path`` of ``src``'s adapter
    config (a store URI there must be fetched first: ``maskgrpo.models.loading.local_source``).
    Returns ``dst``.
    """
    import json

    from maskgrpo.models.adapters import load_model

    src, dst = Path(src), Path(dst)
    config_path = src / ADAPTER_CONFIG
    if not config_path.exists():
        raise FileNotFoundError(f"{src} holds no LoRA adapters: no {ADAPTER_CONFIG}")
    if base is None:
        base = json.loads(config_path.read_text()).get("base_model_name_or_path")
        if not base:
            raise ValueError(f"{config_path} names no base model: pass base=")
    if "://" in str(base) or not Path(base).is_dir():
        raise ValueError(f"base model {base!r} must be a local checkpoint folder (fetch a store URI first)")
    model = load_model(base, adapter=adapter, dtype=dtype, trust_remote_code=trust_remote_code)
    for files in merged_chain(src):  # the SFT adapters first, as the stages load it
        model = fold_adapters(model, files)
    merged = load_adapters(model, src, trainable=False).merge_and_unload()
    dst.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(dst)
    for f in src.iterdir():  # tokenizer files travel with the checkpoint
        if f.is_file() and not f.name.startswith(("adapter_", ".")) and f.name != "README.md":  # merged/ is a folder
            shutil.copy2(f, dst / f.name)
    return dst
