"""The run report's data (``newllm.report.build``): plain values only, every section present for
a real tiny run, "not available" with the reason for what is missing or unreadable."""
from __future__ import annotations

import json

from helpers.chain import copy_run
from helpers.report import gather, render, section_of
from newllm import paths
from newllm.config import ReportConfig
from newllm.report.build import report_data
from newllm.report.inputs import Inputs
from newllm.report.samples import text_samples

SECTIONS = ("run", "criteria", "passes", "spectrum", "convergence", "phase2", "generation", "timings")
UNIFORMITY = "log mean_{(i,j)∈P} exp(−t ‖z_i − z_j‖²)"


def test_data_is_plain_and_complete(tiny_report):
    _, _, data = tiny_report
    json.dumps(data)  # strings, numbers, lists, dicts: nothing but plain data reaches the renderer
    assert list(data) == ["verdict", "phase2_line", "terms", *SECTIONS]
    assert not [s for s in SECTIONS if "missing" in data[s]]
    assert "add-one" not in json.dumps(data) and "add_one" not in json.dumps(data)


def test_unreadable_inputs_do_not_crash(prepared_run, tmp_path):
    root = copy_run(prepared_run, tmp_path / "run")
    (root / paths.VALIDATE_METRICS).write_text("{not json")
    (root / paths.SPECTRUM).write_text("")
    (root / paths.PHASE2_BEST).write_bytes(b"not a model")
    _, data = gather(root)
    assert "metrics/validate.json is unreadable" in data["criteria"]["missing"]
    assert data["verdict"]["level"] == "warn" and "spectrum.csv is unreadable" in data["spectrum"]["missing"]
    assert "models/phase2_best.pt" in data["generation"]["missing"]
    # without validate.json the objective's name comes from metrics/phase1.json
    assert data["passes"]["diversity"]["formula"] == UNIFORMITY


def test_nothing_run_says_not_available(tmp_path):
    # what newllm.compare.compare returns when no stage has written its test rows
    nothing = {"level": 0.95, "resamples": 2000, "bootstrap_seed": 0, "strongest_ngram": None, "models": {},
               "missing_stages": ["phase2", "transformer", "baselines"], "cvfp_vs": {}, "transformer_vs": {}}
    data = report_data(Inputs.load(tmp_path), nothing, text_samples(tmp_path, ReportConfig(), 0), seed=0)
    assert [s for s in SECTIONS if "missing" not in data[s]] == ["run", "phase2"]  # each row says why
    assert [r.get("missing") for r in data["phase2"]["models"]] == [
        "metrics/phase2.json is missing (stage phase2_lm has not run)",
        "metrics/transformer.json is missing (stage transformer_lm has not run)",
        "metrics/baselines.json is missing (stage baselines has not run)"]
    html = render(data)
    for anchor in SECTIONS:
        assert "not available" in section_of(html, anchor), anchor
    assert 'class="banner warn"' in html and "Phase 1 INCOMPLETE" in html
    assert '<div class="p2line na">' in html and "data:image/png" not in html
