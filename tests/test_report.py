"""The run report: the data the report stage gathers (``stage.gather``, what the renderer gets)
on a real tiny run and on runs changed in one place, and a few checks of the HTML itself
(escaped, self-contained, every section present, a missing input says "not available")."""
from __future__ import annotations

import json

import pytest
from report_helpers import (
    VERDICT_WORDS,
    config,
    copy_prepared,
    edit_json,
    gather,
    has_remote_refs,
    render,
    section_of,
    text_of,
    tiny_checkpoint,
    write_rows,
)

from newllm import paths
from newllm.config import ReportConfig
from newllm.cvfp.model import parameter_counts
from newllm.report.build import report_data
from newllm.report.guide import against_claim
from newllm.report.inputs import Inputs
from newllm.report.samples import text_samples

SECTIONS = ("run", "criteria", "passes", "spectrum", "convergence", "phase2", "generation", "timings")
# TINY_PARAMS' model (vocabulary 50257, d_e = d_c = 16, two layers) with its head tied to the
# embedding: embedding 50257*16, LN_e 2*16, layers 2*(32*32 + 32 + 2*16 + 2*16), head bias 50257
TINY_TIED_TOTAL = 804_112 + 32 + 2_240 + 50_257
UNIFORMITY = "log mean_{(i,j)∈P} exp(−t ‖z_i − z_j‖²)"


@pytest.fixture(scope="module")
def tiny(prepared_run, tmp_path_factory):
    """(root, comparison, data) of a private copy of the prepared run."""
    root = copy_prepared(prepared_run, tmp_path_factory.mktemp("report") / "run")
    comparison, data = gather(root)
    return root, comparison, data


def rows_by_key(data: dict) -> dict:
    return {r["key"]: r for r in data["phase2"]["models"]}


# ---------------------------------------------------------------------------
# the data of a real tiny run


def test_data_is_plain_and_complete(tiny):
    _, _, data = tiny
    json.dumps(data)  # strings, numbers, lists, dicts: nothing but plain data reaches the renderer
    assert list(data) == ["verdict", "phase2_line", "terms", *SECTIONS]
    assert not [s for s in SECTIONS if "missing" in data[s]]
    assert "add-one" not in json.dumps(data) and "add_one" not in json.dumps(data)


def test_phase2_rows_are_test_figures_with_intervals(tiny):
    root, comparison, data = tiny
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


def test_phase2_line_gives_the_verdicts_with_their_intervals(tiny):
    _, comparison, data = tiny
    line = data["phase2_line"]
    assert comparison["cvfp_vs"]["kn_trigram"]["verdict"] == "worse"  # the tiny model is barely trained
    assert comparison["cvfp_vs"]["transformer"]["verdict"] == "worse"
    assert line["level"] == "warn"
    assert "worse than the strongest n-gram model (chosen on validation), Kneser–Ney trigram: CVFP − it = +" \
        in line["text"]
    assert "worse than the same-size transformer: CVFP − it = +" in line["text"]
    assert line["text"].count("95% interval") == 3 and "beat" not in line["text"]


def test_parameter_counts_agree_everywhere(tiny):
    root, _, data = tiny
    model = data["run"]["model"]
    assert model["total"] == model["from_config"] == TINY_TIED_TOTAL
    assert model["tied"] and model["head"] == 50_257
    assert rows_by_key(data)["cvfp"]["parameters"] == TINY_TIED_TOTAL
    assert json.loads((root / paths.PHASE2_METRICS).read_text())["parameters"] == TINY_TIED_TOTAL
    row = next(r for r in data["run"]["rows"] if r["label"] == "model")
    assert row["text"].startswith("0.86 M parameters (856,641, a tied weight counted once)")
    assert "head tied to the embedding" in row["text"]


def test_tied_count_is_the_models_own(tmp_path):
    """The tied count is that of a real model whose head shares the embedding matrix."""
    from newllm.config import ModelConfig
    from newllm.cvfp.model import CVFPModel
    from newllm.report.inputs import Inputs

    mc = ModelConfig(context_dim=8, embed_dim=6, num_layers=3, vocab_size=50)
    model = CVFPModel(mc, "token")
    model.tie_head()
    unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    inp = Inputs(root=tmp_path, phase2_side={"config": {"model": {**mc.__dict__, "tie_embeddings": True}}})
    assert inp.model_size()["total"] == unique
    assert parameter_counts({"context_dim": 768, "embed_dim": 768, "num_layers": 6, "vocab_size": 50257})["total"] \
        == 91_429_969


def test_phase1_plot_is_named_after_the_objective_that_ran(tiny):
    _, _, data = tiny
    assert data["passes"]["diversity"]["name"] == "uniformity"
    assert data["passes"]["diversity"]["formula"] == UNIFORMITY
    phase1_row = next(r for r in data["run"]["rows"] if r["label"] == "Phase 1")
    assert f"diversity objective uniformity, D(C) = {UNIFORMITY}" in phase1_row["text"]


def test_the_real_checkpoint_continues_every_prompt(tiny):
    _, _, data = tiny
    gen = data["generation"]
    assert [it["prompt"] for it in gen["items"]] == ReportConfig().prompts
    assert all(it["error"] is None and it["continuation"] for it in gen["items"]), gen["items"]
    assert gen["settings"]["mode"] == "greedy (temperature 0)" and gen["settings"]["max_new_tokens"] == 5


def test_timings_list_every_stage(tiny):
    root, _, data = tiny
    t = data["timings"]
    assert [r["stage"] for r in t["rows"]] == ["fetch_ultrachat", "tokenize_cache", "baselines",
                                              "phase1_fixed_point", "validate_rank", "phase2_lm", "transformer_lm"]
    assert t["columns"][0] == "time_s"
    p1 = json.loads((root / paths.PHASE1_METRICS).read_text())
    assert t["rows"][3]["values"][0] == p1["time_s"]


# ---------------------------------------------------------------------------
# verdicts and the original guide's claims


def test_verdicts_follow_the_interval(prepared_run, tmp_path):
    root = copy_prepared(prepared_run, tmp_path / "run")
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


@pytest.mark.parametrize("value, words", [
    (88.0, "within the guide's claimed 88–90%"), (87.9, "below the guide's claimed 88–90%"),
    (90.5, "above the guide's claimed 88–90%"), (None, None)])
def test_a_claim_is_placed_in_neutral_words(value, words):
    assert against_claim(value, 88.0, 90.0, "%") == words


def test_a_passed_row_never_reads_worse(prepared_run, tmp_path):
    root = copy_prepared(prepared_run, tmp_path / "run")
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


def test_failed_phase1_banner_names_what_failed(tiny, prepared_run, tmp_path):
    vd = tiny[2]["verdict"]
    assert vd["level"] == "bad" and vd["line"].startswith("Phase 1 FAILED: the original guide's criteria are NOT met")
    assert "train ER" in vd["line"] and "validation ER" in vd["line"]
    for word in ("Phase 2", "perplexity", "transformer", "n-gram"):
        assert word not in json.dumps(vd), word
    root = copy_prepared(prepared_run, tmp_path / "run")
    edit_json(root, paths.PHASE1_METRICS, optimizer_steps=0)
    edit_json(root, paths.VALIDATE_METRICS, optimizer_steps=0, collapsed=True, train__collapsed=True,
              train__global_attractor=True)
    _, data = gather(root)
    shorts = [it["short"] for it in data["verdict"]["items"]]
    assert "NO optimizer step was taken" in shorts and "contexts COLLAPSED" in shorts
    assert data["criteria"]["training"][0] == {"label": "optimizer steps", "value": 0, "bad": True,
                                               "note": "never trained"}


def test_guide_reference_and_terms(tiny, prepared_run, tmp_path):
    guide = tiny[2]["phase2"]["guide"]
    assert [(r["figure"], r["position"]) for r in guide["rows"]] == [
        ("loss", "above the guide's claimed 4.5–5.5"), ("perplexity", "above the guide's claimed 90–250"),
        ("top-1 accuracy", "below the guide's claimed 10–15%")]
    assert "scores 12.90% on this test split" in guide["note"]
    root = copy_prepared(prepared_run, tmp_path / "run")
    edit_json(root, paths.VALIDATE_METRICS, thresholds__min_val_er_pct=71.5)
    _, data = gather(root, seed=7)
    terms = {t["term"]: t["text"] for t in data["terms"]}
    assert "validation ER > 71.5%" in terms["the original guide"]
    assert terms["random seed"].startswith("the seed parameter (here 7)")


# ---------------------------------------------------------------------------
# missing and broken inputs


def test_missing_baselines_and_transformer(prepared_run, tmp_path):
    root = copy_prepared(prepared_run, tmp_path / "run")
    (root / paths.BASELINES_METRICS).write_text("[1, 2]")
    (root / paths.rows_file("baselines")).unlink()
    comparison, data = gather(root)
    assert rows_by_key(data)["baselines"]["missing"].startswith("metrics/baselines.json is unreadable")
    assert comparison["strongest_ngram"] is None and data["phase2_line"]["level"] == "warn"
    assert "against the strongest n-gram model: not available" in data["phase2_line"]["text"]
    assert "worse than the same-size transformer" in data["phase2_line"]["text"]
    for rel in (paths.TRANSFORMER_METRICS, paths.rows_file("transformer")):
        (root / rel).unlink()
    _, data = gather(root)
    missing = "metrics/transformer.json is missing (stage transformer_lm has not run)"
    assert rows_by_key(data)["transformer"]["missing"] == missing
    assert data["phase2_line"]["level"] == "na"
    timings = {r["stage"]: r for r in data["timings"]["rows"]}
    assert timings["transformer_lm"]["missing"] == missing and "values" in timings["phase2_lm"]


def test_without_test_rows_the_stage_figures_stand_alone(prepared_run, tmp_path):
    root = copy_prepared(prepared_run, tmp_path / "run")
    for stage in ("phase2", "transformer", "baselines"):
        (root / paths.rows_file(stage)).unlink()
    _, data = gather(root)
    cvfp = rows_by_key(data)["cvfp"]
    p2 = json.loads((root / paths.PHASE2_METRICS).read_text())
    assert (cvfp["loss"], cvfp["lo"], cvfp["hi"]) == (p2["test"]["loss"], None, None)
    assert data["phase2_line"]["level"] == "na"
    assert "the test comparison is not available (no per-conversation test losses" in data["phase2_line"]["text"]
    assert "Intervals not available" in render(data)


def test_unreadable_inputs_do_not_crash(prepared_run, tmp_path):
    root = copy_prepared(prepared_run, tmp_path / "run")
    (root / paths.VALIDATE_METRICS).write_text("{not json")
    (root / paths.SPECTRUM).write_text("")
    (root / paths.PHASE2_BEST).write_bytes(b"not a model")
    _, data = gather(root)
    assert "metrics/validate.json is unreadable" in data["criteria"]["missing"]
    assert data["verdict"]["level"] == "warn" and "spectrum.csv is unreadable" in data["spectrum"]["missing"]
    assert "models/phase2_best.pt" in data["generation"]["missing"]
    # without validate.json the objective's name comes from metrics/phase1.json
    assert data["passes"]["diversity"]["formula"] == UNIFORMITY


# ---------------------------------------------------------------------------
# text samples


def test_samples_of_a_tiny_checkpoint(tmp_path):
    tiny_checkpoint(tmp_path)
    cfg = ReportConfig(prompts=["hello how are you ?", "the capital"], max_new_tokens=4)
    first = text_samples(tmp_path, cfg, seed=0)
    assert first == text_samples(tmp_path, cfg, seed=0)  # greedy: reproducible
    assert [len(it["continuation"].split()) for it in first["items"]] == [4, 4]
    sampled = text_samples(tmp_path, ReportConfig(prompts=["hello"], max_new_tokens=4, temperature=0.7, top_k=3), 9)
    assert sampled["settings"]["mode"] == "sampled: temperature 0.7, top_k 3, random seed 9"


def test_a_failing_prompt_is_an_error_string(tmp_path):
    tiny_checkpoint(tmp_path, vocab_size=6)  # the model cannot read "paris" (id 9)
    out = text_samples(tmp_path, ReportConfig(prompts=["paris", "hello how"], max_new_tokens=3), seed=0)
    bad, good = out["items"]
    assert bad["continuation"] is None and bad["error"].startswith("DataError: the prompt's token ids [9]")
    assert good["error"] is None and len(good["continuation"].split()) == 3


# ---------------------------------------------------------------------------
# the HTML


def test_stage_writes_a_self_contained_report_and_prints_its_path_once(prepared_run, tmp_path, capsys,
                                                                       monkeypatch):
    from newllm.stages import report as stage
    root = copy_prepared(prepared_run, tmp_path / "run")
    monkeypatch.chdir(root)
    out = stage.run(config())
    assert out == (root / paths.REPORT).resolve()
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count(str(out)) == 1
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not has_remote_refs(html) and "http://" not in html and "https://" not in html
    assert html.count('src="data:image/png;base64,') == 4
    order = [html.index(f'<section id="{a}">') for a in SECTIONS]
    assert order == sorted(order) and "not available" not in html
    assert json.loads((root / paths.HEADLINE).read_text())["vs_ngram"] == "worse"
    assert json.loads((root / paths.COMPARISON).read_text())["test_conversations"] == 2
    assert stage.SECTIONS == ["report"]


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


def test_every_text_is_escaped(tiny):
    _, _, data = tiny
    data = json.loads(json.dumps(data))
    hostile = "<script>alert('x')</script> & more\n\n\tend"
    data["generation"]["items"] = [{"prompt": "Hi <b>there</b>", "continuation": hostile, "error": None},
                                   {"prompt": "boom", "continuation": None, "error": "RuntimeError: <oops>"}]
    data["run"]["recorded"][0]["sections"]["run"]["note"] = "<img src=x onerror=alert(1)>"
    data["phase2"]["models"][0]["label"] = "CVFP <i>"
    html = render(data)
    assert "<script>" not in html and "<b>there</b>" not in html and "<img src=x" not in html
    assert "<i>" not in html and "CVFP &lt;i&gt;" in html
    assert ('&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more<span class="ws">↵</span>'
            '<span class="ws">↵</span><span class="ws">⇥</span>end') in html
    gen = text_of(section_of(html, "generation"))
    assert "generation failed: RuntimeError: &lt;oops&gt;" in gen and "Hi &lt;b&gt;there&lt;/b&gt;" in gen
