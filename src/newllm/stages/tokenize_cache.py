"""Stage tokenize_cache: GPT-2 token caches of the three splits, the tokenizer and metrics/data.json."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from newllm import paths, pipeline
from newllm.config import Config
from newllm.data.tokenize import conversation_text, read_rows, split_metrics, tokenize_texts, unseen_type_frac
from newllm.data.tokenizer import build_tokenizer, save_tokenizer
from newllm.data.tokens import save_token_set
from newllm.errors import DataError
from newllm.io import atomic_write_json, read_json
from newllm.paths import SPLITS

log = logging.getLogger(__name__)
SECTIONS = pipeline.sections("tokenize_cache")

def run(cfg: Config, raw_dir: Path = paths.RAW_TRAIN.parent,
        tokens_dir: Path = paths.TOKENS_TRAIN.parent, tokenizer_dir: Path = paths.TOKENIZER_DIR,
        metrics_path: Path = paths.DATA_METRICS) -> dict[str, Any]:
    """Tokenize ``raw_dir``'s conversations; returns the metrics it writes."""
    from newllm.memory import peak_rss_mb

    t0 = time.perf_counter()
    fetch_info = read_json(raw_dir / "fetch_info.json", "fetch info")
    if not (isinstance(fetch_info, dict) and isinstance(fetch_info.get("source"), str)
            and isinstance(fetch_info.get("skipped"), dict)):
        raise DataError(f"fetch info {raw_dir / 'fetch_info.json'} lacks source/skipped; delete {raw_dir} "
                        f"and run `dvc repro fetch_ultrachat`")
    texts = {}
    for split in SPLITS:  # every input checked before any work or write
        texts[split] = [conversation_text(r) for r in read_rows(raw_dir / f"{split}.jsonl")]
        if not texts[split]:
            raise DataError(f"{raw_dir / f'{split}.jsonl'} holds no conversations; check data.* "
                            f"params and run `dvc repro fetch_ultrachat`")
    tok = build_tokenizer(cfg.data.tokenizer)
    max_len = cfg.data.max_seq_length
    sets = {}
    metrics: dict[str, Any] = {
        "source": fetch_info["source"], "tokenizer": cfg.data.tokenizer, "max_seq_length": max_len,
        "vocab_size": tok.get_vocab_size(),
        "skipped_rows": {"total": sum(fetch_info["skipped"].values()), **fetch_info["skipped"]}}
    for split in SPLITS:
        sets[split], short = tokenize_texts(tok, texts[split], max_len)
        if sets[split].num_tokens < 2:
            raise DataError(f"{raw_dir / f'{split}.jsonl'} gives {sets[split].num_tokens} token; every later "
                            f"stage needs at least 2 per split: raise data.num_samples, data.val_fraction or data.test_fraction, "
                            f"or use longer conversations")
        metrics[split] = split_metrics(sets[split], short)
    for split in SPLITS:
        save_token_set(sets[split], Path(tokens_dir) / f"{split}.pt")
    for split in ("val", "test"):
        metrics[split]["unseen_type_frac"] = unseen_type_frac(sets["train"], sets[split])
    save_tokenizer(tok, tokenizer_dir)
    metrics["time_s"] = round(time.perf_counter() - t0, 2)
    metrics["peak_rss_mb"] = peak_rss_mb()
    atomic_write_json(metrics_path, metrics)
    log.info("tokenized %s", ", ".join(f"{metrics[s]['samples']} {s} samples ({metrics[s]['tokens']} tokens)"
                                       for s in SPLITS))
    return metrics
