"""The policy (model + tokenizer): where it starts, LoRA and its reference, checkpoints, the cache.

1. Start (SFT): ``builtin:tiny`` is a fresh tiny model sized by the modality (its vocabulary and
   sequence length); any other source (folder or store URI, models/loading.py) loads through its
   adapter (models/adapters.py), with fresh LoRA adapters when ``model.lora`` is set.
2. LoRA and the reference (docs/design.md, "LoRA and the reference policy"): after SFT the
   trained adapters are merged into the base in memory (``fold_lora``) and fresh adapters (B = 0)
   go on top, so the RL policy starts at the SFT policy and "adapters disabled" IS the SFT policy:
   the KL reference with beta > 0 costs no second model. The checkpoint keeps the merged adapters
   under ``merged/<k>`` (models/lora.py), so loading rebuilds the same network. A LoRA checkpoint
   as ``model.source`` (a retraining tick's champion, stages/resolve.py) loads as the base its
   adapter config records, its merged chain and its own adapters, trainable; SFT with nothing to
   train keeps them (``continued``), so the tick trains on in the champion's adapters.
3. Loaded policies stay in a process-local cache keyed by the committed attempt, so a local run
   that walks many rounds in one process pays no reload per stage; a KFP pod loads once.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from maskgrpo.core.kv_cache import CachedLogitsFn, model_cached_logits
from maskgrpo.artifacts import CHECKPOINT
from maskgrpo.models.loading import local_source
from maskgrpo.models.tiny import TinyMDM, TinyMDMConfig
from maskgrpo.specs import ModelSpec
from maskgrpo.stages.seeds import Salt
from maskgrpo.store import Attempt, Committed, Store
from maskgrpo.tasks import CharTokenizer


@dataclass
class Policy:
    """A masked diffusion policy: the network and the tokenizer that defines its special ids.

    ``merged``: the adapter files already folded into the network's base (LoRA only), in order."""

    model: torch.nn.Module
    tokenizer: Any  # CharTokenizer or models.loading.HFTokenizer: the same small interface
    merged: tuple[dict[str, bytes], ...] = ()
    continued: bool = False  # trainable adapters loaded from a LoRA checkpoint source (a champion), not fresh

    @property
    def mask_id(self) -> int:
        return self.tokenizer.mask_id

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def logits(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """The core's LogitsFn: logits at ``positions`` (B, K) or everywhere; padding not attended.

        Padding is the run of pad ids a row starts with (prompts are left-padded), so a pad id
        that equals EOS (LLaDA) never hides a completion's EOS tail."""
        return self.model(input_ids, attention_mask=self.attention_mask(input_ids), logits_positions=positions).logits

    def attention_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        return ((input_ids != self.pad_id).long().cumsum(dim=1) > 0).long()

    def cached_logits(self) -> CachedLogitsFn | None:
        """The sampler's block KV cache view of the model (core/kv_cache.py); None if it has none."""
        return model_cached_logits(self.model, self.attention_mask)


def resolve_device(spec: ModelSpec) -> torch.device:
    if spec.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model.device is 'cuda' but no CUDA device is available")
    return torch.device(spec.device)


def new_tiny_policy(spec: ModelSpec, vocab_size: int, max_length: int, seed: int) -> Policy:
    """A freshly initialised tiny model over ``vocab_size`` ids with the character tokenizer."""
    tokenizer = CharTokenizer()
    torch.manual_seed(seed)  # parameter init; the only use of the global RNG, before any training
    config = TinyMDMConfig(
        vocab_size=vocab_size, hidden_size=spec.tiny.hidden_size, num_layers=spec.tiny.num_layers,
        num_heads=spec.tiny.num_heads, dropout=spec.tiny.dropout, max_position_embeddings=max(max_length, 64),
        mask_token_id=tokenizer.mask_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
    )
    return Policy(TinyMDM(config).to(resolve_device(spec)), tokenizer)


def load_tokenizer(path: Path, spec: ModelSpec) -> Any:
    """The toy CharTokenizer if ``path`` has its tokenizer.json, else the checkpoint's HF tokenizer
    with the RunSpec's special ids (models/loading.py)."""
    from maskgrpo.models.loading import HFTokenizer

    try:
        return CharTokenizer.load(path)
    except (FileNotFoundError, ValueError):
        pass
    ids = spec.special_tokens
    return HFTokenizer.load(path, trust_remote_code=spec.trust_remote_code, mask_id=ids.mask_id, pad_id=ids.pad_id,
                            eos_id=ids.eos_id, chat_template=spec.chat_template or None)


def _dtype(spec: ModelSpec) -> torch.dtype:
    return torch.bfloat16 if spec.dtype == "bfloat16" else torch.float32


def _load_model(path: Path, spec: ModelSpec) -> torch.nn.Module:
    from maskgrpo.models.adapters import load_model

    model = load_model(path, adapter=spec.adapter, dtype=_dtype(spec), trust_remote_code=spec.trust_remote_code,
                       load_in_4bit=spec.load_in_4bit)
    if spec.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ValueError(f"model.gradient_checkpointing: {type(model).__name__} does not support gradient checkpointing")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model if spec.load_in_4bit else model.to(resolve_device(spec))


def base_source(source: str) -> str:
    """The base model under ``source``: ``source`` itself, or, for a LoRA checkpoint (a retraining
    tick's champion trained with adapters), the base its adapter config records."""
    import json

    from maskgrpo.models.lora import ADAPTER_CONFIG

    if source == "builtin:tiny":
        return source
    config = local_source(source) / ADAPTER_CONFIG
    if not config.exists():
        return source
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base or base == source:
        raise ValueError(f"model.source {source!r}: LoRA adapters whose {ADAPTER_CONFIG} records no base model "
                         "(base_model_name_or_path)")
    return base


def load_base_model(spec: ModelSpec) -> torch.nn.Module:
    """``base_source(spec.source)`` (folder or store URI) through its adapter (models/adapters.py), no LoRA."""
    return _load_model(local_source(base_source(spec.source)), spec)


def with_lora(policy: Policy, spec: ModelSpec, seed: int) -> Policy:
    """Fresh LoRA adapters on the policy when ``spec.lora`` is set (models/lora.py); A's init is
    drawn from ``seed`` (B starts at zero, so the policy is unchanged)."""
    if spec.lora is None:
        return policy
    from maskgrpo.models.lora import apply_lora

    lora = spec.lora
    with torch.random.fork_rng():
        torch.manual_seed((seed * 1_000_003 + int(Salt.LORA_INIT)) % (2**63))
        model = apply_lora(policy.model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                           target_modules=lora.target_modules, base_source=base_source(spec.source))
    return Policy(model, policy.tokenizer, policy.merged)


def start_policy(spec: ModelSpec, tiny_shape: Callable[[Any], tuple[int, int]], seed: int) -> Policy:
    """The SFT stage's starting policy: a fresh tiny model (``tiny_shape(tokenizer)`` = (vocab
    size, max length), from the modality) or ``spec.source`` with fresh LoRA adapters if set."""
    if spec.source == "builtin:tiny":
        vocab_size, max_length = tiny_shape(CharTokenizer())
        return new_tiny_policy(spec, vocab_size, max_length, seed)
    return load_source_policy(spec, seed)


def load_source_policy(spec: ModelSpec, seed: int = 0) -> Policy:
    """The policy ``spec.source`` names (with fresh LoRA adapters if configured); a LoRA
    checkpoint (a retraining tick's champion) comes back as its base, its merged chain and its
    own adapters, trainable (``continued``): training goes on in the champion's adapters."""
    from maskgrpo.models.lora import ADAPTER_CONFIG

    path = local_source(spec.source)
    if (path / ADAPTER_CONFIG).exists():
        policy = load_policy_dir(path, spec)
        return Policy(policy.model, policy.tokenizer, policy.merged, continued=True)
    return with_lora(Policy(load_base_model(spec), load_tokenizer(path, spec)), spec, seed)


def fold_lora(policy: Policy, spec: ModelSpec, seed: int) -> Policy:
    """After SFT with LoRA: the trained adapters merged into the base in place, fresh adapters
    on top (module docstring, 2). Without LoRA the policy is returned as is."""
    from maskgrpo.models.lora import adapter_files, is_lora

    if not is_lora(policy.model):
        return policy
    files = adapter_files(policy.model)
    base = policy.model.merge_and_unload()
    return with_lora(Policy(base, policy.tokenizer, policy.merged + (files,)), spec, seed)


def load_policy_dir(path: Path, spec: ModelSpec) -> Policy:
    """Load a checkpoint folder: full weights through the adapters, or LoRA adapters over the
    base named by ``spec.source`` with the checkpoint's merged chain folded in first; the
    tokenizer saved beside them."""
    from maskgrpo.models.lora import ADAPTER_CONFIG, fold_adapters, load_adapters, merged_chain

    path = Path(path)
    if not (path / ADAPTER_CONFIG).exists():
        return Policy(_load_model(path, spec), load_tokenizer(path, spec))
    chain = merged_chain(path)
    base = load_base_model(spec)
    for files in chain:
        base = fold_adapters(base, files)
    return Policy(load_adapters(base, path, trainable=True), load_tokenizer(path, spec), chain)


def reference_logits(policy: Policy) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """With LoRA, the reference policy's LogitsFn: the same network with the trainable adapters
    disabled, i.e. the base with the SFT adapters merged in (module docstring, 2)."""
    from maskgrpo.models.lora import reference_logits as disabled

    return disabled(policy.model, policy.logits)


def is_lora_policy(policy: Policy) -> bool:
    from maskgrpo.models.lora import is_lora

    return is_lora(policy.model)


_POLICY_CACHE: dict[tuple[str, str], Policy] = {}
_CACHE_LIMIT = 3


def parse_ref(ref: str) -> tuple[str, int]:
    """'update/3' -> ('update', 3)."""
    stage, _, round_ = ref.rpartition("/")
    if not stage or not round_.isdigit():
        raise ValueError(f"bad stage reference {ref!r}; expected '<stage>/<round>'")
    return stage, int(round_)


def _cache_key(committed: Committed) -> tuple[str, str]:
    return (committed.uri, committed.attempt_id)


def remember_policy(committed: Committed, policy: Policy) -> None:
    """Keep a copy of a just-committed policy so the next stage of this process skips the load."""
    _POLICY_CACHE[_cache_key(committed)] = copy.deepcopy(policy)
    while len(_POLICY_CACHE) > _CACHE_LIMIT:
        _POLICY_CACHE.pop(next(iter(_POLICY_CACHE)))


def load_policy(store: Store, run_id: str, ref: str, spec: ModelSpec, *, mutable: bool = False) -> Policy:
    """The policy committed at ``ref`` ('stage/round'), from the process cache when present.

    ``mutable=True`` returns a private copy (for stages that train it).
    """
    stage, round_ = parse_ref(ref)
    committed = store.open(run_id, stage, round_)
    key = _cache_key(committed)
    if key not in _POLICY_CACHE:
        with tempfile.TemporaryDirectory() as tmp:
            local = committed.get_dir(CHECKPOINT, Path(tmp) / CHECKPOINT)
            remember_policy(committed, load_policy_dir(local, spec))
    policy = _POLICY_CACHE[key]
    return copy.deepcopy(policy) if mutable else policy


def save_policy(attempt: Attempt, policy: Policy) -> None:
    """Write the policy as a transformers checkpoint (safetensors) + tokenizer.json, and with
    LoRA its merged chain under ``merged/<k>`` (models/lora.py)."""
    from maskgrpo.models.lora import write_chain

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CHECKPOINT
        policy.model.save_pretrained(path)
        policy.tokenizer.save(path)
        write_chain(path, policy.merged)
        attempt.put_dir(CHECKPOINT, path)


def weight_digest(model: torch.nn.Module) -> str:
    """sha256 over the parameters' bytes in name order: equal weights, equal digests."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
