"""models/vq.py and decoded scoring (stages/scoring.py through the image modality with image.decoder).

MAGVIT-v2's weights cannot be downloaded here, so the decoder is ``PaletteDecoder``, a TEST DOUBLE
with MMaDA's MAGVITv2 interface (tests/palette_vq.py).
"""


import pytest
import torch

from maskgrpo.models.vq import VQDecoder, decode_images, import_class, load_decoder, to_pil
from maskgrpo.specs import ImageSpec, RewardSpec, RunSpec, TaskSpec
from maskgrpo.models.loading import import_checkpoint
from maskgrpo.modalities import get_modality
from maskgrpo.stages.scoring import score_rows
from palette_vq import CLASS_PATH, PaletteDecoder, write_palette_decoder

META = {"tag": "colors", "include": [{"class": "bar", "count": 1, "color": "red"}], "prompt": "a red bar"}
GOOD = "111" + "0" * 61  # a red 1x3 bar in the top-left corner of an 8x8 grid
@pytest.fixture
def decoder_dir(tmp_path):
    return write_palette_decoder(tmp_path / "palette-vq")


def test_pixels_follow_mmadas_conversion():
    # [-1, 1] -> clamp((x + 1) / 2, 0, 1) * 255, truncated: -1 -> 0; 0 -> 127 (127.5 truncated);
    # 1 -> 255; 2 is clamped to 255, -3 to 0.
    images = torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0, 0.5]).view(1, 3, 1, 2)  # (B, 3, H, W)
    (image,) = to_pil(images)
    assert image.size == (2, 1) and image.mode == "RGB"
    assert list(image.getdata()) == [(0, 255, 0), (127, 255, 191)]  # 0.5 -> 0.75 * 255 = 191.25 -> 191
    with pytest.raises(ValueError, match=r"must return \(B, 3, H, W\) images, got shape \(1, 1, 2, 2\)"):
        to_pil(torch.zeros(1, 1, 2, 2))


def test_load_and_decode_in_batches(decoder_dir):
    decoder = load_decoder(CLASS_PATH, str(decoder_dir), "cpu")
    assert isinstance(decoder, VQDecoder) and not decoder.training
    assert load_decoder(CLASS_PATH, str(decoder_dir), "cpu") is decoder  # cached per (class, folder, device)
    PaletteDecoder.calls.clear()
    codes = torch.tensor([[1, 0, 0, 3]] * 5)  # (5, 4): 2x2 grids
    images = decode_images(decoder, codes, batch_size=2)
    assert PaletteDecoder.calls == [2, 2, 1] and len(images) == 5
    assert images[0].size == (8, 8)  # 2 cells x 4 px
    # code 1 (red 230, 40, 40) -> v / 127.5 - 1 -> back to v in float32, then truncated: v or v - 1
    close = lambda px, rgb: all(0 <= b - a <= 1 for a, b in zip(px, rgb))  # noqa: E731
    assert close(images[0].getpixel((0, 0)), (230, 40, 40)) and close(images[0].getpixel((7, 7)), (50, 80, 240))
    assert images[0].getpixel((4, 0)) == (0, 0, 0)  # code 0, background: -1 -> exactly 0
    with pytest.raises(ValueError, match=r"image codes outside \[0, 4\): min 0, max 4"):
        decode_images(decoder, torch.tensor([[0, 4, 0, 0]]), codebook_size=4)


def test_class_path_and_source_errors(tmp_path):
    with pytest.raises(ValueError, match="image.decoder.class_path 'nocolon': expected 'package.module:Class'"):
        import_class("nocolon")
    with pytest.raises(ImportError, match="image.decoder.class_path 'no_such_pkg.mod:X': cannot import"):
        import_class("no_such_pkg.mod:X")
    with pytest.raises(ImportError, match="has no 'Nope'"):
        import_class(f"{__name__}:Nope")
    with pytest.raises(TypeError, match="needs from_pretrained"):
        import_class("pathlib:Path")
    with pytest.raises(FileNotFoundError, match="image.decoder.source: no decoder folder"):
        load_decoder(CLASS_PATH, str(tmp_path / "absent"), "cpu")


def test_the_decoder_is_a_spec_field_absent_by_default():
    toy = ImageSpec()
    assert toy.decoder is None and "decoder" not in toy.model_dump(mode="json")  # code-text runs: JSON unchanged
    spec = ImageSpec(decoder={"class_path": "models.modeling_magvitv2:MAGVITv2", "source": "s3://b/models/magvitv2"})
    assert spec.model_dump(mode="json")["decoder"]["device"] == "auto"
    with pytest.raises(ValueError, match="class_path"):
        ImageSpec(decoder={"class_path": "not a path", "source": "x"})


def test_score_rows_hands_decoded_images_to_the_rewards(decoder_dir, tmp_path, monkeypatch):
    rows = [{"prompt": "a red bar", "answer": "", "columns": {"metadata": META}, "completion": c}
            for c in (GOOD, GOOD.replace("1", "3"))]
    reward = RewardSpec(functions=[{"name": "geneval_strict"}])
    task = TaskSpec(name="toy-geneval")
    seen = []

    def spy(prompts, completions, **columns):
        seen.extend(completions)
        return [0.0] * len(completions)

    image = ImageSpec(grid_size=8, decoder={"class_path": CLASS_PATH, "source": str(decoder_dir), "device": "cpu"})
    per_fn, totals = score_rows(rows, reward, task, get_modality(image, task))
    # the decoded 32x32 px images read back as the same grids: the red bar passes, the blue fails
    assert per_fn == {"geneval_strict": [1.0, 0.0]} and totals == [1.0, 0.0]
    assert score_rows(rows, reward, task) == (per_fn, totals)  # code text, no decoder: same scores

    monkeypatch.setattr("maskgrpo.stages.scoring.bind_reward", lambda name, params: spy)
    score_rows(rows, reward, task, get_modality(image, task))
    assert [im.size for im in seen] == [(32, 32), (32, 32)]  # PIL images, 8 cells x 4 px
    seen.clear()
    score_rows(rows, reward, task, get_modality(ImageSpec(grid_size=8), task))
    assert seen == [r["completion"] for r in rows]  # no decoder: the code text, as before

    # a store URI source: imported like a checkpoint, fetched into the cache, then loaded
    monkeypatch.setenv("MASKGRPO_CACHE", str(tmp_path / "cache"))
    source = import_checkpoint(decoder_dir, f"file://{tmp_path}/models", "palette-vq")
    seen.clear()
    score_rows(rows, reward, task, get_modality(ImageSpec(grid_size=8, decoder={"class_path": CLASS_PATH, "source": source, "device": "cpu"}), task))
    assert len(seen) == 2 and seen[0].size == (32, 32)
    with pytest.raises(FileNotFoundError, match="image.decoder.source '/nowhere' is neither a store URI nor a folder"):
        score_rows(rows, reward, task, get_modality(ImageSpec(grid_size=8, decoder={"class_path": CLASS_PATH, "source": "/nowhere"}), task))


def test_the_plan_gives_the_score_stage_the_image_only_with_a_decoder():
    from maskgrpo.plan import build_plan

    doc = {"name": "x", "modality": "image", "image": {"grid_size": 8}, "task": {"name": "toy-geneval"},
           "rl": {"rounds": 1, "prompts_per_round": 2, "group_size": 2, "minibatch_size": 4}}
    score = next(c.spec for c in build_plan(RunSpec(**doc), "r", "file:///tmp/s") if c.spec.kind == "score")
    assert score.image is None and "image" not in score.model_dump(mode="json")
    doc["image"]["decoder"] = {"class_path": CLASS_PATH, "source": "/models/vq"}
    score = next(c.spec for c in build_plan(RunSpec(**doc), "r", "file:///tmp/s") if c.spec.kind == "score")
    assert score.image.decoder.source == "/models/vq"
