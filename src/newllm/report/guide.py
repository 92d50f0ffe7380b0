"""The original guide's figures (docs/metrics.md, "Terms"): its Phase 1 success criteria, which
decide PASS or FAIL, and its claimed results, which are only a reference. A measured figure is
placed against a claimed range in neutral words (within, below, above): better and worse are
kept for the paired comparisons on the test split."""
from __future__ import annotations

from newllm.report.inputs import Inputs
from newllm.values import fmt_range, get, num

GUIDE_PHASE1 = {"train_er_pct": (88.0, 90.0), "val_er_pct": (80.0, 83.0), "cvfp_loss": (0.0015, 0.002),
                "passes": (3, 5)}
GUIDE_PHASE2 = {"loss": (4.5, 5.5), "ppl": (90.0, 250.0), "acc_pct": (10.0, 15.0)}
# The original guide's success criteria, used when metrics/validate.json does not record them.
DEFAULT_THRESHOLDS = {"min_train_er_pct": 85.0, "min_val_er_pct": 75.0, "max_final_diff": 0.001}


def thresholds(inp: Inputs) -> dict:
    """The criteria's thresholds ({min_train_er_pct, min_val_er_pct, max_final_diff}) and
    ``recorded``: whether metrics/validate.json holds them (else the guide's defaults are shown)."""
    th = get(inp.validate, "thresholds")
    th = th if isinstance(th, dict) else {}
    out: dict = {}
    for key, default in DEFAULT_THRESHOLDS.items():
        v = num(th.get(key))
        out[key] = default if v is None else v
    out["recorded"] = all(num(th.get(k)) is not None for k in DEFAULT_THRESHOLDS)
    return out


def against_claim(value: float | None, lo: float, hi: float, unit: str = "") -> str | None:
    """"within / below / above the guide's claimed <range>"; None without a value."""
    if value is None:
        return None
    where = "within" if lo <= value <= hi else ("below" if value < lo else "above")
    return f"{where} the guide's claimed {fmt_range(lo, hi, unit)}"
