"""The run report's framing (``newllm.report.header``): what was run, with parameter counts that
agree everywhere, and every stage's timings."""
from __future__ import annotations

import json

from helpers.report import rows_by_key
from newllm import paths

# TINY_PARAMS' model (vocabulary 50257, d_e = d_c = 16, two layers) with its head tied to the
# embedding: embedding 50257*16, LN_e 2*16, layers 2*(32*32 + 32 + 2*16 + 2*16), head bias 50257
TINY_TIED_TOTAL = 804_112 + 32 + 2_240 + 50_257


def test_parameter_counts_agree_everywhere(tiny_report):
    root, _, data = tiny_report
    model = data["run"]["model"]
    assert model["total"] == model["from_config"] == TINY_TIED_TOTAL
    assert model["tied"] and model["head"] == 50_257
    assert rows_by_key(data)["cvfp"]["parameters"] == TINY_TIED_TOTAL
    assert json.loads((root / paths.PHASE2_METRICS).read_text())["parameters"] == TINY_TIED_TOTAL
    row = next(r for r in data["run"]["rows"] if r["label"] == "model")
    assert row["text"].startswith("0.86 M parameters (856,641, a tied weight counted once)")
    assert "head tied to the embedding" in row["text"]


def test_timings_list_every_stage(tiny_report):
    root, _, data = tiny_report
    t = data["timings"]
    assert [r["stage"] for r in t["rows"]] == ["fetch_ultrachat", "tokenize_cache", "baselines",
                                              "phase1_fixed_point", "validate_rank", "phase2_lm", "transformer_lm"]
    assert t["columns"][0] == "time_s"
    p1 = json.loads((root / paths.PHASE1_METRICS).read_text())
    assert t["rows"][3]["values"][0] == p1["time_s"]
