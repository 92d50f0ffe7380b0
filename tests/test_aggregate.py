"""Runs of one configuration over seeds (``newllm.aggregate``): mean, spread and a verdict only
from three runs."""
from __future__ import annotations

import pytest


def _run(name, seed, n, shift, num_samples=50):
    """A finished run: its frame row and its per-conversation tables (CVFP's loss ``shift`` nats
    above the transformer's on every conversation)."""
    import torch
    tf = torch.full((n,), 5.0, dtype=torch.float64)
    tables = {"phase2": {"row": torch.arange(n).double(), "targets": torch.ones(n, dtype=torch.float64),
                         "cvfp": tf + shift},
              "transformer": {"row": torch.arange(n).double(), "targets": torch.ones(n, dtype=torch.float64),
                              "transformer": tf},
              "baselines": {"row": torch.arange(n).double(), "targets": torch.ones(n, dtype=torch.float64),
                            "unigram": tf + 1.0}}
    row = {"name": name, "params.seed": seed, "params.data.num_samples": num_samples, "phase2.test.loss": 5 + shift}
    return row, tables


def test_runs_aggregate_over_seeds_with_a_verdict_only_from_three():
    import pandas as pd

    from newllm.aggregate import aggregate
    runs = [_run("a0", 0, 20, 0.30), _run("a1", 1, 20, 0.10), _run("a2", 2, 20, 0.20),
            _run("b0", 0, 20, 0.2, num_samples=78), _run("b1", 1, 20, -0.1, num_samples=78)]
    df = pd.DataFrame([r for r, _ in runs])
    configs = {c["params.data.num_samples"]: c for c in aggregate(df, {r["name"]: t for r, t in runs})}
    a, b = configs[50], configs[78]
    assert a["runs"] == 3 and a["names"] == "a0,a1,a2" and "params.seed" not in a
    assert a["phase2.test.loss.mean"] == pytest.approx(5.2) and a["phase2.test.loss.sd"] == pytest.approx(0.1)
    assert (a["phase2.test.loss.min"], a["phase2.test.loss.max"]) == pytest.approx((5.1, 5.3))
    v = a["vs.transformer"]
    assert v["estimate"] == pytest.approx(0.2) and 0.1 <= v["lo"] <= v["hi"] <= 0.3 and v["verdict"] == "worse"
    assert b["runs"] == 2 and b["vs.transformer"]["verdict"] == "fewer than 3 runs"
    # the transformer against the n-gram models too (the unigram is 1 nat worse everywhere)
    assert a["tf_vs.unigram"]["estimate"] == pytest.approx(-1.0) and a["tf_vs.unigram"]["verdict"] == "better"
    assert a["vs.unigram"]["estimate"] == pytest.approx(-0.8)
