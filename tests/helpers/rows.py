"""Conversation rows in the ultrachat_200k schema, as the data tests write them into source files."""
from __future__ import annotations

import json
from pathlib import Path

from newllm.config import Config, from_dict
from newllm.data import fetch


def data_cfg(seed: int = 0, **data) -> Config:
    """A config whose ``data`` section is checked as params.yaml's would be; no test-row floor
    unless a test asks for one (the cuts stay proportional)."""
    return from_dict({"seed": seed, "data": {"min_test_rows": 1, **data}}, sections=["data"])


def row(*contents, prompt_id: str | None = None) -> dict:
    """A conversation of alternating user and assistant messages."""
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": c} for i, c in enumerate(contents)]
    return fetch.make_row(msgs, prompt_id=prompt_id)


def rows_n(n: int) -> list:
    return [row(f"question {i}", f"answer {i}") for i in range(n)]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def in_split_order(rows: list, split_seed: int = 0) -> list:
    """The rows in the random order of ``split_seed``: sorted by their keyed hash (the oracle of
    fetch.first_in_order's streaming heap)."""
    return sorted(rows, key=lambda r: fetch.split_key(r["prompt_id"], split_seed))
