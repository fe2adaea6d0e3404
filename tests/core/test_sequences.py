"""core/sequences.py: left padding and EOS filling, the shapes every tokenizer produces."""

import pytest
import torch

from maskgrpo.core.sequences import eos_filled, left_pad


def test_left_pad_right_aligns_rows_to_the_longest_or_a_given_length():
    assert left_pad([[5, 6, 7], [8], []], pad_id=0).tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    out = left_pad([[5]], pad_id=9, length=3)
    assert out.dtype == torch.long and out.tolist() == [[9, 9, 5]]
    assert left_pad([], pad_id=0).shape == (0, 0)


def test_too_long_rows_and_completions_are_named():
    with pytest.raises(ValueError, match=r"'abc' has 3 tokens, longer than length=2"):
        left_pad([[1, 2, 3]], pad_id=0, length=2, labels=["abc"])
    with pytest.raises(ValueError, match=r"row 1 has 2 tokens"):
        left_pad([[1], [1, 2]], pad_id=0, length=1)
    assert eos_filled([4], eos_id=1, length=3) == [4, 1, 1]
    with pytest.raises(ValueError, match=r"completion 'xy' needs 3 tokens \(text \+ EOS\), more than length=2"):
        eos_filled([4, 5], eos_id=1, length=2, label="xy")
