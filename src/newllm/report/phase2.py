"""Phase 2 in the run report: every language model on the test split with its 95% interval,
CVFP's paired difference against each baseline with the verdict word of ``metrics/comparison.json``
(``newllm.compare``), the validation figures the choices were made on, the epoch curves' data and
the original guide's claimed figures as a separate reference.

Lower loss is better; a verdict is that of the interval of (CVFP − baseline) test loss: ``better``
below 0, ``worse`` above, ``not distinguishable`` when it holds 0. No other comparison word is used."""
from __future__ import annotations

from typing import Any

from newllm.report.guide import GUIDE_PHASE2, against_claim
from newllm.report.inputs import Inputs
from newllm.values import NA, fmt, fmt_interval, fmt_pct, fmt_signed, get, num

NGRAMS = (("mkn_trigram", "modified Kneser–Ney trigram"), ("kn_trigram", "Kneser–Ney trigram"),
          ("kn_bigram", "Kneser–Ney bigram"), ("unigram", "smoothed unigram"))
NGRAM_LABELS = dict(NGRAMS)
TRANSFORMER = "the same-size transformer"


def transformer_shape(t: dict | None) -> str:
    """"2 layers, 4 heads, d_model 64" from metrics/transformer.json (what is recorded of it)."""
    shape = []
    for key, word in (("layers", "layer"), ("heads", "head")):
        n = num(get(t, key))
        if n is not None:
            shape.append(f"{int(n)} {word}{'' if n == 1 else 's'}")
    if num(get(t, "d_model")) is not None:
        shape.append(f"d_model {fmt(get(t, 'd_model'))}")
    return ", ".join(shape)


def _paired(d: Any) -> dict | None:
    if not isinstance(d, dict) or num(d.get("estimate")) is None:
        return None
    return {"estimate": num(d.get("estimate")), "lo": num(d.get("lo")), "hi": num(d.get("hi")),
            "verdict": d.get("verdict")}


def _row(comparison: dict, key: str, label: str, test: Any, acc: Any = None, parameters: Any = None) -> dict:
    """One model's test figures: loss and interval from the comparison, else the stage's own test
    loss (without an interval); CVFP's paired difference against it where there is one."""
    m = get(comparison, f"models.{key}") or {}
    loss = num(m.get("estimate"))
    ppl = num(m.get("ppl"))
    if loss is None:
        loss, ppl = num(get(test, "loss")), num(get(test, "ppl"))
    return {"key": key, "label": label, "loss": loss, "lo": num(m.get("lo")), "hi": num(m.get("hi")), "ppl": ppl,
            "acc": num(acc), "parameters": num(parameters),
            "vs": None if key == "cvfp" else _paired(get(comparison, f"cvfp_vs.{key}")),
            "strongest": key == comparison.get("strongest_ngram")}


def model_rows(inp: Inputs, comparison: dict) -> list[dict]:
    """One row per model: CVFP, the transformer, the n-gram models, the majority token (accuracy
    only); a model whose stage has not run is a row with ``missing``."""
    p2, tf, b = inp.phase2, inp.transformer, inp.baselines
    rows = []
    if p2 is None and "cvfp" not in comparison.get("models", {}):
        rows.append({"key": "cvfp", "label": "CVFP", "missing": inp.why("phase2")})
    else:
        size = inp.model_size()
        rows.append(_row(comparison, "cvfp", f"CVFP (kept epoch {fmt(get(p2, 'best_epoch'))})", get(p2, "test"),
                         get(p2, "test.acc"), size["total"] if size else get(p2, "parameters")))
    shape = transformer_shape(tf)
    label = "transformer, same size" + (f" ({shape})" if shape else "")
    if tf is None and "transformer" not in comparison.get("models", {}):
        rows.append({"key": "transformer", "label": label, "missing": inp.why("transformer")})
    else:
        rows.append(_row(comparison, "transformer", label, get(tf, "test"), get(tf, "test.acc"), get(tf, "parameters")))
    if b is None:
        rows.append({"key": "baselines", "label": "n-gram models and majority token", "missing": inp.why("baselines")})
        return rows
    for key, name in NGRAMS:
        if get(b, f"test.{key}") is not None or key in comparison.get("models", {}):
            rows.append(_row(comparison, key, name, get(b, f"test.{key}")))
    if num(get(b, "test.majority.acc")) is not None:
        rows.append({"key": "majority", "label": "majority token (most frequent training token)", "loss": None,
                     "lo": None, "hi": None, "ppl": None, "acc": num(get(b, "test.majority.acc")),
                     "parameters": None, "vs": None, "strongest": False})
    return rows


def _against(comparison: dict, key: str | None, name: str) -> tuple[str | None, str]:
    """(verdict, phrase) of CVFP against one model: the verdict word and the interval, never alone."""
    d = _paired(get(comparison, f"cvfp_vs.{key}")) if key else None
    if d is None:
        return None, f"against {name}: {NA}"
    word = {"better": "better than", "worse": "worse than"}.get(d["verdict"], "not distinguishable from")
    return d["verdict"], (f"{word} {name}: CVFP − it = {fmt_signed(d['estimate'])} nats per token, "
                          f"95% interval {fmt_interval(d['lo'], d['hi'], signed=True)}")


def phase2_line(inp: Inputs, comparison: dict) -> dict:
    """The line under the banner: CVFP's test loss and its verdict against the strongest n-gram
    model (chosen on validation) and the same-size transformer. level: ok (better than each
    present), warn (worse than one), even (otherwise), na (no test comparison)."""
    cvfp = get(comparison, "models.cvfp")
    epoch = fmt(get(inp.phase2, "best_epoch"))
    if not isinstance(cvfp, dict):
        loss = num(get(inp.phase2, "test.loss"))
        why = inp.why("phase2") if inp.phase2 is None else "no per-conversation test losses (metrics/rows/)"
        own = "" if loss is None else f": test loss {fmt(loss)}, perplexity {fmt(num(get(inp.phase2, 'test.ppl')))}"
        return {"level": "na", "text": f"Phase 2 (CVFP, kept epoch {epoch}){own} — the test comparison is {NA} "
                                       f"({why})"}
    ng = comparison.get("strongest_ngram")
    ng_name = (f"the strongest n-gram model (chosen on validation), {NGRAM_LABELS.get(ng, ng)}" if ng
               else "the strongest n-gram model")
    results = [_against(comparison, ng, ng_name), _against(comparison, "transformer", TRANSFORMER)]
    words = [w for w, _ in results if w is not None]
    level = ("na" if not words else "ok" if all(w == "better" for w in words)
             else "warn" if "worse" in words else "even")
    head = (f"Phase 2 (CVFP, kept epoch {epoch}) on the test split: loss {fmt(num(cvfp.get('estimate')))} nats, "
            f"95% interval {fmt_interval(cvfp.get('lo'), cvfp.get('hi'))}, perplexity {fmt(num(cvfp.get('ppl')))}")
    return {"level": level, "text": f"{head} — " + "; ".join(p for _, p in results)}


def chosen(inp: Inputs, comparison: dict) -> dict:
    """The validation figures the choices were made on: each model's kept epoch (lowest
    validation loss) and the strongest n-gram model."""
    p2, tf, b = inp.phase2, inp.transformer, inp.baselines
    out: dict = {"cvfp": None, "cvfp_last": None, "transformer": None, "ngrams": [],
                 "strongest": comparison.get("strongest_ngram")}
    if p2 is not None:
        out["cvfp"] = {"epoch": get(p2, "best_epoch"), "epochs": get(p2, "epochs"), "loss": num(get(p2, "val.loss")),
                       "ppl": num(get(p2, "val.ppl")), "acc": num(get(p2, "val.acc"))}
        if isinstance(get(p2, "last"), dict) and get(p2, "last.epoch") != get(p2, "best_epoch"):
            out["cvfp_last"] = {"epoch": get(p2, "last.epoch"), "loss": num(get(p2, "last.val.loss")),
                                "ppl": num(get(p2, "last.val.ppl")), "acc": num(get(p2, "last.val.acc"))}
    if tf is not None:
        out["transformer"] = {"epoch": get(tf, "best_epoch"), "epochs": get(tf, "epochs"),
                              "loss": num(get(tf, "val.loss")), "ppl": num(get(tf, "val.ppl")),
                              "acc": num(get(tf, "val.acc"))}
    for key, label in NGRAMS:
        if num(get(b, f"{key}.loss")) is not None:
            out["ngrams"].append({"key": key, "label": label, "loss": num(get(b, f"{key}.loss")),
                                  "ppl": num(get(b, f"{key}.ppl"))})
    out["majority_acc"] = num(get(b, "majority.acc"))
    return out


def guide_reference(inp: Inputs) -> dict:
    """The original guide's claimed Phase 2 figures beside CVFP's test figures, placed in neutral
    words; a reference, not a criterion."""
    test = get(inp.phase2, "test") or {}
    acc = num(test.get("acc"))
    figures = [("loss", num(test.get("loss")), "loss", ""), ("perplexity", num(test.get("ppl")), "ppl", ""),
               ("top-1 accuracy", None if acc is None else 100 * acc, "acc_pct", "%")]
    rows = [{"figure": name, "value": v, "unit": unit, "claim": GUIDE_PHASE2[key],
             "position": against_claim(v, *GUIDE_PHASE2[key], unit)} for name, v, key, unit in figures]
    maj = num(get(inp.baselines, "test.majority.acc"))
    note = ("The original guide's claim is on its validation split at 100k tokens. Its “10–15% accuracy” is "
            "the majority-token rate of its data; " +
            (f"always predicting the most frequent training token scores {fmt_pct(100 * maj)} on this test split."
             if maj is not None else f"this run's majority-token rate is {NA} ({inp.why('baselines')})."))
    return {"rows": rows, "note": note}


def curves(inp: Inputs, comparison: dict) -> dict:
    """Phase 2's epoch curves (training and validation) with the validation figures of the
    strongest n-gram model and the transformer as reference lines, and the kept epoch."""
    ep = inp.epochs
    if ep is None:
        return {"missing": inp.why("epochs")}
    b, tf, ng = inp.baselines, inp.transformer, comparison.get("strongest_ngram")
    acc = ep.get("val_acc") or []
    tf_acc, maj = num(get(tf, "val.acc")), num(get(b, "majority.acc"))
    return {"epoch": ep.get("epoch") or list(range(1, len(next(iter(ep.values()))) + 1)),
            "train_loss": ep.get("train_loss"), "val_loss": ep.get("val_loss"), "train_ppl": ep.get("train_ppl"),
            "val_ppl": ep.get("val_ppl"), "val_acc_pct": [None if y is None else 100 * y for y in acc],
            "kept": num(get(inp.phase2, "best_epoch")),
            "ngram": None if not ng else {"label": NGRAM_LABELS.get(ng, ng), "loss": num(get(b, f"{ng}.loss")),
                                          "ppl": num(get(b, f"{ng}.ppl"))},
            "transformer": {"loss": num(get(tf, "val.loss")), "ppl": num(get(tf, "val.ppl")),
                            "acc_pct": None if tf_acc is None else 100 * tf_acc},
            "majority_acc_pct": None if maj is None else 100 * maj}


def test_settings(comparison: dict) -> dict:
    keys = ("test_conversations", "test_pairs", "level", "resamples", "bootstrap_seed", "missing_stages")
    return {k: comparison.get(k) for k in keys}


def transformer_vs(comparison: dict) -> dict | None:
    """The transformer against the strongest n-gram model (its paired test difference)."""
    ng = comparison.get("strongest_ngram")
    d = _paired(get(comparison, f"transformer_vs.{ng}")) if ng else None
    return None if d is None else {**d, "ngram": NGRAM_LABELS.get(ng, ng)}


def phase2(inp: Inputs, comparison: dict) -> dict:
    return {"models": model_rows(inp, comparison), "test": test_settings(comparison),
            "chosen": chosen(inp, comparison), "curves": curves(inp, comparison),
            "transformer_vs": transformer_vs(comparison), "guide": guide_reference(inp),
            "phase2_missing": None if inp.phase2 is not None else inp.why("phase2")}
