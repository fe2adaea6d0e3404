"""What every stage shares: the policy (model + tokenizer), its checkpoints, and the stage main.

The policy is a transformers masked-LM plus the tokenizer, loaded from a committed checkpoint in
the store. Loaded policies stay in a process-local cache keyed by the committed attempt, so a
local run that walks many rounds in one process pays no reload per stage; a KFP pod loads once.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import BaseModel, ValidationError

from maskgrpo.models.tiny import TinyMDM, TinyMDMConfig
from maskgrpo.specs import ModelSpec, format_validation_error
from maskgrpo.stages.outputs import write_kfp_outputs
from maskgrpo.store import Attempt, Committed, Store, open_store
from maskgrpo.tasks import CharTokenizer

log = logging.getLogger("maskgrpo")

CHECKPOINT = "checkpoint"  # folder name of a policy checkpoint inside a stage output


@dataclass
class Policy:
    """A masked diffusion policy: the network and the tokenizer that defines its special ids."""

    model: torch.nn.Module
    tokenizer: Any  # CharTokenizer or models.loading.HFTokenizer: the same small interface

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
        attention_mask = ((input_ids != self.pad_id).long().cumsum(dim=1) > 0).long()
        return self.model(input_ids, attention_mask=attention_mask, logits_positions=positions).logits


def resolve_device(spec: ModelSpec) -> torch.device:
    if spec.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model.device is 'cuda' but no CUDA device is available")
    return torch.device(spec.device)


def new_tiny_policy(spec: ModelSpec, max_length: int, seed: int) -> Policy:
    """A freshly initialised tiny model with the default character tokenizer."""
    tokenizer = CharTokenizer()
    torch.manual_seed(seed)  # parameter init; the only use of the global RNG, before any training
    config = TinyMDMConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=spec.tiny.hidden_size, num_layers=spec.tiny.num_layers,
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


def local_source(source: str, progress: bool = True) -> Path:
    """A model source as a local folder: a folder as is, a store URI fetched (verified) into the
    cache ``$MASKGRPO_CACHE/models/...`` (models/loading.py, parse_store_source)."""
    from maskgrpo.models.loading import CHECKPOINT_DIR, cache_root, fetch_with_progress, parse_store_source

    found = parse_store_source(source)
    if found is None:
        path = Path(source)
        if not path.is_dir():
            raise FileNotFoundError(f"model.source {source!r} is neither builtin:tiny, a store URI nor a folder")
        return path
    committed = open_store(found.store).open(found.run_id, found.stage, found.round)
    local = cache_root() / "models" / hashlib.sha256(committed.uri.encode()).hexdigest()[:16] / committed.attempt_id
    return fetch_with_progress(committed, CHECKPOINT_DIR, local, progress=progress)


def import_checkpoint(local_dir: str | Path, store_uri: str, name: str) -> str:
    """Commit a local transformers checkpoint folder to ``<store_uri>/<name>`` (stage 'model'),
    so ``model.source: <store_uri>/<name>`` loads it anywhere; returns that source string."""
    from maskgrpo.models.loading import CHECKPOINT_DIR, IMPORTED_STAGE

    store = open_store(store_uri)
    digest = hashlib.sha256(str(sorted((p.name, p.stat().st_size) for p in Path(local_dir).iterdir())).encode()).hexdigest()
    with store.begin(name, IMPORTED_STAGE, None, digest) as attempt:
        attempt.put_dir(CHECKPOINT_DIR, Path(local_dir))
        attempt.commit()
    return f"{store.uri.rstrip('/')}/{name}"


def _dtype(spec: ModelSpec) -> torch.dtype:
    return torch.bfloat16 if spec.dtype == "bfloat16" else torch.float32


def load_base_model(spec: ModelSpec) -> torch.nn.Module:
    """``spec.source`` (folder or store URI) through its adapter (models/adapters.py), no LoRA."""
    from maskgrpo.models.adapters import load_model

    model = load_model(local_source(spec.source), adapter=spec.adapter, dtype=_dtype(spec),
                       trust_remote_code=spec.trust_remote_code, load_in_4bit=spec.load_in_4bit)
    return model if spec.load_in_4bit else model.to(resolve_device(spec))


def with_lora(policy: Policy, spec: ModelSpec) -> Policy:
    """Fresh LoRA adapters on the policy when ``spec.lora`` is set (models/lora.py)."""
    if spec.lora is None:
        return policy
    from maskgrpo.models.lora import apply_lora

    lora = spec.lora
    model = apply_lora(policy.model, r=lora.r, alpha=lora.alpha, dropout=lora.dropout,
                       target_modules=lora.target_modules, base_source=spec.source)
    return Policy(model, policy.tokenizer)


def load_source_policy(spec: ModelSpec) -> Policy:
    """The starting policy of a run from ``spec.source`` (with fresh LoRA adapters if configured)."""
    path = local_source(spec.source)
    return with_lora(Policy(load_base_model(spec), load_tokenizer(path, spec)), spec)


def load_policy_dir(path: Path, spec: ModelSpec) -> Policy:
    """Load a checkpoint folder: full weights through the adapters, or LoRA adapters over the
    base named by ``spec.source``; the tokenizer saved beside them."""
    from maskgrpo.models.lora import ADAPTER_CONFIG, load_adapters

    path = Path(path)
    if (path / ADAPTER_CONFIG).exists():
        model = load_adapters(load_base_model(spec), path, trainable=True)
    else:
        from maskgrpo.models.adapters import load_model

        model = load_model(path, adapter=spec.adapter, dtype=_dtype(spec), trust_remote_code=spec.trust_remote_code,
                           load_in_4bit=spec.load_in_4bit)
        model = model if spec.load_in_4bit else model.to(resolve_device(spec))
    return Policy(model, load_tokenizer(path, spec))


def reference_logits(policy: Policy) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """With LoRA, the reference policy's LogitsFn: the same network with adapters disabled."""
    from maskgrpo.models.lora import reference_logits as disabled

    return disabled(policy.model, policy.logits)


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
    """Write the policy as a transformers checkpoint (safetensors) + tokenizer.json."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CHECKPOINT
        policy.model.save_pretrained(path)
        policy.tokenizer.save(path)
        attempt.put_dir(CHECKPOINT, path)


def weight_digest(model: torch.nn.Module) -> str:
    """sha256 over the parameters' bytes in name order: equal weights, equal digests."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def stage_generator(seed: int, salt: int = 0) -> torch.Generator:
    """A CPU generator for a stage's draws: results never depend on the global RNG."""
    return torch.Generator().manual_seed((seed * 1_000_003 + salt) % (2**63))


# --------------------------------------------------------------------------------------------
# The stage entry point shared by `python -m maskgrpo.stages.<kind>`
# --------------------------------------------------------------------------------------------


def read_spec_arg(value: str) -> dict[str, Any]:
    """--spec takes JSON text or @path to a JSON file."""
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--spec is not valid JSON: {err}") from None


def stage_main(kind: str, spec_cls: type[BaseModel], run: Callable[[Any, Store], BaseModel], argv: list[str] | None = None) -> int:
    """Parse ``--spec``, validate, open the store, run, write the KFP UI outputs (stages/outputs.py)."""
    parser = argparse.ArgumentParser(prog=f"python -m maskgrpo.stages.{kind}", description=f"Run the {kind} stage.")
    parser.add_argument("--spec", required=True, help="the stage spec as JSON, or @file.json")
    parser.add_argument("--run-id", default="", help="override the spec's run_id (KFP passes the pipeline's run_id parameter)")
    parser.add_argument("--metrics-path", help="write the stage's scalar metrics here as flat JSON")
    parser.add_argument("--summary-path", help="write a Markdown summary here")
    parser.add_argument("--executor-input", help="KFP executor input ({{$}}): metrics go to its output file")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help="set by the deepspeed launcher (stages/distributed.py); torchrun sets LOCAL_RANK instead")
    args = parser.parse_args(argv)
    if args.local_rank is not None:
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    raw = read_spec_arg(args.spec)
    if args.run_id:
        raw["run_id"] = args.run_id
    try:
        spec = spec_cls.model_validate(raw)
    except ValidationError as err:
        print(format_validation_error(err, "--spec"), file=sys.stderr)
        return 2
    start = time.perf_counter()
    from maskgrpo.stages.resolve import resolved_spec  # a retraining tick's pinned champion and data

    store = open_store(spec.store)
    result = run(resolved_spec(spec, store), store)
    payload = result.model_dump(mode="json")
    log.info("%s round %d done in %.1fs", kind, spec.round, time.perf_counter() - start)
    rows = "\n".join(f"| {k} | {v} |" for k, v in payload.items())
    summary = f"# {kind} (run {spec.run_id}, round {spec.round})\n\n| field | value |\n|---|---|\n{rows}\n"
    write_kfp_outputs(payload, summary, metrics_path=args.metrics_path, summary_path=args.summary_path,
                      executor_input=args.executor_input)
    return 0


# --------------------------------------------------------------------------------------------
# Optimizer state: safetensors for the tensors, JSON for the rest (never pickle)
# --------------------------------------------------------------------------------------------

OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"


def save_optimizer(attempt: Attempt, optimizer: torch.optim.Optimizer) -> None:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    attempt.put_tensors(OPTIMIZER_TENSORS, tensors)
    attempt.put_json(OPTIMIZER_META, {"param_groups": state["param_groups"], "scalars": scalars})


def load_optimizer(committed: Committed, optimizer: torch.optim.Optimizer) -> None:
    tensors = committed.get_tensors(OPTIMIZER_TENSORS)
    meta = committed.get_json(OPTIMIZER_META)
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, _, key = name.partition(".")
        state.setdefault(int(index), {})[key] = value
    groups = meta["param_groups"]
    for group in groups:  # JSON turns tuples into lists
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
