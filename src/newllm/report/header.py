"""The run report's framing: the terms it uses, what was run (data, model, stages, the
parameters recorded with the checkpoints) and the stages' timings and peak memory."""
from __future__ import annotations

from newllm import paths
from newllm.pipeline import STAGES
from newllm.report.guide import GUIDE_PHASE1, GUIDE_PHASE2, thresholds
from newllm.report.inputs import Inputs
from newllm.report.phase2 import transformer_shape
from newllm.values import NA, fmt, fmt_params, fmt_range, get, num


def terms(inp: Inputs, seed: int) -> list[dict]:
    """The words the report uses, defined once: [{term, text}]."""
    th = thresholds(inp)
    src = "params.yaml validate" + ("" if th["recorded"] else f"; defaults shown, metrics/validate.json {NA}")
    g1, g2 = GUIDE_PHASE1, GUIDE_PHASE2
    return [
        {"term": "the original guide",
         "text": "the Colab guide this project started from; the pipeline implements its model and its training "
                 f"procedure. Its success criteria for Phase 1 decide PASS or FAIL: train ER > "
                 f"{fmt(th['min_train_er_pct'])}%, validation ER > {fmt(th['min_val_er_pct'])}%, final_diff < "
                 f"{fmt(th['max_final_diff'])} (thresholds from {src}). Its claimed results are a reference only: "
                 f"Phase 1 train ER {fmt_range(*g1['train_er_pct'], '%')}, validation ER "
                 f"{fmt_range(*g1['val_er_pct'], '%')}, CVFP loss {fmt_range(*g1['cvfp_loss'])} after "
                 f"{fmt_range(*g1['passes'])} passes; Phase 2 loss {fmt_range(*g2['loss'])}, perplexity "
                 f"{fmt_range(*g2['ppl'])}, top-1 accuracy {fmt_range(*g2['acc_pct'], '%')} (its validation "
                 "split, 100k tokens)."},
        {"term": "random seed",
         "text": f"the seed parameter (here {fmt(seed)}); the bootstrap's draws have their own, "
                 "report.bootstrap_seed."},
        {"term": "ER", "text": "the effective rank of the context vectors, as a percentage of the context width "
                               "d_c; higher is better."},
        {"term": "splits", "text": "every choice (early stopping, the kept epoch, the strongest n-gram model) is "
                                   "made on the validation split; every language-model figure is on the test split."},
        {"term": "kept epoch", "text": f"the epoch with the lowest validation loss ({paths.PHASE2_BEST} for CVFP); "
                                       "its test figures are the ones reported."},
        {"term": "95% interval, better / worse / not distinguishable",
         "text": "a percentile bootstrap over the test conversations. For CVFP against a baseline, the interval of "
                 "(CVFP − baseline) test loss decides the word: better when it lies below 0, worse when above, "
                 "not distinguishable when it holds 0."},
    ]


def _split_rows(inp: Inputs) -> list[dict]:
    rows = []
    for label, split in (("training tokens", "train"), ("validation tokens", "val"), ("test tokens", "test")):
        toks = inp.first(("data", f"{split}.tokens"), ("phase1_side", f"{split}_tokens"),
                         ("phase1", "tokens" if split == "train" else f"{split}_tokens"))
        samples = get(inp.data, f"{split}.samples")
        txt = fmt(toks) if toks is not None else NA
        if samples is not None:
            txt += f" tokens in {fmt(samples)} samples"
        rows.append({"label": label, "text": txt})
    return rows


def _data_row(d: dict | None, why: str) -> dict:
    if d is None:
        return {"label": "data", "text": f"{NA} ({why})"}
    extra = []
    if get(d, "vocab_size") is not None:
        extra.append(f"vocabulary {fmt(get(d, 'vocab_size'))}")
    for split, name in (("val", "validation"), ("test", "test")):
        frac = num(get(d, f"{split}.unseen_type_frac"))
        if frac is not None:
            extra.append(f"{100 * frac:.1f}% of {name} token types unseen in training")
    for k in ("source", "tokenizer", "max_seq_length"):
        if get(d, k) is not None:
            extra.append(f"{k} {get(d, k)}")
    return {"label": "data", "text": ", ".join(extra) or "—"}


def _model_row(inp: Inputs) -> dict:
    mc = inp.model_cfg()
    if not mc:
        return {"label": "model", "text": f"{NA} (no checkpoint sidecar: {inp.why('phase1_side', 'phase2_side')})"}
    try:
        sz = inp.model_size()
    except (TypeError, ValueError) as e:
        return {"label": "model", "text": f"{NA} (model config unreadable: {e})"}
    head = (f"head tied to the embedding (only its bias, {fmt_params(sz['head'])}, is its own)" if sz["tied"]
            else f"head {fmt_params(sz['head'])}")
    text = (f"{fmt_params(sz['total'])} parameters ({sz['total']:,}, a tied weight counted once): "
            f"d_c={mc.get('context_dim')}, d_e={mc.get('embed_dim')}, L={mc.get('num_layers')}; layers "
            f"{fmt_params(sz['layers'])}, embedding {fmt_params(sz['embedding'])}, {head}")
    if sz["total"] != sz["from_config"]:
        text += f" (the model config gives {sz['from_config']:,}; the figure is Phase 2's own count)"
    return {"label": "model", "text": text}


def _phase1_row(p1: dict, diversity: dict | None) -> dict:
    div = (f"diversity objective {diversity['name']}" + (f", D(C) = {diversity['formula']}"
                                                         if diversity["formula"] else " (not in the registry)")
           if diversity else "diversity objective not recorded")
    return {"label": "Phase 1", "text": f"{fmt(get(p1, 'passes'))} passes (pass 0 = untrained forward), "
                                        f"{fmt(get(p1, 'optimizer_steps'))} optimizer steps, stopped early: "
                                        f"{fmt(get(p1, 'stopped_early'))}; {div}"}


def _phase2_row(p2: dict) -> dict:
    txt = (f"{fmt(get(p2, 'epochs'))} epochs, {fmt(get(p2, 'optimizer_steps'))} optimizer steps, "
           f"kept epoch {fmt(get(p2, 'best_epoch'))}")
    for key, label in (("tie_embeddings", "head tied to the embedding"), ("freeze_context", "context layers frozen"),
                       ("predict_from", "logits from"), ("embeddings_trained", "embeddings trained")):
        if get(p2, key) is not None:
            txt += f", {label}: {fmt(get(p2, key))}"
    if get(p2, "phase1_passed_validation") is False:
        txt += " — trained on a Phase 1 model that FAILED validation"
    return {"label": "Phase 2", "text": txt}


def _stage_rows(inp: Inputs) -> list[dict]:
    p1, p2, b, t = inp.phase1, inp.phase2, inp.baselines, inp.transformer
    rows = []
    if p1 is not None:
        rows.append(_phase1_row(p1, inp.diversity()))
    if p2 is not None:
        rows.append(_phase2_row(p2))
    rows.append({"label": "baselines", "text": f"{NA} ({inp.why('baselines')})" if b is None else
                 "modified Kneser–Ney trigram, Kneser–Ney trigram and bigram, smoothed unigram, majority token; "
                 f"fitted on {fmt(get(b, 'train_pairs'))} training pairs, scored on {fmt(get(b, 'val_pairs'))} "
                 f"validation and {fmt(get(b, 'test_pairs'))} test pairs"})
    rows.append({"label": "transformer", "text": f"{NA} ({inp.why('transformer')})" if t is None else
                 f"same size as CVFP: {transformer_shape(t)}, {fmt(get(t, 'parameters'))} parameters, "
                 f"{fmt(get(t, 'epochs'))} epochs, kept epoch {fmt(get(t, 'best_epoch'))}"})
    return rows


def _recorded(inp: Inputs) -> list[dict]:
    """The configs recorded with the checkpoints: [{label, sections: {name: {key: value}}, missing}]."""
    out = []
    for label, side, key in ((f"Phase 1 ({paths.PHASE1_SIDECAR})", inp.phase1_side, "phase1_side"),
                             (f"Phase 2 ({paths.sidecar(paths.PHASE2_BEST)}, the kept epoch)", inp.phase2_side,
                              "phase2_side")):
        conf = get(side, "config")
        if not isinstance(conf, dict):
            out.append({"label": label, "missing": inp.why(key) if side is None else "no 'config' recorded"})
            continue
        flat = {k: v for k, v in conf.items() if not isinstance(v, dict)}
        sections = ({"run": flat} if flat else {}) | {k: v for k, v in conf.items() if isinstance(v, dict)}
        out.append({"label": label, "sections": sections})
    return out


def run(inp: Inputs) -> dict:
    """What was run: [{label, text}] rows and the recorded configs."""
    rows = _split_rows(inp) + [_data_row(inp.data, inp.why("data")), _model_row(inp)]
    emb = inp.first(("phase2", "embeddings"), ("phase1", "embeddings"), ("phase1_side", "embeddings"))
    rows.append({"label": "embeddings", "text": str(emb) if emb is not None else NA})
    dev = inp.first(("phase2", "device"), ("phase1", "device"))
    prec = inp.first(("phase2", "precision"), ("phase1", "precision"))
    rows.append({"label": "device / precision",
                 "text": f"{dev if dev is not None else NA} / {prec if prec is not None else NA}"})
    seed = inp.first(("phase1_side", "config.seed"), ("phase2_side", "config.seed"))
    if seed is not None:
        rows.append({"label": "random seed", "text": fmt(seed)})
    return {"rows": rows + _stage_rows(inp), "model": inp.model_size() if inp.model_cfg() else None,
            "recorded": _recorded(inp)}


TIMED_STAGES = [(s.name, s.label) for s in STAGES if s.timed]  # (stage, its Inputs attribute)
TIMING_KEYS = ("time_s", "tokens_per_s", "peak_rss_mb", "peak_cuda_mb")


def timings(inp: Inputs) -> dict:
    """Wall time, speed and peak memory per stage: {columns, rows: [{stage, values | missing}], device}."""
    present = [c for c in TIMING_KEYS if any(get(getattr(inp, a), c) is not None for _, a in TIMED_STAGES)]
    if not present:
        return {"missing": "no stage metrics record timings (" + inp.why("phase1", "phase2") + ")"}
    rows = []
    for stage, attr in TIMED_STAGES:
        m = getattr(inp, attr)
        rows.append({"stage": stage, "missing": inp.why(attr)} if m is None else
                    {"stage": stage, "values": [num(get(m, c)) for c in present]})
    return {"columns": present, "rows": rows, "device": inp.first(("phase2", "device"), ("phase1", "device"))}
