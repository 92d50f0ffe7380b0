"""Data stages: GPT-2 ids, the three sources, row skipping, token caches and counts."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import ROOT
from toy import from_lists

from newllm.config import from_dict
from newllm.data import fetch, tokenize, tokenizer
from newllm.data.tokens import load_token_set
from newllm.errors import DataError
from newllm.stages import fetch_ultrachat, tokenize_cache


@pytest.fixture(scope="module")
def tok():
    return tokenizer.build_tokenizer("gpt2-offline")


def data_cfg(seed: int = 0, **data):
    """A data config; no test-row floor unless a test asks for one (the cuts stay proportional)."""
    return from_dict({"seed": seed, "data": {"min_test_rows": 1, **data}}, sections=["data"])


def row(*contents, prompt_id: str | None = None) -> dict:
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": c} for i, c in enumerate(contents)]
    return fetch.make_row(msgs, prompt_id=prompt_id)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_both(tmp_path: Path, seed: int = 0, **data) -> dict:
    """fetch + tokenize into tmp_path; returns the metrics."""
    cfg = data_cfg(seed, **data)
    fetch_ultrachat.run(cfg, tmp_path / "raw", tmp_path / "fetch.json")
    return tokenize_cache.run(cfg, tmp_path / "raw", tmp_path / "tokens", tmp_path / "tokenizer",
                        tmp_path / "metrics" / "data.json")


# ---------------------------------------------------------------------------
# tokenizer


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


# ---------------------------------------------------------------------------
# rows and streaming


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


def rows_n(n: int) -> list:
    return [row(f"question {i}", f"answer {i}") for i in range(n)]


def in_split_order(rows: list, split_seed: int = 0) -> list:
    """The rows in the random order of ``split_seed``: sorted by their keyed hash (the oracle of
    fetch.first_in_order's streaming heap)."""
    return sorted(rows, key=lambda r: fetch.split_key(r["prompt_id"], split_seed))


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


def test_splits_do_not_depend_on_the_training_seed(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", rows_n(20))
    for source, extra in (("jsonl", {"path": str(path)}), ("chatterbot", {"max_seq_length": 32})):
        runs = []
        for seed in (0, 7):
            out = tmp_path / f"{source}{seed}"
            fetch_ultrachat.run(data_cfg(seed, source=source, num_samples=6, **extra), out / "raw",
                                out / "fetch.json")
            runs.append({s: (out / "raw" / f"{s}.jsonl").read_bytes() for s in ("train", "val", "test")})
        assert runs[0] == runs[1], source


def test_bad_lines_are_skipped_and_counted(tmp_path):
    good = rows_n(5)
    lines = [json.dumps(good[0]).encode(), b"",
             json.dumps({"prompt": "no messages"}).encode(),
             json.dumps(good[1], ensure_ascii=False).encode(),
             b'{"prompt": "bad bytes \xff\xfe", "messages": []}',
             json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(),
             b"not json at all",
             json.dumps(row("caf\u00e9 \u65e5\u672c \U0001f642"), ensure_ascii=False).encode(),
             json.dumps(good[2]).encode()]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    cfg = data_cfg(source="jsonl", path=str(path), num_samples=2, val_fraction=0.2, test_fraction=0.2)
    data = fetch_ultrachat.run(cfg, tmp_path / "raw", tmp_path / "fetch.json")
    assert data.train + data.val + data.test == in_split_order([good[0], good[1], row("caf\u00e9 \u65e5\u672c \U0001f642"),
                                                                good[2]])
    info = json.loads((tmp_path / "raw" / "fetch_info.json").read_text())
    assert info["skipped"] == {"no_messages": 1, "not_utf8": 1, "non_string_message": 1, "not_json": 1}
    written = [json.loads(x) for x in (tmp_path / "raw" / "train.jsonl").read_text("utf-8").splitlines()]
    assert written == data.train


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


# ---------------------------------------------------------------------------
# chatterbot


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


# ---------------------------------------------------------------------------
# Hub


def test_hub_unreachable_stage_fails_fast_naming_alternatives(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "ultrachat"}}))
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(ROOT / "stages" / "fetch_ultrachat.py")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert time.monotonic() - t0 < 30
    assert p.returncode == 2, p.stderr
    assert "chatterbot" in p.stderr and "jsonl" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "data").exists()


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


def test_fetch_stage_runs_without_torch(tmp_path):
    """The first stage of every run (and of every test pipeline) skips torch's import: it only
    reads, cleans and counts tokens."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "chatterbot", "num_samples": 4,
                                                                   "max_seq_length": 32}}))
    probe = ("import runpy, sys; sys.argv = ['fetch_ultrachat.py']\n"
             f"try:\n    runpy.run_path({str(ROOT / 'stages' / 'fetch_ultrachat.py')!r}, run_name='__main__')\n"
             "finally:\n    print('torch imported:', 'torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "torch imported: False" in p.stdout
    assert json.loads((tmp_path / "metrics/fetch.json").read_text())["train_rows"] > 0


# ---------------------------------------------------------------------------
# tokenize_cache


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


def test_unseen_type_frac():
    train = from_lists([[1, 2, 3], [3, 4]])
    val = from_lists([[4, 5], [6, 1, 1]])
    assert tokenize.unseen_type_frac(train, val) == pytest.approx(2 / 4)  # 5, 6 of 1, 4, 5, 6


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
