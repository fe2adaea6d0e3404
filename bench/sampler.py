"""Sampler benchmark: what the rollout sampler's options buy, against the reference sampler and the
FLOP floor (docs/algorithm.md §2.1, §8; issues 18 and 21).

Measures, on the same prompts with the same policy in the same run, for each variant: tokens/s,
model forwards per completion, forward FLOPs per completion (counted at every model call from the
call's shape: queries, keys and LM-head positions, bench/common.py ``forward_flops``), and the
ratios to the reference sampler (speedup in tokens/s, FLOP ratio, and how much of the FLOP ratio
the speedup achieves), plus exact-match accuracy and the fraction of tokens equal to the
reference's. Variants:

1. ``reference``: LLaDA's sampler: a full forward with full logits at every step (``head_only``
   off, no cache). Its forwards per completion equal ``steps`` exactly (counted; the script fails
   otherwise).
2. ``head_only``: the LM head only at the block's masked positions (identical tokens).
3. ``threshold`` (0.9): each step commits max(quota, positions above the threshold).
4. ``early_exit``, ``threshold+early_exit``.
5. ``prefix``, ``dual``: the block KV cache (core/kv_cache.py); ``dual+threshold``,
   ``dual+threshold+early_exit``.

Shapes (``--shape``; each flag below overrides the shape's value):
- ``toy``: TinyMDM 2 x 128, the tokenizer's vocabulary, sort (16-token completion), block 4, 16 steps.
- ``low-confidence``: 2 x 256, vocab 8192, 64-token completion, block 16, 32 steps, a short SFT:
  the less confident policy of issue 21.
- ``llada-small``: LLaDA-shaped small model, 4 x 512, vocab 32000, 128-token completion, block 32,
  64 steps; SFT'd 120 steps x 8 on ``chain:steps=6`` (six arithmetic steps written out, 47
  characters, then EOS up to 128). That alone leaves the policy unconfident (loss plateau ~1.6);
  bench/README.md's table continues it 60 steps at ``--sft-lr 1e-3`` (``--init-checkpoint``).
- ``large``: 8 x 1024, vocab 32000, 256-token completion, block 32, 128 steps (slow on a CPU).
The policy is SFT-trained on a toy task (``--task``, default the shape's, else sort: the answer,
then EOS up to the completion length) for the shape's SFT steps, or loaded with ``--checkpoint`` (a
save_pretrained TinyMDM folder, ``--save-policy`` writes one). The SFT'd policy is cached under
bench/results/policy-<shape>-<task>-<sizes>-sft<steps>x<batch>-seed<seed>/ (with its tokenizer
and sft.json: the loss curve), so a rerun with the same settings measures without retraining
(``--no-policy-cache``: always train).

Run:  .venv/bin/python bench/sampler.py --shape toy      (about a minute on 2 idle CPU cores)
      .venv/bin/python bench/sampler.py --shape llada-small
      .venv/bin/python bench/sampler.py --device cuda --batch 256
Writes bench/results/sampler-<shape>.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, CountingLogitsFn, best_time, environment, new_model, sft_train, toy_text_data, write_result  # noqa: E402

from maskgrpo.core.text_sampler import sample_text  # noqa: E402

VARIANTS = {
    "reference": dict(head_only=False),
    "head_only": dict(),
    "threshold": dict(threshold=0.9),
    "early_exit": dict(early_exit=True),
    "threshold+early_exit": dict(threshold=0.9, early_exit=True),
    "prefix": dict(cache="prefix"),
    "dual": dict(cache="dual"),
    "dual+threshold": dict(cache="dual", threshold=0.9),
    "dual+threshold+early_exit": dict(cache="dual", threshold=0.9, early_exit=True),
}

SHAPES = {
    "toy": dict(hidden=128, layers=2, heads=4, vocab_size=0, gen_length=0, block_length=4, steps=16,
                sft_steps=200, sft_batch=64, prompts=128, batch=64, repeats=5),
    "low-confidence": dict(hidden=256, layers=2, heads=4, vocab_size=8192, gen_length=64, block_length=16, steps=32,
                           sft_steps=60, sft_batch=32, prompts=32, batch=32, repeats=2),
    "llada-small": dict(hidden=512, layers=4, heads=8, vocab_size=32000, gen_length=128, block_length=32, steps=64,
                        sft_steps=120, sft_batch=8, prompts=2, batch=2, repeats=1, task="chain:steps=6"),
    "large": dict(hidden=1024, layers=8, heads=16, vocab_size=32000, gen_length=256, block_length=32, steps=128,
                  sft_steps=20, sft_batch=4, prompts=4, batch=4, repeats=1),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=list(SHAPES), default="toy", help="model shape and sampler settings")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                   help="variants to run (the reference always runs first)")
    p.add_argument("--checkpoint", type=Path, help="save_pretrained folder of a TinyMDM (skips SFT)")
    p.add_argument("--save-policy", type=Path, help="write the SFT'd policy here (for --checkpoint later)")
    p.add_argument("--task", help="toy task for prompts and SFT (maskgrpo.tasks), with integer parameters: "
                                   "chain:steps=6 (default: the shape's, else sort)")
    p.add_argument("--init-checkpoint", type=Path,
                   help="start the SFT from this save_pretrained TinyMDM folder (e.g. a cached policy) instead of random weights")
    p.add_argument("--sft-lr", type=float, default=3e-3, help="SFT learning rate (AdamW)")
    p.add_argument("--no-policy-cache", action="store_true",
                   help="always SFT afresh (default: reuse bench/results/policy-<shape>-... when it exists)")
    for name in SHAPES["toy"]:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"override the shape's {name}")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes per variant before the timed ones")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (0: torch's default; 1 is fastest for the tiny model on CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="output JSON (default bench/results/sampler-<shape>.json)")
    args = p.parse_args(argv)
    for name, value in SHAPES[args.shape].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.task = args.task or "sort"
    return args


def policy_cache_dir(args: argparse.Namespace) -> Path:
    """Where the SFT'd policy of these settings is kept between runs (bench/results/, not committed)."""
    task = args.task.replace(":", "-").replace("=", "").replace(",", "-")
    name = (f"policy-{args.shape}-{task}-{args.hidden}x{args.layers}-v{args.vocab_size}-L{args.gen_length}"
            f"-sft{args.sft_steps}x{args.sft_batch}-seed{args.seed}"
            + ("" if args.sft_lr == 3e-3 else f"-lr{args.sft_lr:g}")
            + ("" if args.init_checkpoint is None else f"-from-{Path(args.init_checkpoint).name}"))
    return RESULTS / name


def _load_checkpoint(path: Path):
    from transformers import AutoModelForMaskedLM

    import maskgrpo.models.tiny  # noqa: F401  (registers the tiny model with the Auto classes)

    return AutoModelForMaskedLM.from_pretrained(path)


def load_policy(args: argparse.Namespace, tokenizer, data):
    """The checkpoint given, else the cached SFT'd policy of these settings, else SFT now (and cache it)."""
    if args.checkpoint is not None:
        return _load_checkpoint(args.checkpoint), {"checkpoint": str(args.checkpoint)}
    cache = policy_cache_dir(args)
    if args.sft_steps > 0 and not args.no_policy_cache and (cache / "sft.json").exists():
        info = json.loads((cache / "sft.json").read_text())
        print(f"policy: cached SFT'd checkpoint {cache}", flush=True)
        return _load_checkpoint(cache), {**info, "policy_cache": str(cache.relative_to(RESULTS.parent.parent))}
    vocab = args.vocab_size or (tokenizer.vocab_size if tokenizer is not None else 16)
    if args.init_checkpoint is not None:
        model = _load_checkpoint(args.init_checkpoint)
    else:
        model = new_model(vocab, hidden=args.hidden, layers=args.layers, heads=args.heads, seed=args.seed)
    start = time.perf_counter()
    losses = sft_train(model, data, args.sft_steps, batch=args.sft_batch, lr=args.sft_lr, seed=args.seed, log_every=10)
    window = max(1, min(10, len(losses)))
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    info = {"sft_steps": args.sft_steps, "sft_batch": args.sft_batch, "sft_lr": args.sft_lr, "task": args.task,
            "sft_init": None if args.init_checkpoint is None else str(args.init_checkpoint),
            "sft_seconds": round(time.perf_counter() - start, 2),
            "sft_loss_first10": round(first, 4) if losses else None, "sft_loss_last10": round(last, 4) if losses else None,
            "sft_loss_curve_every10": [round(x, 4) for x in losses[::10]]}
    for target in filter(None, [args.save_policy, None if args.no_policy_cache or args.sft_steps == 0 else cache]):
        model.save_pretrained(target)
        if tokenizer is not None:
            tokenizer.save(target)
        (Path(target) / "sft.json").write_text(json.dumps(info, indent=2) + "\n")  # last: marks the folder complete
    return model, info


def run_variant(model, prompts: torch.Tensor, args, options: dict, gen_length: int, mask_id: int, eos_id: int):
    counter = CountingLogitsFn(model)

    def sample_all() -> torch.Tensor:
        out = []
        for start in range(0, len(prompts), args.batch):
            out.append(sample_text(counter, prompts[start:start + args.batch], gen_length=gen_length,
                                   steps=args.steps, block_length=args.block_length, mask_id=mask_id,
                                   eos_id=eos_id, cached_logits_fn=counter.cached_logits, **options).tokens)
        return torch.cat(out)

    with torch.no_grad():
        for _ in range(args.warmup):
            sample_all()
        seconds, tokens = best_time(sample_all, args.repeats, prompts.device, warmup=False)
    runs = args.warmup + args.repeats  # every pass is counted
    per_completion = runs * len(prompts)
    return seconds, tokens.cpu(), counter.row_forwards / per_completion, counter.flops / per_completion, counter.calls / runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    completion = args.gen_length or None
    tokenizer, train = toy_text_data(4096, "train", args.seed, args.task, completion)
    if args.checkpoint is not None and (args.checkpoint / "tokenizer.json").exists():
        from maskgrpo.tasks import CharTokenizer

        tokenizer = CharTokenizer.load(args.checkpoint)
    _, evaluation = toy_text_data(args.prompts, "eval", args.seed + 1, args.task, completion)
    model, policy = load_policy(args, tokenizer, train)
    model = model.to(device).eval()
    mask_id, eos_id = model.config.mask_token_id, model.config.eos_token_id
    gen_length = evaluation.completion_ids.shape[1]
    prompts = evaluation.prompt_ids.to(device)

    results, reference_tokens = {}, None
    for name in ["reference", *(v for v in args.variants if v != "reference")]:
        options = VARIANTS[name]
        seconds, tokens, forwards, flops, calls = run_variant(model, prompts, args, options, gen_length, mask_id, eos_id)
        accuracy = None
        if tokenizer is not None:  # a token outside the tokenizer (a random or barely trained policy) is wrong
            text = [tokenizer.decode(row) if int(row.max()) < tokenizer.vocab_size else None for row in tokens]
            accuracy = sum(t == a for t, a in zip(text, evaluation.answers)) / len(text)
        token_accuracy = float((tokens == evaluation.completion_ids).float().mean())  # per position, EOS tail included
        if reference_tokens is None:
            reference_tokens = tokens
        results[name] = {
            "options": options,
            "seconds": round(seconds, 4),
            "tokens_per_s": round(tokens.numel() / seconds, 1),
            "forwards_per_completion": round(forwards, 3),
            "gflops_per_completion": round(flops / 1e9, 3),
            "sampler_calls_per_pass": calls,
            "exact_match": accuracy,
            "token_accuracy": round(token_accuracy, 4),
            "same_tokens_as_reference": round(float((tokens == reference_tokens).float().mean()), 4),
        }
        print(name, results[name], flush=True)
    reference = results["reference"]
    if reference["forwards_per_completion"] != args.steps:
        raise SystemExit(f"reference sampler took {reference['forwards_per_completion']} forwards per completion, "
                         f"expected exactly steps={args.steps}")
    for entry in results.values():
        entry["speedup_vs_reference"] = round(reference["seconds"] / entry["seconds"], 3)
        entry["forwards_ratio_vs_reference"] = round(entry["forwards_per_completion"] / args.steps, 3)
        entry["flop_ratio_vs_reference"] = round(reference["gflops_per_completion"] / entry["gflops_per_completion"], 3)
        entry["speedup_of_flop_ratio"] = round(entry["speedup_vs_reference"] / entry["flop_ratio_vs_reference"], 3)
    write_result(f"sampler-{args.shape}", {
        "benchmark": "text sampler options and the block KV cache vs the reference sampler",
        "floor": f"reference sampler: forwards per completion = steps = {args.steps} (counted); "
                 "FLOPs counted per call from its shape (bench/common.py forward_flops)",
        "setup": {"shape": args.shape, "task": args.task, "prompts": evaluation.source, "n_prompts": len(prompts),
                  "batch": args.batch, "prompt_length": prompts.shape[1], "gen_length": gen_length,
                  "steps": args.steps, "block_length": args.block_length, "repeats": args.repeats,
                  "warmup": args.warmup, "hidden": model.config.hidden_size, "layers": model.config.num_layers,
                  "vocab_size": model.config.vocab_size, **policy},
        "environment": environment(device),
        "results": results,
    }, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
