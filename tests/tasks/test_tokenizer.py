"""CharTokenizer: ids, round trips on every toy task, padding, EOS fill, JSON save/load."""

import json

import pytest
import torch

from maskgrpo.tasks import get_task
from maskgrpo.tasks.tokenizer import DEFAULT_CHARS, CharTokenizer

TOY = {"sort": {}, "add": {}, "countdown-lite": {}, "sudoku-4x4": {}}


def test_special_ids_and_vocab_size():
    tok = CharTokenizer()
    assert (tok.pad_id, tok.eos_id, tok.mask_id) == (0, 1, 2)
    # 10 digits + 26 letters + 16 punctuation = 52 characters, + 3 specials
    assert len(DEFAULT_CHARS) == 52
    assert tok.vocab_size == 55 <= 64
    assert tok.encode("0") == [3]  # first character right after the 3 specials


@pytest.mark.parametrize("name", sorted(TOY))
def test_round_trip_every_toy_prompt_and_answer(name):
    tok = CharTokenizer()
    task = get_task(name, **TOY[name])
    for split in ("train", "eval"):
        for ex in task.examples(split, 200, seed=0):
            for text in (ex.prompt, ex.answer):
                assert tok.decode(tok.encode(text)) == text
            assert len(ex.prompt) <= 24, ex.prompt
            ids = tok.encode_completion(ex.answer, task.completion_length)  # answer + >= 1 EOS fits
            assert tok.decode(ids) == ex.answer


def test_unknown_character_names_char_and_text():
    with pytest.raises(ValueError, match=r"'Z'.*'sort:Z1'"):
        CharTokenizer().encode("sort:Z1")


def test_decode_stops_at_eos_skips_pad_shows_mask():
    tok = CharTokenizer()
    ids = [0, 0] + tok.encode("12") + [2] + [1] + tok.encode("9")
    assert tok.decode(ids) == "12_"
    assert tok.decode(torch.tensor(ids)) == "12_"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([999])


def test_left_padding():
    tok = CharTokenizer()
    x = tok.encode_batch_left_padded(["1+2=", "10+20="])
    assert x.dtype == torch.long and x.shape == (2, 6)
    # row 0 is 4 tokens long: 2 pads on the left
    assert x[0].tolist() == [0, 0] + tok.encode("1+2=")
    assert x[1].tolist() == tok.encode("10+20=")
    assert tok.encode_batch_left_padded(["1"], length=3).tolist() == [[0, 0, 4]]
    with pytest.raises(ValueError, match="longer than length=2"):
        tok.encode_batch_left_padded(["123"], length=2)


def test_encode_completion_fills_with_eos():
    tok = CharTokenizer()
    assert tok.encode_completion("12", 5) == tok.encode("12") + [1, 1, 1]
    assert tok.encode_completion("", 2) == [1, 1]
    with pytest.raises(ValueError, match="needs 3 tokens"):
        tok.encode_completion("12", 2)  # no room for the EOS


def test_save_load_json(tmp_path):
    tok = CharTokenizer("0123456789+=")
    tok.save(tmp_path / "tok")
    doc = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    assert doc["chars"] == "0123456789+="
    back = CharTokenizer.load(tmp_path / "tok")
    assert back == tok and back.vocab_size == 15
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a maskgrpo CharTokenizer"):
        CharTokenizer.load(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        CharTokenizer.load(tmp_path / "missing")


@pytest.mark.parametrize("chars,msg", [("aa", "duplicate"), ("a_", "'_'"), ("x" * 0, "non-empty"),
                                       ("".join(chr(200 + i) for i in range(62)), "at most 61")])
def test_bad_character_sets(chars, msg):
    with pytest.raises(ValueError, match=msg):
        CharTokenizer(chars)
