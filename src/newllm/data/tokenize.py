"""Token caches of the raw conversations (what the tokenize_cache stage runs).

Text of a conversation = its message contents joined by newlines, tokenized with GPT-2's
BPE (no special tokens added) and truncated to ``data.max_seq_length`` tokens. Writes
``data/tokens/{train,val}.pt`` (``newllm.data.tokens`` format),
``data/tokenizer/tokenizer.json`` (a ``tokenizers`` JSON, loadable offline; the tokenizer
itself is ``newllm.data.tokenizer``) and ``metrics/data.json``.
"""
from __future__ import annotations

import json
import logging
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from newllm.data.tokens import TokenSet
from newllm.errors import DataError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------
# token caches


def conversation_text(row: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in row["messages"])


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows fetch_ultrachat wrote; a damaged file is a DataError naming the line."""
    if not path.is_file():
        raise DataError(f"{path} is missing: run `dvc repro fetch_ultrachat`")
    fix = f"delete {path.parent} and run `dvc repro fetch_ultrachat`"
    rows = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise DataError(f"{path} line {i} is not UTF-8; {fix}") from None
            except ValueError:
                raise DataError(f"{path} line {i} is not JSON; {fix}") from None
            msgs = row.get("messages") if isinstance(row, dict) else None
            if not (isinstance(msgs, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                   for m in msgs)):
                raise DataError(f"{path} line {i} is not a conversation in the ultrachat_200k row schema "
                                f"(messages: a list of {{role, content}}); {fix}")
            rows.append(row)
    return rows


def tokenize_texts(tok: Tokenizer, texts: list[str], max_seq_length: int) -> tuple[TokenSet, int]:
    """Token set of the texts, each truncated to ``max_seq_length``, and how many texts
    were shorter than that."""
    encodings = tok.encode_batch(texts, add_special_tokens=False)
    ids = [e.ids[:max_seq_length] for e in encodings]
    lengths = torch.tensor([len(s) for s in ids], dtype=torch.int64)
    offsets = torch.zeros(len(ids) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    tokens = torch.tensor(list(chain.from_iterable(ids)), dtype=torch.int64)
    return TokenSet(tokens, offsets), int((lengths < max_seq_length).sum())


def unseen_type_frac(train: TokenSet, val: TokenSet) -> float:
    """Fraction of the distinct validation token ids that never occur in training."""
    val_types = torch.unique(val.tokens)
    if val_types.numel() == 0:
        return 0.0
    unseen = ~torch.isin(val_types, torch.unique(train.tokens))
    return round(float(unseen.float().mean()), 6)


def split_metrics(ts: TokenSet, short: int) -> dict[str, int]:
    return {"samples": ts.num_samples, "tokens": ts.num_tokens, "short_samples": short}
