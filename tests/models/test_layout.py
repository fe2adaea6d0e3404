"""models/layout.py: the MMaDA text-to-image layout on literal ids (docs/algorithm.md §1)."""

import pytest
import torch

from maskgrpo.models.layout import MMADA_IDS, ImageLayout, LayoutError

# A small layout: text ids 3..9, specials after a vocabulary of 10, codebook of 4.
SMALL = ImageLayout.after_vocab(10, text_slots=5, image_slots=3, codebook_size=4, mask_id=2, pad_id=0, eos_id=1)


def test_tiny_layout_appends_specials_and_codes_after_the_vocabulary():
    assert (SMALL.t2i_id, SMALL.soi_id, SMALL.eoi_id, SMALL.code_offset) == (10, 11, 12, 13)
    assert SMALL.vocab_size == 13 + 4 and SMALL.vocab_slice == (13, 4)
    # 5 text slots + <|soi|> + 3 image slots + <|eoi|> = 10 columns; image slots at 6, 7, 8.
    assert SMALL.seq_len == 10 and SMALL.image_positions().tolist() == [6, 7, 8]


def test_build_sequences_left_pads_the_text_and_offsets_the_codes():
    seq = SMALL.build_sequences([[3, 4], []], torch.tensor([[0, 3, 1], [2, 2, 2]]))
    # row 0: pad, t2i, 3, 4, eos | soi | 13+0, 13+3, 13+1 | eoi
    assert seq[0].tolist() == [0, 10, 3, 4, 1, 11, 13, 16, 14, 12]
    # row 1: the empty prompt is pad, pad, pad, t2i, eos
    assert seq[1].tolist() == [0, 0, 0, 10, 1, 11, 15, 15, 15, 12]
    masked = SMALL.build_sequences([[5]])
    assert masked[0, 6:9].tolist() == [2, 2, 2]
    assert SMALL.codes_of(seq).tolist() == [[0, 3, 1], [2, 2, 2]]


def test_unconditional_replaces_only_the_text_segment():
    seq = SMALL.build_sequences([[3, 4, 5]], torch.tensor([[1, 2, 3]]))
    uncond = SMALL.unconditional(seq)
    assert uncond[0, :5].tolist() == [0, 0, 0, 10, 1]
    assert torch.equal(uncond[0, 5:], seq[0, 5:])


def test_mmada_layout_sizes_and_ids():
    mmada = ImageLayout.mmada()
    assert mmada.seq_len == 257 + 1 + 1024 + 1 == 1283
    assert mmada.vocab_slice == (126349, 8192) and mmada.mask_id == 126336
    seq = mmada.build_sequences([[100, 101]])
    # pad ..., t2i, bos, 100, 101, eos: the text ends right before <|soi|>.
    assert seq[0, 252:258].tolist() == [126088, 126080, 100, 101, 126081, 126084]
    assert seq[0, -1].item() == 126085 and (seq[0, 258:-1] == 126336).all()


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="text segment holds 3"):
        SMALL.build_sequences([[3, 4, 5, 6]])
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 4\)"):
        SMALL.build_sequences([[3]], torch.tensor([[0, 4, 1]]))
    with pytest.raises(ValueError, match="still masked"):
        SMALL.codes_of(SMALL.build_sequences([[3]]))
    with pytest.raises(ValueError, match="inside the codebook"):
        ImageLayout(text_slots=4, image_slots=2, codebook_size=4, code_offset=0, mask_id=2, pad_id=9, eos_id=8,
                    t2i_id=7, soi_id=6, eoi_id=5)


def test_mmada_ids_can_be_overridden_and_stay_inside_mmadas_vocabulary():
    moved = ImageLayout.mmada(t2i_id=5, code_offset=126400, codebook_size=8192)
    assert moved.build_sequences([[100]])[0, 253].item() == 5  # pad ..., t2i (col 253), bos, 100, eos | soi
    assert moved.vocab_slice == (126400, 8192) and moved.soi_id == MMADA_IDS["soi_id"]  # the others: MMaDA's
    assert ImageLayout.mmada(t2i_id=None) == ImageLayout.mmada()  # None: MMaDA's id
    # 126400 + 8192 = 134592 <= 134656 fits; 126500 + 8192 = 134692 does not
    with pytest.raises(LayoutError, match="ids reach 134691, outside MMaDA-8B's vocabulary of 134656") as info:
        ImageLayout.mmada(code_offset=126500)
    assert info.value.field == "codebook_size"
    with pytest.raises(LayoutError, match=r"soi_id \(126085\) equals eoi_id") as info:
        ImageLayout.mmada(soi_id=126085)
    assert info.value.field == "soi_id"
    with pytest.raises(TypeError, match="no id 'image_slot'"):
        ImageLayout.mmada(image_slot=3)
