"""The scale ladder as DVC experiments (real queue in a temp repo) and its comparison artefact."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from newllm import experiments as ladder
from newllm.errors import ConfigError
from newllm.html.run_report import has_remote_refs


def _entry(rev: str, name: str | None, n: int, tokens: int | None, p1_time: float = 1.0) -> dict:
    metrics = {"metrics/data.json": {"error": {"type": "FileNotFoundError", "msg": "x"}}}
    if tokens is not None:
        metrics = {
            "metrics/data.json": {"data": {"train": {"tokens": tokens, "samples": n}, "val": {"tokens": tokens // 4}}},
            "metrics/phase1.json": {"data": {"tokens": tokens, "time_s": p1_time, "peak_rss_mb": 300.0}},
            "metrics/validate.json": {"data": {"train": {"er_pct": 80.0, "er_pct_untrained": 85.0},
                                               "val": {"er_pct": 70.0}, "final_diff": 0.5, "passed": False}},
            "metrics/phase2.json": {"data": {"val": {"loss": 7.0, "ppl": 1096.6, "acc": 0.12},
                                             "baseline": {"unigram_ppl": 500.0, "majority_acc": 0.1}}},
        }
    return {"rev": rev, "name": name, "error": None,
            "data": {"rev": rev, "timestamp": None, "metrics": metrics,
                     "params": {"params.yaml": {"data": {"data": {"num_samples": n, "source": "jsonl"},
                                                         "report": {"prompts": ["a", "b"]}}}}}}


def _show() -> list:
    """The shape of DVC 3.67's `dvc exp show --json` (captured from a real run, trimmed)."""
    return [
        {**_entry("workspace", None, 50, 6400), "experiments": None},
        {**_entry("c" * 40, "master", 50, None), "experiments": [
            {"name": "scale-78", "executor": {"state": "success", "name": "dvc-task", "local": {}},
             "revs": [_entry("b" * 40, "scale-78", 78, 9984, 2.0)]},
            {"name": "scale-50", "executor": None, "revs": [_entry("a" * 40, "scale-50", 50, 6400, 1.0)]},
            {"name": "scale-999", "executor": {"state": "failed"},
             "revs": [{**_entry("d" * 40, "scale-999", 999, None), "error": {"msg": "Experiment run failed"}}]},
            {"name": "scale-1", "executor": {"state": "queued"}, "revs": [_entry("e" * 40, "scale-1", 1, None)]},
        ]},
    ]


def test_exp_show_rows_frame_and_exponent():
    rows = ladder.exp_rows(_show())
    by = {r["name"]: r for r in rows}
    assert set(by) == {"scale-78", "scale-50", "scale-999", "scale-1"}  # no metrics at the commit, no workspace
    assert by["scale-999"]["state"] == "failed" and by["scale-1"]["state"] == "queued"
    assert by["scale-50"]["state"] == "success"  # executor None: a finished experiment
    assert by["scale-78"]["validate.train.er_pct"] == 80.0 and by["scale-78"]["params.data.num_samples"] == 78
    assert "params.report.prompts" not in by["scale-78"]  # lists are dropped
    df = ladder.scales_frame(rows)
    assert list(df["name"]) == ["scale-50", "scale-78"] and list(df["train_tokens"]) == [6400, 9984]
    assert ladder.growth_exponent([1e3, 2e3, 4e3], [1.0, 2.0, 4.0]) == pytest.approx(1.0)
    assert ladder.growth_exponent([1e3, 1e3], [1.0, 2.0]) is None
    assert [r["name"] for r in ladder.check_results(["scale-50", "scale-999", "scale-7"], _show())] == \
        ["scale-999", "scale-7"]


def test_compare_writes_csv_and_html_from_show(tmp_path):
    csv_path, html_path, df = ladder.compare(out_dir=tmp_path, show=_show())
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["name"] for r in rows] == ["scale-50", "scale-78"]
    assert [r["train_tokens"] for r in rows] == ["6400", "9984"]
    html = html_path.read_text()
    assert html.count("<img") == 3 and "scale-999" in html and "dvc queue logs scale-999" in html
    assert "12.00%" in html  # accuracy shown in percent
    assert not has_remote_refs(html)


def test_plan_checks_overrides_before_queueing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data:\n  source: jsonl\n  path: rows.jsonl\n")
    with pytest.raises(ConfigError, match="data.path"):
        ladder.plan([5], [])  # relative path that does not exist
    (tmp_path / "rows.jsonl").write_text("{}\n")
    ov = ladder.plan([5, 10], ["phase2.epochs=1"])
    assert ov == ["phase2.epochs=1", f"data.path={tmp_path / 'rows.jsonl'}"]  # made absolute
    with pytest.raises(ConfigError, match="phase2.epochs"):
        ladder.plan([5], ["phase2.epochs=0"])
    with pytest.raises(ConfigError, match="phase2.epoch"):
        ladder.plan([5], ["phase2.epoch=3"])  # unknown key
    with pytest.raises(ConfigError, match="--scales"):
        ladder.parse_scales("50,x")
    assert ladder.parse_scales("50, 78") == [50, 78]


def test_ladder_two_scales_as_experiments_metrics_diff_and_comparison(dvc_repo):
    repo = dvc_repo
    p = repo.run(sys.executable, "-m", "newllm.experiments", "--scales", "6,8", "--name-prefix", "t",
                 "--set", "phase2.epochs=1", timeout=900)
    assert "comparison:" in p.stdout

    shown = {r["name"]: r for r in ladder.exp_rows(json.loads(repo.dvc("exp", "show", "--json").stdout))}
    assert shown["t-6"]["params.phase2.epochs"] == 1 and shown["t-8"]["phase2.epochs"] == 1  # --set passed
    assert shown["t-6"]["state"] == shown["t-8"]["state"] == "success"

    diff = json.loads(repo.dvc("metrics", "diff", "t-6", "t-8", "--json").stdout)
    assert diff["metrics/data.json"]["train.tokens"] == {"old": 6 * 32, "new": 8 * 32, "diff": 64}
    assert "val.loss" in diff["metrics/phase2.json"] and "train.er_pct" in diff["metrics/validate.json"]

    rows = list(csv.DictReader((repo.path / "reports/scales.csv").open()))
    assert [(r["name"], r["train_tokens"], r["params.data.num_samples"]) for r in rows] == \
        [("t-6", "192", "6"), ("t-8", "256", "8")]
    assert all(float(r["phase2.val.ppl"]) > 0 and float(r["validate.train.er_pct"]) > 0 for r in rows)
    html = (repo.path / "reports/scales.html").read_text()
    assert "t-6" in html and "t-8" in html and html.count("<img") == 3

    # --compare-only reads the same experiments again
    p = repo.run(sys.executable, "-m", "newllm.experiments", "--compare-only", "--names", "t-6,t-8",
                 "--out-dir", "cmp")
    assert "comparison:" in p.stdout
    assert (repo.path / "cmp/scales.csv").read_text() == (repo.path / "reports/scales.csv").read_text()


def test_ladder_refuses_existing_names_and_reports_failures(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setattr(ladder, "exp_show", lambda all_commits=False: _show())
    assert ladder.main(["--scales", "78,100"]) == 2  # scale-78 exists
    assert "--force" in capsys.readouterr().err
    # a failed experiment: the comparison is still written, the exit code is 1 and names the log command
    monkeypatch.setattr(ladder, "run_ladder", lambda *a, **k: ["scale-50", "scale-999"])
    assert ladder.main(["--scales", "50,999", "--out-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "FAILED: experiment scale-999 (failed)" in err and "dvc queue logs scale-999" in err
    assert (tmp_path / "out/scales.html").exists()


def test_ladder_outside_a_repo_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "newllm.experiments", "--compare-only"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "dvc.yaml" in p.stderr
