"""The 8B pipeline documents end to end at tiny scale, as a user with the real checkpoint runs them.

A checkpoint laid out as a hub download (official weights at tiny width, the real vocabulary
126464 and special ids, config.json with auto_map, the official .py files, a tokenizer with a
chat template: official_llada.py) goes through ``maskgrpo import`` into a store, then
``pipelines/llada-gsm8k.yaml`` runs unchanged except for sizes (``--set`` overrides: tiny rounds,
CPU, float32, LoRA r 4, no DeepSpeed) through every stage of its plan (SFT with LoRA for two
steps, which the document skips: see the override; rollout, score, update, evaluate), and ``maskgrpo export`` writes the merged model,
which the official class (shimmed) loads with the trained policy's logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from maskgrpo.cli import main
from maskgrpo.plan import build_plan
from maskgrpo.specs import load_run_spec
from maskgrpo.stages import get_stage
from maskgrpo.stages.policy import load_policy
from maskgrpo.store import open_store

from official_llada import official, write_hub_checkpoint

ROOT = Path(__file__).resolve().parents[2]

GSM8K = [("Tom has 3 apples and buys 4 more. How many?", "3 + 4 = 7\n#### 7"),
         ("A box holds 5 pens. How many pens in 2 boxes?", "5 * 2 = 10\n#### 10"),
         ("Sara had 9 cards and gave away 2. How many are left?", "9 - 2 = 7\n#### 7"),
         ("There are 6 birds and 6 more arrive. How many birds?", "6 + 6 = 12\n#### 12")]
HELD_OUT = [("Ann reads 2 pages a day for 4 days. How many pages?", "2 * 4 = 8\n#### 8"),
            ("A cat has 4 legs. How many legs do 3 cats have?", "4 * 3 = 12\n#### 12")]


def _jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
    return str(path)


@pytest.mark.slow
def test_llada_gsm8k_pipeline_end_to_end_from_an_imported_hub_checkpoint(tmp_path, monkeypatch, capsys):
    off = official()  # skips without ../shared
    monkeypatch.setenv("MASKGRPO_CACHE", str(tmp_path / "cache"))
    hub = write_hub_checkpoint(tmp_path / "LLaDA-8B-Instruct", "llada")
    source = f"file://{tmp_path}/models/llada-8b-instruct"
    assert main(["import", str(hub), source]) == 0
    assert "native class" in capsys.readouterr().out

    sampler = "{gen_length: 8, steps: 4, block_length: 4, temperature: %s}"
    run = load_run_spec(ROOT / "pipelines" / "llada-gsm8k.yaml", [
        f"model.source={source}", "model.device=cpu", "model.dtype=float32", "model.deepspeed.enabled=false",
        "model.lora={r: 4, alpha: 8, dropout: 0.0, target_modules: all-linear}",
        f"task.params.path={_jsonl(tmp_path / 'train.jsonl', GSM8K)}",
        f"task.params.eval_path={_jsonl(tmp_path / 'test.jsonl', HELD_OUT)}",
        "task.params.completion_length=24", "task.train_size=4", "task.eval_size=2",
        # SFT on: the document skips it, but with random weights every GSM8K reward is 0, so the
        # update (zero advantages, KL 0 against the SFT reference) leaves its fresh adapters at 0;
        # two LoRA SFT steps (merged before RL) make the export differ from the base. Nonzero RL
        # adapters in an export: the MMaDA test below.
        "sft.enabled=true", "sft.steps=2", "sft.batch_size=2", "sft.lr=0.01",
        "rl.rounds=1", "rl.prompts_per_round=2", "rl.group_size=2", "rl.num_iterations=2", "rl.minibatch_size=4",
        "rl.logprob_chunk_rows=4", "rl.lr=0.01", f"rl.sampler={sampler % 0.9}",
        "evaluate.every=1", "evaluate.size=2", f"evaluate.sampler={sampler % 0.0}",
    ])
    assert run.model.trust_remote_code is False and run.model.adapter == "llada"
    store = open_store(f"file://{tmp_path}/runs")
    calls = build_plan(run, "r", store.uri, num_shards=1)
    kinds = [c.kind for c in calls]
    assert {"rollout", "score", "update", "evaluate"} <= set(kinds)
    results = {c.name: get_stage(c.kind)(c.spec, store) for c in calls}
    update = next(r for n, r in results.items() if n.startswith("update"))
    assert update.optimizer_steps >= 1

    # export: the committed LoRA checkpoint merged into the imported base, a plain folder
    out = tmp_path / "exported"
    assert main(["export", f"{store.uri}/r/update/1", str(out)]) == 0
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    assert json.loads((out / "config.json").read_text())["model_type"] == "llada"
    policy = load_policy(store, "r", "update/1", calls[-1].spec.model)
    exported = off.LLaDAModelLM.from_pretrained(out).eval()  # the official class, shimmed
    base = off.LLaDAModelLM.from_pretrained(hub).eval()
    x = policy.tokenizer.encode_batch_left_padded(["Tom has 3 apples", "How many pens in 2 boxes?"])
    x = x[:, -8:]  # no padding: the official mask-only path would be causal (models/llada.py)
    with torch.no_grad():
        trained = policy.model.eval()(x).logits
        theirs = exported(x).logits
        moved = (base(x).logits - theirs).abs().max().item()
    diff = (trained - theirs).abs().max().item()
    print(f"exported vs trained policy max |dlogit| = {diff:.3g}; base vs exported {moved:.3g}")
    assert diff <= 1e-4 and moved > 1e-2  # the trained policy is the export, to merge rounding (measured 0)


class ModPaletteDecoder(torch.nn.Module):
    """Stand-in for MAGVIT-v2 (the VQ decoder interface of models/vq.py; the real one is MMaDA's
    repository code and 8B-run sized): code k -> the toy palette's colour k mod 5, 4 px a cell."""

    def __init__(self) -> None:
        super().__init__()
        from maskgrpo.tasks.geneval import PALETTE

        self.register_buffer("table", torch.tensor([list(PALETTE[n][1]) for n in PALETTE], dtype=torch.float32) / 127.5 - 1)

    @classmethod
    def from_pretrained(cls, folder: str) -> "ModPaletteDecoder":
        assert (Path(folder) / "decoder.json").exists()
        return cls()

    def decode_code(self, codes: torch.Tensor) -> torch.Tensor:
        side = int(codes.shape[1] ** 0.5)
        x = self.table[codes % len(self.table)].view(codes.shape[0], side, side, 3).permute(0, 3, 1, 2)
        return x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # (B, 3, H, W)


@pytest.mark.slow
def test_mmada_t2i_pipeline_end_to_end_from_an_imported_hub_checkpoint(tmp_path, monkeypatch, capsys):
    """pipelines/mmada-t2i.yaml on an official-MMaDA hub-layout checkpoint (vocabulary 134656,
    MMaDA's layout ids: mask 126336, codes at 126349 + k, <|t2i|>/<|soi|>/<|eoi|>), imported with
    ``maskgrpo import``, loaded natively with LoRA; sizes shrunk (4 x 4 code grid, 40 text slots,
    one round). Stand-ins (no real part runs here): the palette decoder for MAGVIT-v2 and the toy
    GenEval detector (``geneval_soft``) for the HTTP reward server."""
    import yaml

    off = official()
    monkeypatch.setenv("MASKGRPO_CACHE", str(tmp_path / "cache"))
    hub = write_hub_checkpoint(tmp_path / "MMaDA-8B-Base", "mmada")
    source = f"file://{tmp_path}/models/mmada-8b-base"
    assert main(["import", str(hub), source]) == 0 and "native class" in capsys.readouterr().out
    (tmp_path / "vq").mkdir()
    (tmp_path / "vq" / "decoder.json").write_text("{}")
    decoder = f"file://{tmp_path}/models/vq"
    assert main(["import", str(tmp_path / "vq"), decoder]) == 0  # a decoder folder: no config.json needed
    rows = [{"tag": "colors", "include": [{"class": "square", "count": 1, "color": c}], "prompt": f"a {c} square"}
            for c in ("red", "green", "blue", "yellow", "red", "blue")]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({**r, "prompt": r["prompt"] + " here"}) + "\n" for r in rows[4:]))

    doc = yaml.safe_load((ROOT / "pipelines" / "mmada-t2i.yaml").read_text())
    assert "trust_remote_code" not in doc["model"] and doc["image"]["layout"] == "mmada"
    doc["image"] = {**doc["image"], "grid_size": 4, "text_slots": 40,
                    "decoder": {**doc["image"]["decoder"], "class_path": f"{__name__}:ModPaletteDecoder",
                                "source": decoder, "device": "cpu", "batch_size": 4}}
    doc["model"] = {**doc["model"], "source": source, "dtype": "float32", "device": "cpu",
                    "lora": {**doc["model"]["lora"], "r": 4, "dropout": 0.0}, "deepspeed": {"enabled": False}}
    doc["task"] = {**doc["task"], "params": {"path": str(tmp_path / "train.jsonl"), "eval_path": str(tmp_path / "eval.jsonl"),
                                             "grid_size": 4}, "train_size": 4, "eval_size": 2}
    doc["reward"] = {**doc["reward"], "functions": [{"name": "geneval_soft"}]}
    doc["rl"] = {**doc["rl"], "rounds": 1, "prompts_per_round": 2, "group_size": 3, "num_iterations": 2,
                 "minibatch_size": 6, "lr": 1e-2, "logprob_chunk_rows": 6, "sampler": {**doc["rl"]["sampler"], "steps": 4}}
    doc["evaluate"] = {**doc["evaluate"], "every": 1, "size": 2, "num_samples": 2,
                       "sampler": {**doc["evaluate"]["sampler"], "steps": 4}}
    from maskgrpo.specs import RunSpec

    run = RunSpec.model_validate(doc)
    store = open_store(f"file://{tmp_path}/runs")
    calls = build_plan(run, "t2i", store.uri, num_shards=1)
    results = {c.name: get_stage(c.kind)(c.spec, store) for c in calls}
    assert results["update_1"].optimizer_steps >= 1 and results["update_1"].kl > 0.0
    assert 0.0 <= results["evaluate_1"].accuracy <= 1.0

    out = tmp_path / "exported"
    assert main(["export", f"{store.uri}/t2i/update/1", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "mmada"
    policy = load_policy(store, "t2i", "update/1", calls[-1].spec.model)
    exported = off.MMadaModelLM.from_pretrained(out).eval()
    x = torch.randint(0, 134000, (2, 20), generator=torch.Generator().manual_seed(0))
    base = off.MMadaModelLM.from_pretrained(hub).eval()
    with torch.no_grad():
        theirs = exported(x).logits
        diff = (policy.model.eval()(x).logits - theirs).abs().max().item()
        moved = (base(x).logits - theirs).abs().max().item()
    print(f"mmada exported vs trained policy max |dlogit| = {diff:.3g}; base vs exported {moved:.3g}")
    assert diff <= 1e-4 and moved > 100 * diff  # the RL adapters are in the export
