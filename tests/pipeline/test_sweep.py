"""A real sweep (``python -m newllm.sweep``) over three seeds as queued DVC experiments in a
temporary repository: ``dvc exp show`` and ``dvc metrics diff`` see them, and the aggregated
comparison holds the three runs."""
from __future__ import annotations

import csv
import json
import sys

import pytest

from newllm import experiments as ex


@pytest.mark.slow
def test_sweep_over_seeds_metrics_diff_and_the_aggregated_comparison(reproduced, tmp_path):
    repo = reproduced.copy(tmp_path / "repo")
    repo.commit("run")  # the experiments' baseline: the stages no point changes come from DVC's cache
    p = repo.run(sys.executable, "-m", "newllm.sweep", "-S", "seed=0,1,2", "-S", "phase2.epochs=1",
                 "--name-prefix", "t", "--jobs", "2", timeout=900)
    assert "comparison:" in p.stdout, p.stderr[-2000:]
    assert "3 run(s)" in p.stdout and "vs transformer" in p.stdout  # the terminal summary aggregates

    shown = {r["name"]: r for r in ex.exp_rows(json.loads(repo.dvc("exp", "show", "--json").stdout))}
    assert set(shown) >= {"t-0", "t-1", "t-2"}
    assert shown["t-1"]["params.seed"] == 1 and shown["t-1"]["params.phase2.epochs"] == 1
    assert all(shown[n]["state"] == "success" for n in ("t-0", "t-1", "t-2"))

    diff = json.loads(repo.dvc("metrics", "diff", "t-0", "t-1", "--json").stdout)
    assert diff, "two seeds give different headline metrics"

    rows = list(csv.DictReader((repo.path / "reports/sweep.csv").open()))
    assert [r["params.seed"] for r in rows] == ["0", "1", "2"]
    assert all(float(r["phase2.test.ppl"]) > 0 and float(r["validate.train.er_pct"]) > 0 for r in rows)
    configs = list(csv.DictReader((repo.path / "reports/sweep_by_config.csv").open()))
    assert len(configs) == 1 and configs[0]["runs"] == "3"
    mean = sum(float(r["phase2.test.loss"]) for r in rows) / 3
    assert float(configs[0]["phase2.test.loss.mean"]) == pytest.approx(mean, abs=1e-9)
    for base in ("transformer", "unigram", "kn_trigram", "mkn_trigram"):
        v = {k: configs[0][f"vs.{base}.{k}"] for k in ("estimate", "lo", "hi", "verdict")}
        assert float(v["lo"]) <= float(v["hi"]) and v["verdict"] in ("better", "worse", "not distinguishable"), v
    html = (repo.path / "reports/sweep.html").read_text()
    assert "t-2" in html

    # --compare-only reads the same experiments again
    p = repo.run(sys.executable, "-m", "newllm.sweep", "--compare-only", "--prefix", "t-", "--out", "cmp/x")
    assert (repo.path / "cmp/x.csv").read_text() == (repo.path / "reports/sweep.csv").read_text()
