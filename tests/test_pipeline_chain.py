"""The whole chain as real DVC stages in a temporary repo (bundled corpus, tiny model)."""
from __future__ import annotations

import json

HEADLINE = ["train.tokens", "passes", "optimizer_steps", "param_change", "train.er_pct", "val.er_pct",
            "train.er_pct_untrained", "final_diff", "passed", "val.loss", "val.ppl", "val.acc",
            "baseline.unigram_ppl", "baseline.bigram_ppl", "baseline.majority_acc", "time_s", "tokens_per_s",
            "peak_rss_mb"]


def test_whole_chain_rerun_rules_and_metrics_diff(dvc_repo):
    repo = dvc_repo
    out = repo.repro().stdout
    assert repo.ran_stages(out) == ["fetch_ultrachat", "tokenize_cache", "phase1_fixed_point", "validate_rank",
                                    "phase2_lm", "report"]
    p2 = json.loads((repo.path / "metrics/phase2.json").read_text())
    assert p2["optimizer_steps"] > 0 and p2["val"]["loss"] > 0
    html = (repo.path / "reports/report.html").read_text()
    assert "Success criteria" in html or "success criteria" in html.lower()
    # every data stage records its wall time and peak memory, and the report's table shows them
    fetched = json.loads((repo.path / "metrics/fetch.json").read_text())
    data = json.loads((repo.path / "metrics/data.json").read_text())
    assert fetched["train_rows"] == 6 and fetched["val_rows"] == data["val"]["samples"]
    for m in (fetched, data):
        assert m["time_s"] > 0 and m["peak_rss_mb"] > 0
    timings = html[html.index('id="timings"'):]
    for stage in ("fetch_ultrachat", "tokenize_cache"):
        row = timings[timings.index(f"<td>{stage}</td>"):].split("</tr>")[0]
        cells = [c.split("</td>")[0] for c in row.split("<td>")[1:]]  # stage, wall time, tokens/s, peak RSS
        assert float(cells[1]) > 0 and float(cells[3].replace(",", "")) > 0, row
    repo.commit("first scale")
    assert repo.ran_stages(repo.repro().stdout) == []

    # dvc metrics show/diff list the headline figures
    shown = repo.dvc("metrics", "show", "--json").stdout
    for key in ("val.loss", "train.er_pct", "final_diff", "baseline.unigram_ppl"):
        assert key.split(".")[-1] in shown

    # a phase2 param re-runs only phase2_lm and report
    repo.set_params({"phase2": {"learning_rate": 0.001}})
    assert repo.ran_stages(repo.repro().stdout) == ["phase2_lm", "report"]
    repo.commit("phase2 lr")

    # another data scale re-runs everything; metrics diff shows the headline keys of every stage
    repo.set_params({"data": {"num_samples": 8}})
    assert repo.ran_stages(repo.repro().stdout) == ["fetch_ultrachat", "tokenize_cache", "phase1_fixed_point",
                                                    "validate_rank", "phase2_lm", "report"]
    diff = json.loads(repo.dvc("metrics", "diff", "--json", "--all").stdout)
    keys = {k for per_file in diff.values() for k in per_file}
    missing = [k for k in HEADLINE if k not in keys]
    assert not missing, (missing, sorted(keys))
    tokens = diff["metrics/data.json"]["train.tokens"]
    assert tokens["old"] == 6 * 32 and tokens["new"] == 8 * 32
