"""The test comparison of a run's language models (``metrics/comparison.json``).

Each model's stage writes its summed test cross-entropy per conversation (``metrics/rows/``).
From them: every model's test loss with its 95% bootstrap interval over conversations, and
CVFP's paired difference against every baseline (and the transformer's against every n-gram
model) with its interval and verdict word (``newllm.bootstrap``). ``strongest_ngram`` is the
n-gram model with the lowest *validation* loss: choosing it on test would bias the verdict.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from newllm import paths
from newllm.bootstrap import LEVEL, draws, loss_interval, paired_interval, read_rows, verdict
from newllm.errors import DataError, NewLLMError
from newllm.io import read_json

NGRAMS = ("unigram", "kn_bigram", "kn_trigram", "mkn_trigram")
# model -> the stage whose rows file holds its column
SOURCES = {"cvfp": "phase2", "transformer": "transformer", **{m: "baselines" for m in NGRAMS}}


def load_columns(root: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, list[str]]:
    """Every model's per-conversation CE whose stage has run, the pair counts, and what is missing.
    Files that disagree about the conversations are a DataError (they come from other data)."""
    cols: dict[str, torch.Tensor] = {}
    ref: dict[str, torch.Tensor] | None = None
    missing = []
    for stage in dict.fromkeys(SOURCES.values()):
        path = root / paths.rows_file(stage)
        if not path.exists():
            missing.append(stage)
            continue
        table = read_rows(path)
        if ref is None:
            ref = table
        elif not (torch.equal(table["row"], ref["row"]) and torch.equal(table["targets"], ref["targets"])):
            raise DataError(f"{path} scores other test conversations than {paths.rows_file(next(iter(SOURCES.values())))}"
                            f": the stages ran on different data; re-run `dvc repro`")
        cols.update({m: table[m] for m, s in SOURCES.items() if s == stage and m in table})
    return cols, None if ref is None else ref["targets"], missing


def strongest_ngram(root: Path) -> str | None:
    """The n-gram model with the lowest validation loss in metrics/baselines.json."""
    try:
        base = read_json(root / paths.BASELINES_METRICS, "baselines")
        return min(NGRAMS, key=lambda m: float(base[m]["loss"]))
    except (KeyError, TypeError, ValueError, NewLLMError, OSError):
        return None


def compare(root: Path | str, resamples: int, seed: int) -> dict:
    root = Path(root)
    cols, n, missing = load_columns(root)
    out: dict = {"level": LEVEL, "resamples": resamples, "bootstrap_seed": seed, "missing_stages": missing,
                 "strongest_ngram": strongest_ngram(root), "models": {}, "cvfp_vs": {}, "transformer_vs": {}}
    if n is None:
        return out
    idx = draws(n.numel(), resamples, seed)
    out.update(test_conversations=int(n.numel()), test_pairs=int(n.sum()))
    for name, ce in cols.items():
        iv = loss_interval(ce, n, idx)
        out["models"][name] = {**iv.as_dict(), "ppl": round(math.exp(iv.estimate), 4)}
    for a, key in (("cvfp", "cvfp_vs"), ("transformer", "transformer_vs")):
        if a not in cols:
            continue
        for b in cols:
            if b != a and (a == "cvfp" or b in NGRAMS):
                iv = paired_interval(cols[a], cols[b], n, idx)
                out[key][b] = {**iv.as_dict(), "verdict": verdict(iv)}
    return out
