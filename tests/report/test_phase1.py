"""Phase 1 in the report (``newllm.report.phase1``): the verdict banner names what failed, a
passed criterion never reads "worse", the pass plot is named after the objective that ran."""
from __future__ import annotations

import json

from helpers.chain import copy_run
from helpers.report import edit_json, gather
from newllm import paths

UNIFORMITY = "log mean_{(i,j)∈P} exp(−t ‖z_i − z_j‖²)"


def test_phase1_plot_is_named_after_the_objective_that_ran(tiny_report):
    _, _, data = tiny_report
    assert data["passes"]["diversity"]["name"] == "uniformity"
    assert data["passes"]["diversity"]["formula"] == UNIFORMITY
    phase1_row = next(r for r in data["run"]["rows"] if r["label"] == "Phase 1")
    assert f"diversity objective uniformity, D(C) = {UNIFORMITY}" in phase1_row["text"]


def test_a_passed_row_never_reads_worse(prepared_run, tmp_path):
    root = copy_run(prepared_run, tmp_path / "run")
    edit_json(root, paths.VALIDATE_METRICS, passed=True, criteria={"train_er": True, "val_er": True,
              "final_diff": True}, train__er_pct=88.12, val__er_pct=79.46, final_diff=0.0004)
    _, data = gather(root)
    assert data["verdict"]["level"] == "ok" and data["verdict"]["line"].startswith("Phase 1 PASSED")
    rows = {r["name"]: r for r in data["criteria"]["rows"]}
    assert rows["train ER"]["ok"] and rows["train ER"]["vs_claim"] == "within the guide's claimed 88–90%"
    assert rows["validation ER"]["ok"] and rows["validation ER"]["vs_claim"] == "below the guide's claimed 80–83%"
    assert rows["test ER (reference)"]["ok"] is None  # beside the criteria, not judged
    words = json.dumps([data["criteria"], data["phase2"]["guide"], data["verdict"]])
    assert "better" not in words and "worse" not in words


def test_failed_phase1_banner_names_what_failed(tiny_report, prepared_run, tmp_path):
    vd = tiny_report[2]["verdict"]
    assert vd["level"] == "bad" and vd["line"].startswith("Phase 1 FAILED: the original guide's criteria are NOT met")
    assert "train ER" in vd["line"] and "validation ER" in vd["line"]
    for word in ("Phase 2", "perplexity", "transformer", "n-gram"):
        assert word not in json.dumps(vd), word
    root = copy_run(prepared_run, tmp_path / "run")
    edit_json(root, paths.PHASE1_METRICS, optimizer_steps=0)
    edit_json(root, paths.VALIDATE_METRICS, optimizer_steps=0, collapsed=True, train__collapsed=True,
              train__global_attractor=True)
    _, data = gather(root)
    shorts = [it["short"] for it in data["verdict"]["items"]]
    assert "NO optimizer step was taken" in shorts and "contexts COLLAPSED" in shorts
    assert data["criteria"]["training"][0] == {"label": "optimizer steps", "value": 0, "bad": True,
                                               "note": "never trained"}
