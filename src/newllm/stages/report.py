"""Stage report: the self-contained HTML report of the run (see newllm.html.run_report)."""
from __future__ import annotations

import logging
from pathlib import Path

from newllm import paths
from newllm.config import STAGE_SECTIONS, Config
from newllm.html.run_report import build_report
from newllm.io import atomic_write_text

log = logging.getLogger(__name__)
SECTIONS = STAGE_SECTIONS["report"]


def run(cfg: Config, root: Path | str = ".") -> Path:
    """Write ``reports/report.html`` (atomically) under ``root`` and print its absolute path."""
    root = Path(root)
    text = build_report(root, cfg.report, cfg.seed)
    out = root / paths.REPORT
    atomic_write_text(out, text)
    out = out.resolve()
    log.info("report written: %s (%d bytes)", out, len(text.encode("utf-8")))
    print(out, flush=True)
    return out
