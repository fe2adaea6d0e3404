"""Getting a real checkpoint ready to load: where it comes from, the local cache, its tokenizer.

1. ``parse_store_source``: a model source that names a committed store output, either
   ``<store-root>/<name>`` (a checkpoint imported with ``import_checkpoint`` below:
   run id ``<name>``, stage ``model``, no round) or ``<store-root>/<run_id>/<stage>/<round>`` (a
   run's own stage output, e.g. ``s3://bucket/runs/run1/update/3``). Anything else is a local folder.
2. ``fetch_with_progress``: the verified copy of a committed folder into the local cache
   (``Committed.get_dir`` checks every file's size and digest and skips files already cached),
   with a byte progress bar fed by watching the cache folder grow.
3. ``HFTokenizer``: a transformers tokenizer behind the small interface the stages use (the toy
   ``CharTokenizer``'s): ``encode_batch_left_padded``, ``encode_completion``, ``decode``,
   ``decode_batch``, ``pad_id``/``eos_id``/``mask_id``, ``vocab_size``, ``save``/``load``.
   Special ids come from the RunSpec's ``model.special_tokens`` first, then the tokenizer.
   ``chat_template`` wraps each prompt as one user turn (Instruct models; d1 does this).

4. ``local_source`` / ``import_checkpoint``: a source (folder or store URI) as a local folder,
   and a local folder committed to the store as a source.

Import-light: this module needs transformers only when an HF tokenizer is loaded, and imports
the store only inside ``local_source`` / ``import_checkpoint``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import torch

from maskgrpo.artifacts import CHECKPOINT
from maskgrpo.core.sequences import eos_filled, left_pad

__all__ = ["StoreSource", "HFTokenizer", "cache_root", "fetch_with_progress", "import_checkpoint", "local_source",
           "parse_store_source", "TOKENIZER_META"]

TOKENIZER_META = "maskgrpo_tokenizer.json"
IMPORTED_STAGE = "model"  # stage name of an imported checkpoint
CHECKPOINT_DIR = CHECKPOINT  # the folder name of artifacts.py


class StoreSource(NamedTuple):
    store: str  # store root URI
    run_id: str
    stage: str
    round: int | None


def parse_store_source(source: str) -> StoreSource | None:
    """``None`` for a local folder; else the committed output a ``file://``/``s3://`` source names.

    >>> parse_store_source("s3://bkt/models/llada-8b-instruct")
    StoreSource(store='s3://bkt/models', run_id='llada-8b-instruct', stage='model', round=None)
    >>> parse_store_source("s3://bkt/runs/run1/update/3")
    StoreSource(store='s3://bkt/runs', run_id='run1', stage='update', round=3)
    >>> parse_store_source("/data/llada") is None
    True
    """
    scheme, sep, rest = source.partition("://")
    if not sep or scheme not in ("s3", "file"):
        return None
    parts = rest.rstrip("/").split("/")
    last = parts[-1]
    if len(parts) >= 4 and (last.isdigit() or last == "-"):
        root = f"{scheme}://{'/'.join(parts[:-3])}"
        return StoreSource(root, parts[-3], parts[-2], None if last == "-" else int(last))
    if len(parts) < 2:
        raise ValueError(f"model source {source!r}: expected <store-root>/<name> or <store-root>/<run_id>/<stage>/<round>")
    return StoreSource(f"{scheme}://{'/'.join(parts[:-1])}", last, IMPORTED_STAGE, None)


def cache_root() -> Path:
    """``$MASKGRPO_CACHE`` or ``~/.cache/maskgrpo``."""
    return Path(os.environ.get("MASKGRPO_CACHE") or Path.home() / ".cache" / "maskgrpo")


def _local_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def fetch_with_progress(committed: Any, name: str, local_dir: Path, progress: bool = True) -> Path:
    """``committed.get_dir(name, local_dir)`` with a byte progress bar; returns the folder."""
    from tqdm.auto import tqdm

    head = name + "/"
    total = sum(e["size"] for k, e in committed.manifest["files"].items() if k.startswith(head))
    local_dir = Path(local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    done = threading.Event()
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"fetch {committed.uri}", disable=not progress, leave=False)

    def watch() -> None:
        while not done.wait(0.5):
            bar.n = min(_local_bytes(local_dir), total)
            bar.refresh()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        path = committed.get_dir(name, local_dir)
    finally:
        done.set()
        watcher.join()
        bar.n = total
        bar.close()
    return path


class HFTokenizer:
    """A transformers tokenizer with the stages' interface (module docstring, 3)."""

    def __init__(self, tokenizer: Any, *, mask_id: int | None = None, pad_id: int | None = None,
                 eos_id: int | None = None, chat_template: bool = False, source: str = "") -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.eos_id = self._pick("eos_id", eos_id, tokenizer.eos_token_id, source)
        self.mask_id = self._pick("mask_id", mask_id, tokenizer.mask_token_id, source)
        self.pad_id = self._pick("pad_id", pad_id, tokenizer.pad_token_id, source)
        if self.mask_id in (self.pad_id, self.eos_id):
            raise ValueError(f"{source}: model.special_tokens.mask_id ({self.mask_id}) must differ from pad "
                             f"({self.pad_id}) and eos ({self.eos_id})")
        self.vocab_size = len(tokenizer)

    @staticmethod
    def _pick(field: str, given: int | None, found: int | None, source: str) -> int:
        if given is not None:
            return int(given)
        if found is None:
            raise ValueError(f"{source}: the tokenizer defines no {field[:-3]} token; set model.special_tokens.{field}")
        return int(found)

    def __repr__(self) -> str:
        return f"HFTokenizer({type(self.tokenizer).__name__}, mask={self.mask_id}, pad={self.pad_id}, eos={self.eos_id})"

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without added specials (the chat template is for prompts only)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _prompt_ids(self, text: str) -> list[int]:
        if not self.chat_template:
            return self.encode(text)
        out = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                 tokenize=True)
        return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)

    def encode_batch_left_padded(self, texts: list[str], length: int | None = None) -> torch.Tensor:
        """(B, L) long tensor, each prompt left-padded with ``pad_id``; ``length`` None = longest."""
        return left_pad([self._prompt_ids(t) for t in texts], self.pad_id, length, labels=texts)

    def encode_completion(self, text: str, length: int) -> list[int]:
        """``text`` + EOS, then EOS up to ``length`` (docs/algorithm.md §1). Too long -> ValueError."""
        return eos_filled(self.encode(text), self.eos_id, length, label=text)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Text up to the first EOS; pad and other special tokens dropped, mask shown as ``_``."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        pieces, run = [], []
        for i in ids:
            if i == self.mask_id:
                pieces += [self.tokenizer.decode(run, skip_special_tokens=True), "_"]
                run = []
            elif i != self.pad_id:
                run.append(i)
        pieces.append(self.tokenizer.decode(run, skip_special_tokens=True))
        return "".join(pieces)

    def decode_batch(self, ids: torch.Tensor | Iterable[Iterable[int]]) -> list[str]:
        return [self.decode(row) for row in ids]

    def save(self, directory: str | Path) -> None:
        """The tokenizer's own files plus ``maskgrpo_tokenizer.json`` (the resolved special ids)."""
        directory = Path(directory)
        self.tokenizer.save_pretrained(directory)
        meta = {"mask_id": self.mask_id, "pad_id": self.pad_id, "eos_id": self.eos_id, "chat_template": self.chat_template}
        (directory / TOKENIZER_META).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, *, trust_remote_code: Any = False, **overrides: Any) -> "HFTokenizer":
        """Load from a checkpoint folder; ``overrides`` (mask_id, pad_id, eos_id, chat_template)
        that are not None win over ``maskgrpo_tokenizer.json``, which wins over the tokenizer.
        ``trust_remote_code``: False or the code pins (models/remote_code.py), checked here too."""
        from transformers import AutoTokenizer

        from maskgrpo.models.remote_code import remote_code_allowed

        directory = Path(directory)
        meta_path = directory / TOKENIZER_META
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        meta.update({k: v for k, v in overrides.items() if v is not None})
        tok = AutoTokenizer.from_pretrained(directory, trust_remote_code=remote_code_allowed(directory, trust_remote_code))
        return cls(tok, mask_id=meta.get("mask_id"), pad_id=meta.get("pad_id"), eos_id=meta.get("eos_id"),
                   chat_template=bool(meta.get("chat_template", False)), source=str(directory))


def local_source(source: str, progress: bool = True) -> Path:
    """A model (or decoder) source as a local folder: a folder as is, a store URI fetched
    (verified) into ``$MASKGRPO_CACHE/models/...`` (``parse_store_source``). The one place this
    rule lives: the stages' policies, the VQ decoder and the CLIP reward all call it."""
    import hashlib

    from maskgrpo.store import open_store

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
    """Commit a local checkpoint folder to ``<store_uri>/<name>`` (stage 'model'), so
    ``model.source: <store_uri>/<name>`` loads it anywhere; returns that source string."""
    import hashlib

    from maskgrpo.store import open_store

    store = open_store(store_uri)
    digest = hashlib.sha256(str(sorted((p.name, p.stat().st_size) for p in Path(local_dir).iterdir())).encode()).hexdigest()
    with store.begin(name, IMPORTED_STAGE, None, digest) as attempt:
        attempt.put_dir(CHECKPOINT_DIR, Path(local_dir))
        attempt.commit()
    return f"{store.uri.rstrip('/')}/{name}"
