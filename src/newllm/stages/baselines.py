"""Stage baselines: smoothed unigram, Kneser-Ney bigram and trigram, modified Kneser-Ney trigram and
the majority token, fitted on the training pairs and scored on the validation and test pairs,
into metrics/baselines.json (test figures under ``test``) and each test conversation's summed
cross-entropy into metrics/rows/baselines.csv. Depends only on the token caches and
``phase1.stream`` (which defines the pairs), so no Phase 1 or Phase 2 sweep recomputes it."""
from __future__ import annotations

import logging
import time

from newllm import paths, pipeline
from newllm.baselines.ngram import MODELS, Baselines
from newllm.bootstrap import row_sums, rows_csv
from newllm.config import Config
from newllm.data.tokens import load_token_set, pair_rows
from newllm.errors import DataError
from newllm.io import atomic_write_json, atomic_write_text, read_json
from newllm.memory import peak_rss_mb

log = logging.getLogger(__name__)
SECTIONS = pipeline.sections("baselines")


def run(cfg: Config) -> dict:
    t0 = time.perf_counter()
    sets = {s: load_token_set(p) for s, p in (("train", paths.TOKENS_TRAIN), ("val", paths.TOKENS_VAL),
                                              ("test", paths.TOKENS_TEST))}
    # the uniform floor is over the tokenizer's vocabulary (metrics/data.json)
    vocab = int(read_json(paths.DATA_METRICS, "tokenize metrics").get("vocab_size", 0))
    if vocab <= max(int(ts.tokens.max()) for ts in sets.values()):
        raise DataError(f"{paths.DATA_METRICS} gives a vocabulary of {vocab} tokens, smaller than the token "
                        f"ids in the caches; re-run `dvc repro tokenize_cache`")
    stream = cfg.phase1.stream
    fitted = Baselines(sets["train"].tokens, sets["train"].offsets, stream, vocab)
    val, _ = fitted.scores(sets["val"].tokens, sets["val"].offsets)
    test, test_ce = fitted.scores(sets["test"].tokens, sets["test"].offsets)
    val_pairs, test_pairs = val.pop("pairs"), test.pop("pairs")
    metrics = {**val, "test": test, "train_pairs": fitted.train_pairs, "val_pairs": val_pairs,
               "test_pairs": test_pairs, "vocab_size": vocab, "stream": stream}
    rows = pair_rows(sets["test"].tokens, sets["test"].offsets, stream)
    atomic_write_text(paths.rows_file("baselines"), rows_csv(row_sums(rows, {m: test_ce[m] for m in MODELS})))
    metrics.update(time_s=round(time.perf_counter() - t0, 2), peak_rss_mb=peak_rss_mb())
    atomic_write_json(paths.BASELINES_METRICS, metrics)
    log.info("baselines on %d test pairs: modified Kneser-Ney trigram ppl %.1f, Kneser-Ney trigram %.1f, bigram "
             "%.1f, unigram %.1f, majority acc %.2f%% (%.1fs)", test_pairs, test["mkn_trigram"]["ppl"],
             test["kn_trigram"]["ppl"], test["kn_bigram"]["ppl"], test["unigram"]["ppl"],
             100 * test["majority"]["acc"], metrics["time_s"])
    return metrics
