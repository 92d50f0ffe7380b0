"""The comparison of experiments aggregated over seeds: one row per configuration.

Runs that differ only in ``seed`` and ``data.split_seed`` are replicates of one configuration.
For every numeric figure a configuration gets the mean over its runs and the spread (sample
standard deviation, and min and max); for every baseline, CVFP's paired difference of test
loss with the 95% two-level bootstrap interval of ``newllm.bootstrap.paired_over_runs``
(runs drawn with replacement, then the test conversations of each drawn run) and its verdict,
and the same for the transformer against every n-gram model.
A configuration with fewer than ``MIN_RUNS`` runs gets no verdict: one or two seeds are not a
claim.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from newllm.bootstrap import LEVEL, paired_over_runs, verdict
from newllm.compare import NGRAMS, SOURCES
from newllm.values import num

REPLICATE_KEYS = ("params.seed", "params.data.split_seed")
MIN_RUNS = 3
BASELINES = ("transformer", *NGRAMS)


def config_columns(df) -> list[str]:
    """The params that tell configurations apart (every param but the replicate keys)."""
    return [c for c in df.columns if c.startswith("params.") and c not in REPLICATE_KEYS]


def _key(row: dict, cols: list[str]) -> tuple:
    return tuple(str(row.get(c)) for c in cols)


def _stats(values: list[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "sd": sd, "min": min(values), "max": max(values)}


def run_columns(rows: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor] | None:
    """One run's per-conversation table (``{stage: table}`` of ``metrics/rows/``) as ``{model: CE,
    "targets": n}``, or None where the run has no test rows (an older run, a partial stage)."""
    out: dict[str, torch.Tensor] = {}
    for model, stage in SOURCES.items():
        table = rows.get(stage)
        if table is not None and model in table:
            out[model] = table[model]
            out["targets"] = table["targets"]
    return out if "cvfp" in out else None


def aggregate(df, rows_by_name: dict[str, dict[str, dict[str, torch.Tensor]]], resamples: int = 2000,
              seed: int = 0) -> list[dict]:
    """One dict per configuration of ``df`` (the completed runs, one per row): its params, ``runs``
    (count and names), ``<figure>.mean``/``.sd``/``.min``/``.max`` of every numeric column,
    ``vs.<baseline>`` = {estimate, lo, hi, verdict} of CVFP against each baseline and
    ``tf_vs.<n-gram>`` of the transformer against each n-gram model, from the runs'
    per-conversation tables."""
    cols = config_columns(df)
    groups: dict[tuple, list[dict]] = {}
    for row in df.to_dict("records"):
        groups.setdefault(_key(row, cols), []).append(row)
    out = []
    for runs in groups.values():
        agg: dict[str, Any] = {c: runs[0].get(c) for c in cols}
        agg["runs"] = len(runs)
        agg["names"] = ",".join(str(r.get("name")) for r in runs)
        for c in df.columns:
            if c in cols or c in REPLICATE_KEYS:
                continue
            vals = [v for v in (num(r.get(c)) for r in runs) if v is not None]
            if vals:
                agg.update({f"{c}.{k}": v for k, v in _stats(vals).items()})
        tables = [t for t in (run_columns(rows_by_name.get(str(r.get("name")), {})) for r in runs) if t]
        for a, key, bases in (("cvfp", "vs", BASELINES), ("transformer", "tf_vs", NGRAMS)):
            for base in bases:
                paired = [(t[a], t[base], t["targets"]) for t in tables if a in t and base in t]
                if not paired:
                    continue
                iv = paired_over_runs(paired, resamples, seed, LEVEL)
                word = verdict(iv) if len(paired) >= MIN_RUNS else f"fewer than {MIN_RUNS} runs"
                agg[f"{key}.{base}"] = {**iv.as_dict(), "verdict": word, "runs": len(paired)}
        out.append(agg)
    return out
