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
