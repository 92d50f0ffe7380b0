"""Conversations in the ultrachat_200k row schema (what the fetch_ultrachat stage runs), cut into three
disjoint splits: ``num_samples`` training rows, ``num_val`` validation rows (what every choice
is made on) and ``num_test`` test rows (what every language-model figure is reported on).

Every source ends as rows ``{"prompt", "prompt_id", "messages": [{"role", "content"}]}``
written to ``data/raw/{train,val,test}.jsonl`` plus ``data/raw/fetch_info.json`` (origin, row
counts, skipped rows by reason).

Sources (``data.source``):

- ``jsonl``: ``data.path``, a JSONL or Parquet file in the row schema, streamed through
  ``datasets``. Rows are put in a random order fixed by ``data.split_seed`` (sorted by
  ``split_key``, a keyed hash of their ``prompt_id``), so the cut does not depend on how the
  file is ordered (files are often grouped by source or language); the first ``num_samples``
  rows of that order train, the next ``num_val`` validate, the next ``num_test`` test. A
  ``prompt_id`` seen before is skipped (``duplicate_prompt_id``): the splits are disjoint by
  conversation. One pass over the file holds only the rows it keeps.
- ``ultrachat``: ``data.hub_dataset`` streamed; the first ``num_samples`` usable rows of
  ``data.train_split`` train. Validation and test rows come from ``data.val_split``: a row
  is a test row when its ``split_key`` is odd, else a validation row, until both have
  enough. Only those rows are read.
- ``chatterbot``: the English dialogs of the ``chatterbot-corpus`` package. Distinct
  dialogs are read from the files in sorted name order, then shuffled with
  ``random.Random(data.split_seed)`` (so every split mixes all topics), and consecutive
  dialogs are packed into one sample until its text has at least ``max_seq_length`` GPT-2
  tokens. The first ``num_samples`` packs train, the next ``num_val`` validate, the next
  ``num_test`` test (disjoint dialogs). At 128 tokens the corpus gives about 170 packs.

Rows without messages, with a non-string role or content, that are not JSON or not
UTF-8 are skipped, counted by reason and logged.
"""
from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import yaml

from newllm.config import DataConfig
from newllm.data.source import chatterbot_dir
from newllm.data.tokenizer import build_tokenizer
from newllm.errors import DataError
from newllm.io import atomic_write_json, atomic_write_text
from newllm.paths import SPLITS

log = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 10.0
OFFLINE_HINT = ("Offline alternatives: set data.source: chatterbot (the bundled corpus) or "
                "data.source: jsonl with data.path: a local JSONL/Parquet file in the "
                "ultrachat_200k row schema.")


class _SkipRow(Exception):
    """A source row that cannot become a conversation; ``reason`` is its count key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class RawData:
    train: list[dict]
    val: list[dict]
    test: list[dict]
    origin: str
    skipped: Counter[str] = field(default_factory=Counter)

    def split(self, name: str) -> list[dict]:
        return getattr(self, name)


def split_key(prompt_id: str, split_seed: int) -> int:
    """The place of a conversation in the random order of ``split_seed``: a 64-bit keyed hash
    of its ``prompt_id`` (the same row gets the same key wherever it stands in the file)."""
    digest = hashlib.blake2b(prompt_id.encode("utf-8"), digest_size=8, key=str(split_seed).encode()).digest()
    return int.from_bytes(digest, "big")


def _needed(cfg: DataConfig) -> int:
    return cfg.num_samples + cfg.num_val + cfg.num_test


def _cut(rows: list[dict], cfg: DataConfig, origin: str, skipped: Counter[str]) -> RawData:
    """Train, validation and test rows: consecutive runs of ``rows``."""
    a, b = cfg.num_samples, cfg.num_samples + cfg.num_val
    return RawData(rows[:a], rows[a:b], rows[b:_needed(cfg)], origin, skipped)


def _rows_wanted(cfg: DataConfig) -> str:
    return (f"data.num_samples={cfg.num_samples} needs {cfg.num_samples} training + {cfg.num_val} validation + "
            f"{cfg.num_test} test rows")


# ---------------------------------------------------------------------------
# rows


def make_row(messages: list[dict[str, str]], prompt: str | None = None,
             prompt_id: str | None = None) -> dict[str, Any]:
    """A row in the ultrachat_200k schema; prompt defaults to the first message and
    prompt_id to the sha256 of the prompt (the UltraChat convention)."""
    if prompt is None:
        prompt = messages[0]["content"]
    if prompt_id is None:
        prompt_id = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    return {"prompt": prompt, "prompt_id": prompt_id, "messages": messages}


def _is_text(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")  # lone surrogates (from "\udc80"-style JSON escapes) cannot be
    except UnicodeEncodeError:  # written or tokenized
        return False
    return True


def clean_row(raw: Any) -> dict[str, Any]:
    """The row-schema form of one source row; raises _SkipRow with the reason."""
    messages = raw.get("messages") if isinstance(raw, dict) else None
    if not isinstance(messages, list) or not messages:
        raise _SkipRow("no_messages")
    if not all(isinstance(m, dict) and _is_text(m.get("role")) and _is_text(m.get("content"))
               for m in messages):
        raise _SkipRow("non_string_message")
    if not any(m["content"].strip() for m in messages):
        raise _SkipRow("empty_text")
    prompt, prompt_id = raw.get("prompt"), raw.get("prompt_id")
    return make_row([{"role": m["role"], "content": m["content"]} for m in messages],
                    prompt if _is_text(prompt) else None,
                    prompt_id if _is_text(prompt_id) else None)


def _usable_rows(records: Iterable[Any], skipped: Counter[str], what: str) -> Iterator[dict]:
    for i, record in enumerate(records):
        try:
            yield clean_row(record)
        except _SkipRow as s:
            skipped[s.reason] += 1
            log.warning("skipping row %d of %s: %s", i, what, s.reason)


def take_rows(records: Iterable[Any], n: int, skipped: Counter[str], what: str) -> list[dict]:
    """The first ``n`` usable rows of a stream; reads no further than needed."""
    return list(islice(_usable_rows(records, skipped, what), n))


def _check_enough(rows: list[dict], needed: int, skipped: Counter[str], what: str,
                  remedy: str) -> None:
    if len(rows) >= needed:
        return
    if not rows and not skipped:
        raise DataError(f"{what} is empty: no rows at all. {remedy}")
    skip = f" ({sum(skipped.values())} rows skipped: {reasons_text(skipped)})" if skipped else ""
    raise DataError(f"{what} has only {len(rows)} usable rows{skip}, but {needed} are needed. "
                    f"{remedy}")


def reasons_text(skipped: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(skipped.items()))


# ---------------------------------------------------------------------------
# local file (JSONL or Parquet) and Hub, both streamed through `datasets`


def _parse_jsonl_line(record: dict[str, str]) -> Any:
    """Lines are read as latin-1, a lossless byte<->char map, so that a line that is not
    UTF-8 is skipped on its own instead of failing the whole file."""
    try:
        line = record["text"].encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise _SkipRow("not_utf8") from None
    try:
        return json.loads(line)
    except ValueError:
        raise _SkipRow("not_json") from None


def _parsed_lines(records: Iterable[dict[str, str]], skipped: Counter[str],
                  what: str) -> Iterator[Any]:
    for i, record in enumerate(records):
        if not record["text"].strip():
            continue
        try:
            yield _parse_jsonl_line(record)
        except _SkipRow as s:
            skipped[s.reason] += 1
            log.warning("skipping line %d of %s: %s", i + 1, what, s.reason)


def stream_local_file(path: Path, skipped: Counter[str]) -> Iterable[Any]:
    """Rows of a JSONL or Parquet file, streamed with ``datasets``."""
    import datasets

    if path.suffix.lower() == ".parquet":
        return datasets.load_dataset("parquet", data_files=str(path), split="train", streaming=True)
    lines = datasets.load_dataset("text", data_files=str(path), split="train", streaming=True,
                                  encoding="latin-1")
    return _parsed_lines(lines, skipped, str(path))


def first_in_order(rows: Iterable[dict], n: int, split_seed: int, skipped: Counter[str]) -> list[dict]:
    """The first ``n`` distinct conversations of the random order of ``split_seed`` (smallest
    ``split_key``), in that order; holds at most ``n`` rows while it streams."""
    heap: list[tuple[int, int, dict]] = []  # (-key, -i, row): the kept row with the largest key on top
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if row["prompt_id"] in seen:
            skipped["duplicate_prompt_id"] += 1
            continue
        seen.add(row["prompt_id"])
        item = (-split_key(row["prompt_id"], split_seed), -i, row)
        if len(heap) < n:
            heapq.heappush(heap, item)
        elif n and item[:2] > heap[0][:2]:
            heapq.heapreplace(heap, item)
    return [row for _, _, row in sorted(heap, key=lambda t: (-t[0], -t[1]))]


def fetch_local(cfg: DataConfig) -> RawData:
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise DataError(f"data.path {cfg.path!r} is not a file (resolved: {path.resolve()}); "
                        f"give a JSONL or Parquet file in the ultrachat_200k row schema")
    skipped: Counter[str] = Counter()
    try:
        rows = first_in_order(_usable_rows(stream_local_file(path, skipped), skipped, str(path)), _needed(cfg),
                              cfg.split_seed, skipped)
    except DataError:
        raise
    except Exception as e:  # pyarrow/datasets on a damaged or non-Parquet file, an unreadable file, ...
        raise DataError(f"data.path {path} cannot be read as "
                        f"{'Parquet' if path.suffix.lower() == '.parquet' else 'JSONL'} "
                        f"({type(e).__name__}: {_first_line(e)}); give a JSONL or Parquet file in the "
                        f"ultrachat_200k row schema") from None
    _check_enough(rows, _needed(cfg), skipped, f"data.path {path}",
                  f"{_rows_wanted(cfg)}; lower data.num_samples or use a larger file.")
    return _cut(rows, cfg, cfg.path, skipped)


def _probe_hub(repo_id: str) -> None:
    """Fail within seconds when the Hub is unreachable (datasets retries for ~25 s)."""
    import huggingface_hub

    try:
        huggingface_hub.HfApi().dataset_info(repo_id, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as e:  # offline mode, DNS, timeout, HTTP errors: all mean "cannot stream"
        raise DataError(f"cannot reach dataset {repo_id!r} on the Hugging Face Hub "
                        f"({type(e).__name__}: {_first_line(e)}). {OFFLINE_HINT}") from None


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else ""


def _stream_hub_split(cfg: DataConfig, split: str, n: int) -> tuple[list[dict], Counter[str]]:
    import datasets

    what = f"{cfg.hub_dataset} split {split}"
    skipped: Counter[str] = Counter()
    try:
        stream = datasets.load_dataset(cfg.hub_dataset, split=split, streaming=True)
        rows = take_rows(stream, n, skipped, what)
    except Exception as e:  # network drops mid-stream, unknown split, ...
        raise DataError(f"streaming {what} from the Hugging Face Hub failed "
                        f"({type(e).__name__}: {_first_line(e)}). {OFFLINE_HINT}") from None
    _check_enough(rows, n, skipped, what, "Lower data.num_samples or pick another split.")
    return rows, skipped


def _held_out(cfg: DataConfig) -> tuple[list[dict], list[dict], Counter[str]]:
    """Validation and test rows of ``data.val_split``: a row whose ``split_key`` is odd tests."""
    import datasets

    what = f"{cfg.hub_dataset} split {cfg.val_split}"
    skipped: Counter[str] = Counter()
    parts: dict[int, list[dict]] = {0: [], 1: []}
    want = {0: cfg.num_val, 1: cfg.num_test}
    try:
        for row in _usable_rows(datasets.load_dataset(cfg.hub_dataset, split=cfg.val_split, streaming=True),
                                skipped, what):
            side = split_key(row["prompt_id"], cfg.split_seed) & 1
            if len(parts[side]) < want[side]:
                parts[side].append(row)
            if all(len(parts[k]) >= want[k] for k in parts):
                break
    except Exception as e:  # network drops mid-stream, unknown split, ...
        raise DataError(f"streaming {what} from the Hugging Face Hub failed "
                        f"({type(e).__name__}: {_first_line(e)}). {OFFLINE_HINT}") from None
    for k, name in ((0, "validation"), (1, "test")):
        _check_enough(parts[k], want[k], skipped, f"{what} ({name} rows)", "Lower data.num_samples or pick another split.")
    return parts[0], parts[1], skipped


def fetch_hub(cfg: DataConfig) -> RawData:
    _probe_hub(cfg.hub_dataset)
    train, train_skipped = _stream_hub_split(cfg, cfg.train_split, cfg.num_samples)
    val, test, held_skipped = _held_out(cfg)
    return RawData(train, val, test, cfg.hub_dataset, train_skipped + held_skipped)


# ---------------------------------------------------------------------------
# chatterbot-corpus


def chatterbot_dialogs(corpus_dir: Path, skipped: Counter[str]) -> list[list[str]]:
    """The distinct dialogs (lists of utterances) of the corpus files, in sorted file name
    order. Repeats are dropped (the corpus holds 2,025 dialogs, 898 distinct) so that
    validation never sees a training dialog."""
    files = sorted(corpus_dir.glob("*.yml"))
    if not files:
        raise DataError(f"no chatterbot corpus files in {corpus_dir}; reinstall chatterbot-corpus")
    dialogs: dict[tuple[str, ...], None] = {}
    for f in files:
        try:
            doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise DataError(f"chatterbot corpus file {f} is unreadable ({e}); reinstall "
                            f"chatterbot-corpus") from None
        for dialog in (doc or {}).get("conversations") or []:
            if not (isinstance(dialog, list) and dialog and all(_is_text(u) for u in dialog)):
                skipped["malformed_dialog"] += 1
                log.debug("skipping a dialog of %s: not a list of strings: %.60r", f.name, dialog)
            elif tuple(dialog) in dialogs:
                skipped["duplicate_dialog"] += 1
            else:
                dialogs[tuple(dialog)] = None
    return [list(d) for d in dialogs]


def dialog_messages(dialog: list[str]) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": u}
            for i, u in enumerate(dialog)]


def pack_dialogs(dialogs: Iterable[list[str]], max_seq_length: int,
                 count_tokens: Callable[[str], int], limit: int) -> list[dict]:
    """Up to ``limit`` rows, each of consecutive dialogs whose text (contents joined by
    newlines) has at least ``max_seq_length`` tokens; a short remainder is dropped."""
    rows: list[dict] = []
    messages: list[dict[str, str]] = []
    for dialog in dialogs:
        messages.extend(dialog_messages(dialog))
        if count_tokens("\n".join(m["content"] for m in messages)) >= max_seq_length:
            rows.append(make_row(messages))
            messages = []
            if len(rows) == limit:
                break
    return rows


def _max_num_samples(cfg: DataConfig, available: int) -> int:
    """The largest num_samples whose training, validation and test samples fit in ``available``."""
    return next((n for n in range(available, 0, -1)
                 if _needed(dataclasses.replace(cfg, num_samples=n)) <= available), 0)


def fetch_chatterbot(cfg: DataConfig) -> RawData:
    skipped: Counter[str] = Counter()
    dialogs = chatterbot_dialogs(chatterbot_dir(), skipped)
    random.Random(cfg.split_seed).shuffle(dialogs)
    tokenizer = build_tokenizer("gpt2-offline")
    rows = pack_dialogs(dialogs, cfg.max_seq_length,
                        lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids),
                        _needed(cfg))
    if len(rows) < _needed(cfg):
        most = _max_num_samples(cfg, len(rows))
        fix = f"Use data.num_samples <= {most}" if most else "Lower data.max_seq_length"
        raise DataError(
            f"the chatterbot corpus gives only {len(rows)} samples of >= {cfg.max_seq_length} "
            f"tokens, but {_rows_wanted(cfg)}. {fix}, or use a larger source (data.source: jsonl or ultrachat).")
    return _cut(rows, cfg, "chatterbot-corpus/english", skipped)


# ---------------------------------------------------------------------------
# stage


def fetch(cfg: DataConfig) -> RawData:
    if cfg.source == "ultrachat":
        return fetch_hub(cfg)
    if cfg.source == "jsonl":
        return fetch_local(cfg)
    return fetch_chatterbot(cfg)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_raw(data: RawData, source: str, out_dir: Path) -> dict:
    """The conversations and ``fetch_info.json`` (returned)."""
    for name in SPLITS:
        write_jsonl(out_dir / f"{name}.jsonl", data.split(name))
    info = {"source": source, "origin": data.origin, **{f"{n}_rows": len(data.split(n)) for n in SPLITS},
            "skipped": dict(data.skipped)}
    atomic_write_json(out_dir / "fetch_info.json", info)
    return info
