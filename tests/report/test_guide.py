"""The original guide's figures in the report (``newllm.report.guide``): a measured figure is
placed against a claimed range in neutral words, the guide's thresholds are the run's."""
from __future__ import annotations

import pytest

from helpers.chain import copy_run
from helpers.report import edit_json, gather
from newllm import paths
from newllm.report.guide import against_claim


@pytest.mark.parametrize("value, words", [
    (88.0, "within the guide's claimed 88–90%"), (87.9, "below the guide's claimed 88–90%"),
    (90.5, "above the guide's claimed 88–90%"), (None, None)])
def test_a_claim_is_placed_in_neutral_words(value, words):
    assert against_claim(value, 88.0, 90.0, "%") == words


def test_guide_reference_and_terms(tiny_report, prepared_run, tmp_path):
    guide = tiny_report[2]["phase2"]["guide"]
    assert [(r["figure"], r["position"]) for r in guide["rows"]] == [
        ("loss", "above the guide's claimed 4.5–5.5"), ("perplexity", "above the guide's claimed 90–250"),
        ("top-1 accuracy", "below the guide's claimed 10–15%")]
    assert "scores 12.90% on this test split" in guide["note"]
    root = copy_run(prepared_run, tmp_path / "run")
    edit_json(root, paths.VALIDATE_METRICS, thresholds__min_val_er_pct=71.5)
    _, data = gather(root, seed=7)
    terms = {t["term"]: t["text"] for t in data["terms"]}
    assert "validation ER > 71.5%" in terms["the original guide"]
    assert terms["random seed"].startswith("the seed parameter (here 7)")
