"""The update's backward per log-prob chunk (stages/update.py ``optimize``, issue 21 item 3).

Every estimator/objective's loss is a sum of per-row terms over denominators computed once over
the minibatch, so a backward per chunk of rows must give the gradient of one backward per
minibatch. Checked on real rounds of the tiny text pipeline (SFT 20 steps, one rollout + score per
estimator) with a stepper that records the accumulated gradient at each optimizer step instead of
stepping. Tolerance: the same float32 terms summed in a different order, so every parameter's
gradient agrees to max |g_chunked - g_whole| <= 1e-5 * max |g_whole| + 1e-7.

Memory: a saved-tensor hook counts the elements of the (rows, N, V) tensors autograd keeps for
backward (the logits, saved by the LM head's consumers) alive at once; with the backward per chunk
the peak is one chunk's, without it the whole minibatch's.
"""

from __future__ import annotations

import pytest
import torch

from maskgrpo.core.importance import views_per_iteration
from maskgrpo.core.loss import LossStats
from maskgrpo.plan import build_plan
from maskgrpo.specs import RunSpec
from maskgrpo.stages import get_stage
from maskgrpo.stages.estimation import estimator_config
from maskgrpo.stages.policy import load_policy
from maskgrpo.stages.update import load_round, merge_stats, optimize, rows_per_chunk
from maskgrpo.store import open_store

from .conftest import TINY_DOC

RUN_ID = "chunks"
RTOL, ATOL = 1e-5, 1e-7


class RecordingStepper:
    """A TorchStepper that records the gradient at each step and leaves the weights alone (so
    every step sees the same policy), counting backward calls."""

    accumulation = 1

    def __init__(self, model: torch.nn.Module):
        self.model, self.grads, self.backwards = model, [], 0

    def backward(self, share: torch.Tensor, last: bool = True) -> None:
        self.backwards += 1
        share.backward()

    def step(self) -> float:
        self.grads.append({n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None})
        self.model.zero_grad(set_to_none=True)
        return 0.0


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return open_store(f"file://{tmp_path_factory.mktemp('update-chunks') / 'runs'}")


def round_of(store, **rl):
    """SFT (shared), rollout and score of one round with these rl options; (run, update spec)."""
    doc = {**TINY_DOC, "rl": {**TINY_DOC["rl"], **rl}}
    run = RunSpec.model_validate(doc)
    calls = {c.name: c for c in build_plan(run, RUN_ID, store.uri, 1)}
    for name in ("sft", "rollout_1", "score_1"):
        get_stage(calls[name].kind)(calls[name].spec, store)
    return run, calls["update_1"].spec


def gradients(store, run, spec, chunk_rows: int, chunk_backward: bool):
    rl = run.rl.model_copy(update={"logprob_chunk_rows": chunk_rows})
    policy = load_policy(store, RUN_ID, spec.policy, run.model, mutable=True)
    stepper = RecordingStepper(policy.model)
    optimizer = torch.optim.SGD(policy.model.parameters(), lr=0.0)
    result = optimize(policy, optimizer, load_round(store, spec), rl, spec.seed, progress=False, stepper=stepper,
                      chunk_backward=chunk_backward)
    return stepper, result


CASES = [
    {"estimator": "d1"},
    {"estimator": "random"},
    {"estimator": "unigrpo"},
    {"estimator": "maskgrpo"},
    {"estimator": "coupled"},  # three views a row
    {"estimator": "spg", "spg": {"block_length": 4}},  # denominator: the minibatch's valid tokens
    {"estimator": "wd1"},  # row weights and the group count over the minibatch
    {"estimator": "espo", "beta": 0.04},  # the row count; a sequence-level KL term
    # group means over the minibatch folded into the weights, coverage counts over the mu masks
    {"estimator": "maskgrpo", "loss_tokens": "coverage", "normalization": "group"},
    # per-sequence means, one ratio per sequence, and the k3 KL to the reference
    {"estimator": "maskgrpo", "normalization": "sequence", "ratio_level": "sequence", "beta": 0.04},
]


@pytest.mark.parametrize("rl", CASES, ids=lambda rl: "-".join(str(v) for v in rl.values() if not isinstance(v, dict)))
def test_chunked_backward_gives_the_minibatch_gradient(store, rl):
    run, spec = round_of(store, **rl)
    whole, whole_result = gradients(store, run, spec, chunk_rows=64, chunk_backward=False)
    views = views_per_iteration(run.rl.estimator, estimator_config(run.rl))
    chunked, chunked_result = gradients(store, run, spec, chunk_rows=2 * views, chunk_backward=True)  # 2 rows a chunk
    steps = run.rl.num_iterations  # 16 rows = one minibatch of 16, mu steps
    assert len(whole.grads) == len(chunked.grads) == steps
    assert whole.backwards == steps and chunked.backwards == steps * 16 // 2
    for g_whole, g_chunk in zip(whole.grads, chunked.grads):
        assert g_whole.keys() == g_chunk.keys() and g_whole
        scale = max(float(g.abs().max()) for g in g_whole.values())
        assert scale > 0  # the round has a gradient to compare
        worst = max(float((g_chunk[k] - g_whole[k]).abs().max()) for k in g_whole)
        assert worst <= RTOL * scale + ATOL, (worst, scale)
    # the reported stats are the minibatch's, however it was chunked
    for field in ("loss", "clip_fraction", "clip_ratio", "kl", "ratio_deviation", "forwards_per_completion"):
        assert getattr(chunked_result, field) == pytest.approx(getattr(whole_result, field), rel=1e-5, abs=1e-7), field


def test_rows_per_chunk_counts_the_views():
    run = RunSpec.model_validate({**TINY_DOC, "rl": {**TINY_DOC["rl"], "logprob_chunk_rows": 7, "estimator": "coupled"}})
    assert rows_per_chunk(run.rl, estimator_config(run.rl)) == 7 // 3
    run = RunSpec.model_validate({**TINY_DOC, "rl": {**TINY_DOC["rl"], "logprob_chunk_rows": 2, "estimator": "coupled"}})
    assert rows_per_chunk(run.rl, estimator_config(run.rl)) == 1  # never zero rows


def test_merge_stats_weights_the_loss_by_its_denominator_and_sums_a_summed_stat():
    a = LossStats(loss=1.0, clip_fraction=0.5, kl=0.0, ratio_deviation=0.2, num_tokens=1.0, clip_ratio=0.0)
    b = LossStats(loss=4.0, clip_fraction=0.0, kl=0.3, ratio_deviation=0.4, num_tokens=3.0, clip_ratio=1.0)
    merged = merge_stats([(a, 1.0), (b, 3.0)])
    assert merged.loss == pytest.approx(13 / 4) and merged.num_tokens == 4.0
    assert merged.clip_fraction == pytest.approx(0.5 / 4) and merged.kl == pytest.approx(0.9 / 4)
    assert merged.ratio_deviation == pytest.approx(1.4 / 4) and merged.clip_ratio == pytest.approx(3 / 4)
    assert merge_stats([(a, None), (b, None)]).loss == 5.0  # wd1: the loss stat is a sum
    assert merge_stats([(a, 1.0)]) is a


class VocabTensorTracker:
    """Saved-tensor hooks that track the vocabulary-sized tensors autograd keeps for backward
    (the logits logsumexp saves): elements alive now and at the peak."""

    def __init__(self, vocab: int):
        self.vocab, self.alive, self.peak = vocab, 0, 0

    def pack(self, tensor: torch.Tensor):
        if tensor.dim() == 3 and tensor.shape[-1] == self.vocab and tensor.is_floating_point():  # (rows, N, V)
            return _Held(tensor, self)
        return tensor

    @staticmethod
    def unpack(packed):
        return packed.tensor if isinstance(packed, _Held) else packed


class _Held:
    def __init__(self, tensor: torch.Tensor, tracker: VocabTensorTracker):
        self.tensor, self.tracker, self.size = tensor, tracker, tensor.numel()
        tracker.alive += self.size
        tracker.peak = max(tracker.peak, tracker.alive)

    def __del__(self):
        self.tracker.alive -= self.size


def peak_logits(store, run, spec, chunk_rows: int, chunk_backward: bool) -> int:
    policy = load_policy(store, RUN_ID, spec.policy, run.model, mutable=True)
    tracker = VocabTensorTracker(policy.model.config.vocab_size)
    assert policy.model.config.vocab_size not in (run.model.tiny.hidden_size, 4 * run.model.tiny.hidden_size)
    with torch.autograd.graph.saved_tensors_hooks(tracker.pack, tracker.unpack):
        gradients_stepper = RecordingStepper(policy.model)
        optimize(policy, torch.optim.SGD(policy.model.parameters(), lr=0.0), load_round(store, spec),
                 run.rl.model_copy(update={"logprob_chunk_rows": chunk_rows}), spec.seed, progress=False,
                 stepper=gradients_stepper, chunk_backward=chunk_backward)
    assert tracker.alive == 0  # every saved logits tensor was freed by its backward
    return tracker.peak


def test_chunked_backward_frees_each_chunks_logits(store):
    """d1 (one view): 16 rows in chunks of 4 hold a quarter of the logits the whole minibatch does."""
    run, spec = round_of(store, estimator="d1")
    whole = peak_logits(store, run, spec, chunk_rows=4, chunk_backward=False)  # 4-row forwards, one backward
    chunked = peak_logits(store, run, spec, chunk_rows=4, chunk_backward=True)
    completion = TINY_DOC["rl"]["sampler"]["gen_length"]
    vocab = load_policy(store, RUN_ID, spec.policy, run.model).model.config.vocab_size
    one_chunk = 4 * completion * vocab  # one chunk's (rows, N, V) logits
    assert chunked > 0 and chunked % one_chunk == 0  # k saved copies of one chunk's logits at the peak
    assert whole == 4 * chunked  # the minibatch's 16 rows, until its single backward
