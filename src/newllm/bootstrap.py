"""Intervals for comparing language models on the test split, resampling conversations.

A model's test loss is ``L = sum_r CE_r / sum_r n_r`` over the test conversations ``r`` (``CE_r``:
the summed cross-entropy of the pairs of conversation ``r``; ``n_r``: their number). The tokens
of one conversation are not independent, so the bootstrap resamples conversations: ``B``
draws of ``R`` conversations with replacement (a ``torch.Generator`` seeded with ``seed``),
``L`` on each, and the percentile interval (``torch.quantile``, linear interpolation) at the
``(1 - level)/2`` and ``(1 + level)/2`` quantiles. A paired difference ``L_a - L_b`` takes
both losses on the same draws. ``verdict`` reads the interval of ``L_cvfp - L_baseline``:
``better`` when it lies below 0, ``worse`` when above, else ``not distinguishable``.

Over several runs (seeds) the interval is that of the mean difference under a two-level
bootstrap: each draw picks the runs with replacement, then the conversations of each picked
run's test split, so the interval holds both the test sampling and the spread between seeds.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from newllm.errors import DataError

LEVEL = 0.95
VERDICTS = ("better", "worse", "not distinguishable")


# ---------------------------------------------------------------------------
# per-conversation sums (what each model's stage writes)


def row_sums(rows: torch.Tensor, pair_ce: dict[str, torch.Tensor]) -> dict[str, list]:
    """Per conversation (the ``rows`` of the pairs, ``newllm.data.tokens.pair_rows``) that has at
    least one pair: its number of pairs and each model's summed CE."""
    rows = rows.long().cpu()
    count = torch.bincount(rows)
    keep = torch.nonzero(count).squeeze(1)
    out: dict[str, list] = {"row": keep.tolist(), "targets": count[keep].tolist()}
    for name, ce in pair_ce.items():
        if ce.numel() != rows.numel():
            raise ValueError(f"{name}: {ce.numel()} pair losses for {rows.numel()} pairs")
        out[name] = torch.zeros(count.numel(), dtype=torch.float64).index_add_(0, rows, ce.double().cpu())[keep].tolist()
    return out


def rows_csv(table: dict[str, list]) -> str:
    names = list(table)
    lines = [",".join(names)]
    for vals in zip(*table.values()):
        lines.append(",".join(repr(float(v)) if isinstance(v, float) else str(v) for v in vals))
    return "\n".join(lines) + "\n"


def read_rows(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``rows_csv`` file as float64 columns; a damaged file is a DataError naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} is missing: run the stage that writes it (dvc repro)")
    return parse_rows(path.read_text(encoding="utf-8"), str(path))


def parse_rows(text: str, where: str) -> dict[str, torch.Tensor]:
    try:
        records = list(csv.DictReader(io.StringIO(text)))
        if not records:
            raise ValueError("no rows")
        return {k: torch.tensor([float(r[k]) for r in records], dtype=torch.float64) for k in records[0]}
    except (ValueError, TypeError, KeyError) as e:
        raise DataError(f"{where} is not a table of per-conversation losses ({e}); re-run the stage that "
                        f"writes it") from None


# ---------------------------------------------------------------------------
# intervals


@dataclass
class Interval:
    estimate: float
    lo: float
    hi: float

    def as_dict(self, digits: int = 6) -> dict:
        return {"estimate": round(self.estimate, digits), "lo": round(self.lo, digits), "hi": round(self.hi, digits)}


def draws(num_rows: int, resamples: int, seed: int) -> torch.Tensor:
    """(resamples, num_rows) conversation indices drawn with replacement."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_rows, (resamples, num_rows), generator=gen)


def _loss(ce: torch.Tensor, n: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return ce[idx].sum(-1) / n[idx].sum(-1)


def _percentiles(values: torch.Tensor, estimate: float, level: float) -> Interval:
    q = torch.quantile(values, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=values.dtype))
    return Interval(estimate, float(q[0]), float(q[1]))


def loss_interval(ce: torch.Tensor, n: torch.Tensor, idx: torch.Tensor, level: float = LEVEL) -> Interval:
    """A model's test loss and its interval over the draws ``idx`` (``draws``)."""
    return _percentiles(_loss(ce, n, idx), float(ce.sum() / n.sum()), level)


def paired_interval(ce_a: torch.Tensor, ce_b: torch.Tensor, n: torch.Tensor, idx: torch.Tensor,
                    level: float = LEVEL) -> Interval:
    """``L_a - L_b`` on the same conversations and its interval over the same draws."""
    est = float(ce_a.sum() / n.sum() - ce_b.sum() / n.sum())
    return _percentiles(_loss(ce_a, n, idx) - _loss(ce_b, n, idx), est, level)


def paired_over_runs(runs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], resamples: int, seed: int,
                     level: float = LEVEL) -> Interval:
    """The mean over runs of ``L_a - L_b`` (each run: ``(ce_a, ce_b, n)`` on its test split) and
    its two-level bootstrap interval: runs drawn with replacement, then each drawn run's
    conversations."""
    gen = torch.Generator().manual_seed(seed)
    k = len(runs)
    diffs = torch.zeros(resamples, k, dtype=torch.float64)
    for j, (a, b, n) in enumerate(runs):
        idx = torch.randint(0, n.numel(), (resamples, n.numel()), generator=gen)
        diffs[:, j] = _loss(a, n, idx) - _loss(b, n, idx)
    pick = torch.randint(0, k, (resamples, k), generator=gen)
    values = torch.gather(diffs, 1, pick).mean(1)
    est = sum(float(a.sum() / n.sum() - b.sum() / n.sum()) for a, b, n in runs) / k
    return _percentiles(values, est, level)


def verdict(interval: Interval) -> str:
    """How model a compares with model b from the interval of ``L_a - L_b`` (lower is better)."""
    if interval.hi < 0:
        return "better"
    if interval.lo > 0:
        return "worse"
    return "not distinguishable"
