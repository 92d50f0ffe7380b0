"""Stage report: the test comparison of the run's language models (``metrics/comparison.json``,
``newllm.compare``), the self-contained HTML report and the headline metrics file ``metrics.json``,
the figures DVC's own views show. The stage gathers the report's data (the stages' outputs, the
comparison, text samples of the kept checkpoint: ``newllm.report``); ``newllm.html.run_report``
only renders it."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from newllm import paths, pipeline
from newllm.compare import compare
from newllm.config import Config
from newllm.html.run_report import build_report
from newllm.io import atomic_write_json, atomic_write_text
from newllm.report.build import guarded, report_data
from newllm.report.inputs import Inputs
from newllm.report.samples import text_samples

log = logging.getLogger(__name__)
SECTIONS = pipeline.sections("report")

# The headline (key, metrics file, dotted key there, digits, scale). `dvc metrics show` prints one
# column per key, alphabetically, and rounds every value to 5 decimals: the headline holds the
# figures that decide a run and fits 120 columns with both verdicts at their widest ("not
# distinguishable"): Phase 1's verdict on the validation split (the original guide's criteria;
# final_diff in millionths, so that the rounding keeps it), and CVFP's test perplexity with its
# verdicts against the strongest n-gram model and the transformer. Every other figure is in the
# detailed files (`python -m newllm.show`).
HEADLINE = [
    ("passed", paths.VALIDATE_METRICS, "passed", None, 1),
    ("val_er", paths.VALIDATE_METRICS, "val.er_pct", 4, 1),
    ("final_diff_e6", paths.VALIDATE_METRICS, "final_diff", 4, 1e6),
    ("test_ppl", paths.COMPARISON, "models.cvfp.ppl", 2, 1),
    ("vs_ngram", paths.COMPARISON, "vs_ngram", None, 1),
    ("vs_tf", paths.COMPARISON, "cvfp_vs.transformer.verdict", None, 1),
]
TIMED = tuple(s.metrics for s in pipeline.STAGES if s.timed)


def _get(obj: dict, dotted: str):
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def headline(root: Path) -> dict:
    """metrics.json: the headline figures of whatever stages have run (a missing one is left out)
    and ``minutes``, the summed wall time of the stages before the report."""
    files: dict = {}
    for f in {f for _, f, _, _, _ in HEADLINE} | set(TIMED):
        try:
            files[f] = json.loads((root / f).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            files[f] = {}
    out: dict = {}
    for key, f, dotted, digits, scale in HEADLINE:
        v = _get(files[f], dotted)
        if isinstance(v, (bool, str)) or v is None:
            if v is not None:
                out[key] = v
        elif isinstance(v, (int, float)) and math.isfinite(v):
            out[key] = round(float(v) * scale, digits) if digits is not None else v
    seconds = [_get(files[f], "time_s") for f in TIMED]
    out["minutes"] = round(sum(s for s in seconds if isinstance(s, (int, float))) / 60, 1)
    return out


def gather(cfg: Config, root: Path) -> tuple[dict, dict]:
    """The test comparison (what metrics/comparison.json holds) and the report's data."""
    comparison = compare(root, cfg.report.bootstrap_resamples, cfg.report.bootstrap_seed)
    ngram = comparison["strongest_ngram"]
    comparison["vs_ngram"] = comparison["cvfp_vs"].get(ngram, {}).get("verdict") if ngram else None
    samples = guarded("generation", lambda: text_samples(root, cfg.report, cfg.seed))
    return comparison, report_data(Inputs.load(root), comparison, samples, cfg.seed)


def run(cfg: Config, root: Path | str = ".") -> Path:
    """Write ``metrics/comparison.json``, ``reports/report.html`` and ``metrics.json`` (atomically)
    under ``root``; print the report's absolute path."""
    root = Path(root)
    comparison, data = gather(cfg, root)
    atomic_write_json(root / paths.COMPARISON, comparison)
    text = build_report(data)
    atomic_write_json(root / paths.HEADLINE, headline(root), sort_keys=False)
    out = root / paths.REPORT
    atomic_write_text(out, text)
    out = out.resolve()
    print(out, flush=True)
    return out
