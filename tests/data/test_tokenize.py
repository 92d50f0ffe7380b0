"""Tokenizing conversations (``newllm.data.tokenize``): the share of validation token types
never seen in training."""
from __future__ import annotations

import pytest

from helpers.toy import from_lists
from newllm.data import tokenize


def test_unseen_type_frac():
    train = from_lists([[1, 2, 3], [3, 4]])
    val = from_lists([[4, 5], [6, 1, 1]])
    assert tokenize.unseen_type_frac(train, val) == pytest.approx(2 / 4)  # 5, 6 of 1, 4, 5, 6
