"""stages/image.py: MaskGIT SFT batches, and a tiny text-to-image run through every stage."""

import importlib
import math

import pytest
import torch

from maskgrpo.core.importance import MaskGrpoConfig, build_views, estimate_logprobs
from maskgrpo.models.layout import ImageLayout
from maskgrpo.plan import build_plan
from maskgrpo.specs import RunSpec
from maskgrpo.stages import evaluate, image, sft
from maskgrpo.stages.common import load_policy
from maskgrpo.store import open_store

LAYOUT = ImageLayout.after_vocab(10, text_slots=4, image_slots=100, codebook_size=4, mask_id=2, pad_id=0, eos_id=1)

DOC = {
    "name": "tiny-image", "seed": 0, "modality": "image",
    "image": {"grid_size": 8, "codebook_size": 5, "text_slots": 20,
              "rollout": {"sampler": "emerge", "steps": 4, "cfg_scale": 1.0},
              "evaluate": {"sampler": "maskgit", "steps": 4, "cfg_scale": 1.0, "temperature": 0.0}},
    "model": {"tiny": {"hidden_size": 16, "num_layers": 1, "num_heads": 2}},
    "task": {"name": "toy-geneval", "params": {"tags": ["colors"]}, "train_size": 8, "eval_size": 2},
    "reward": {"functions": [{"name": "geneval_soft"}]},
    "sft": {"steps": 3, "batch_size": 4},
    "rl": {"rounds": 1, "prompts_per_round": 2, "group_size": 2, "num_iterations": 2, "min_mask_rate": 0.8, "minibatch_size": 4},
    "evaluate": {"num_samples": 2},
}


def test_maskgit_batch_masks_at_least_the_minimum_rate_and_drops_the_condition():
    g = torch.Generator().manual_seed(0)
    x = LAYOUT.build_sequences([[3, 4]] * 4000, torch.zeros(4000, 100, dtype=torch.long))
    noisy, masked = image.maskgit_sft_batch(LAYOUT, x, min_masking_rate=0.3, cond_dropout=0.1, generator=g)
    rate = masked.float().mean(1)
    assert rate.min() >= 0.3 and bool((noisy[:, LAYOUT.image_start:-1] == 2).eq(masked).all())
    # E[max(cos(pi u / 2), 0.3)] = P(cos >= 0.3) part + 0.3 * P(cos < 0.3): numerically ~0.666
    u = torch.linspace(0, 1, 100001)
    expected = torch.clamp(torch.cos(math.pi / 2 * u), min=0.3).mean().item()
    assert abs(rate.mean().item() - expected) < 0.02
    dropped = (noisy[:, : LAYOUT.text_slots] == torch.tensor(LAYOUT.text_segment([]))).all(1).float().mean().item()
    assert abs(dropped - 0.1) < 3 * math.sqrt(0.1 * 0.9 / 4000)  # 3 sigma
    assert (noisy[:, -1] == LAYOUT.eoi_id).all() and (noisy[:, LAYOUT.text_slots] == LAYOUT.soi_id).all()


def test_codes_text_round_trip():
    assert image.text_to_codes(image.codes_to_text([0, 3, 4], 5), 3, 5) == [0, 3, 4]
    assert image.text_to_codes(image.codes_to_text([8191, 7], 8192), 2, 8192) == [8191, 7]
    with pytest.raises(ValueError, match="3 codes"):
        image.text_to_codes("01", 3, 5)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    store = open_store(f"file://{tmp_path_factory.mktemp('image-run')}")
    run = RunSpec.model_validate(DOC)
    calls = build_plan(run, "r", store.uri, num_shards=1)
    results = {c.name: importlib.import_module(f"maskgrpo.stages.{c.kind}").run(c.spec, store) for c in calls}
    return store, {c.name: c for c in calls}, results


def test_every_stage_runs_and_the_update_moves_the_weights(image_run):
    store, calls, results = image_run
    assert results["sft"].steps == 3 and results["evaluate_0"].examples == 2
    assert results["update_1"].optimizer_steps == 2 and results["update_1"].weight_digest != results["sft"].weight_digest
    assert store.open("r", "evaluate", 1).get_bytes("images.png").startswith(b"\x89PNG")
    rows = store.open("r", "rollout", 1).get_jsonl("samples.jsonl")
    assert len(rows) == 4 and all(len(r["completion"]) == 64 and set(r["completion"]) <= set("01234") for r in rows)


def test_rollout_caches_image_slot_logprobs_that_the_update_reproduces(image_run):
    store, calls, _ = image_run
    rollout = store.open("r", "rollout", 1).get_tensors("rollout.safetensors")
    assert rollout["old_logprobs"].shape == (2, 4, 64)  # (mu, B, N image slots)
    policy = load_policy(store, "r", "sft/0", calls["sft"].spec.model)
    layout = image.image_layout(calls["rollout_1"].spec.image, policy.tokenizer)
    inp = image.estimator_input(layout, rollout["input_ids"], rollout["row_ids"])
    seeds = rollout["mask_seeds"].tolist()
    for j in (1, 2):
        views = build_views("maskgrpo", inp, seeds[j - 1], j, 2, layout.mask_id, MaskGrpoConfig(min_mask_rate=0.8))
        masked_cols = (views.inputs[0] == layout.mask_id).any(0).nonzero().squeeze(1)
        assert masked_cols.min() >= layout.image_start and masked_cols.max() < layout.seq_len - 1  # image slots only
        fresh = estimate_logprobs(policy.logits, views, inp)
        assert torch.allclose(fresh, rollout["old_logprobs"][j - 1], atol=1e-5)  # ratio 1 before the first step
        assert (fresh <= 0).all()


def test_quadrant_placement_is_compositional_and_passes_the_strict_checks():
    from maskgrpo.rewards.geneval import geneval_strict
    from maskgrpo.tasks.geneval import ToyGenEvalTask

    task = ToyGenEvalTask(8, ["colors", "color_attr", "position"], placement="quadrants")
    problems = {e.prompt: e for e in task.enumerate_problems()}
    assert len(problems) == 16 + 192 + 768
    assert geneval_strict(None, [e.answer for e in problems.values()], [e.columns["metadata"] for e in problems.values()]) == [1.0] * 976
    # the first object always sits at the top-left quadrant slot (1, 1): its colour is the prompt's
    pair = problems["a red square and a blue bar"].answer
    assert pair[9] == "1" and pair[8 + 5] == "3"  # red square at (1, 1), blue bar at (1, 5)
    assert problems["a red square and a green bar"].answer[9] == "1"
    assert ToyGenEvalTask(8).params() == {"grid_size": 8, "tags": list(ToyGenEvalTask(8).tags)}  # default seeding unchanged
    with pytest.raises(ValueError, match="placement"):
        ToyGenEvalTask(8, placement="corners")


def test_evaluation_scores_several_sampled_images_per_prompt(tmp_path):
    """GenEval's protocol: k sampled images per held-out prompt, accuracy over all of them."""
    doc = {**DOC, "image": {**DOC["image"], "eval_images_per_prompt": 3,
                            "evaluate": {"sampler": "emerge", "steps": 4, "cfg_scale": 0.0, "temperature": 1.0}}}
    store = open_store(f"file://{tmp_path}")
    calls = {c.name: c for c in build_plan(RunSpec.model_validate(doc), "k", store.uri, num_shards=1)}
    sft.run(calls["sft"].spec, store)
    result = evaluate.run(calls["evaluate_0"].spec, store)
    rows = store.open("k", "evaluate", 0).get_jsonl("samples.jsonl")
    assert result.examples == 6 and len(rows) == 6
    assert [r["prompt"] for r in rows[:3]] == [rows[0]["prompt"]] * 3 and rows[3]["prompt"] != rows[0]["prompt"]
    assert result.accuracy == pytest.approx(sum(r["reward"] >= 1.0 for r in rows) / 6)


def test_several_images_per_prompt_need_a_sampling_evaluator():
    bad = {**DOC, "image": {**DOC["image"], "eval_images_per_prompt": 4}}  # evaluate temperature 0: argmax
    with pytest.raises(ValueError, match="eval_images_per_prompt"):
        RunSpec.model_validate(bad)
