"""The GPT-2 tokenizers (``newllm.data.tokenizer``): the offline one gives GPT-2's ids and
decodes back the exact text, a saved one loads offline, and a missing or Hub-only one is a clear
error."""
from __future__ import annotations

import pytest

from newllm.data import tokenizer
from newllm.errors import DataError


@pytest.fixture(scope="module")
def tok():
    return tokenizer.build_tokenizer("gpt2-offline")


@pytest.mark.parametrize("text, ids", [
    ("Hello world", [15496, 995]),
    (" The quick brown fox jumps over the lazy dog.", [383, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]),
    ("<|endoftext|>", [50256]),
])
def test_offline_tokenizer_gives_gpt2_ids(tok, text, ids):
    assert tok.encode(text, add_special_tokens=False).ids == ids
    assert tok.get_vocab_size() == 50257


@pytest.mark.parametrize("text", [
    "Héllo wörld — naïve café, 日本語のテキスト, Привет, مرحبا 🙂👍🏽",
    "a\n\n\nb   c\t\td  \n \r\n  trailing   ",
    "\n\n",
    "def f(x):\n    return x  # ok\n",
])
def test_decode_gives_back_the_exact_text(tok, text):
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text


def test_saved_tokenizer_loads_offline_with_same_ids(tok, tmp_path):
    path = tokenizer.save_tokenizer(tok, tmp_path / "tokenizer")
    text = "Hello world\n The quick brown fox. 日本 🙂"
    for where in (tmp_path / "tokenizer", path):
        assert tokenizer.load_tokenizer(where).encode(text).ids == tok.encode(text).ids


def test_load_tokenizer_missing_or_corrupt(tmp_path):
    with pytest.raises(DataError, match="missing"):
        tokenizer.load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable"):
        tokenizer.load_tokenizer(tmp_path)


def test_hub_tokenizer_offline_names_the_offline_one():
    # conftest sets HF_HUB_OFFLINE=1
    with pytest.raises(DataError, match="data.tokenizer: gpt2-offline"):
        tokenizer.build_tokenizer("gpt2")
