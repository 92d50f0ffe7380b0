"""Stage fetch_ultrachat: conversations (train, validation, test) into data/raw/ and metrics/fetch.json."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from newllm import paths, pipeline
from newllm.config import Config
from newllm.data.fetch import RawData, fetch, reasons_text, write_raw
from newllm.io import atomic_write_json

log = logging.getLogger(__name__)
SECTIONS = pipeline.sections("fetch_ultrachat")

def run(cfg: Config, out_dir: Path = paths.RAW_TRAIN.parent,
        metrics_path: Path = paths.FETCH_METRICS) -> RawData:
    """Fetch and write ``out_dir``; ``metrics_path`` gets the counts, wall time and peak RSS
    (kept out of ``data/raw`` so that the DVC output stays a pure function of the params)."""
    from newllm.memory import peak_rss_mb

    t0 = time.perf_counter()
    data = fetch(cfg.data)
    if data.skipped:
        if cfg.data.source == "chatterbot":  # the bundled corpus repeats dialogs and has a few malformed ones
            log.info("the chatterbot corpus: %d dialogs skipped as usual (%s)", sum(data.skipped.values()),
                     reasons_text(data.skipped))
        else:
            log.warning("skipped %d source rows (%s)", sum(data.skipped.values()), reasons_text(data.skipped))
    info = write_raw(data, cfg.data.source, out_dir)
    atomic_write_json(metrics_path, {**{k: v for k, v in info.items() if k != "skipped"},
                                     "skipped_rows": sum(data.skipped.values()),
                                     "time_s": round(time.perf_counter() - t0, 2), "peak_rss_mb": peak_rss_mb()})
    log.info("read data.source %s (%s): %d training, %d validation and %d test conversations into %s",
             cfg.data.source, data.origin, len(data.train), len(data.val), len(data.test), out_dir)
    return data
