"""The whole chain as real DVC stages in a temporary repo (bundled corpus, tiny model)."""
from __future__ import annotations

import json

import pytest

ALL = ["fetch_ultrachat", "tokenize_cache", "baselines", "phase1_fixed_point", "validate_rank", "phase2_lm",
       "transformer_lm", "report"]
HEADLINE = ["passed", "val_er", "final_diff_e6", "test_ppl", "vs_ngram", "vs_tf", "minutes"]


@pytest.mark.slow
def test_whole_chain_rerun_rules_and_metrics_diff(reproduced, tmp_path):
    repo = reproduced.copy(tmp_path / "repo")
    ran = [stage for out in reproduced.outputs for stage in repo.ran_stages(out)]  # the first `dvc repro`
    assert sorted(ran) == sorted(ALL)
    p2 = json.loads((repo.path / "metrics/phase2.json").read_text())
    assert p2["optimizer_steps"] > 0 and p2["val"]["loss"] > 0
    html = (repo.path / "reports/report.html").read_text()
    assert "Success criteria" in html or "success criteria" in html.lower()
    # every data stage records its wall time and peak memory, and the report's table shows them
    fetched = json.loads((repo.path / "metrics/fetch.json").read_text())
    data = json.loads((repo.path / "metrics/data.json").read_text())
    assert fetched["train_rows"] == 50 and fetched["val_rows"] == data["val"]["samples"]
    for m in (fetched, data):
        assert m["time_s"] > 0 and m["peak_rss_mb"] > 0
    timings = html[html.index('id="timings"'):]
    for stage in ("fetch_ultrachat", "tokenize_cache"):
        row = timings[timings.index(f"<td>{stage}</td>"):].split("</tr>")[0]
        cells = [c.split("</td>")[0] for c in row.split("<td>")[1:]]  # stage, wall time, tokens/s, peak RSS
        assert float(cells[1]) > 0 and float(cells[3].replace(",", "")) > 0, row
    repo.commit("first scale")
    assert repo.ran_stages(repo.repro().stdout) == []

    # dvc metrics show prints the headline file, in key order, and the detailed files on request
    shown = json.loads(repo.dvc("metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert list(files) == ["metrics.json"] and list(files["metrics.json"]["data"]) == HEADLINE
    detail = json.loads(repo.dvc("metrics", "show", "metrics/validate.json", "--json").stdout)
    assert "final_diff" in next(iter(detail.values()))["data"]["metrics/validate.json"]["data"]

    # a phase2 param re-runs only phase2_lm and report; no baseline, no transformer
    repo.set_params({"phase2": {"learning_rate": 0.003}})
    assert sorted(repo.ran_stages(repo.repro().stdout)) == ["phase2_lm", "report"]
    # a phase1 param re-runs phase1 and what follows it, no baseline either
    repo.set_params({"phase1": {"learning_rate": 0.001}})
    assert sorted(repo.ran_stages(repo.repro().stdout)) == ["phase1_fixed_point", "phase2_lm", "report",
                                                           "validate_rank"]
    # another scale re-runs everything and `dvc metrics diff` shows every headline key: the README
    # sequence (tests/pipeline/test_readme_sequence.py) does that
    diff = json.loads(repo.dvc("metrics", "diff", "--json", "--all").stdout)
    assert set(diff["metrics.json"]) == set(HEADLINE)  # --all: unchanged keys too
