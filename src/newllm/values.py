"""Reading and wording the figures of the metrics files: dotted look-ups, finite numbers, compact
number formats and CSV columns. The run report's data (``newllm.report``) and every HTML view
(``newllm.html``) share them, so a figure reads the same wherever it appears."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

NA = "not available"


def get(d: Any, dotted: str, default: Any = None) -> Any:
    """``d["a.b"]`` if that flat key exists, else ``d["a"]["b"]``; ``default`` when absent."""
    if not isinstance(d, dict):
        return default
    if dotted in d:
        return d[dotted]
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur


def num(v: Any) -> float | None:
    """A finite float, or None (bools, strings, NaN and inf are not numbers here)."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt(v: Any, digits: int = 4) -> str:
    """Compact, readable number formatting; None -> an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def fmt_pct(v: Any, digits: int = 2) -> str:
    f = num(v)
    return "—" if f is None else f"{f:.{digits}f}%"


def fmt_range(lo: float, hi: float, unit: str = "") -> str:
    return f"{fmt(lo)}–{fmt(hi)}{unit}"


def fmt_signed(v: Any, digits: int = 3) -> str:
    """A difference with its sign always shown ("+0.036", "−1.2"), so its direction reads at a glance."""
    f = num(v)
    if f is None:
        return "—"
    return ("−" if f < 0 else "+") + fmt(abs(f), digits)


def fmt_interval(lo: Any, hi: Any, signed: bool = False) -> str:
    """"[lo, hi]" in the digits of its estimate (each end signed for a difference, as ``fmt_signed``);
    an em dash when an end is missing."""
    if num(lo) is None or num(hi) is None:
        return "—"
    show = fmt_signed if signed else (lambda v: fmt(num(v)))
    return f"[{show(lo)}, {show(hi)}]"


def fmt_change(pct: float) -> str:
    """A relative change in percent with its sign ("−12%", "+8.3%"), so its direction reads at a glance."""
    mag = abs(pct)
    digits = f"{mag:.0f}" if mag >= 10 else (f"{mag:.1f}" if mag >= 0.1 else f"{mag:.2g}")
    return ("−" if pct < 0 else "+") + digits + "%"


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 100_000 else f"{n:,}"


def read_csv_columns(path: Path) -> dict[str, list[float | None]]:
    """CSV -> {column: values}; empty or non-numeric cells become None."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols: dict[str, list[float | None]] = {name: [] for name in (reader.fieldnames or [])}
        for row in reader:
            for name in cols:
                cell = row.get(name)
                cols[name].append(num(cell) if cell not in (None, "") else None)
    return cols


def acc_scale(*values: Any) -> float:
    """100 when accuracies are fractions (all <= 1), 1 when they are already percentages."""
    nums = [f for f in (num(v) for v in values) if f is not None]
    return 1.0 if any(f > 1.0 for f in nums) else 100.0


def flatten(d: Any, prefix: str) -> dict:
    """Nested dict -> {prefix.a.b: scalar}; lists and dicts inside are dropped."""
    out: dict = {}
    if not isinstance(d, dict):
        return out
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        elif not isinstance(v, (list, tuple)):
            out[key] = v
    return out
