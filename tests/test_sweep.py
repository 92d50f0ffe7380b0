"""Sweeps and the scale ladder as DVC experiments (a real queue in a temp repo) and the comparison."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from report_helpers import has_remote_refs

from newllm import experiments as ex
from newllm import ladder, sweep
from newllm.errors import ConfigError


def _entry(rev: str, name: str | None, n: int, tokens: int | None, p1_time: float = 1.0,
           diversity: str = "ema_distance") -> dict:
    metrics = {"metrics/data.json": {"error": {"type": "FileNotFoundError", "msg": "x"}}}
    if tokens is not None:
        metrics = {
            "metrics/data.json": {"data": {"train": {"tokens": tokens, "samples": n}, "val": {"tokens": tokens // 4}}},
            "metrics/phase1.json": {"data": {"tokens": tokens, "time_s": p1_time, "peak_rss_mb": 300.0}},
            "metrics/validate.json": {"data": {"train": {"er_pct": 80.0, "er_pct_untrained": 85.0},
                                               "val": {"er_pct": 70.0}, "final_diff": 0.5, "passed": False}},
            "metrics/phase2.json": {"data": {"val": {"loss": 7.0, "ppl": 1096.6, "acc": 0.12},
                                             "test": {"loss": 7.0, "ppl": 1096.6, "acc": 0.12}}},
        }
    return {"rev": rev, "name": name, "error": None,
            "data": {"rev": rev, "timestamp": None, "metrics": metrics,
                     "params": {"params.yaml": {"data": {"data": {"num_samples": n, "source": "jsonl"},
                                                         "phase1": {"diversity": diversity},
                                                         "report": {"prompts": ["a", "b"]}}}}}}


def _show() -> list:
    """The shape of DVC 3.67's `dvc exp show --json` (captured from a real run, trimmed)."""
    return [
        {**_entry("workspace", None, 50, 6400), "experiments": None},
        {**_entry("c" * 40, "master", 50, None), "experiments": [
            {"name": "scale-78", "executor": {"state": "success", "name": "dvc-task", "local": {}},
             "revs": [_entry("b" * 40, "scale-78", 78, 9984, 2.0, "uniformity")]},
            {"name": "scale-50", "executor": None, "revs": [_entry("a" * 40, "scale-50", 50, 6400, 1.0)]},
            {"name": "scale-999", "executor": {"state": "failed"},
             "revs": [{**_entry("d" * 40, "scale-999", 999, None), "error": {"msg": "Experiment run failed"}}]},
            {"name": "scale-1", "executor": {"state": "queued"}, "revs": [_entry("e" * 40, "scale-1", 1, None)]},
        ]},
    ]


def test_exp_show_rows_frame_and_exponent():
    rows = ex.exp_rows(_show())
    by = {r["name"]: r for r in rows}
    assert set(by) == {"scale-78", "scale-50", "scale-999", "scale-1"}  # no metrics at the commit, no workspace
    assert by["scale-999"]["state"] == "failed" and by["scale-1"]["state"] == "queued"
    assert by["scale-50"]["state"] == "success"  # executor None: a finished experiment
    assert by["scale-78"]["validate.train.er_pct"] == 80.0 and by["scale-78"]["params.data.num_samples"] == 78
    assert "params.report.prompts" not in by["scale-78"]  # lists are dropped
    df = ex.frame(rows)
    assert list(df["name"]) == ["scale-50", "scale-78"] and list(df["train_tokens"]) == [6400, 9984]
    assert ex.varied_params(df) == ["params.data.num_samples", "params.phase1.diversity"]
    assert ex.growth_exponent([1e3, 2e3, 4e3], [1.0, 2.0, 4.0]) == pytest.approx(1.0)
    assert ex.growth_exponent([1e3, 1e3], [1.0, 2.0]) is None
    assert [r["name"] for r in ex.check_results(["scale-50", "scale-999", "scale-7"], _show())] == \
        ["scale-999", "scale-7"]


def test_compare_writes_csv_and_html_from_show(tmp_path):
    csv_path, html_path, df, configs = ex.compare(out=tmp_path / "cmp", show=_show(), details=False)
    assert [c["runs"] for c in configs] == [1, 1]  # two configurations (the objective differs)
    assert (tmp_path / "cmp_by_config.csv").read_text().startswith("params.")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["name"] for r in rows] == ["scale-50", "scale-78"]
    assert [r["train_tokens"] for r in rows] == ["6400", "9984"]
    assert [r["params.phase1.diversity"] for r in rows] == ["ema_distance", "uniformity"]  # what varied
    html = html_path.read_text()
    assert html.count("<img") == 3 and "scale-999" in html and "dvc queue logs scale-999" in html
    assert "12.00%" in html  # accuracy shown in percent
    assert not has_remote_refs(html)


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


def test_grid_is_the_cartesian_product_checked_point_by_point(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data:\n  source: jsonl\n  path: rows.jsonl\n")
    with pytest.raises(ConfigError, match="data.path"):
        ex.plan(["data.num_samples=5"])  # relative path that does not exist
    (tmp_path / "rows.jsonl").write_text("{}\n")
    points = ex.plan(["phase1.diversity=vicreg,uniformity", "phase1.dist_reg_weight=0.5,0.9"])
    assert [[v for k, v in p if k != "data.path"] for p in points] == \
        [["vicreg", "0.5"], ["vicreg", "0.9"], ["uniformity", "0.5"], ["uniformity", "0.9"]]
    assert all(("data.path", str(tmp_path / "rows.jsonl")) in p for p in points)  # made absolute
    names = [ex.point_name("sw", p, {"phase1.diversity", "phase1.dist_reg_weight"}) for p in points]
    assert names == ["sw-vicreg-0.5", "sw-vicreg-0.9", "sw-uniformity-0.5", "sw-uniformity-0.9"]
    # one bad point stops everything before anything is queued, naming the point
    with pytest.raises(ConfigError, match=r"phase1.batch_tokens.*sweep point phase1.diversity=uniformity"):
        ex.plan(["phase1.diversity=ema_distance,uniformity", "phase1.batch_tokens=0"])
    with pytest.raises(ConfigError, match="phase2.epoch"):
        ex.plan(["phase2.epoch=3"])  # unknown key
    with pytest.raises(ConfigError, match="one -S per key"):
        ex.parse_sets(["a.b=1", "a.b=2"])
    assert ex.split_values("[1, 2]") == ["[1, 2]"] and ex.split_values("a, b") == ["a", "b"]
    assert ex.point_name("x", [("data.path", "/a/b c"), ("k", "v/1")], {"data.path", "k"}) == "x-_a_b_c-v_1"


def test_ladder_is_a_sweep_over_num_samples(monkeypatch):
    seen = {}
    monkeypatch.setattr(sweep, "run", lambda args, sets, varying=None, title="": seen.update(
        sets=sets, varying=varying, prefix=args.name_prefix, out=args.out) or 0)
    assert ladder.main(["--scales", "50,78", "--set", "phase2.epochs=2"]) == 0
    assert seen == {"sets": ["data.num_samples=50,78", "phase2.epochs=2"], "varying": {"data.num_samples"},
                    "prefix": "scale", "out": "reports/scales"}
    assert ladder.main(["--scales", "50,x"]) == 2
    assert ladder.main(["--set", "data.num_samples=3"]) == 2


def test_sweep_refuses_existing_names_and_reports_failures(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setattr(ex, "exp_show", lambda all_commits=False: _show())
    assert ladder.main(["--scales", "78,100"]) == 2  # scale-78 exists
    assert "--force" in capsys.readouterr().err
    # a failed experiment: the comparison is still written, the exit code is 1 and names the log command
    monkeypatch.setattr(ex, "queue_points", lambda *a, **k: None)
    monkeypatch.setattr(ex, "run_queue", lambda jobs: None)
    monkeypatch.setattr(ex, "read_details", lambda rows, files=(): rows)
    assert ladder.main(["--scales", "50,999", "--out", str(tmp_path / "out/scales")]) == 1
    err = capsys.readouterr().err
    assert "FAILED: experiment scale-999 (failed)" in err and "dvc queue logs scale-999" in err
    assert (tmp_path / "out/scales.html").exists()


@pytest.mark.slow
def test_sweep_over_seeds_metrics_diff_and_the_aggregated_comparison(dvc_repo):
    repo = dvc_repo
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


def test_sweep_outside_a_repo_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "newllm.sweep", "--compare-only"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "dvc.yaml" in p.stderr
