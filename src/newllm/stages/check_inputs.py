"""Stage check_inputs: the first stage of every run, and one that always runs (``always_changed``).

1. It checks the whole ``params.yaml`` (every section, unknown and misspelt keys included)
   before any other stage runs, so a bad value stops ``dvc repro`` before DVC removes any
   stage's previous outputs.
2. It writes ``data/inputs.json``, the fingerprint of what ``fetch_ultrachat`` reads
   (``newllm.data.source.fingerprint``): for ``data.source: jsonl`` the file's size and sha256,
   so editing the file re-runs the pipeline from ``fetch_ultrachat``; for the other sources what
   identifies them. The file changes only when the data does, so nothing downstream re-runs
   for nothing.
"""
from __future__ import annotations

import logging

from newllm import paths, pipeline
from newllm.config import Config
from newllm.data.source import fingerprint
from newllm.io import atomic_write_json

log = logging.getLogger(__name__)
SECTIONS = pipeline.sections("check_inputs")


def run(cfg: Config) -> dict:
    if cfg.data.path and cfg.data.source != "jsonl":
        log.warning("data.path is set (%r) but data.source is %r, which does not read it (only jsonl does)",
                    cfg.data.path, cfg.data.source)
    info = {"params": "valid", "source": fingerprint(cfg.data)}
    atomic_write_json(paths.INPUTS, info)
    log.info("params.yaml is valid; data source: %s", info["source"]["what"])
    return info
