"""Checkpoint loading (models/loading.py, stages/policy.py): store URIs of imported checkpoints,
the verified copy into the cache, the HF tokenizer behind the stages' tokenizer interface, and
one whole tiny run (SFT, rollout, score, update, evaluate) from a Llama checkpoint in the store
with its HF tokenizer: the path an 8B LLaDA run takes, at toy size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, PreTrainedTokenizerFast

from maskgrpo.models.adapters import BidirectionalLM, random_model
from maskgrpo.models.loading import HFTokenizer, fetch_with_progress, parse_store_source
from maskgrpo.plan import build_plan
from maskgrpo.specs import ModelSpec, RunSpec
from maskgrpo.stages import get_stage
from maskgrpo.models.loading import import_checkpoint, local_source
from maskgrpo.stages.policy import load_policy, load_source_policy
from maskgrpo.store import CorruptOutputError, open_store

CHARS = "0123456789abcdefghijklmnopqrstuvwxyz+-*/=()<>,.:;|? "  # the toy tasks' characters
SPECIALS = ["<pad>", "<eos>", "<mask>"]  # ids 0, 1, 2


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A real HF fast tokenizer, one token per character (so token counts equal characters)."""
    vocab = {t: i for i, t in enumerate(SPECIALS + list(CHARS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()  # join characters without spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")  # no mask token


def write_checkpoint(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(SPECIALS) + len(CHARS), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
    random_model(config).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def test_parse_store_source():
    assert parse_store_source("s3://b/models/llada-8b-instruct") == ("s3://b/models", "llada-8b-instruct", "model", None)
    assert parse_store_source("file:///x/runs/r1/update/12") == ("file:///x/runs", "r1", "update", 12)
    assert parse_store_source("file:///x/runs/r1/sft/-") == ("file:///x/runs", "r1", "sft", None)
    assert parse_store_source("./ckpt") is None and parse_store_source("builtin:tiny") is None
    with pytest.raises(ValueError, match="expected <store-root>/<name>"):
        parse_store_source("s3://bucket-only")


def test_hf_tokenizer_interface(tmp_path):
    with pytest.raises(ValueError, match=r"no mask token; set model.special_tokens.mask_id"):
        HFTokenizer(char_tokenizer(), source="t")
    tok = HFTokenizer(char_tokenizer(), mask_id=2)
    assert (tok.pad_id, tok.eos_id, tok.mask_id, tok.vocab_size) == (0, 1, 2, 3 + len(CHARS))
    ids = tok.encode_batch_left_padded(["12", "345"])  # '1' = 3 + 1 = id 4 (CHARS starts at id 3)
    assert ids.tolist() == [[0, 4, 5], [6, 7, 8]]
    assert tok.encode_completion("9", 4) == [12, 1, 1, 1]  # text + EOS-filled tail
    with pytest.raises(ValueError, match="needs 3 tokens"):
        tok.encode_completion("12", 2)
    assert tok.decode([4, 2, 5, 1, 6]) == "1_2"  # mask shown as '_', stops at EOS
    tok.save(tmp_path / "t")
    again = HFTokenizer.load(tmp_path / "t")  # mask id comes back from maskgrpo_tokenizer.json
    assert (again.pad_id, again.eos_id, again.mask_id) == (0, 1, 2)
    assert HFTokenizer.load(tmp_path / "t", mask_id=38).mask_id == 38  # RunSpec override wins


def test_import_then_load_from_a_store_uri_with_verification(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKGRPO_CACHE", str(tmp_path / "cache"))
    ckpt = write_checkpoint(tmp_path / "ckpt")
    source = import_checkpoint(ckpt, f"file://{tmp_path}/bucket/models", "tiny-llama")
    assert source == f"file://{tmp_path}/bucket/models/tiny-llama"
    local = local_source(source, progress=False)
    assert local.is_relative_to(tmp_path / "cache" / "models")
    for f in ckpt.iterdir():
        assert (local / f.name).read_bytes() == f.read_bytes(), f.name
    spec = ModelSpec(source=source, special_tokens={"mask_id": 2}, device="cpu")
    policy = load_source_policy(spec)
    assert isinstance(policy.model, BidirectionalLM) and isinstance(policy.tokenizer, HFTokenizer)
    logits = policy.logits(torch.tensor([[0, 4, 5, 2, 2]]), torch.tensor([[3, 4]]))  # (1, 2, V)
    assert logits.shape == (1, 2, policy.tokenizer.vocab_size)

    # a stored shard altered after commit is refused on a fresh fetch
    store = open_store(f"file://{tmp_path}/bucket/models")
    committed = store.open("tiny-llama", "model", None)
    weights = next((tmp_path / "bucket").rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CorruptOutputError, match="does not match its manifest"):
        fetch_with_progress(committed, "checkpoint", tmp_path / "fresh", progress=False)


def test_missing_local_source_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        local_source(str(tmp_path / "nowhere"))


def test_whole_run_from_a_store_checkpoint_with_its_hf_tokenizer(tmp_path, monkeypatch):
    """SFT -> evaluate_0 -> rollout -> score -> update -> evaluate on sort-4, starting from a
    Llama checkpoint imported into the store, chat-free HF tokenizer, mask id from the RunSpec."""
    monkeypatch.setenv("MASKGRPO_CACHE", str(tmp_path / "cache"))
    source = import_checkpoint(write_checkpoint(tmp_path / "ckpt"), f"file://{tmp_path}/models", "tiny-llama")
    doc = {
        "name": "real-path", "seed": 0,
        "model": {"source": source, "device": "cpu", "special_tokens": {"mask_id": 2}},
        "task": {"name": "sort", "params": {"length": 4}, "train_size": 64, "eval_size": 8},
        "reward": {"functions": [{"name": "sort_dense"}]},
        "sft": {"steps": 2, "batch_size": 8, "lr": 1e-3},
        "rl": {"rounds": 1, "prompts_per_round": 2, "group_size": 4, "minibatch_size": 8, "num_iterations": 2,
               "lr": 1e-3, "sampler": {"gen_length": 8, "steps": 8, "block_length": 8}},
        "evaluate": {"sampler": {"gen_length": 8, "steps": 8, "block_length": 8, "temperature": 0.0}},
    }
    store = open_store(f"file://{tmp_path}/runs")
    calls = build_plan(RunSpec.model_validate(doc), "r", store.uri, num_shards=1)
    results = {c.name: get_stage(c.kind)(c.spec, store) for c in calls}
    assert results["update_1"].optimizer_steps == 2
    assert results["update_1"].grad_norm > 0  # sort_dense varies within a group of 4 random completions
    assert results["update_1"].weight_digest != results["sft"].weight_digest
    saved = store.open("r", "update", 1)
    names = {Path(f).name for f in saved.files()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "maskgrpo_tokenizer.json"} <= names
    meta = json.loads(saved.get_bytes("checkpoint/maskgrpo_tokenizer.json"))
    assert meta["mask_id"] == 2
    policy = load_policy(store, "r", "update/1", calls[-1].spec.model)
    assert isinstance(policy.tokenizer, HFTokenizer) and policy.mask_id == 2
