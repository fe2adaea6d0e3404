"""The rollout sampler's ``cache`` option reaches the sampler through the policy, and the old
log-probs stay full forwards whatever the sampler does (the RL guard, core/text_sampler.py)."""

from __future__ import annotations

import torch

from maskgrpo.models.tiny import TinyMDM
from maskgrpo.specs import RlSpec, TextSamplerSpec, spec_hash
from maskgrpo.stages import get_stage
from maskgrpo.stages.policy import Policy


def test_rollout_with_cache_dual_samples_through_the_cache_and_estimates_with_full_forwards(tiny_run, tmp_path,
                                                                                          monkeypatch):
    store, _ = tiny_run.copy_store(tmp_path / "runs")
    call = next(c for c in tiny_run.calls.values() if c.kind == "rollout")
    rl = call.spec.rl.model_copy(update={"sampler": call.spec.rl.sampler.model_copy(update={"cache": "dual"})})
    spec = call.spec.model_copy(update={"store": store.uri, "rl": rl})
    order: list[str] = []
    cached, forward = TinyMDM.forward_cached, TinyMDM.forward

    def counting_cached(self, *args, **kwargs):
        order.append("cached")
        return cached(self, *args, **kwargs)

    def counting_forward(self, *args, **kwargs):
        order.append("forward")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(TinyMDM, "forward_cached", counting_cached)
    monkeypatch.setattr(TinyMDM, "forward", counting_forward)
    result = get_stage("rollout")(spec, store)
    assert not result.skipped and result.forwards_per_completion == 8.0
    # The sampler: 1 block x 8 steps, every one through the cache; then the old log-probs (mu = 2
    # seeded masks): full forwards only, never the cache.
    assert order[:8] == ["cached"] * 8
    assert order[8:] and set(order[8:]) == {"forward"}


def test_policy_without_the_protocol_has_no_cached_logits():
    policy = Policy(torch.nn.Linear(2, 2), None)
    assert policy.cached_logits() is None


def test_cache_none_leaves_the_spec_json_and_hash_unchanged():
    def rl(**sampler) -> RlSpec:
        return RlSpec(group_size=2, minibatch_size=4,
                      sampler=TextSamplerSpec(gen_length=8, steps=8, block_length=4, **sampler))

    assert "cache" not in TextSamplerSpec().model_dump()
    assert spec_hash(rl()) == spec_hash(rl(cache="none"))
    assert spec_hash(rl()) != spec_hash(rl(cache="dual"))
