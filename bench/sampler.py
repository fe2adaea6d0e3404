"""Sampler benchmark: what the rollout sampler's options buy on the tiny model (docs/algorithm.md §2.1, §8).

Measures, on the same prompts in the same run, tokens/s and model forwards per completion for:
1. ``plain``: LLaDA's sampler with full logits (``head_only=False``): the baseline. Its forwards
   per completion equal ``steps`` exactly (the floor every other variant is compared to); the
   script counts them with a counting ``LogitsFn`` and fails if they differ.
2. ``head_only``: the LM head only at the current block's positions (identical tokens).
3. ``threshold``: confidence-threshold parallel decoding (threshold 0.9, at least one token a step).
4. ``early_exit``: stop a row once a decoded block is all EOS.
5. ``threshold+early_exit``: both.
Each is reported as ratios against ``plain``: speedup (plain time / time), forwards ratio, exact-match
accuracy and the fraction of tokens equal to the plain sampler's.

The policy is a tiny model SFT-trained for ``--sft-steps`` on the toy sort task (so it is confident,
which is what threshold decoding exploits), or a checkpoint given with ``--checkpoint`` (a
save_pretrained folder of a TinyMDM, with ``tokenizer.json`` beside it if it has one).

Run:  .venv/bin/python bench/sampler.py            (about a minute on 2 CPU cores)
      .venv/bin/python bench/sampler.py --device cuda --batch 256
Writes bench/results/sampler.json and prints it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CountingLogitsFn, best_time, environment, new_model, sft_train, toy_text_data, write_result  # noqa: E402

from maskgrpo.core.text_sampler import sample_text  # noqa: E402

VARIANTS = {
    "plain": dict(head_only=False),
    "head_only": dict(head_only=True),
    "threshold": dict(head_only=True, threshold=0.9),
    "early_exit": dict(head_only=True, early_exit=True),
    "threshold+early_exit": dict(head_only=True, threshold=0.9, early_exit=True),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, help="save_pretrained folder of a TinyMDM (skips SFT)")
    p.add_argument("--task", default="sort", help="toy task for prompts and SFT (maskgrpo.tasks)")
    p.add_argument("--sft-steps", type=int, default=200, help="SFT steps for the built-in policy")
    p.add_argument("--hidden", type=int, default=128, help="width of the built-in policy")
    p.add_argument("--prompts", type=int, default=128, help="eval prompts sampled per variant")
    p.add_argument("--batch", type=int, default=64, help="rows per sampler call")
    p.add_argument("--steps", type=int, default=16, help="sampling steps (plain forwards per completion)")
    p.add_argument("--block-length", type=int, default=4, help="semi-autoregressive block length")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per variant (best is kept)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (0: torch's default; 1 is fastest for the tiny model on CPU)")
    p.add_argument("--vocab-size", type=int, default=0,
                   help="vocabulary of the built-in policy (0: the tokenizer's); a large one (e.g. 8192) shows "
                        "what head-only logits save when the LM head dominates, as with LLaDA's 126k vocabulary")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="output JSON (default bench/results/sampler.json)")
    return p.parse_args(argv)


def load_policy(args: argparse.Namespace, tokenizer, data):
    if args.checkpoint is not None:
        from transformers import AutoModelForMaskedLM

        model = AutoModelForMaskedLM.from_pretrained(args.checkpoint)
        return model, {"checkpoint": str(args.checkpoint)}
    vocab = args.vocab_size or (tokenizer.vocab_size if tokenizer is not None else 16)
    model = new_model(vocab, hidden=args.hidden, seed=args.seed)
    start = time.perf_counter()
    losses = sft_train(model, data, args.sft_steps, seed=args.seed)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    return model, {"sft_steps": args.sft_steps, "sft_seconds": round(time.perf_counter() - start, 2),
                   "sft_loss_first10": round(first, 4), "sft_loss_last10": round(last, 4)}


def run_variant(model, prompts: torch.Tensor, args, options: dict, gen_length: int, mask_id: int, eos_id: int):
    counter = CountingLogitsFn(model)

    def sample_all() -> torch.Tensor:
        out = []
        for start in range(0, len(prompts), args.batch):
            out.append(sample_text(counter, prompts[start:start + args.batch], gen_length=gen_length,
                                   steps=args.steps, block_length=args.block_length, mask_id=mask_id,
                                   eos_id=eos_id, **options).tokens)
        return torch.cat(out)

    with torch.no_grad():
        seconds, tokens = best_time(sample_all, args.repeats, prompts.device)
    runs = args.repeats + 1  # warm-up + timed repeats, all counted
    return seconds, tokens.cpu(), counter.row_forwards / runs / len(prompts), counter.calls / runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tokenizer, train = toy_text_data(4096, "train", args.seed, args.task)
    if args.checkpoint is not None and (args.checkpoint / "tokenizer.json").exists():
        from maskgrpo.tasks import CharTokenizer

        tokenizer = CharTokenizer.load(args.checkpoint)
    _, evaluation = toy_text_data(args.prompts, "eval", args.seed + 1, args.task)
    model, policy = load_policy(args, tokenizer, train)
    model = model.to(device).eval()
    mask_id, eos_id = model.config.mask_token_id, model.config.eos_token_id
    gen_length = evaluation.completion_ids.shape[1]
    prompts = evaluation.prompt_ids.to(device)

    results, plain_tokens = {}, None
    for name, options in VARIANTS.items():
        seconds, tokens, forwards, calls = run_variant(model, prompts, args, options, gen_length, mask_id, eos_id)
        text = [tokenizer.decode(row) for row in tokens] if tokenizer is not None else None
        accuracy = (sum(t == a for t, a in zip(text, evaluation.answers)) / len(text)) if text else None
        reference = evaluation.completion_ids
        token_accuracy = float((tokens == reference).float().mean())  # per position, EOS tail included
        if plain_tokens is None:
            plain_tokens = tokens
        results[name] = {
            "options": options,
            "seconds": round(seconds, 4),
            "tokens_per_s": round(tokens.numel() / seconds, 1),
            "forwards_per_completion": round(forwards, 3),
            "sampler_calls_per_pass": calls,
            "exact_match": accuracy,
            "token_accuracy": round(token_accuracy, 4),
            "same_tokens_as_plain": round(float((tokens == plain_tokens).float().mean()), 4),
        }
    plain = results["plain"]
    if plain["forwards_per_completion"] != args.steps:
        raise SystemExit(f"plain sampler took {plain['forwards_per_completion']} forwards per completion, "
                         f"expected exactly steps={args.steps}")
    for entry in results.values():
        entry["speedup_vs_plain"] = round(plain["seconds"] / entry["seconds"], 3)
        entry["forwards_ratio_vs_plain"] = round(entry["forwards_per_completion"] / plain["forwards_per_completion"], 3)
    write_result("sampler", {
        "benchmark": "text sampler options vs the plain full-logits sampler",
        "floor": f"plain sampler: forwards per completion = steps = {args.steps} (counted)",
        "setup": {"task": args.task, "prompts": evaluation.source, "n_prompts": len(prompts), "batch": args.batch,
                  "gen_length": gen_length, "steps": args.steps, "block_length": args.block_length,
                  "repeats": args.repeats, "hidden": model.config.hidden_size,
                  "vocab_size": model.config.vocab_size, **policy},
        "environment": environment(device),
        "results": results,
    }, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
