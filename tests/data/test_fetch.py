"""The data sources (``newllm.data.fetch``): rows are cleaned or skipped with a reason, the
splits are a seeded order of the rows (disjoint, nested, independent of the file's order and of
the training seed), the bundled corpus is packed into long-enough samples, and the Hub path
reads a local copy through ``datasets``."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from helpers.rows import data_cfg, in_split_order, row, rows_n, write_jsonl
from newllm.data import fetch, tokenize, tokenizer
from newllm.errors import DataError


@pytest.fixture(scope="module")
def tok():
    return tokenizer.build_tokenizer("gpt2-offline")


def test_clean_row_keeps_schema_and_fills_prompt():
    r = fetch.clean_row({"messages": [{"role": "user", "content": "hi", "extra": 1}], "other": 2})
    assert r == row("hi")
    assert set(r) == {"prompt", "prompt_id", "messages"} and len(r["prompt_id"]) == 64
    kept = fetch.clean_row({"prompt": "p", "prompt_id": "id", "messages": [{"role": "user", "content": "x"}]})
    assert (kept["prompt"], kept["prompt_id"]) == ("p", "id")


@pytest.mark.parametrize("raw, reason", [
    ({"prompt": "no messages"}, "no_messages"),
    ({"messages": []}, "no_messages"),
    ({"messages": "text"}, "no_messages"),
    ([1, 2], "no_messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "non_string_message"),
    ({"messages": [{"role": "user", "content": None}]}, "non_string_message"),
    ({"messages": [{"content": "no role"}]}, "non_string_message"),
    ({"messages": [{"role": "user", "content": "\udc80"}]}, "non_string_message"),
    ({"messages": [{"role": "user", "content": "  \n"}]}, "empty_text"),
])
def test_clean_row_rejects(raw, reason):
    with pytest.raises(fetch._SkipRow) as e:
        fetch.clean_row(raw)
    assert e.value.reason == reason


def test_take_rows_reads_no_further_than_needed():
    consumed = []

    def stream():
        for i in range(1000):
            consumed.append(i)
            yield row(f"row {i}") if i % 3 else {"bad": i}

    skipped: Counter = Counter()
    rows = fetch.take_rows(stream(), 4, skipped, "test stream")
    assert [r["prompt"] for r in rows] == ["row 1", "row 2", "row 4", "row 5"]
    assert consumed == list(range(6)) and skipped == {"no_messages": 2}


def test_jsonl_split_rule(tmp_path):
    rows = rows_n(20)
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    data = fetch.fetch(data_cfg(source="jsonl", path=str(path), num_samples=8, val_fraction=0.3,
                                test_fraction=0.2).data)
    order = in_split_order(rows)
    assert data.train == order[:8] and data.val == order[8:11] and data.test == order[11:13]  # ceil(2.4) = 3
    assert data.train != rows[:8] and not data.skipped  # shuffled, not the file's first rows


def test_a_small_scale_still_gets_min_test_rows(tmp_path):
    rows = rows_n(30)
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    data = fetch.fetch(data_cfg(source="jsonl", path=str(path), num_samples=8, min_test_rows=6).data)
    order = in_split_order(rows)
    assert data.test == order[10:16] and len(data.val) == 2  # ceil(0.2 * 8) = 2 < 6 test rows


def test_splits_are_disjoint_deterministic_nested_and_independent_of_the_file_order(tmp_path):
    rows = rows_n(40)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    ids = lambda rs: [r["prompt_id"] for r in rs]  # noqa: E731
    got = {}
    for name, file_rows in (("a", rows), ("b", shuffled)):
        path = write_jsonl(tmp_path / f"{name}.jsonl", file_rows)
        for n in (5, 10):
            got[name, n] = fetch.fetch(data_cfg(source="jsonl", path=str(path), num_samples=n).data)
    small, big = got["a", 5], got["a", 10]
    for n in (5, 10):  # the file's order does not matter
        assert (got["b", n].train, got["b", n].val, got["b", n].test) == (got["a", n].train, got["a", n].val,
                                                                          got["a", n].test)
    assert not set(ids(big.train)) & set(ids(big.val)) | set(ids(big.train)) & set(ids(big.test)) \
        | set(ids(big.val)) & set(ids(big.test))
    assert big.train[:5] == small.train  # more training rows add to the smaller scale's
    other = fetch.fetch(data_cfg(source="jsonl", path=str(tmp_path / "a.jsonl"), num_samples=10,
                                 split_seed=1).data)
    assert other.train != big.train and sorted(ids(other.train + other.val + other.test)) != \
        sorted(ids(big.train + big.val + big.test)) or other.test != big.test


def test_a_repeated_conversation_is_skipped_so_splits_stay_disjoint(tmp_path):
    rows = rows_n(12)
    path = write_jsonl(tmp_path / "c.jsonl", rows + rows[:3])
    data = fetch.fetch(data_cfg(source="jsonl", path=str(path), num_samples=8, val_fraction=0.2,
                                test_fraction=0.2).data)
    assert data.skipped == {"duplicate_prompt_id": 3}
    assert data.train + data.val + data.test == in_split_order(rows)


def test_too_few_rows_after_skipping(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", rows_n(3) + [{"prompt": "x"}] * 2)
    with pytest.raises(DataError, match=r"only 3 usable rows \(2 rows skipped: no_messages 2\).*5 are needed"):
        fetch.fetch(data_cfg(source="jsonl", path=str(path), num_samples=3, val_fraction=0.1,
                             test_fraction=0.1).data)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="is empty"):
        fetch.fetch(data_cfg(source="jsonl", path=str(tmp_path / "empty.jsonl")).data)
    with pytest.raises(DataError, match="is not a file"):
        fetch.fetch(data_cfg(source="jsonl", path=str(tmp_path / "nope.jsonl")).data)


def test_pack_dialogs_stops_at_the_threshold():
    dialogs = [["ab"], ["cd", "ef"], ["g"], ["hijk"], ["lmnopq"], ["r"]]
    rows = fetch.pack_dialogs(dialogs, 5, len, limit=10)
    assert [tokenize.conversation_text(r) for r in rows] == ["ab\ncd\nef", "g\nhijk", "lmnopq"]
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "user", "assistant"]
    assert len(fetch.pack_dialogs(dialogs, 5, len, limit=2)) == 2


def test_chatterbot_packing_rule(tok):
    cfg = data_cfg(source="chatterbot", num_samples=6, val_fraction=0.5, split_seed=3, max_seq_length=32).data
    data = fetch.fetch(cfg)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 3, 2)
    for r in data.train + data.val + data.test:
        assert len(tok.encode(tokenize.conversation_text(r)).ids) >= 32
    # packs are consecutive whole dialogs of the seeded shuffle, so train and val share none
    dialogs = fetch.chatterbot_dialogs(fetch.chatterbot_dir(), Counter())
    assert len(set(map(tuple, dialogs))) == len(dialogs)
    random.Random(3).shuffle(dialogs)
    utterances = [m["content"] for r in data.train + data.val + data.test for m in r["messages"]]
    assert utterances == [u for d in dialogs for u in d][:len(utterances)]
    other = data_cfg(source="chatterbot", num_samples=6, val_fraction=0.5, split_seed=4, max_seq_length=32).data
    assert fetch.fetch(cfg) == data and fetch.fetch(other).train != data.train


def test_chatterbot_runs_out_with_a_clear_error():
    with pytest.raises(DataError, match=r"chatterbot corpus gives only \d+ samples.*num_samples <= \d+"):
        fetch.fetch(data_cfg(source="chatterbot", num_samples=5000).data)


def test_hub_splits_through_datasets_on_a_local_copy(tmp_path):
    """The Hub code path after the reachability probe, on a local dataset folder read through the
    same ``datasets.load_dataset(..., streaming=True)`` call: training rows in stream order,
    validation and test rows from the held-out split by the parity of their split key."""
    (tmp_path / "hub" / "data").mkdir(parents=True)
    for split in ("train_sft", "test_sft"):
        write_jsonl(tmp_path / "hub" / "data" / f"{split}-00000-of-00001.jsonl",
                    [row(f"{split} {i}", prompt_id=f"{split}-{i}") for i in range(40)])
    cfg = data_cfg(source="ultrachat", hub_dataset=str(tmp_path / "hub"), num_samples=10, split_seed=5).data
    train, _ = fetch._stream_hub_split(cfg, cfg.train_split, cfg.num_samples)
    val, test, skipped = fetch._held_out(cfg)
    assert [r["prompt_id"] for r in train] == [f"train_sft-{i}" for i in range(10)] and not skipped
    held = [f"test_sft-{i}" for i in range(40)]
    assert [r["prompt_id"] for r in val] == [h for h in held if fetch.split_key(h, 5) % 2 == 0][:2]
    assert [r["prompt_id"] for r in test] == [h for h in held if fetch.split_key(h, 5) % 2 == 1][:2]
