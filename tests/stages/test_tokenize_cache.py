"""Stage tokenize_cache (``newllm.stages.tokenize_cache``): the exact GPT-2 ids of each split and
their counts, and a clear error for missing or unusable conversations (exit 2, nothing changed)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers.chain import refused_without_change
from helpers.faults import overwrite
from helpers.rows import data_cfg, in_split_order, row, write_jsonl
from newllm.data import tokenizer
from newllm.data.tokens import load_token_set
from newllm.errors import DataError
from newllm.stages import fetch_ultrachat, tokenize_cache

TOK = "tokenize_cache"


@pytest.fixture(scope="module")
def tok():
    return tokenizer.build_tokenizer("gpt2-offline")


def run_both(tmp_path: Path, seed: int = 0, **data) -> dict:
    """fetch + tokenize into tmp_path; returns the metrics."""
    cfg = data_cfg(seed, **data)
    fetch_ultrachat.run(cfg, tmp_path / "raw", tmp_path / "fetch.json")
    return tokenize_cache.run(cfg, tmp_path / "raw", tmp_path / "tokens", tmp_path / "tokenizer",
                        tmp_path / "metrics" / "data.json")


def test_exact_tokens_and_metrics(tmp_path):
    rows = [row("Hello world", prompt_id="a"),                                   # 2 tokens
            row("Hello world", "Hello world", prompt_id="b"),                    # 5 tokens -> 4
            row(" The quick brown fox jumps over the lazy dog.", prompt_id="c"),  # 10 tokens -> 4
            row("Hello you", prompt_id="d")]                                     # 2 tokens
    ids = {"a": [15496, 995], "b": [15496, 995, 198, 15496], "c": [383, 2068, 7586, 21831], "d": [15496, 345]}
    path = write_jsonl(tmp_path / "c.jsonl", rows + [{"prompt": "skipped"}])
    m = run_both(tmp_path, source="jsonl", path=str(path), num_samples=2, val_fraction=0.5, test_fraction=0.5,
                 max_seq_length=4)
    order = [r["prompt_id"] for r in in_split_order(rows)]
    want = {"train": order[:2], "val": order[2:3], "test": order[3:4]}
    for split, pids in want.items():
        ts = load_token_set(tmp_path / "tokens" / f"{split}.pt", 50257)
        assert ts.tokens.tolist() == [t for pid in pids for t in ids[pid]], split
        assert m[split]["samples"] == len(pids) and m[split]["tokens"] == ts.num_tokens
        assert m[split]["short_samples"] == sum(len(ids[pid]) < 4 for pid in pids)
    assert m == json.loads((tmp_path / "metrics" / "data.json").read_text())
    assert (m["vocab_size"], m["source"], m["tokenizer"]) == (50257, "jsonl", "gpt2-offline")
    assert m["skipped_rows"] == {"total": 1, "no_messages": 1}  # every row is read (the order needs them all)
    assert tokenizer.load_tokenizer(tmp_path / "tokenizer").encode("Hello world").ids == [15496, 995]


def test_tokenize_without_raw_data(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "fetch_info.json").write_text(json.dumps({"source": "jsonl", "skipped": {}}))
    with pytest.raises(DataError, match="run `dvc repro fetch_ultrachat`"):
        tokenize_cache.run(data_cfg(), tmp_path / "raw", tmp_path / "t", tmp_path / "tk", tmp_path / "m.json")


def test_chat_sample_token_counts(chat_sample, tmp_path, tok):
    m = run_both(tmp_path, source="jsonl", path=str(chat_sample), num_samples=781)
    with open(chat_sample, encoding="utf-8") as f:  # not splitlines(): contents hold U+2028
        rows = in_split_order([json.loads(line) for line in f])
    texts = ["\n".join(msg["content"] for msg in r["messages"]) for r in rows]
    lengths = [min(len(e.ids), 128) for e in tok.encode_batch(texts, add_special_tokens=False)]
    assert m["train"]["samples"] == 781 and m["val"]["samples"] == m["test"]["samples"] == 157
    assert m["train"]["tokens"] == sum(lengths[:781])
    assert m["val"]["tokens"] == sum(lengths[781:781 + 157])
    assert m["test"]["tokens"] == sum(lengths[781 + 157:781 + 314])
    train = load_token_set(tmp_path / "tokens" / "train.pt", 50257)
    assert (train.offsets[1:] - train.offsets[:-1]).tolist() == lengths[:781]
    assert torch.equal(train.tokens[train.offsets[5]:train.offsets[6]], torch.tensor(tok.encode(texts[5]).ids[:128]))
    # the file is grouped by source (mostly English first): the shuffled splits share the mix
    non_ascii = [sum(any(ord(ch) > 127 for ch in t[:200]) for t in part) / len(part)
                 for part in (texts[:781], texts[781:938], texts[938:1095])]
    assert max(non_ascii) - min(non_ascii) < 0.1, non_ascii


@pytest.mark.slow
@pytest.mark.parametrize("corrupt, needles", [
    pytest.param(overwrite("data/raw/val.jsonl", b'{"messages": [{"role": "user", "content": "Hello"}]}\n'),
                 ["data/raw/val.jsonl gives 1 token", "at least 2 per split"], id="raw-one-token"),
    pytest.param(overwrite("data/raw/train.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n'
                                                   b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n'),
                 ["data/raw/train.jsonl line 2 is not UTF-8", "fetch_ultrachat"], id="raw-not-utf8"),
    pytest.param(overwrite("data/raw/train.jsonl", b'{"prompt": "no messages"}\n'),
                 ["data/raw/train.jsonl line 1 is not a conversation", "fetch_ultrachat"], id="raw-no-messages"),
    pytest.param(overwrite("data/raw/val.jsonl", b""), ["data/raw/val.jsonl holds no conversations"], id="raw-empty"),
])
def test_unusable_conversations_are_a_clear_error_and_change_nothing(prepared_run, tmp_path, corrupt, needles):
    """What fetch_ultrachat wrote, damaged: the stage script exits 2 naming the file and the line."""
    refused_without_change(prepared_run, tmp_path, TOK, corrupt, *needles)
