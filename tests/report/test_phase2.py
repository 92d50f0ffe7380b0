"""Phase 2 in the report (``newllm.report.phase2``): every model's test figures with intervals,
CVFP's verdicts following the paired intervals, and what the line says when a baseline, the
transformer or the per-conversation rows are missing."""
from __future__ import annotations

import json

import pytest

from helpers.chain import copy_run
from helpers.report import (
    VERDICT_WORDS,
    edit_json,
    gather,
    render,
    rows_by_key,
    section_of,
    write_rows,
)
from newllm import paths

# what the line says of the transformer for each verdict, and the line's level when that is the
# only comparison present
TRANSFORMER_PHRASE = {"better": "better than the same-size transformer: CVFP − it = −",
                      "worse": "worse than the same-size transformer: CVFP − it = +",
                      "not distinguishable": "not distinguishable from the same-size transformer"}
LEVEL_OF_ONE = {"better": "ok", "worse": "warn", "not distinguishable": "even"}


def test_phase2_rows_are_test_figures_with_intervals(tiny_report):
    root, comparison, data = tiny_report
    rows = rows_by_key(data)
    assert list(rows) == ["cvfp", "transformer", "mkn_trigram", "kn_trigram", "kn_bigram", "unigram", "majority"]
    p2 = json.loads((root / paths.PHASE2_METRICS).read_text())
    # the comparison's estimate and the stage's own test loss come from two code paths
    assert rows["cvfp"]["loss"] == pytest.approx(p2["test"]["loss"], abs=1e-4)
    assert rows["cvfp"]["acc"] == p2["test"]["acc"] and rows["cvfp"]["vs"] is None
    for key in ("transformer", "mkn_trigram", "kn_trigram", "kn_bigram", "unigram"):
        r = rows[key]
        assert r["lo"] <= r["loss"] <= r["hi"], key
        assert r["vs"]["verdict"] in VERDICT_WORDS and r["vs"]["lo"] <= r["vs"]["estimate"] <= r["vs"]["hi"]
    assert [k for k, r in rows.items() if r["strongest"]] == [comparison["strongest_ngram"]]
    base = json.loads((root / paths.BASELINES_METRICS).read_text())
    assert rows["majority"]["acc"] == base["test"]["majority"]["acc"] and rows["majority"]["loss"] is None
    t = data["phase2"]["test"]
    assert (t["test_conversations"], t["test_pairs"], t["resamples"], t["level"]) == (2, 62, 2000, 0.95)
    # validation figures only as what the choices were made on
    chosen = data["phase2"]["chosen"]
    assert chosen["cvfp"]["loss"] == p2["val"]["loss"] and chosen["cvfp"]["epoch"] == p2["best_epoch"]
    assert chosen["strongest"] == comparison["strongest_ngram"]
    assert chosen["ngrams"][0] == {"key": "mkn_trigram", "label": "modified Kneser–Ney trigram",
                                   "loss": base["mkn_trigram"]["loss"], "ppl": base["mkn_trigram"]["ppl"]}


def test_phase2_line_gives_the_verdicts_with_their_intervals(tiny_report):
    _, comparison, data = tiny_report
    line = data["phase2_line"]
    assert comparison["cvfp_vs"]["kn_trigram"]["verdict"] == "worse"  # the tiny model is barely trained
    assert line["level"] == "warn"  # worse than one model
    assert "worse than the strongest n-gram model (chosen on validation), Kneser–Ney trigram: CVFP − it = +" \
        in line["text"]
    assert TRANSFORMER_PHRASE[comparison["cvfp_vs"]["transformer"]["verdict"]] in line["text"]
    assert line["text"].count("95% interval") == 3 and "beat" not in line["text"]


def test_verdicts_follow_the_interval(prepared_run, tmp_path):
    root = copy_run(prepared_run, tmp_path / "run")
    # CVFP's loss: lower than each Kneser–Ney model's in every conversation, higher than the
    # unigram's, the transformer's on average
    write_rows(root, kn_trigram=0.5, kn_bigram=0.6, mkn_trigram=0.4, unigram=-0.3, transformer="±0.2")
    edit_json(root, paths.BASELINES_METRICS, kn_bigram__loss=1.0)  # the strongest on validation, not on test
    comparison, data = gather(root)
    assert comparison["strongest_ngram"] == "kn_bigram"
    rows = rows_by_key(data)
    assert [k for k, r in rows.items() if r["strongest"]] == ["kn_bigram"]
    assert {k: rows[k]["vs"]["verdict"] for k in ("kn_bigram", "unigram", "transformer")} == \
        {"kn_bigram": "better", "unigram": "worse", "transformer": "not distinguishable"}
    for r in data["phase2"]["models"]:
        if r.get("vs"):
            lo, hi, word = r["vs"]["lo"], r["vs"]["hi"], r["vs"]["verdict"]
            assert word == ("better" if hi < 0 else "worse" if lo > 0 else "not distinguishable"), r
    line = data["phase2_line"]
    assert line["level"] == "even"
    assert "better than the strongest n-gram model (chosen on validation), Kneser–Ney bigram: CVFP − it = −0.6" \
        in line["text"]
    assert "not distinguishable from the same-size transformer: CVFP − it = +0 nats" in line["text"]
    html = render(data)
    assert '<div class="p2line even">' in html
    tf_row = section_of(html, "phase2").split("transformer, same size")[1].split("</tr>")[0]
    assert '<td class="even">not distinguishable</td>' in tf_row


def test_missing_baselines_and_transformer(prepared_run, tmp_path):
    root = copy_run(prepared_run, tmp_path / "run")
    (root / paths.BASELINES_METRICS).write_text("[1, 2]")
    (root / paths.rows_file("baselines")).unlink()
    comparison, data = gather(root)
    assert rows_by_key(data)["baselines"]["missing"].startswith("metrics/baselines.json is unreadable")
    word = comparison["cvfp_vs"]["transformer"]["verdict"]
    assert comparison["strongest_ngram"] is None and data["phase2_line"]["level"] == LEVEL_OF_ONE[word]
    assert "against the strongest n-gram model: not available" in data["phase2_line"]["text"]
    assert TRANSFORMER_PHRASE[word] in data["phase2_line"]["text"]
    for rel in (paths.TRANSFORMER_METRICS, paths.rows_file("transformer")):
        (root / rel).unlink()
    _, data = gather(root)
    missing = "metrics/transformer.json is missing (stage transformer_lm has not run)"
    assert rows_by_key(data)["transformer"]["missing"] == missing
    assert data["phase2_line"]["level"] == "na"
    timings = {r["stage"]: r for r in data["timings"]["rows"]}
    assert timings["transformer_lm"]["missing"] == missing and "values" in timings["phase2_lm"]


def test_without_test_rows_the_stage_figures_stand_alone(prepared_run, tmp_path):
    root = copy_run(prepared_run, tmp_path / "run")
    for stage in ("phase2", "transformer", "baselines"):
        (root / paths.rows_file(stage)).unlink()
    _, data = gather(root)
    cvfp = rows_by_key(data)["cvfp"]
    p2 = json.loads((root / paths.PHASE2_METRICS).read_text())
    assert (cvfp["loss"], cvfp["lo"], cvfp["hi"]) == (p2["test"]["loss"], None, None)
    assert data["phase2_line"]["level"] == "na"
    assert "the test comparison is not available (no per-conversation test losses" in data["phase2_line"]["text"]
    assert "Intervals not available" in render(data)
