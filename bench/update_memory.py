"""Update memory vs minibatch and log-prob chunk size (issue 21 item 3): the backward per chunk
(stages/update.py ``optimize``) against the old single backward per minibatch (``chunk_backward``
False), on one real round of the toy pipeline's data with a policy of the issue's vocabulary.

The round: pipelines' tiny text setup (sort, 32-token completions, 16 prompts x G = 4 = 64 rows,
mu = 1, MaskGRPO, SFT 5 steps) run through the sft, rollout and score stages once. The update then
runs on the first ``minibatch`` rows as one minibatch with a fresh TinyMDM of vocabulary 16384
(hidden 128, 2 layers: the LM head's logits dominate, as at LLaDA's 126k vocabulary), one
optimizer step, each configuration in its own subprocess. Reported per configuration:

- ``peak_rss_mb``: the process's peak RSS (``ru_maxrss``) above its RSS just before the update
  (everything the update allocates: activations, logits, gradients, AdamW's state of about
  3 x 17 MB; ``maxrss_grew`` says the peak was the update's, not earlier loading's);
- ``saved_logits_peak_mb``: the peak bytes of (rows, N, V) tensors autograd held for backward
  (a saved-tensor hook, as tests/stages/test_update.py): the logits the chunking bounds;
- ``logits_mb``: one float32 logits tensor of the minibatch, minibatch x 32 x 16384 x 4 bytes.

Run:  .venv/bin/python bench/update_memory.py            (about 2 minutes on 2 idle cores)
Writes bench/results/update-memory.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, new_model, write_result  # noqa: E402

DOC = {
    "name": "update-memory", "seed": 0,
    "task": {"name": "sort", "params": {"length": 6}, "train_size": 200, "eval_size": 20},
    "reward": {"functions": [{"name": "sort_dense"}]},
    "sft": {"steps": 5, "batch_size": 32, "lr": 1e-3},
    "rl": {"rounds": 1, "prompts_per_round": 16, "group_size": 4, "minibatch_size": 64, "num_iterations": 1,
           "lr": 1e-4, "sampler": {"gen_length": 32, "steps": 8, "block_length": 32, "temperature": 1.0}},
    "evaluate": {"sampler": {"gen_length": 32, "steps": 8, "block_length": 32, "temperature": 0.0}},
}
RUN_ID = "mem"
VOCAB, HIDDEN, LAYERS = 16384, 128, 2
MINIBATCHES = (8, 16, 32, 64)
CHUNKS = (8, 64)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_round(store_uri: str) -> None:
    from maskgrpo.plan import build_plan
    from maskgrpo.specs import RunSpec
    from maskgrpo.stages import get_stage
    from maskgrpo.store import open_store

    store = open_store(store_uri)
    calls = {c.name: c for c in build_plan(RunSpec.model_validate(DOC), RUN_ID, store.uri, 1)}
    for name in ("sft", "rollout_1", "score_1"):
        get_stage(calls[name].kind)(calls[name].spec, store)


def child(store_uri: str, minibatch: int, chunk: int, chunk_backward: bool) -> dict:
    from maskgrpo.plan import build_plan
    from maskgrpo.specs import RunSpec
    from maskgrpo.stages.policy import load_policy
    from maskgrpo.stages.update import load_round, make_optimizer, optimize
    from maskgrpo.store import open_store

    torch.set_num_threads(1)
    store = open_store(store_uri)
    run = RunSpec.model_validate(DOC)
    spec = {c.name: c for c in build_plan(run, RUN_ID, store.uri, 1)}["update_1"].spec
    data = load_round(store, spec)
    data["keep"] = torch.zeros_like(data["keep"])
    data["keep"][:minibatch] = True  # one minibatch of these rows
    policy = load_policy(store, RUN_ID, spec.policy, run.model, mutable=True)
    policy.model = new_model(VOCAB, hidden=HIDDEN, layers=LAYERS, seed=0)
    rl = run.rl.model_copy(update={"minibatch_size": minibatch, "logprob_chunk_rows": chunk})
    optimizer = make_optimizer(policy, rl)
    saved = {"alive": 0, "peak": 0}

    class Held:
        def __init__(self, t):
            self.t, self.n = t, t.numel() * t.element_size()
            saved["alive"] += self.n
            saved["peak"] = max(saved["peak"], saved["alive"])

        def __del__(self):
            saved["alive"] -= self.n

    def pack(t):
        return Held(t) if t.dim() == 3 and t.shape[-1] == VOCAB else t

    def unpack(p):
        return p.t if isinstance(p, Held) else p

    start, before = _rss_mb(), _maxrss_mb()
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        result = optimize(policy, optimizer, data, rl, spec.seed, progress=False, chunk_backward=chunk_backward)
    assert result.optimizer_steps == 1
    return {"minibatch": minibatch, "chunk_rows": chunk, "path": "chunked backward" if chunk_backward else "one backward",
            "peak_rss_mb": round(_maxrss_mb() - start, 1), "maxrss_grew": _maxrss_mb() > before,
            "saved_logits_peak_mb": round(saved["peak"] / 2**20, 1),
            "logits_mb": round(minibatch * 32 * VOCAB * 4 / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", nargs=4, metavar=("STORE", "MINIBATCH", "CHUNK", "CHUNKED"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.child:
        store, minibatch, chunk, chunked = args.child
        print(json.dumps(child(store, int(minibatch), int(chunk), chunked == "1")))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="update-memory-") as tmp:
        uri = f"file://{tmp}/runs"
        make_round(uri)
        for minibatch in MINIBATCHES:
            for chunk in CHUNKS:
                if chunk > minibatch and chunk != CHUNKS[-1]:
                    continue
                for chunked in (False, True):
                    out = subprocess.run([sys.executable, __file__, "--child", uri, str(minibatch), str(chunk),
                                          "1" if chunked else "0"], capture_output=True, text=True, check=True)
                    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(rows[-1], flush=True)
    write_result("update-memory", {
        "benchmark": "update peak memory vs minibatch and logprob_chunk_rows: one backward per minibatch "
                     "(before) vs a backward per chunk (after)",
        "setup": {"vocab_size": VOCAB, "hidden": HIDDEN, "layers": LAYERS, "completion_tokens": 32,
                  "estimator": "maskgrpo", "num_iterations": 1, "doc": DOC},
        "environment": environment(torch.device("cpu")),
        "results": rows,
    }, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
