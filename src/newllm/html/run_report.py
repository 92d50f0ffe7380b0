"""The run report: one self-contained HTML file (inline CSS, PNG plots as data URIs).

``build_report(root, cfg, seed)`` reads every metrics/history file the stages write
(``newllm.paths``), relative to ``root``, and returns the HTML. It tells one story, in order:

- the banner: Phase 1's verdict against the original guide's criteria and nothing else (red when
  it failed, the contexts collapsed, no optimizer step was taken or the parameters did not move);
- the Phase 2 line: the kept checkpoint's validation perplexity against the strongest baseline
  (Kneser–Ney n-grams, smoothed unigram, the same-size transformer);
- the terms the report uses ("the original guide", "random seed", ER, kept checkpoint);
- the sections (``newllm.html.report_sections``): what was run; the original guide's success
  criteria against the measured values and their references; Phase 1 pass curves;
  singular-value spectra; convergence-check diffs; Phase 2 epoch curves and its table against
  every baseline and the original guide's figures; generated continuations of ``report.prompts``;
  timings and peak memory.

A missing input (a stage that has not run) makes its section say "not available" instead of
failing; every piece of text is HTML-escaped. Nothing refers to a network resource.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from newllm import paths
from newllm.config import ReportConfig
from newllm.cvfp.model import parameter_counts
from newllm.cvfp.rank import COLLAPSE_ER_PCT
from newllm.html.common import (
    CSS,
    NA,
    esc,
    fmt,
    fmt_params,
    fmt_pct,
    fmt_range,
    get,
    guarded,
    kv_line,
    na,
    num,
    read_csv_columns,
    table,
)
from newllm.html.report_sections import (
    GUIDE_PHASE1,
    GUIDE_PHASE2,
    convergence_body,
    criteria_body,
    generation_body,
    passes_body,
    phase2_body,
    phase2_line,
    spectrum_body,
    thresholds,
    timings_body,
    transformer_shape,
)

__all__ = ["GUIDE_PHASE1", "GUIDE_PHASE2", "Inputs", "Verdict", "build_report", "verdict"]
log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------
# inputs


@dataclass
class Inputs:
    root: Path
    fetch: dict | None = None
    data: dict | None = None
    phase1: dict | None = None
    phase1_side: dict | None = None
    validate: dict | None = None
    phase2: dict | None = None
    phase2_side: dict | None = None
    passes: dict | None = None
    spectrum: dict | None = None
    convergence: dict | None = None
    epochs: dict | None = None
    baselines: dict | None = None
    transformer: dict | None = None
    problems: dict = field(default_factory=dict)

    FILES = {
        "fetch": (paths.FETCH_METRICS, "fetch_ultrachat", "json"),
        "data": (paths.DATA_METRICS, "tokenize_cache", "json"),
        "phase1": (paths.PHASE1_METRICS, "phase1_fixed_point", "json"),
        "phase1_side": (paths.PHASE1_SIDECAR, "phase1_fixed_point", "json"),
        "validate": (paths.VALIDATE_METRICS, "validate_rank", "json"),
        "phase2": (paths.PHASE2_METRICS, "phase2_lm", "json"),
        "phase2_side": (paths.sidecar(paths.PHASE2_BEST), "phase2_lm", "json"),
        "passes": (paths.PHASE1_HISTORY, "phase1_fixed_point", "csv"),
        "spectrum": (paths.SPECTRUM, "validate_rank", "csv"),
        "convergence": (paths.CONVERGENCE, "validate_rank", "csv"),
        "epochs": (paths.PHASE2_HISTORY, "phase2_lm", "csv"),
        "baselines": (paths.BASELINES_METRICS, "baselines", "json"),
        "transformer": (paths.TRANSFORMER_METRICS, "transformer_lm", "json"),
    }

    @classmethod
    def load(cls, root: Path) -> "Inputs":
        inp = cls(root=Path(root))
        for name, (rel, stage, kind) in cls.FILES.items():
            p = inp.root / rel
            if not p.exists():
                inp.problems[name] = f"{rel} is missing (stage {stage} has not run)"
                continue
            try:
                if kind == "json":
                    obj = json.loads(p.read_text(encoding="utf-8"))
                    if not isinstance(obj, dict):
                        raise ValueError("not a JSON object")
                else:
                    obj = read_csv_columns(p)
                    if not obj or not any(len(c) for c in obj.values()):
                        raise ValueError("no rows")
            except Exception as e:  # unreadable input: the section says so, the report goes on
                inp.problems[name] = f"{rel} is unreadable ({type(e).__name__}: {e})"
                continue
            setattr(inp, name, obj)
        return inp

    def why(self, *names: str) -> str:
        return "; ".join(self.problems[n] for n in names if n in self.problems) or "no data"

    # -- derived figures ----------------------------------------------------------------
    def model_cfg(self) -> dict | None:
        for side in (self.phase2_side, self.phase1_side):
            m = get(side, "config.model")
            if isinstance(m, dict):
                return m
        return None

    def head_from(self) -> str:
        return str(get(self.phase2_side, "config.phase2.predict_from", "token") or "token")

    def first(self, *pairs: tuple[str, str]) -> Any:
        """The first present value among (attribute, dotted key) pairs."""
        for attr, key in pairs:
            v = get(getattr(self, attr), key)
            if v is not None:
                return v
        return None


# ---------------------------------------------------------------------------
# the verdict, the Phase 2 line, the terms


@dataclass
class Verdict:
    """Phase 1's verdict: the banner's line, its colour, and each finding with its evidence."""
    line: str
    level: str  # "ok" | "warn" | "bad"
    items: list  # (level, short, detail)


def _collapse_detail(v: dict) -> str:
    coll = [s for s in ("train", "val") if get(v, f"{s}.collapsed")]
    kinds = []
    for s in coll or ("train", "val"):
        why = [n for n, k in (("global attractor", "global_attractor"), ("near zero", "near_zero"))
               if get(v, f"{s}.{k}")]
        er = num(get(v, f"{s}.er_pct"))
        if er is not None and er < COLLAPSE_ER_PCT:
            why.append(f"ER {er:.2f}% < {COLLAPSE_ER_PCT:g}%")
        kinds.append(f"{s}: {', '.join(why) or 'collapsed'}")
    return "; ".join(kinds)


def verdict(inp: Inputs) -> Verdict:
    """Phase 1's verdict against the original guide's criteria, and nothing else: Phase 2 is
    judged on its own line (``phase2_line``), so that the banner's colour means one thing."""
    items: list[tuple[str, str, str]] = []
    v, p1 = inp.validate, inp.phase1
    if v is None:
        items.append(("warn", "verdict not available", inp.why("validate")))
    else:
        names = {"train_er": "train ER", "val_er": "validation ER", "final_diff": "final_diff"}
        figures = (f"train ER {fmt_pct(get(v, 'train.er_pct'))}, validation ER {fmt_pct(get(v, 'val.er_pct'))}, "
                   f"final_diff {fmt(num(v.get('final_diff')), 3)}")
        if v.get("passed"):
            items.append(("ok", "the original guide's criteria are met", figures))
        else:
            failed = [names.get(k, k) for k, ok in (v.get("criteria") or {}).items() if not ok]
            items.append(("bad", f"the original guide's criteria are NOT met ({', '.join(failed) or 'see the table'})",
                          figures))
        if v.get("collapsed") or any(get(v, f"{s}.collapsed") for s in ("train", "val")):
            items.append(("bad", "contexts COLLAPSED", _collapse_detail(v)))
    steps = inp.first(("phase1", "optimizer_steps"), ("validate", "optimizer_steps"),
                      ("phase1_side", "optimizer_steps"))
    no_step = steps is not None and num(steps) == 0
    if no_step:
        items.append(("bad", "NO optimizer step was taken",
                      "its ranks are those of the untrained network (the original code's guard bug)"))
    if num(get(p1, "param_change")) == 0 and not no_step:
        items.append(("bad", "the parameters did not change", "param_change is 0"))
    levels = [lvl for lvl, _, _ in items]
    level = "bad" if "bad" in levels else ("warn" if "warn" in levels else "ok")
    head = {"bad": "FAILED", "warn": "INCOMPLETE", "ok": "PASSED"}[level]
    shown = [short for lvl, short, _ in items if lvl == level]
    return Verdict(line=f"Phase 1 {head}: " + "; ".join(shown), level=level, items=items)


def banner_html(vd: Verdict) -> str:
    lis = "".join(f'<li class="{lvl}"><b>{esc(short)}</b>: {esc(detail)}</li>' for lvl, short, detail in vd.items)
    return (f'<div class="banner {vd.level}" role="alert"><div class="verdict">{esc(vd.line)}</div>'
            f'<ul>{lis}</ul></div>')


def phase2_line_html(inp: Inputs) -> str:
    try:
        level, text = phase2_line(inp)
    except Exception as e:  # a broken input must not cost the whole report
        log.warning("report Phase 2 line failed: %s: %s", type(e).__name__, e)
        level, text = "na", f"Phase 2: {NA} (the comparison could not be computed: {type(e).__name__}: {e})"
    return f'<div class="p2line {level}">{esc(text)}</div>'


def terms_html(inp: Inputs, seed: int) -> str:
    """The words the report uses, defined once."""
    t_min, v_min, fd_max, recorded = thresholds(inp)
    src = "params.yaml <code>validate</code>" + ("" if recorded else f"; defaults shown, metrics/validate.json {NA}")
    g1, g2 = GUIDE_PHASE1, GUIDE_PHASE2
    items = [
        "<b>the original guide</b>: the Colab guide this project started from; the pipeline implements its "
        f"model and its training procedure. Its success criteria for Phase 1: train ER &gt; {esc(fmt(t_min))}%, "
        f"validation ER &gt; {esc(fmt(v_min))}%, final_diff &lt; {esc(fmt(fd_max))} (thresholds from {src}). "
        f"Its claimed results: Phase 1 train ER {esc(fmt_range(*g1['train_er_pct'], '%'))}, validation ER "
        f"{esc(fmt_range(*g1['val_er_pct'], '%'))}, CVFP loss {esc(fmt_range(*g1['cvfp_loss']))} after "
        f"{esc(fmt_range(*g1['passes']))} passes; Phase 2 validation loss {esc(fmt_range(*g2['loss']))}, "
        f"perplexity {esc(fmt_range(*g2['ppl']))}, top-1 accuracy {esc(fmt_range(*g2['acc_pct'], '%'))}.",
        f"<b>random seed</b>: the <code>seed</code> parameter (here {esc(fmt(seed))}), the only meaning of "
        "“seed” in this report.",
        "<b>ER</b>: the effective rank of the context vectors, as a percentage of the context width d_c; "
        "higher is better.",
        f"<b>kept checkpoint</b>: the Phase 2 epoch with the lowest validation loss ({esc(paths.PHASE2_BEST)}); "
        "every baseline is scored on the same validation pairs.",
    ]
    return '<div class="terms"><b>Terms</b><ul>' + "".join(f"<li>{x}</li>" for x in items) + "</ul></div>"


# ---------------------------------------------------------------------------
# what was run


def _data_rows(inp: Inputs) -> list[list[str]]:
    d = inp.data
    rows: list[list[str]] = []
    for label, split in (("training tokens", "train"), ("validation tokens", "val")):
        toks = inp.first(("data", f"{split}.tokens"), ("phase1_side", f"{split}_tokens"),
                         ("phase1", "tokens" if split == "train" else "val_tokens"))
        samples = get(d, f"{split}.samples")
        txt = fmt(toks) if toks is not None else NA
        if samples is not None:
            txt += f" tokens in {fmt(samples)} samples"
        rows.append([label, txt])
    if d is None:
        return rows + [["data metrics", f"{NA} ({inp.why('data')})"]]
    extra = []
    if get(d, "vocab_size") is not None:
        extra.append(f"vocabulary {fmt(get(d, 'vocab_size'))}")
    if num(get(d, "val.unseen_type_frac")) is not None:
        extra.append(f"{100 * num(get(d, 'val.unseen_type_frac')):.1f}% of validation token types "
                     f"unseen in training")
    for k in ("source", "tokenizer", "max_seq_length"):
        if get(d, k) is not None:
            extra.append(f"{k} {get(d, k)}")
    return rows + [["data", ", ".join(extra) or "—"]]


def _model_row(inp: Inputs) -> list[str]:
    mc = inp.model_cfg()
    if not mc:
        return ["model", f"{NA} (no checkpoint sidecar: {inp.why('phase1_side', 'phase2_side')})"]
    try:
        sz = parameter_counts(mc, inp.head_from())
    except (TypeError, ValueError) as e:
        return ["model", f"{NA} (model config unreadable: {e})"]
    return ["model", f"{fmt_params(sz['total'])} parameters ({sz['total']:,}): d_c={mc.get('context_dim')}, "
                     f"d_e={mc.get('embed_dim')}, L={mc.get('num_layers')}; layers {fmt_params(sz['layers'])}, "
                     f"embedding {fmt_params(sz['embedding'])}, head {fmt_params(sz['head'])}"]


def _stage_rows(inp: Inputs) -> list[list[str]]:
    p1, p2, b, t = inp.phase1, inp.phase2, inp.baselines, inp.transformer
    rows: list[list[str]] = []
    if p1 is not None:
        rows.append(["Phase 1", f"{fmt(get(p1, 'passes'))} passes (pass 0 = untrained forward), "
                                f"{fmt(get(p1, 'optimizer_steps'))} optimizer steps, "
                                f"stopped early: {fmt(get(p1, 'stopped_early'))}"])
    if p2 is not None:
        txt = (f"{fmt(get(p2, 'epochs'))} epochs, {fmt(get(p2, 'optimizer_steps'))} optimizer steps, "
               f"kept checkpoint: epoch {fmt(get(p2, 'best_epoch'))}")
        for key, label in (("freeze_context", "context layers frozen"), ("predict_from", "logits from"),
                           ("embeddings_trained", "embeddings trained")):
            if get(p2, key) is not None:
                txt += f", {label}: {fmt(get(p2, key))}"
        if get(p2, "phase1_passed_validation") is False:
            txt += " — trained on a Phase 1 model that FAILED validation"
        rows.append(["Phase 2", txt])
    rows.append(["baselines", f"{NA} ({inp.why('baselines')})" if b is None else
                 f"Kneser–Ney trigram and bigram, smoothed unigram, majority token on "
                 f"{fmt(get(b, 'val_pairs'))} validation pairs"])
    rows.append(["transformer", f"{NA} ({inp.why('transformer')})" if t is None else
                 f"same size as CVFP: {transformer_shape(t)}, "
                 f"{fmt(get(t, 'parameters'))} parameters, {fmt(get(t, 'epochs'))} epochs, "
                 f"kept checkpoint: epoch {fmt(get(t, 'best_epoch'))}"])
    return rows


def _recorded_params(inp: Inputs) -> str:
    out = ["<h3>Parameters recorded with the checkpoints</h3>"]
    for label, side, key in ((f"Phase 1 ({paths.PHASE1_SIDECAR})", inp.phase1_side, "phase1_side"),
                             (f"Phase 2 ({paths.sidecar(paths.PHASE2_BEST)}, the kept checkpoint)",
                              inp.phase2_side, "phase2_side")):
        conf = get(side, "config")
        if not isinstance(conf, dict):
            out.append(f"<h4>{esc(label)}</h4>" + na(inp.why(key) if side is None else "no 'config' recorded"))
            continue
        lines = []
        flat = {k: v for k, v in conf.items() if not isinstance(v, dict)}
        if flat:
            lines.append(f'<div class="cfg"><span class="sec">run</span> {kv_line(flat)}</div>')
        for sec_name, sec in conf.items():
            if isinstance(sec, dict):
                lines.append(f'<div class="cfg"><span class="sec">{esc(sec_name)}</span> {kv_line(sec)}</div>')
        out.append(f"<h4>{esc(label)}</h4>" + "".join(lines))
    return "\n".join(out)


def header_body(inp: Inputs) -> str:
    rows = _data_rows(inp) + [_model_row(inp)]
    emb = inp.first(("phase2", "embeddings"), ("phase1", "embeddings"), ("phase1_side", "embeddings"))
    rows.append(["embeddings", str(emb) if emb is not None else NA])
    dev = inp.first(("phase2", "device"), ("phase1", "device"))
    prec = inp.first(("phase2", "precision"), ("phase1", "precision"))
    rows.append(["device / precision", f"{dev if dev is not None else NA} / {prec if prec is not None else NA}"])
    seed = inp.first(("phase1_side", "config.seed"), ("phase2_side", "config.seed"))
    if seed is not None:
        rows.append(["random seed", fmt(seed)])
    rows += _stage_rows(inp)
    return table(["", ""], rows, "kvtable") + "\n" + _recorded_params(inp)


# ---------------------------------------------------------------------------
# the page


SECTION_TITLES = [
    ("criteria", "The original guide's success criteria and references"),
    ("passes", "Phase 1 pass curves"),
    ("spectrum", "Singular-value spectra"),
    ("convergence", "Convergence check"),
    ("phase2", "Phase 2: next-token prediction against the baselines"),
    ("generation", "Generated continuations"),
    ("timings", "Timings and peak memory"),
]


def build_report(root: Path, cfg: ReportConfig, seed: int) -> str:
    """The whole report as one self-contained HTML string."""
    root = Path(root)
    inp = Inputs.load(root)
    builders: dict[str, Callable[[], str]] = {
        "criteria": lambda: criteria_body(inp),
        "passes": lambda: passes_body(inp),
        "spectrum": lambda: spectrum_body(inp),
        "convergence": lambda: convergence_body(inp),
        "phase2": lambda: phase2_body(inp),
        "generation": lambda: generation_body(root, cfg, seed),
        "timings": lambda: timings_body(inp),
    }
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in [("run", "What was run")] + SECTION_TITLES)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>new-llm CVFP run report</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>new-llm: CVFP run report</h1>",
        banner_html(verdict(inp)),
        phase2_line_html(inp),
        terms_html(inp, seed),
        f"<nav>{nav}</nav>",
        guarded("run", "What was run", lambda: header_body(inp)),
    ]
    parts += [guarded(a, t, builders[a]) for a, t in SECTION_TITLES]
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"
