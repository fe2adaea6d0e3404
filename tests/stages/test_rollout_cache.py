"""The rollout sampler's ``cache`` option reaches the sampler through the policy, and the old
log-probs stay full forwards whatever the sampler does (the RL guard, core/text_sampler.py)."""

from __future__ import annotations

import torch

from maskgrpo.core.importance import cache_logprobs
from maskgrpo.specs import ModelSpec, RlSpec, TextSamplerSpec, spec_hash
from maskgrpo.stages.common import Policy, new_tiny_policy
from maskgrpo.stages.rollout import estimator_input, estimator_options, generate, mask_seeds

PROMPTS = ["3142", "9", "271828"]


def tiny_policy() -> Policy:
    return new_tiny_policy(ModelSpec(device="cpu"), max_length=32, seed=0)


def rl_spec(**sampler) -> RlSpec:
    return RlSpec(group_size=2, minibatch_size=4, sampler=TextSamplerSpec(gen_length=8, steps=8, block_length=4,
                                                                          **sampler))


def test_cache_option_uses_the_models_block_cache_and_the_estimator_does_not(monkeypatch):
    policy = tiny_policy()
    calls = {"cached": 0, "forward": 0}
    cached, forward = policy.model.forward_cached, policy.model.forward

    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(policy.model, "forward_cached", count("cached", cached))
    monkeypatch.setattr(policy.model, "forward", count("forward", forward))
    rl = rl_spec(cache="dual")
    input_ids, prompt_len, forwards = generate(policy, PROMPTS, rl, seed=0, progress=False)
    assert calls == {"cached": 8, "forward": 0}  # 2 blocks x 4 steps, all through the cache
    assert forwards == 8.0
    inp = estimator_input(input_ids, prompt_len, torch.arange(len(input_ids)), policy.pad_id, policy.eos_id)
    cache_logprobs(policy.logits, rl.estimator, inp, mask_seeds(0, rl.num_iterations), policy.mask_id,
                   **estimator_options(rl))
    assert calls["cached"] == 8 and calls["forward"] > 0  # old log-probs: full forwards only


def test_policy_without_the_protocol_has_no_cached_logits():
    policy = tiny_policy()
    assert policy.cached_logits() is not None
    assert Policy(torch.nn.Linear(2, 2), policy.tokenizer).cached_logits() is None


def test_cache_none_leaves_the_spec_json_and_hash_unchanged():
    assert "cache" not in TextSamplerSpec().model_dump()
    assert spec_hash(rl_spec()) == spec_hash(rl_spec(cache="none"))
    assert spec_hash(rl_spec()) != spec_hash(rl_spec(cache="dual"))
