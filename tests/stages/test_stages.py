"""Each stage's ``run(spec, store)`` on the shared tiny runs of both modalities (conftest.py):
committed outputs, skip on a matching spec hash, the rollout's cached log-probs and the data the
update rebuilds its masks from, every trainable parameter moved by the update, the score's
advantages, the deterministic evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maskgrpo.artifacts import CHECKPOINT, ROLLOUT, SAMPLES, SCORES
from maskgrpo.core.importance import build_views, estimate_logprobs
from maskgrpo.core.loss import grpo_loss
from maskgrpo.modalities import modality_for
from maskgrpo.specs import spec_hash
from maskgrpo.stages import get_stage
from maskgrpo.stages.estimation import estimator_config, estimator_input
from maskgrpo.stages.policy import load_policy, load_policy_dir
from maskgrpo.stages.update import load_round

from .conftest import RUN_ID, files_under

NAMES = ["sft", "evaluate_0", "rollout_1", "score_1", "update_1", "evaluate_1"]


def test_every_stage_committed_with_its_spec_hash(modality_run):
    run = modality_run
    assert list(run.calls) == NAMES
    for name, call in run.calls.items():
        committed = run.store.open(RUN_ID, call.output, call.round)
        assert committed.spec_hash == spec_hash(call.spec), name
        assert "metrics.json" in committed.files()
        assert run.results[name].skipped is False
    text = run.run.modality == "text"
    assert run.results["sft"].steps == (20 if text else 3)
    assert run.results["rollout_1"].rows == (16 if text else 4)  # prompts x G
    assert run.results["evaluate_0"].examples == (20 if text else 2)
    if not text:  # the image evaluation's report file, and code text in the samples
        assert run.store.open(RUN_ID, "evaluate", 1).get_bytes("images.png").startswith(b"\x89PNG")
        rows = run.store.open(RUN_ID, "rollout", 1).get_jsonl(SAMPLES)
        assert all(len(r["completion"]) == 64 and set(r["completion"]) <= set("01234") for r in rows)


@pytest.mark.parametrize("name", NAMES)
def test_committed_stage_is_skipped(modality_run, name):
    run = modality_run
    call = run.calls[name]
    before = files_under(run.root)
    again = get_stage(call.kind)(call.spec, run.store)
    assert again.skipped is True
    first = run.results[name].model_dump(exclude={"skipped"})
    assert again.model_dump(exclude={"skipped"}) == first  # the committed metrics, not new ones
    assert files_under(run.root) == before  # nothing written


def test_rollout_caches_old_logprobs_equal_to_a_fresh_estimate(modality_run):
    """Recompute log-probs with the SFT weights and the stored mask seeds, as the update's first
    iteration does, from the estimator data the rollout stored (no modality): they equal the
    cached ones, so the first ratio is exactly 1."""
    run = modality_run
    spec = run.calls["update_1"].spec
    data = load_round(run.store, spec)
    policy = load_policy(run.store, RUN_ID, "sft/0", spec.model, mutable=True)
    policy.model.train()  # the update's mode (dropout 0: same as eval)
    seeds, mu = data["mask_seeds"].tolist(), spec.rl.num_iterations
    rows = data["input_ids"].shape[0]
    inp = estimator_input(data, torch.arange(rows), torch.device("cpu"))
    # the same input the modality builds from the sequences and the tokenizer
    modality = modality_for(run.calls["rollout_1"].spec)
    rebuilt = modality.estimator_input(policy.tokenizer, data["input_ids"], int(data["prompt_length"][0]), data["row_ids"])
    for field in ("target_positions", "prompt_valid", "loss_valid"):
        assert torch.equal(getattr(inp, field), getattr(rebuilt, field)), field
    assert (inp.ramp_start, inp.vocab_slice) == (rebuilt.ramp_start, rebuilt.vocab_slice)
    if run.run.modality == "text":
        assert inp.ramp_start == int(data["prompt_length"][0]) and inp.vocab_slice is None
        assert data["old_logprobs"].shape == (2, 16, 8)  # (mu, B, L_o)
    else:  # image slots: no ramp, the codebook slice
        assert inp.ramp_start is None and inp.vocab_slice[1] == 5 and data["old_logprobs"].shape == (2, 4, 64)
    advantages = run.store.open(RUN_ID, "score", 1).get_tensors(SCORES)["advantages"]
    mask_id = int(data["mask_id"][0])
    assert len(seeds) == mu == 2
    for j in range(1, mu + 1):
        views = build_views(spec.rl.estimator, inp, seeds[j - 1], j, mu, mask_id, estimator_config(spec.rl))
        assert torch.equal(views.loss_mask, data["loss_masks"][j - 1])  # same mask rebuilt from the seed
        masked_cols = (views.inputs[0] == mask_id) & ~(inp.input_ids == mask_id)
        assert not masked_cols[:, : int(inp.target_positions[0])].any()  # the prompt / condition is never masked
        with torch.no_grad():
            fresh = estimate_logprobs(policy.logits, views, inp, chunk_rows=spec.rl.logprob_chunk_rows)
        loss_tokens = data["loss_masks"][j - 1]
        diff = (fresh - data["old_logprobs"][j - 1])[loss_tokens].abs().max().item()
        assert diff <= 1e-5, f"iteration {j}: max |l_fresh - l_old| = {diff}"
        _, stats = grpo_loss(fresh, data["old_logprobs"][j - 1], advantages, loss_tokens)
        # rho = exp(l - l_old) = 1 on every loss token: nothing clipped, no deviation
        assert stats.ratio_deviation <= 1e-5 and stats.clip_fraction == 0.0
    # the maskgrpo schedule with mu 2: r_2 = 0.999 > r_1; later masks hide more
    assert data["masked"][0].sum() < data["masked"][1].sum()


def test_update_changes_every_trainable_parameter(modality_run, tmp_path):
    run = modality_run
    before = load_policy_dir(run.store.open(RUN_ID, "sft", 0).get_dir(CHECKPOINT, tmp_path / "a"), run.run.model).model
    after = load_policy_dir(run.store.open(RUN_ID, "update", 1).get_dir(CHECKPOINT, tmp_path / "b"), run.run.model).model
    after_params = dict(after.named_parameters())
    trainable = [n for n, p in before.named_parameters() if p.requires_grad]
    unchanged = [n for n in trainable if torch.equal(dict(before.named_parameters())[n], after_params[n])]
    assert trainable and unchanged == []
    result = run.results["update_1"]
    # text: 16 rows / minibatch 16, image: 4 rows / minibatch 4 = 1 minibatch, x mu = 2 optimizer steps
    assert result.optimizer_steps == 2 and result.grad_norm > 0 and result.loss != 0.0
    assert result.weight_digest != run.results["sft"].weight_digest
    # the optimizer state is stored beside the checkpoint (safetensors + JSON, no pickle)
    assert {"optimizer.safetensors", "optimizer.json"} <= set(run.store.open(RUN_ID, "update", 1).files())


def test_score_advantages_are_group_normalised(tiny_run):
    scores = tiny_run.store.open(RUN_ID, "score", 1).get_tensors(SCORES)
    rewards, advantages = scores["rewards"], scores["advantages"]
    assert rewards.shape == advantages.shape == (16,)
    assert torch.equal(rewards, scores["reward.sort_dense"])  # one function, weight 1
    groups = rewards.reshape(4, 4)  # 4 prompts x G = 4, rows prompt-major
    for g, r in enumerate(groups):
        # A_i = (r_i - mean) / (std_unbiased + 1e-5); a constant group gets A = 0
        expected = torch.zeros(4) if (r == r[0]).all() else (r - r.mean()) / (r.std(unbiased=True) + 1e-5)
        assert torch.allclose(advantages[4 * g: 4 * g + 4], expected, atol=1e-6), (g, r.tolist())
        assert abs(float(advantages[4 * g: 4 * g + 4].sum())) < 1e-5  # centred within the group
    assert (advantages != 0).any(), "the dense reward should vary within some group"
    metrics = tiny_run.results["score_1"]
    assert metrics.zero_std_ratio == sum(bool((r == r[0]).all()) for r in groups) / 4
    assert metrics.reward_mean == pytest.approx(float(rewards.mean()))
    assert scores["keep"].all()  # no dynamic filtering by default


def test_evaluate_is_greedy_and_deterministic(modality_run):
    tiny_run = modality_run
    call = tiny_run.calls["evaluate_1"]
    assert call.spec.evaluate.sampler.temperature == 0.0
    baseline = tiny_run.store.open(RUN_ID, "evaluate", 1).get_jsonl("samples.jsonl")
    # the same policy evaluated again under other seeds (as rounds 7 and 8): greedy uses no randomness
    for round_, seed in ((7, 1), (8, 987654)):
        spec = call.spec.model_copy(update={"round": round_, "seed": seed})
        result = get_stage("evaluate")(spec, tiny_run.store)
        assert result.skipped is False
        rows = tiny_run.store.open(RUN_ID, "evaluate", round_).get_jsonl("samples.jsonl")
        assert [r["completion"] for r in rows] == [r["completion"] for r in baseline]
        assert result.accuracy == tiny_run.results["evaluate_1"].accuracy
    # the held-out prompts are the eval split, the same for every evaluation of the run
    first = tiny_run.store.open(RUN_ID, "evaluate", 0).get_jsonl("samples.jsonl")
    assert [r["prompt"] for r in first] == [r["prompt"] for r in baseline]
    assert len(baseline) == tiny_run.results["evaluate_0"].examples
