"""modalities/image.py: code text, the estimator's data for image slots, the registry."""

import pytest
import torch

from maskgrpo.modalities import MODALITIES, get_modality
from maskgrpo.modalities.image import codes_to_text, text_to_codes
from maskgrpo.specs import ImageSpec
from maskgrpo.tasks import CharTokenizer


def test_codes_text_round_trip():
    assert text_to_codes(codes_to_text([0, 3, 4], 5), 3, 5) == [0, 3, 4]
    assert text_to_codes(codes_to_text([8191, 7], 8192), 2, 8192) == [8191, 7]
    with pytest.raises(ValueError, match="3 codes"):
        text_to_codes("01", 3, 5)


def test_one_registry_picks_the_modality():
    assert MODALITIES.names() == ["image", "text"]
    assert get_modality().name == "text" and get_modality(ImageSpec()).name == "image"
    with pytest.raises(ValueError, match="unknown modality 'audio'; valid modalitys: image, text"):
        MODALITIES.load("audio")


def test_image_estimator_input_is_slots_without_a_ramp_over_the_codebook():
    tok = CharTokenizer()
    modality = get_modality(ImageSpec(grid_size=2, codebook_size=4, text_slots=6))
    layout = modality.layout(tok)
    ids = modality.encode(tok, ["ab", "abc"], ["0123", "3210"])  # (2, L)
    inp = modality.estimator_input(tok, ids, layout.image_start, torch.tensor([5, 6]))
    assert inp.ramp_start is None and inp.vocab_slice == layout.vocab_slice
    assert inp.target_positions.tolist() == list(range(layout.image_start, layout.image_start + 4))
    assert inp.loss_valid.all() and inp.prompt_valid[:, layout.text_slots:].sum() == 0
    assert inp.prompt_valid[0].sum() < inp.prompt_valid[1].sum()  # left padding is not a valid prompt token
    assert modality.decode(tok, ids, layout.image_start) == ["0123", "3210"]
    with pytest.raises(ValueError, match="a text sampler in a image run"):
        modality.generate(None, tok, ["a"], type("S", (), {"kind": "text"})(), torch.Generator(), device=torch.device("cpu"))


def _grid_pixels(png: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB")


def test_report_grid_decodes_mmada_codes_through_the_configured_decoder(tmp_path):
    """MMaDA layout (K = 8192, space-separated code text: not a toy grid): the grid is decoded
    through ``image.decoder``. Stand-in: tests/palette_vq.py's PaletteDecoder (MAGVIT-v2's
    interface) with an 8192-colour table, as MMaDA's weights cannot be had here."""
    import json

    from palette_vq import CLASS_PATH

    from maskgrpo.artifacts import IMAGE_GRID
    from maskgrpo.specs import ImageDecoderSpec

    colours = [[k % 256, (k * 7) % 256, (k * 13) % 256] for k in range(8192)]
    (tmp_path / "vq").mkdir()
    (tmp_path / "vq" / "palette.json").write_text(json.dumps({"colours": colours, "cell": 4}))
    decoder = ImageDecoderSpec(class_path=CLASS_PATH, source=str(tmp_path / "vq"), device="cpu")
    image = ImageSpec(layout="mmada", grid_size=2, codebook_size=8192, decoder=decoder)
    modality = get_modality(image)
    rows = [{"prompt": "a photo of a red bus", "answer": "", "completion": "8191 5 0 3"},
            {"prompt": "two cats", "answer": "", "completion": "17 17 4000 1"},
            {"prompt": "not shown", "answer": "", "completion": "1 1 1 1"}]
    files = modality.report_files(rows, num_samples=2)
    sheet = _grid_pixels(files[IMAGE_GRID])
    assert sheet.height == 2 * (96 + 4) + 2  # a row per shown prompt
    for r, code in enumerate((8191, 17)):  # each row's image starts with its first code's colour
        got = sheet.getpixel((240 + 1, r * 100 + 2 + 1))  # within 1 of 255: the [-1, 1] -> uint8 rounding
        assert max(abs(a - b) for a, b in zip(got, colours[code])) <= 1, (got, colours[code])
    for r in range(2):  # the prompt text is drawn at the left of its row
        label = sheet.crop((0, r * 100 + 2, 240, r * 100 + 98))
        assert min(sum(p) for p in label.getdata()) < 200
    # evaluate scores every row (reward_inputs), then draws the first ones: one decoder load and
    # one decode per distinct code text in all, not a second pass for the report
    import maskgrpo.models.vq as vq

    calls = {"load": 0, "rows": 0}
    real_load, real_decode = vq.load_decoder, vq.decode_images

    def load(*a, **k):
        calls["load"] += 1
        return real_load(*a, **k)

    def decode(decoder, codes, *a, **k):
        calls["rows"] += codes.shape[0]
        return real_decode(decoder, codes, *a, **k)

    fresh = get_modality(image)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vq, "load_decoder", load)
        mp.setattr(vq, "decode_images", decode)
        images = fresh.reward_inputs([r["completion"] for r in rows] + [rows[0]["completion"]])
        assert fresh.report_files(rows, num_samples=2) == files
    assert calls == {"load": 1, "rows": 3} and images[0] is images[3]
    # without a decoder the same codes draw nothing (not a toy grid), as before
    assert get_modality(ImageSpec(layout="mmada", grid_size=2, codebook_size=8192)).report_files(rows, 2) == {}


def test_toy_geneval_grid_rows_carry_the_prompt_and_the_reference_first():
    from maskgrpo.artifacts import IMAGE_GRID
    from maskgrpo.tasks.geneval import PALETTE

    modality = get_modality(ImageSpec(grid_size=2, codebook_size=5))
    rows = [{"prompt": "a red square", "answer": "1111", "completion": "0000"},
            {"prompt": "a red square", "answer": "1111", "completion": "2222"}]
    modality.eval_repeats = 2  # two images per prompt: one row
    sheet = _grid_pixels(modality.report_files(rows, num_samples=1)[IMAGE_GRID])
    assert sheet.height == 100 + 2
    colour = {code: rgb for code, rgb in PALETTE.values()}
    assert sheet.getpixel((241, 3)) == tuple(colour[1])  # the reference, then the two samples
    assert sheet.getpixel((241 + 98, 3)) == tuple(colour[0])
    assert sheet.getpixel((241 + 2 * 98, 3)) == tuple(colour[2])


def test_the_documents_special_tokens_set_the_mmada_layout():
    # model.special_tokens reaches the layout through the stage spec: --set t2i_id=5 changes the
    # encoded prompt (the text segment ends <|t2i|>, bos, text, eos right before <|soi|>).
    from pathlib import Path

    from maskgrpo.modalities import modality_for
    from maskgrpo.plan import build_plan
    from maskgrpo.specs import load_run_spec

    doc = Path(__file__).resolve().parents[2] / "pipelines" / "mmada-t2i.yaml"
    tok = CharTokenizer()

    def encoded(*overrides: str) -> list[int]:
        calls = build_plan(load_run_spec(doc, list(overrides)), run_id="r1", store="file:///unused")
        rollout = next(c.spec for c in calls if c.spec.kind == "rollout")
        modality = modality_for(rollout)
        text = tok.encode("ab")
        row = modality.encode(tok, ["ab"])[0]
        start = modality.layout(tok).text_slots - len(text) - 3  # t2i, bos, "ab", eos
        return row[start:start + 6].tolist()

    a, b = tok.encode("ab")
    assert encoded() == [126088, 126080, a, b, 126081, 126084]  # MMaDA's ids
    assert encoded("model.special_tokens.t2i_id=5") == [5, 126080, a, b, 126081, 126084]
    assert encoded("model.special_tokens.soi_id=126090")[-1] == 126090
