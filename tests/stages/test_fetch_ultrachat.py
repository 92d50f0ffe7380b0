"""Stage fetch_ultrachat (``newllm.stages.fetch_ultrachat``): it writes the splits whatever the
training seed, skips bad source rows and counts them in its metrics, stops with a clear error on an
unusable source before writing anything, and runs without torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from helpers.chain import assert_clean_error, load_json, run_stage, write_params
from helpers.repo import ROOT
from helpers.rows import data_cfg, in_split_order, row, rows_n, write_jsonl
from newllm.errors import DataError
from newllm.stages import fetch_ultrachat

FETCH, TOK = "fetch_ultrachat", "tokenize_cache"


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


@pytest.mark.parametrize("data, needle", [
    pytest.param({"source": "jsonl", "path": "no/such/file.jsonl"}, "give a JSONL or Parquet file", id="no-file"),
    pytest.param({"source": "chatterbot", "num_samples": 5000}, "Use data.num_samples <=", id="too-few-samples"),
])
def test_a_source_that_cannot_give_the_rows_stops_before_writing(tmp_path, monkeypatch, data, needle):
    """A missing file, or a corpus too small for data.num_samples: a DataError that says what to
    change, and no file written."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=needle):
        fetch_ultrachat.run(data_cfg(**data), tmp_path / "raw", tmp_path / "fetch.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
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


@pytest.mark.slow
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


def _row(text: str) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": text},
                                    {"role": "assistant", "content": text + " indeed"}]}).encode()


@pytest.mark.slow
def test_bad_source_rows_are_skipped_and_counted_in_the_metrics(tmp_path):
    good = [_row(f"Sentence number {i} of the local file.") for i in range(5)]
    lines = [good[0],
             b'{"prompt": "no messages at all"}',
             json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(),
             b'{"messages": [{"role": "user", "content": "latin-1 bytes \xe9\xff"}]}',
             good[1],
             b"this line is not json",
             json.dumps({"messages": [{"role": "user", "content": "   "}]}).encode(),
             json.dumps({"messages": "not a list"}).encode(),
             good[2], good[3], good[4]]
    (tmp_path / "chats.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    write_params(tmp_path, {"data": {"source": "jsonl", "path": "chats.jsonl", "num_samples": 3,
                                     "val_fraction": 0.2, "min_test_rows": 1, "max_seq_length": 16}})
    for stage in (FETCH, TOK):
        r = run_stage(tmp_path, stage)
        assert r.returncode == 0, repr(r)
    counts = {"no_messages": 2, "non_string_message": 1, "not_utf8": 1, "not_json": 1, "empty_text": 1}
    assert load_json(tmp_path / "data/raw/fetch_info.json")["skipped"] == counts
    m = load_json(tmp_path / "metrics/data.json")
    assert m["skipped_rows"] == {"total": 6, **counts}
    assert m["train"]["samples"] == 3 and m["val"]["samples"] == 1 and m["test"]["samples"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("content, needles", [
    pytest.param(b"", ["chats.jsonl is empty: no rows at all"], id="empty-file"),
    pytest.param(b'{"prompt": "x"}\n\xff\xfe\n[1, 2]\n',
                 ["only 0 usable rows (3 rows skipped: no_messages 2, not_utf8 1)", "data.num_samples"],
                 id="no-usable-row"),
])
def test_unusable_source_file_is_a_clear_error(tmp_path, content, needles):
    (tmp_path / "chats.jsonl").write_bytes(content)
    write_params(tmp_path, {"data": {"source": "jsonl", "path": "chats.jsonl"}})
    r = run_stage(tmp_path, FETCH)
    assert_clean_error(r, *needles)
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_damaged_parquet_is_a_clear_error(tmp_path):
    (tmp_path / "chats.parquet").write_bytes(b"PAR1" + os.urandom(2048))
    write_params(tmp_path, {"data": {"source": "jsonl", "path": "chats.parquet"}})
    r = run_stage(tmp_path, FETCH)
    assert_clean_error(r, "chats.parquet cannot be read as Parquet", "ultrachat_200k row schema")
    assert not (tmp_path / "data").exists()
