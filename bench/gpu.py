"""GPU check (`make gpu-check`): one short prepared command for a CUDA machine, JSON out.

    python bench/gpu.py --out bench/results/gpu.json

1. the tiny toy pipeline's stages on the GPU (sft -> rollout -> score -> update -> evaluate);
2. a DeepSpeed ZeRO-2 update with NCCL (torchrun over every visible GPU) on the tiny round;
3. sampler tokens/s and update tokens/s of a LLaDA-8B-shaped random model (generic bidirectional
   adapter, bf16, no download): one 256-token block-decoding pass and one forward+backward;
4. peak memory of the native LLaDA-8B (models/llada.py, random bf16 weights) for one update
   micro-batch at llada-gsm8k.yaml's lengths (prompt 256 + completion 256, log-probs at the 256
   completion positions in float32), LoRA r 128 on all linear layers with AdamW: rows 1/2/6, with
   and without gradient checkpointing, and a 4-bit base when bitsandbytes is installed
   (docs/real-models.md, section 5, has the estimate these measure).
5. the text sampler's block KV cache (``cache`` none / prefix / dual) against the reference sampler
   (full logits, no cache) on a TinyMDM with LLaDA-8B's forward FLOPs (4096 wide, 32 layers, 32
   heads, GELU MLP 18432 = the FLOPs of LLaDA's SwiGLU 12288, vocab 126464), bf16 random weights:
   tokens/s, forwards and FLOPs per completion, ratios to the reference in the same run.
Without CUDA it exits 0 writing {"skipped": "no CUDA device"}. Not run in CI (no GPU there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def tiny_pipeline(tmp: Path) -> dict:
    from maskgrpo.plan import build_plan
    from maskgrpo.specs import RunSpec
    from maskgrpo.stages import get_stage
    from maskgrpo.store import open_store

    doc = {"name": "gpu", "model": {"device": "cuda"}, "task": {"name": "sort", "params": {"length": 6}},
           "sft": {"steps": 50}, "rl": {"rounds": 1, "prompts_per_round": 16, "group_size": 4, "minibatch_size": 32,
                                        "sampler": {"gen_length": 8, "steps": 8, "block_length": 8}}}
    store = open_store(f"file://{tmp}/runs")
    start, out = time.perf_counter(), {}
    calls = build_plan(RunSpec.model_validate(doc), "gpu", store.uri, num_shards=1)
    for c in calls:
        out[c.name] = get_stage(c.kind)(c.spec, store).model_dump()
    update = next(c for c in calls if c.kind == "update").spec
    return {"seconds": time.perf_counter() - start, "stages": list(out), "update_spec": update.model_dump_json(),
            "store": str(tmp / "runs")}


def zero2_nccl(tmp: Path, update_json: str) -> dict:
    spec = json.loads(update_json)
    spec["model"]["deepspeed"] = {"enabled": True, "zero_stage": 2, "backend": "nccl"}
    spec["run_id"] = "gpu"
    (tmp / "ds.json").write_text(json.dumps(spec))
    # a fresh output: remove the committed update so the DeepSpeed run writes its own
    import shutil
    shutil.rmtree(Path(spec["store"].removeprefix("file://")) / "gpu" / "update", ignore_errors=True)
    n = torch.cuda.device_count()
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", f"--nproc_per_node={n}",
           "-m", "maskgrpo.stages.update", "--spec", f"@{tmp / 'ds.json'}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    return {"gpus": n, "returncode": proc.returncode, "seconds": time.perf_counter() - start,
            "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}


def llada_8b_throughput(batch: int = 4, prompt: int = 256, gen: int = 256, block: int = 32) -> dict:
    from maskgrpo.models.adapters import llada_8b_config, random_model

    model = random_model(llada_8b_config(), dtype=torch.bfloat16, device="cuda")
    seq = prompt + gen
    x = torch.randint(0, 126000, (batch, seq), device="cuda")
    mask = torch.ones_like(x)
    with torch.no_grad():  # sampler: one forward per step, LM head only on the current block
        model(x, attention_mask=mask, logits_positions=torch.arange(block, device="cuda").expand(batch, -1))
        torch.cuda.synchronize()
        steps, start = 8, time.perf_counter()
        for s in range(steps):
            pos = (prompt + (s * block) % gen + torch.arange(block, device="cuda")).expand(batch, -1)
            model(x, attention_mask=mask, logits_positions=pos)
        torch.cuda.synchronize()
        sampler_s = (time.perf_counter() - start) / steps
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    for name, p in model.named_parameters():  # update cost without optimizer memory: train the last 4 blocks
        if any(f"layers.{i}." in name for i in range(28, 32)):
            p.requires_grad_(True)
    pos = torch.arange(prompt, seq, device="cuda").expand(batch, -1)
    start = time.perf_counter()
    for _ in range(3):
        model(x, attention_mask=mask, logits_positions=pos).logits.float().logsumexp(-1).mean().backward()
    torch.cuda.synchronize()
    update_s = (time.perf_counter() - start) / 3
    return {"batch": batch, "sequence": seq, "sampler_tokens_per_s": batch * block / sampler_s,
            "sampler_forward_s": sampler_s, "update_tokens_per_s": batch * seq / update_s, "update_step_s": update_s,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def llada_8b_memory(prompt: int = 256, gen: int = 256) -> dict:
    """Peak GiB of one LoRA update step of the native LLaDA-8B per configuration (docstring, 4)."""
    import gc

    from maskgrpo.models.llada import LLaDAModelLM, llada_8b_config
    from maskgrpo.models.lora import apply_lora

    results: dict = {}

    def build(four_bit: bool):
        with torch.device("cuda"):
            model = LLaDAModelLM._from_config(llada_8b_config(), dtype=torch.bfloat16)
        if not four_bit:
            return model
        import tempfile as tf

        from transformers import BitsAndBytesConfig
        cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        with tf.TemporaryDirectory() as d:  # quantization happens on load: save once (16 GB of disk)
            model.save_pretrained(d)
            del model
            torch.cuda.empty_cache()
            return LLaDAModelLM.from_pretrained(d, dtype=torch.bfloat16, quantization_config=cfg, device_map="cuda")

    configs = [("bf16", False, False), ("bf16+checkpointing", False, True)]
    try:
        import bitsandbytes  # noqa: F401
        configs.append(("nf4+checkpointing", True, True))
    except ImportError:
        results["nf4+checkpointing"] = "skipped: bitsandbytes not installed"
    for name, four_bit, ckpt in configs:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            model = build(four_bit)
            if ckpt:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            peft = apply_lora(model, r=128, alpha=64, dropout=0.05)
            opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=1e-6)
            base_gib = torch.cuda.memory_allocated() / 2**30
            row = {"weights_gib": base_gib}
            for rows in (1, 2, 6):
                torch.cuda.reset_peak_memory_stats()
                x = torch.randint(0, 126000, (rows, prompt + gen), device="cuda")
                pos = torch.arange(prompt, prompt + gen, device="cuda").expand(rows, -1)
                try:
                    peft.train()
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        logits = peft(x, attention_mask=torch.ones_like(x), logits_positions=pos).logits
                    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, x[:, prompt:, None])
                    logp.mean().backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    row[f"rows_{rows}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                except torch.cuda.OutOfMemoryError:
                    row[f"rows_{rows}_peak_gib"] = "out of memory"
                del x, pos
                logits = logp = None
                torch.cuda.empty_cache()
            results[name] = row
        finally:
            model = peft = opt = None
            gc.collect()
            torch.cuda.empty_cache()
    return {"prompt": prompt, "completion": gen, "lora_r": 128, **results}


def llada_8b_sampler_cache(batch: int = 4, prompt: int = 256, gen: int = 256, block: int = 32, steps: int = 64,
                           device: str = "cuda", dtype: torch.dtype = torch.bfloat16, **shape) -> dict:
    """Item 5 of the module docstring; ``shape`` overrides the TinyMDMConfig (a CPU smoke test uses a small one)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import CountingLogitsFn

    from maskgrpo.core.text_sampler import sample_text
    from maskgrpo.models.tiny import TinyMDM, TinyMDMConfig

    config = TinyMDMConfig(**{"vocab_size": 126464, "hidden_size": 4096, "num_layers": 32, "num_heads": 32,
                              "mlp_ratio": 4.5, "mask_token_id": 126336, "eos_token_id": 126081,
                              "pad_token_id": 126081, **shape})
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = TinyMDM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    prompts = torch.randint(0, min(config.vocab_size, 126000), (batch, prompt),
                            generator=torch.Generator().manual_seed(0)).to(device)
    variants = {"reference": dict(head_only=False), "head_only": {}, "prefix": dict(cache="prefix"),
                "dual": dict(cache="dual"), "dual+threshold": dict(cache="dual", threshold=0.9)}
    out = {}
    for name, options in variants.items():
        counter = CountingLogitsFn(model)
        run = lambda: sample_text(counter, prompts, gen_length=gen, steps=steps, block_length=block,  # noqa: E731
                                  mask_id=config.mask_token_id, eos_id=config.eos_token_id,
                                  cached_logits_fn=counter.cached_logits, **options)
        with torch.no_grad():
            run()  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            tokens = run().tokens
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        out[name] = {"tokens_per_s": tokens.numel() / seconds, "seconds": seconds,
                     "forwards_per_completion": counter.row_forwards / (2 * batch),
                     "gflops_per_completion": counter.flops / (2 * batch) / 1e9,
                     "same_tokens_as_reference": float((tokens == out["reference"]["tokens"]).float().mean())
                     if out else 1.0, "tokens": tokens}
    for entry in out.values():
        entry.pop("tokens", None)
    reference = out["reference"]
    for entry in out.values():
        entry["speedup_vs_reference"] = reference["seconds"] / entry["seconds"]
        entry["flop_ratio_vs_reference"] = reference["gflops_per_completion"] / entry["gflops_per_completion"]
    return {"batch": batch, "prompt": prompt, "gen_length": gen, "block_length": block, "steps": steps,
            "variants": out}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/gpu.json")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        out.write_text(json.dumps({"skipped": "no CUDA device"}, indent=2) + "\n")
        print(f"skipped (no CUDA); wrote {out}")
        return 0
    os.environ.setdefault("MASKGRPO_CACHE", str(Path.home() / ".cache" / "maskgrpo"))
    result: dict = {"device": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tiny = tiny_pipeline(Path(tmp))
        result["tiny_pipeline"] = {k: v for k, v in tiny.items() if k != "update_spec"}
        result["zero2_nccl"] = zero2_nccl(Path(tmp), tiny["update_spec"])
    result["llada_8b_shape"] = llada_8b_throughput()
    torch.cuda.empty_cache()
    result["llada_8b_native_memory"] = llada_8b_memory()
    torch.cuda.empty_cache()
    result["llada_8b_sampler_cache"] = llada_8b_sampler_cache()
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["zero2_nccl"]["returncode"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
