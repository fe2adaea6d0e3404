"""Image runs through the same stage flow as text: several images per prompt at evaluation, an
image SFT from a store-URI source with LoRA (adapters only committed; the KL reference is the SFT
policy), and a tiny-scale copy of pipelines/mmada-t2i.yaml end to end (store-URI source, LoRA,
SFT disabled, VQ-decoded images for the reward)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from maskgrpo.artifacts import CHECKPOINT, ROLLOUT
from maskgrpo.core.importance import build_views, estimate_logprobs
from maskgrpo.models.loading import import_checkpoint
from maskgrpo.models.lora import MERGED_DIR, is_lora
from maskgrpo.modalities import get_modality
from maskgrpo.plan import build_plan
from maskgrpo.specs import ModelSpec, RunSpec
from maskgrpo.stages import get_stage
from maskgrpo.stages.estimation import estimator_config, estimator_input
from maskgrpo.stages.policy import load_policy, load_policy_dir, new_tiny_policy, reference_logits
from maskgrpo.stages.update import load_round
from maskgrpo.store import open_store
from maskgrpo.tasks import CharTokenizer

from palette_vq import CLASS_PATH, write_palette_decoder

from .conftest import IMAGE_DOC

REPO = Path(__file__).resolve().parents[2]
def tiny_image_checkpoint(folder: Path, image: dict) -> Path:
    """A saved tiny model whose vocabulary holds the image layout (what an imported MMaDA is at 8B)."""
    run = RunSpec.model_validate({**IMAGE_DOC, "image": image})
    vocab, length = get_modality(run.image).tiny_shape(CharTokenizer(), [])
    policy = new_tiny_policy(ModelSpec(device="cpu", tiny={"hidden_size": 16, "num_layers": 1, "num_heads": 2}),
                             vocab, length, seed=3)
    policy.model.save_pretrained(folder)
    policy.tokenizer.save(folder)
    return folder


def test_evaluation_scores_several_sampled_images_per_prompt(tmp_path):
    """GenEval's protocol: k sampled images per held-out prompt, accuracy over all of them."""
    doc = {**IMAGE_DOC, "image": {**IMAGE_DOC["image"], "eval_images_per_prompt": 3},
           "evaluate": {"sampler": {"sampler": "emerge", "steps": 4, "cfg_scale": 0.0, "temperature": 1.0}}}
    store = open_store(f"file://{tmp_path}")
    calls = {c.name: c for c in build_plan(RunSpec.model_validate(doc), "k", store.uri, num_shards=1)}
    get_stage("sft")(calls["sft"].spec, store)
    result = get_stage("evaluate")(calls["evaluate_0"].spec, store)
    rows = store.open("k", "evaluate", 0).get_jsonl("samples.jsonl")
    assert result.examples == 6 and len(rows) == 6
    assert [r["prompt"] for r in rows[:3]] == [rows[0]["prompt"]] * 3 and rows[3]["prompt"] != rows[0]["prompt"]
    assert result.accuracy == pytest.approx(sum(r["reward"] >= 1.0 for r in rows) / 6)


def test_several_images_per_prompt_need_a_sampling_evaluator():
    bad = {**IMAGE_DOC, "image": {**IMAGE_DOC["image"], "eval_images_per_prompt": 4}}  # evaluate temperature 0: argmax
    with pytest.raises(ValueError, match="eval_images_per_prompt"):
        RunSpec.model_validate(bad)


def test_samplers_must_match_the_modality():
    with pytest.raises(ValueError, match="rl.sampler: a text sampler in a image run"):
        RunSpec.model_validate({**IMAGE_DOC, "rl": {**IMAGE_DOC["rl"], "sampler": {"kind": "text"}}})
    with pytest.raises(ValueError, match="gen_length"):  # text fields in an image sampler
        RunSpec.model_validate({**IMAGE_DOC, "rl": {**IMAGE_DOC["rl"], "sampler": {"gen_length": 8}}})
    with pytest.raises(ValueError, match="evaluate.sampler: a image sampler in a text run"):
        RunSpec.model_validate({"name": "t", "evaluate": {"sampler": {"kind": "image"}}})
    run = RunSpec.model_validate({k: v for k, v in IMAGE_DOC.items() if k not in ("rl", "evaluate")})
    assert (run.rl.sampler.kind, run.rl.sampler.sampler) == ("image", "emerge")  # image defaults
    assert (run.evaluate.sampler.sampler, run.evaluate.sampler.temperature) == ("maskgit", 0.0)


def test_lora_image_run_from_a_store_uri_commits_adapters_and_its_reference_is_the_sft_policy(tmp_path, monkeypatch):
    """Image SFT (trained LoRA adapters) from a store-URI source imported with the project's own
    ``import_checkpoint``, then a round with beta > 0: every checkpoint holds adapters only, and
    the rollout's reference log-probs are the SFT policy's, not the pre-SFT base's."""
    monkeypatch.setenv("MASKGRPO_CACHE", str(tmp_path / "cache"))
    image = IMAGE_DOC["image"]
    source = import_checkpoint(tiny_image_checkpoint(tmp_path / "ckpt", image), f"file://{tmp_path}/models", "tiny-t2i")
    assert source.startswith("file://")
    doc = {**IMAGE_DOC, "model": {"source": source, "device": "cpu", "lora": {"r": 4, "alpha": 8.0}},
           "sft": {"steps": 3, "batch_size": 4, "lr": 5e-2},
           "rl": {**IMAGE_DOC["rl"], "rounds": 2, "beta": 0.05, "lr": 5e-2}}
    store = open_store(f"file://{tmp_path}/runs")
    run = RunSpec.model_validate(doc)
    calls = {c.name: c for c in build_plan(run, "r", store.uri, num_shards=1)}
    results = {name: get_stage(call.kind)(call.spec, store) for name, call in calls.items()}
    assert results["update_2"].grad_norm > 0  # round 2's rewards differ within a group (round 1's are all 0)
    for ref in ("sft/0", "update/1", "update/2"):
        stage, round_ = ref.split("/")
        names = {Path(f).name for f in store.open("r", stage, int(round_)).files()}
        assert "adapter_model.safetensors" in names and "model.safetensors" not in names, ref
    sft_files = store.open("r", "sft", 0).files()
    assert any(f"{CHECKPOINT}/{MERGED_DIR}/0/adapter_model.safetensors" in f for f in sft_files)  # the SFT adapters

    sft_policy = load_policy(store, "r", "sft/0", run.model)
    rolled_out = load_policy(store, "r", "update/1", run.model)  # round 2's rollout policy
    after = load_policy(store, "r", "update/2", run.model)
    assert is_lora(after.model)
    base = load_policy_dir(tmp_path / "ckpt", run.model.model_copy(update={"lora": None}))  # the pre-SFT model
    data = load_round(store, calls["update_2"].spec)
    inp = estimator_input(data, torch.arange(data["input_ids"].shape[0]), torch.device("cpu"))
    rl = calls["update_2"].spec.rl
    views = build_views(rl.estimator, inp, int(data["mask_seeds"][0]), 1, rl.num_iterations, int(data["mask_id"][0]),
                        estimator_config(rl))
    with torch.no_grad():
        sft_lp = estimate_logprobs(sft_policy.logits, views, inp)
        base_lp = estimate_logprobs(base.logits, views, inp)
        now_lp = estimate_logprobs(after.logits, views, inp)
        rolled_lp = estimate_logprobs(rolled_out.logits, views, inp)
        disabled_lp = estimate_logprobs(reference_logits(after), views, inp)
    tokens = data["loss_masks"][0]
    ref = data["ref_logprobs"][0]
    assert (ref - sft_lp)[tokens].abs().max() <= 1e-5  # the stored reference is the SFT policy
    assert (disabled_lp - sft_lp)[tokens].abs().max() <= 1e-5  # = update_2 with its RL adapters disabled
    assert (sft_lp - base_lp)[tokens].abs().max() > 1e-3  # SFT moved the policy away from the base
    assert (now_lp - sft_lp)[tokens].abs().max() > 1e-4  # and the RL adapters moved it again
    assert (data["old_logprobs"][0] - rolled_lp)[tokens].abs().max() <= 1e-5  # round 2 rolled out with update_1


def test_a_tiny_copy_of_the_mmada_t2i_pipeline_runs_end_to_end(tmp_path, monkeypatch):
    """pipelines/mmada-t2i.yaml at tiny scale: the same document structure (a store-URI source,
    LoRA, SFT disabled, GenEval metadata from a store URI, the emerge sampler, a VQ decoder from a
    store URI turning codes into images for the reward), with tiny shapes. Stand-ins: the
    tiny-layout model for MMaDA-8B, the palette decoder for MAGVIT-v2, and the toy GenEval
    detector (``geneval_soft`` on the decoded images) for the HTTP reward server."""
    monkeypatch.setenv("MASKGRPO_CACHE", str(tmp_path / "cache"))
    doc = yaml.safe_load((REPO / "pipelines" / "mmada-t2i.yaml").read_text())
    image = {"grid_size": 8, "codebook_size": 5, "text_slots": 20}
    models = f"file://{tmp_path}/models"
    source = import_checkpoint(tiny_image_checkpoint(tmp_path / "ckpt", image), models, "mmada-tiny")
    write_palette_decoder(tmp_path / "vq")
    decoder = import_checkpoint(tmp_path / "vq", models, "palette-vq")
    rows = [{"tag": "colors", "include": [{"class": k, "count": 1, "color": c}], "prompt": f"a {c} {k}"}
            for k in ("square", "bar") for c in ("red", "green", "blue", "yellow")]  # 8 prompts: 6 train, 2 eval
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "meta" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    data = open_store(f"file://{tmp_path}/data")
    with data.begin("geneval", "data", None, "x") as attempt:
        attempt.put_dir("files", tmp_path / "meta")
        committed = attempt.commit()
    # the structure the test keeps, read from the real document
    assert doc["model"]["source"].startswith("s3://") and doc["model"]["lora"] and doc["sft"] == {"enabled": False}
    assert doc["image"]["decoder"]["source"].startswith("s3://") and doc["rl"]["sampler"]["sampler"] == "emerge"
    doc["image"] = {**image, "decoder": {**doc["image"]["decoder"], "class_path": CLASS_PATH, "source": decoder,
                                         "device": "cpu", "batch_size": 3}}
    doc["model"] = {**doc["model"], "source": source, "adapter": "auto", "trust_remote_code": False, "dtype": "float32",
                    "device": "cpu", "special_tokens": {}, "lora": {**doc["model"]["lora"], "r": 4},
                    "deepspeed": {"enabled": False}}
    train, eval_ = (committed.url(f"files/{n}") for n in ("train.jsonl", "eval.jsonl"))
    doc["task"] = {**doc["task"], "params": {"path": train, "eval_path": eval_, "grid_size": 8}, "train_size": 4, "eval_size": 2}
    doc["reward"] = {**doc["reward"], "functions": [{"name": "geneval_soft"}]}
    doc["rl"] = {**doc["rl"], "rounds": 1, "prompts_per_round": 2, "group_size": 3, "num_iterations": 2,
                 "minibatch_size": 6, "lr": 1e-2, "sampler": {**doc["rl"]["sampler"], "steps": 4}}
    doc["evaluate"] = {**doc["evaluate"], "every": 1, "size": 2, "num_samples": 2,
                       "sampler": {**doc["evaluate"]["sampler"], "steps": 4}}
    run = RunSpec.model_validate(doc)
    store = open_store(f"file://{tmp_path}/runs")
    results = {c.name: get_stage(c.kind)(c.spec, store) for c in build_plan(run, "t2i", store.uri, num_shards=1)}
    assert results["sft"].steps == 0 and results["update_1"].optimizer_steps == 2
    names = {Path(f).name for f in store.open("t2i", "update", 1).files()}
    assert "adapter_model.safetensors" in names and "model.safetensors" not in names
    scores = store.open("t2i", "score", 1).get_tensors("scores.safetensors")
    assert scores["rewards"].shape == (6,) and bool(((scores["rewards"] >= 0) & (scores["rewards"] <= 1)).all())
    rollout = store.open("t2i", "rollout", 1).get_tensors(ROLLOUT)
    assert rollout["ref_logprobs"].shape == (2, 6, 64)  # beta 0.01: the reference log-probs are cached
    # SFT disabled: the SFT policy is the source itself; round 1's policy (fresh adapters, B = 0) equals it
    assert torch.allclose(rollout["ref_logprobs"], rollout["old_logprobs"], atol=1e-6)
    assert 0.0 <= results["evaluate_1"].accuracy <= 1.0 and results["evaluate_1"].examples == 2


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
