"""rewards/clip.py with a tiny random CLIP saved to tmp_path (real transformers classes, no download)."""

import json

import pytest
import torch

from maskgrpo.rewards.clip import ClipScorer, clip_score

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    path = tmp_path_factory.mktemp("clip")
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{c: 2 + i for i, c in enumerate(letters)},
             **{c + "</w>": 28 + i for i, c in enumerate(letters)}}
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")  # no merges: words split into letters
    tokenizer = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"))
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _images():
    from PIL import Image

    return [Image.new("RGB", (40, 40), (230, 40, 40)), Image.new("RGB", (64, 48), (50, 80, 240))]


def test_score_is_the_clipped_cosine_of_the_projected_features(tiny_clip):
    scorer = ClipScorer(tiny_clip)
    prompts = ["a red square", "a blue plus"]
    got = scorer.score(prompts, _images())
    # Recompute by hand with the same model: cos(text_embeds, image_embeds), clipped at 0.
    with torch.no_grad():
        tokens = scorer.tokenizer(prompts, padding=True, return_tensors="pt")
        out = scorer.model(**tokens, pixel_values=scorer.pixels(_images()))
        cos = torch.nn.functional.cosine_similarity(out.text_embeds, out.image_embeds, dim=-1).clamp(min=0)
    assert got == pytest.approx(cos.tolist(), abs=1e-5)
    assert scorer.pixels(_images()).shape == (2, 3, 32, 32)


def test_registered_reward_reads_the_folder_from_a_column_or_env(tiny_clip, monkeypatch):
    import io

    buffer = io.BytesIO()
    _images()[0].save(buffer, format="PNG")
    monkeypatch.setenv("MASKGRPO_CLIP_MODEL", str(tiny_clip))
    scores = clip_score(["a red square", "a red square", "x"], [_images()[0], buffer.getvalue(), "not an image"])
    assert scores[2] is None and scores[0] == pytest.approx(scores[1], abs=1e-3)  # PNG bytes decode to the same image
    monkeypatch.delenv("MASKGRPO_CLIP_MODEL")
    with pytest.raises(ValueError, match="MASKGRPO_CLIP_MODEL"):
        clip_score(["x"], [_images()[0]])


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ClipScorer(tmp_path)


def test_clip_model_as_a_reward_param_local_or_store_uri(tiny_clip, tmp_path, monkeypatch):
    from maskgrpo.rewards import bind_reward
    from maskgrpo.models.loading import import_checkpoint

    monkeypatch.delenv("MASKGRPO_CLIP_MODEL", raising=False)
    prompts, images = ["a red square", "a blue plus"], _images()
    expected = ClipScorer(tiny_clip).score(prompts, images)
    # {name: clip_score, params: {clip_model: <folder>}}: a string, not a per-row column
    assert bind_reward("clip_score", {"clip_model": str(tiny_clip)})(prompts, images) == pytest.approx(expected, abs=1e-5)
    monkeypatch.setenv("MASKGRPO_CACHE", str(tmp_path / "cache"))
    source = import_checkpoint(tiny_clip, f"file://{tmp_path}/models", "clip")  # file:// stands in for s3://
    got = bind_reward("clip_score", {"clip_model": source})(prompts, images)
    assert got == pytest.approx(expected, abs=1e-5)
    assert any((tmp_path / "cache" / "models").rglob("config.json"))  # fetched into the cache
