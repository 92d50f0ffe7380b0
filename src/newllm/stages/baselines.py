"""Stage baselines: smoothed unigram, Kneser-Ney bigram and trigram, majority token (and the old
add-one figures), scored on Phase 2's validation pairs, into metrics/baselines.json. Depends
only on the token caches and ``phase1.stream`` (which defines the pairs), so no Phase 1 or
Phase 2 sweep recomputes it."""
from __future__ import annotations

import logging
import time

from newllm import paths
from newllm.baselines.ngram import evaluate
from newllm.config import STAGE_SECTIONS, Config
from newllm.data.tokens import load_token_set
from newllm.errors import DataError
from newllm.io import atomic_write_json, read_json
from newllm.memory import peak_rss_mb

log = logging.getLogger(__name__)
SECTIONS = STAGE_SECTIONS["baselines"]


def run(cfg: Config) -> dict:
    t0 = time.perf_counter()
    train = load_token_set(paths.TOKENS_TRAIN)
    val = load_token_set(paths.TOKENS_VAL)
    # the uniform floor is over the tokenizer's vocabulary (metrics/data.json)
    vocab = int(read_json(paths.DATA_METRICS, "tokenize metrics").get("vocab_size", 0))
    if vocab <= max(int(train.tokens.max()), int(val.tokens.max())):
        raise DataError(f"{paths.DATA_METRICS} gives a vocabulary of {vocab} tokens, smaller than the token "
                        f"ids in the caches; re-run `dvc repro tokenize_cache`")
    metrics = {**evaluate(train.tokens, train.offsets, val.tokens, val.offsets, cfg.phase1.stream, vocab),
               "vocab_size": vocab, "stream": cfg.phase1.stream}
    metrics.update(time_s=round(time.perf_counter() - t0, 2), peak_rss_mb=peak_rss_mb())
    atomic_write_json(paths.BASELINES_METRICS, metrics)
    log.info("baselines on %d validation pairs: Kneser-Ney trigram ppl %.1f, bigram %.1f, unigram %.1f, "
             "majority acc %.2f%% (%.1fs)", metrics["val_pairs"], metrics["kn_trigram"]["ppl"],
             metrics["kn_bigram"]["ppl"], metrics["unigram"]["ppl"], 100 * metrics["majority"]["acc"],
             metrics["time_s"])
    return metrics
