"""Sweeps as DVC experiments (``newllm.experiments``): the rows and frame of ``dvc exp show``, the
comparison files, the grid checked point by point before anything is queued, and a clear error
outside a DVC repository. The real queue: tests/pipeline/test_sweep.py."""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from helpers.exp_show import exp_show
from helpers.report import has_remote_refs
from newllm import experiments as ex
from newllm.errors import ConfigError


def test_exp_show_rows_frame_and_exponent():
    rows = ex.exp_rows(exp_show())
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
    assert [r["name"] for r in ex.check_results(["scale-50", "scale-999", "scale-7"], exp_show())] == \
        ["scale-999", "scale-7"]


def test_compare_writes_csv_and_html_from_show(tmp_path):
    csv_path, html_path, df, configs = ex.compare(out=tmp_path / "cmp", show=exp_show(), details=False)
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


@pytest.mark.slow
def test_sweep_outside_a_repo_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "newllm.sweep", "--compare-only"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "dvc.yaml" in p.stderr
