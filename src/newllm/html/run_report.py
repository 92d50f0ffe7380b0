"""The run report: one self-contained HTML file (inline CSS, PNG plots as data URIs).

``build_report(root, cfg, seed)`` reads every metrics/history file the stages write
(``newllm.paths``), relative to ``root``, and returns the HTML. Sections, in order:

a. header: what was run, the parameters recorded with the checkpoints, the verdict
   (a red banner when Phase 1 failed the seed's criteria, contexts collapsed, no
   optimizer step was taken, or Phase 2 does not beat the unigram baseline);
b. the seed's success criteria against the measured values and their references;
c. Phase 1 pass curves; d. singular-value spectra; e. convergence-check diffs;
f. Phase 2 epoch curves and a table against the baselines and the seed's figures;
g. generated continuations of ``report.prompts``; h. timings and peak memory.

A missing input (a stage that has not run) makes its section say "not available"
instead of failing; every piece of text is HTML-escaped. Nothing refers to a network
resource.
"""
from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from newllm import paths
from newllm.config import ReportConfig
from newllm.cvfp.model import parameter_counts
from newllm.cvfp.rank import ATTRACTOR_COS, COLLAPSE_ER_PCT, NEAR_ZERO_NORM
from newllm.html.common import (
    CSS,
    NA,
    acc_scale,
    esc,
    flag_cell,
    fmt,
    fmt_params,
    fmt_pct,
    fmt_range,
    get,
    guarded,
    kv_line,
    na,
    num,
    pass_fail,
    read_csv_columns,
    table,
    visible,
)
from newllm.html.plots import band, empty, figure, hline, img, xy

# The seed's claimed figures (cvfp.md, "Numbers measured from the original code").
SEED_PHASE1 = {"train_er_pct": (88.0, 90.0), "val_er_pct": (80.0, 83.0), "cvfp_loss": (0.0015, 0.002),
               "passes": (3, 5)}
SEED_PHASE2 = {"loss": (4.5, 5.5), "ppl": (90.0, 250.0), "acc_pct": (10.0, 15.0)}

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
    problems: dict = field(default_factory=dict)

    FILES = {
        "fetch": (paths.FETCH_METRICS, "fetch_ultrachat", "json"),
        "data": (paths.DATA_METRICS, "tokenize_cache", "json"),
        "phase1": (paths.PHASE1_METRICS, "phase1_fixed_point", "json"),
        "phase1_side": (paths.PHASE1_SIDECAR, "phase1_fixed_point", "json"),
        "validate": (paths.VALIDATE_METRICS, "validate_rank", "json"),
        "phase2": (paths.PHASE2_METRICS, "phase2_lm", "json"),
        "phase2_side": (paths.sidecar(paths.PHASE2_LATEST), "phase2_lm", "json"),
        "passes": (paths.PHASE1_HISTORY, "phase1_fixed_point", "csv"),
        "spectrum": (paths.SPECTRUM, "validate_rank", "csv"),
        "convergence": (paths.CONVERGENCE, "validate_rank", "csv"),
        "epochs": (paths.PHASE2_HISTORY, "phase2_lm", "csv"),
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
# plots


# ---------------------------------------------------------------------------
# sections


@dataclass
class Verdict:
    line: str
    level: str  # "ok" | "warn" | "bad"
    items: list  # (level, short, detail)


def verdict(inp: Inputs) -> Verdict:
    """The run's verdict: one line (short findings) plus each finding with its evidence."""
    items: list[tuple[str, str, str]] = []
    v, p1, p2 = inp.validate, inp.phase1, inp.phase2
    if v is None:
        items.append(("warn", "Phase 1 verdict not available", inp.why("validate")))
    else:
        crit = v.get("criteria") or {}
        names = {"train_er": "train ER", "val_er": "val ER", "final_diff": "final_diff"}
        figures = (f"train ER {fmt_pct(get(v, 'train.er_pct'))}, val ER {fmt_pct(get(v, 'val.er_pct'))}, "
                   f"final_diff {fmt(num(v.get('final_diff')), 3)}")
        if v.get("passed"):
            items.append(("ok", "Phase 1 passed the seed's criteria", figures))
        else:
            failed = [names.get(k, k) for k, ok in crit.items() if not ok]
            items.append(("bad", f"Phase 1 FAILED the seed's criteria ({', '.join(failed) or 'see table'})",
                          figures))
        coll = [s for s in ("train", "val") if get(v, f"{s}.collapsed")]
        if v.get("collapsed") or coll:
            kinds = []
            for s in coll or ("train", "val"):
                why = [n for n, k in (("global attractor", "global_attractor"), ("near zero", "near_zero"))
                       if get(v, f"{s}.{k}")]
                er = num(get(v, f"{s}.er_pct"))
                if er is not None and er < COLLAPSE_ER_PCT:
                    why.append(f"ER {er:.2f}% < {COLLAPSE_ER_PCT:g}%")
                kinds.append(f"{s}: {', '.join(why) or 'collapsed'}")
            items.append(("bad", "contexts COLLAPSED", "; ".join(kinds)))
    steps = inp.first(("phase1", "optimizer_steps"), ("validate", "optimizer_steps"),
                      ("phase1_side", "optimizer_steps"))
    if steps is not None and num(steps) == 0:
        items.append(("bad", "Phase 1 took NO optimizer step",
                      "its ranks are those of the untrained network (the original code's guard bug)"))
    change = num(get(p1, "param_change"))
    if change is not None and change == 0 and not (steps is not None and num(steps) == 0):
        items.append(("bad", "Phase 1 did not change the parameters", "param_change is 0"))
    if p2 is None:
        items.append(("warn", "Phase 2 results not available", inp.why("phase2")))
    else:
        b = phase2_beats(p2)
        figures = (f"val ppl {fmt(num(get(p2, 'val.ppl')))} vs unigram {fmt(num(get(p2, 'baseline.unigram_ppl')))}"
                   f", bigram {fmt(num(get(p2, 'baseline.bigram_ppl')))}")
        if b["unigram"] is False:
            items.append(("bad", "Phase 2 does NOT beat the unigram baseline", figures))
        elif b["unigram"] and b["bigram"] is False:
            items.append(("warn", "Phase 2 beats the unigram but NOT the bigram baseline", figures))
        elif b["unigram"] and b["bigram"]:
            items.append(("ok", "Phase 2 beats the unigram and bigram baselines", figures))
        if b["majority"] is False:
            acc_s = acc_scale(get(p2, "val.acc"), get(p2, "baseline.majority_acc"))
            items.append(("warn", "Phase 2 accuracy is NOT above the majority token",
                          f"val acc {fmt_pct(acc_s * num(get(p2, 'val.acc')))} vs always predicting the most "
                          f"frequent training token {fmt_pct(acc_s * num(get(p2, 'baseline.majority_acc')))}"))
    levels = [lvl for lvl, _, _ in items]
    level = "bad" if "bad" in levels else ("warn" if "warn" in levels else "ok")
    missing = any(lvl == "warn" and "not available" in short for lvl, short, _ in items)
    head = {"bad": "FAILED", "warn": "INCOMPLETE" if missing else "WARNING", "ok": "PASSED"}[level]
    shown = [short for lvl, short, _ in items if lvl == level] if level != "ok" else [s for _, s, _ in items]
    return Verdict(line=f"{head}: " + "; ".join(shown), level=level, items=items)


def phase2_beats(p2: dict) -> dict:
    """Whether the model's validation figures beat each baseline (None when unknown)."""
    loss, ppl = num(get(p2, "val.loss")), num(get(p2, "val.ppl"))
    acc = num(get(p2, "val.acc"))
    out = {}
    for name in ("unigram", "bigram"):
        bl, bp = num(get(p2, f"baseline.{name}_loss")), num(get(p2, f"baseline.{name}_ppl"))
        if loss is not None and bl is not None:
            out[name] = loss < bl
        elif ppl is not None and bp is not None:
            out[name] = ppl < bp
        else:
            out[name] = None
    maj = num(get(p2, "baseline.majority_acc"))
    out["majority"] = (acc > maj) if acc is not None and maj is not None else None
    return out


def banner_html(vd: Verdict) -> str:
    lis = "".join(f'<li class="{lvl}"><b>{esc(short)}</b>: {esc(detail)}</li>' for lvl, short, detail in vd.items)
    return (f'<div class="banner {vd.level}" role="alert"><div class="verdict">{esc(vd.line)}</div>'
            f'<ul>{lis}</ul></div>')


def header_body(inp: Inputs, vd: Verdict) -> str:
    d, p1, p2 = inp.data, inp.phase1, inp.phase2
    rows: list[list[str]] = []

    def tok_row(label: str, split: str) -> None:
        toks = inp.first(("data", f"{split}.tokens"), ("phase1_side", f"{split}_tokens"),
                         ("phase1", "tokens" if split == "train" else "val_tokens"))
        samples = get(d, f"{split}.samples")
        txt = fmt(toks) if toks is not None else NA
        if samples is not None:
            txt += f" tokens in {fmt(samples)} samples"
        rows.append([label, txt])

    tok_row("training tokens", "train")
    tok_row("validation tokens", "val")
    if d is None:
        rows.append(["data metrics", f"{NA} ({inp.why('data')})"])
    else:
        extra = []
        if get(d, "vocab_size") is not None:
            extra.append(f"vocabulary {fmt(get(d, 'vocab_size'))}")
        if num(get(d, "val.unseen_type_frac")) is not None:
            extra.append(f"{100 * num(get(d, 'val.unseen_type_frac')):.1f}% of validation token types "
                         f"unseen in training")
        for k in ("source", "tokenizer", "max_seq_length"):
            if get(d, k) is not None:
                extra.append(f"{k} {get(d, k)}")
        rows.append(["data", ", ".join(extra) or "—"])
    mc = inp.model_cfg()
    if mc:
        try:
            sz = parameter_counts(mc, inp.head_from())
            rows.append(["model", f"{fmt_params(sz['total'])} parameters ({sz['total']:,}): "
                                  f"d_c={mc.get('context_dim')}, d_e={mc.get('embed_dim')}, "
                                  f"L={mc.get('num_layers')}; layers {fmt_params(sz['layers'])}, "
                                  f"embedding {fmt_params(sz['embedding'])}, head {fmt_params(sz['head'])}"])
        except (TypeError, ValueError) as e:
            rows.append(["model", f"{NA} (model config unreadable: {e})"])
    else:
        rows.append(["model", f"{NA} (no checkpoint sidecar: {inp.why('phase1_side', 'phase2_side')})"])
    emb = inp.first(("phase2", "embeddings"), ("phase1", "embeddings"), ("phase1_side", "embeddings"))
    rows.append(["embeddings", str(emb) if emb is not None else NA])
    dev = inp.first(("phase2", "device"), ("phase1", "device"))
    prec = inp.first(("phase2", "precision"), ("phase1", "precision"))
    rows.append(["device / precision", f"{dev if dev is not None else NA} / {prec if prec is not None else NA}"])
    seed = inp.first(("phase1_side", "config.seed"), ("phase2_side", "config.seed"))
    if seed is not None:
        rows.append(["seed", fmt(seed)])
    if p1 is not None:
        rows.append(["Phase 1", f"{fmt(get(p1, 'passes'))} passes (pass 0 = untrained forward), "
                                f"{fmt(get(p1, 'optimizer_steps'))} optimizer steps, "
                                f"stopped early: {fmt(get(p1, 'stopped_early'))}"])
    if p2 is not None:
        txt = (f"{fmt(get(p2, 'epochs'))} epochs, {fmt(get(p2, 'optimizer_steps'))} optimizer steps, "
               f"best epoch {fmt(get(p2, 'best_epoch'))}")
        for key, label in (("freeze_context", "context layers frozen"), ("predict_from", "logits from"),
                           ("embeddings_trained", "embeddings trained")):
            if get(p2, key) is not None:
                txt += f", {label}: {fmt(get(p2, key))}"
        if get(p2, "phase1_passed_validation") is False:
            txt += " — trained on a Phase 1 model that FAILED validation"
        rows.append(["Phase 2", txt])
    out = [f'<p class="oneline"><b>Verdict:</b> {esc(vd.line)}</p>',
           table(["", ""], rows, "kvtable")]
    out.append("<h3>Parameters recorded with the checkpoints</h3>")
    for label, side, key in (("Phase 1 (models/phase1.json)", inp.phase1_side, "phase1_side"),
                             ("Phase 2 (models/model_latest.json)", inp.phase2_side, "phase2_side")):
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


def criteria_body(inp: Inputs) -> str:
    v = inp.validate
    if v is None:
        return na(inp.why("validate"))
    th = v.get("thresholds") or {}
    crit = v.get("criteria") or {}
    t_er, v_er, fd = num(get(v, "train.er_pct")), num(get(v, "val.er_pct")), num(v.get("final_diff"))
    t_min = num(th.get("min_train_er_pct")) if th.get("min_train_er_pct") is not None else 85.0
    v_min = num(th.get("min_val_er_pct")) if th.get("min_val_er_pct") is not None else 75.0
    fd_max = num(th.get("max_final_diff")) if th.get("max_final_diff") is not None else 0.001

    def decided(key: str, ok_fn: Callable[[], bool | None]) -> bool | None:
        return bool(crit[key]) if key in crit else ok_fn()

    ok_t = decided("train_er", lambda: None if t_er is None else t_er >= t_min)
    ok_v = decided("val_er", lambda: None if v_er is None else v_er >= v_min)
    ok_f = decided("final_diff", lambda: None if fd is None else fd <= fd_max)
    d_c = None
    mc = inp.model_cfg()
    if mc:
        d_c = mc.get("context_dim")

    def er_txt(pct: float | None, er_abs: Any) -> str:
        s = fmt_pct(pct)
        if num(er_abs) is not None and d_c:
            s += f" (ER {fmt(num(er_abs))} of {d_c})"
        return s

    refs_train = (f"untrained θ₀ {fmt_pct(get(v, 'train.er_pct_untrained'))}; "
                  f"input stream x {fmt_pct(get(v, 'input.er_pct'))}; "
                  f"Gaussian {fmt_pct(get(v, 'gaussian.er_pct'))}")
    refs_val = f"untrained θ₀ {fmt_pct(get(v, 'val.er_pct_untrained'))}"
    conv_n = v.get("convergence_passes")
    rows = [
        ["train ER", f"> {fmt(t_min)}%", er_txt(t_er, get(v, "train.er")), pass_fail(ok_t), refs_train,
         fmt_range(*SEED_PHASE1["train_er_pct"], "%")],
        ["validation ER", f"> {fmt(v_min)}%", er_txt(v_er, get(v, "val.er")), pass_fail(ok_v), refs_val,
         fmt_range(*SEED_PHASE1["val_er_pct"], "%")],
        ["final_diff", f"< {fmt(fd_max)}",
         fmt(fd, 3) + (" (trivial: the contexts collapsed)" if ok_f and v.get("collapsed") else ""),
         pass_fail(ok_f),
         f"mean ‖c^j − c^(j−1)‖ after {fmt(conv_n)} frozen passes; original code: 33.6", "—"],
    ]
    overall = v.get("passed")
    out = [table(["criterion", "seed's threshold", "measured", "verdict", "references", "seed's claim"], rows,
                 "criteria"),
           '<p class="oneline">Overall: ' + ('<b class="okt">PASSED</b>' if overall else '<b class="badt">FAILED</b>')
           + " the seed's criteria (thresholds from params.yaml <code>validate</code>).</p>"]

    p1 = inp.phase1 or {}
    steps = inp.first(("phase1", "optimizer_steps"), ("validate", "optimizer_steps"))
    change = num(get(p1, "param_change"))
    steps_cell = (f'<td class="fail">{esc(fmt(steps))} — never trained</td>' if num(steps) == 0
                  else f"<td>{esc(fmt(steps))}</td>")
    change_cell = (f'<td class="fail">{esc(fmt(change))} — unchanged</td>' if change == 0
                   else f"<td>{esc(fmt(change))}</td>")
    train_rows = [
        ["optimizer steps", steps_cell, "0 means the original guard bug: ranks of an untrained network"],
        ["relative parameter change ‖θ−θ₀‖/‖θ₀‖", change_cell, ""],
        ["passes", fmt(get(p1, "passes")), f"seed's claim: convergence in "
                                           f"{fmt_range(*SEED_PHASE1['passes'])} passes"],
        ["final CVFP loss", fmt(num(get(p1, "final_cvfp_loss"))),
         f"seed's claim {fmt_range(*SEED_PHASE1['cvfp_loss'])}"],
        ["final converged fraction", fmt_pct(100 * num(get(p1, "final_converged_frac")))
         if num(get(p1, "final_converged_frac")) is not None else "—", ""],
        ["final mean context norm", fmt(num(get(p1, "final_context_norm"))),
         f"√d_c = {math.sqrt(d_c):.3g} with LayerNorm scale 1" if d_c else ""],
    ]
    out.append("<h3>Training</h3>" + table(["", "value", "note"], train_rows, "kvtable"))

    def flag_row(label: str, key: str, is_flag: bool) -> list[str]:
        cells = [label]
        for src in (f"train.{key}", f"val.{key}", f"untrained.train.{key}", f"untrained.val.{key}"):
            val = get(v, src)
            cells.append(flag_cell(val) if is_flag else fmt(num(val)))
        return cells

    out.append("<h3>Degeneracy checks</h3>" + table(
        ["", "train", "validation", "train, untrained θ₀", "validation, untrained θ₀"],
        [flag_row(f"global attractor (mean cos > {ATTRACTOR_COS:g})", "global_attractor", True),
         flag_row(f"near zero (mean norm < {NEAR_ZERO_NORM:g})", "near_zero", True),
         flag_row(f"collapsed (either, or ER < {COLLAPSE_ER_PCT:g}%)", "collapsed", True),
         flag_row("mean pairwise cosine", "mean_cos", False),
         flag_row("mean context norm", "mean_norm", False)], "criteria"))
    return "\n".join(out)


def passes_body(inp: Inputs) -> str:
    h = inp.passes
    if h is None:
        return na(inp.why("passes"))
    x = h.get("pass_index") or list(range(len(next(iter(h.values())))))
    fig, axes = figure(2, 2, height=6.0)
    min_ratio = num(get(inp.phase1_side, "config.phase1.min_converged_ratio"))
    specs = [("cvfp_loss", "CVFP loss (MSE to previous pass)", "log"),
             ("div_loss", "diversity loss −‖c − μ‖", "linear"),
             ("converged_frac", "converged fraction (%)", "linear"),
             ("mean_context_norm", "mean context norm ‖c‖", "auto")]
    for ax, (col, title, scale) in zip(axes, specs):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("pass index", fontsize=9)
        ys = h.get(col)
        if ys is None:
            empty(ax, f"column {col} missing")
            continue
        if col == "converged_frac":
            ys = [None if y is None else 100 * y for y in ys]
        px, py = xy(x, ys)
        if not px:
            empty(ax, "no training pass yet" if col in ("cvfp_loss", "div_loss") else "no data")
            continue
        ax.plot(px, py, "o-", color="#1f5fa8", markersize=4)
        wide = min(py) > 0 and max(py) / min(py) > (10 if scale == "log" else 100)
        if scale in ("log", "auto") and wide:
            ax.set_yscale("log")
        if col == "converged_frac":
            ax.set_ylim(-3, 103)
            if min_ratio is not None:
                hline(ax, 100 * min_ratio, f"early-stop ratio {100 * min_ratio:g}%", "#c0392b")
                ax.legend(fontsize=8, loc="center right")
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    note = ("<p class=\"note\">Pass 0 is the untrained forward pass (no loss, no update). "
            "A fixed point is only interesting together with a high rank: a context norm that grows "
            "without bound, or a converged fraction of 100% with a collapsed rank, is a collapse.</p>")
    return img(fig, "Phase 1 pass curves") + note


def spectrum_body(inp: Inputs) -> str:
    s = inp.spectrum
    if s is None:
        return na(inp.why("spectrum"))
    rank = s.get("rank") or list(range(1, len(next(iter(s.values()))) + 1))
    v = inp.validate or {}
    labels = {"train": ("train (trained θ)", "#1f5fa8", "-", get(v, "train.er_pct")),
              "val": ("validation (trained θ)", "#2e8b57", "-", get(v, "val.er_pct")),
              "train_untrained": ("train, untrained θ₀", "#888888", "--", get(v, "train.er_pct_untrained")),
              "input": ("input stream x", "#d2691e", ":", get(v, "input.er_pct"))}
    fig, (ax,) = figure(1, 1, height=4.2)
    drawn = 0
    for col, ys in s.items():
        if col == "rank":
            continue
        label, color, style, er = labels.get(col, (col, None, "-", None))
        if num(er) is not None:
            label += f" — ER {num(er):.2f}%"
        px, py = xy(rank, ys, positive=True)
        if px:
            ax.plot(px, py, linestyle=style, color=color, linewidth=1.6, label=label)
            drawn += 1
    if not drawn:
        return na("metrics/spectrum.csv holds no positive singular values")
    ax.set_yscale("log")
    ax.set_xlabel("rank index i", fontsize=9)
    ax.set_ylabel(r"$s_i\,/\,\sum_j s_j$", fontsize=10)
    ax.set_title("Normalised singular values of the context matrices", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return (img(fig, "singular value spectra") +
            '<p class="note">A flat spectrum is a high effective rank; a first value near 1 with a steep '
            'drop is a collapse to few directions. Zeros are not drawn (log scale).</p>')


def convergence_body(inp: Inputs) -> str:
    c = inp.convergence
    if c is None:
        return na(inp.why("convergence"))
    xs, ys = c.get("pass"), c.get("diff")
    if xs is None or ys is None:
        return na("metrics/convergence.csv lacks the columns pass,diff")
    thr = num(get(inp.validate, "thresholds.max_final_diff"))
    fig, (ax,) = figure(1, 1, width=8.0, height=3.0)
    px, py = xy(xs, ys, positive=True)
    zx = [x for x, y in zip(xs, ys) if x is not None and y is not None and y <= 0]
    floor_candidates = py + ([thr] if thr else [])
    floor = (min(floor_candidates) / 100) if floor_candidates else 1e-6
    if px:
        ax.plot(px, py, "o-", color="#1f5fa8", label="diff_j = mean ‖c^j − c^(j−1)‖")
    if zx:
        ax.plot(zx, [floor] * len(zx), "v", color="#c0392b", markersize=9,
                label=f"exactly 0 (drawn at {floor:.0e})")
    if thr is not None:
        hline(ax, thr, f"criterion final_diff < {thr:g}", "#c0392b")
    ax.set_yscale("log")
    ax.set_xlabel("frozen pass j", fontsize=9)
    ax.set_ylabel("diff", fontsize=9)
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, loc="best")
    rows = [[fmt(x), fmt(y, 4)] for x, y in zip(xs, ys)]
    note = ""
    if zx:
        note = ('<p class="note">A diff of exactly 0 is a perfect fixed point; with a collapsed rank it '
                'means every context went to the same point (see the degeneracy checks).</p>')
    return img(fig, "convergence check diffs") + note + table(["pass", "diff"], rows, "small")


def phase2_body(inp: Inputs) -> str:
    p2, ep = inp.phase2, inp.epochs
    out = []
    if p2 is None and ep is None:
        return na(inp.why("phase2", "epochs"))
    p2 = p2 or {}
    scale = acc_scale(get(p2, "val.acc"), get(p2, "baseline.majority_acc"),
                      *((ep or {}).get("val_acc") or []))
    uni_loss = num(get(p2, "baseline.unigram_loss"))
    bi_loss = num(get(p2, "baseline.bigram_loss"))
    uni_ppl = num(get(p2, "baseline.unigram_ppl"))
    bi_ppl = num(get(p2, "baseline.bigram_ppl"))
    if ep is not None:
        e = ep.get("epoch") or list(range(1, len(next(iter(ep.values()))) + 1))
        if uni_ppl is None and ep.get("unigram_ppl"):
            uni_ppl = next((y for y in ep["unigram_ppl"] if y is not None), None)
        if bi_ppl is None and ep.get("bigram_ppl"):
            bi_ppl = next((y for y in ep["bigram_ppl"] if y is not None), None)
        if uni_loss is None and uni_ppl:
            uni_loss = math.log(uni_ppl)
        if bi_loss is None and bi_ppl:
            bi_loss = math.log(bi_ppl)
        fig, axes = figure(1, 3, height=3.8)
        ax_l, ax_p, ax_a = axes
        from matplotlib.ticker import MaxNLocator
        for ax in axes:
            ax.set_xlabel("epoch", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_l.set_title("cross-entropy loss", fontsize=10)
        for col, color, label in (("train_loss", "#1f5fa8", "train"), ("val_loss", "#2e8b57", "validation")):
            px, py = xy(e, ep.get(col) or [])
            if px:
                ax_l.plot(px, py, "o-", color=color, label=label, markersize=4)
        hline(ax_l, uni_loss, "unigram", "#c0392b")
        hline(ax_l, bi_loss, "bigram", "#8e44ad", ":")
        band(ax_l, *SEED_PHASE2["loss"], "seed's claim")
        ax_p.set_title("perplexity (log scale)", fontsize=10)
        for col, color, label in (("train_ppl", "#1f5fa8", "train"), ("val_ppl", "#2e8b57", "validation")):
            px, py = xy(e, ep.get(col) or [], positive=True)
            if px:
                ax_p.plot(px, py, "o-", color=color, label=label, markersize=4)
        hline(ax_p, uni_ppl, "unigram", "#c0392b")
        hline(ax_p, bi_ppl, "bigram", "#8e44ad", ":")
        band(ax_p, *SEED_PHASE2["ppl"], "seed's claim")
        ax_p.set_yscale("log")
        ax_a.set_title("validation top-1 accuracy (%)", fontsize=10)
        accs = [None if y is None else y * scale for y in (ep.get("val_acc") or [])]
        px, py = xy(e, accs)
        if px:
            ax_a.plot(px, py, "o-", color="#2e8b57", label="validation", markersize=4)
        maj = num(get(p2, "baseline.majority_acc"))
        hline(ax_a, None if maj is None else maj * scale, "majority token", "#c0392b")
        band(ax_a, *SEED_PHASE2["acc_pct"], "seed's claim")
        for ax in axes:
            ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
        out.append(img(fig, "Phase 2 epoch curves"))
    else:
        out.append(na(inp.why("epochs")))

    if not p2:
        out.append(na(inp.why("phase2")))
        return "\n".join(out)
    b = phase2_beats(p2)
    acc = num(get(p2, "val.acc"))
    maj = num(get(p2, "baseline.majority_acc"))
    acc_pct = None if acc is None else acc * scale
    maj_pct = None if maj is None else maj * scale

    def in_range(vv: float | None, lo: float, hi: float) -> str:
        if vv is None:
            return '<td class="na">—</td>'
        return ('<td class="pass">within</td>' if lo <= vv <= hi else
                f'<td class="warnc">{"below" if vv < lo else "above"}</td>')

    def beats_cell(ok: bool | None) -> str:
        if ok is None:
            return '<td class="na">—</td>'
        return '<td class="pass">yes</td>' if ok else '<td class="fail">NO</td>'

    loss, ppl = num(get(p2, "val.loss")), num(get(p2, "val.ppl"))
    rows = [
        ["validation loss", fmt(loss), fmt(uni_loss), fmt(bi_loss), "—",
         fmt_range(*SEED_PHASE2["loss"]), in_range(loss, *SEED_PHASE2["loss"])],
        ["validation perplexity", fmt(ppl), fmt(uni_ppl), fmt(bi_ppl), "—",
         fmt_range(*SEED_PHASE2["ppl"]), in_range(ppl, *SEED_PHASE2["ppl"])],
        ["validation accuracy", fmt_pct(acc_pct), "—", "—", fmt_pct(maj_pct),
         fmt_range(*SEED_PHASE2["acc_pct"], "%"), in_range(acc_pct, *SEED_PHASE2["acc_pct"])],
        ["train loss", fmt(num(get(p2, "train.loss"))), "—", "—", "—", "—", '<td class="na">—</td>'],
        ["train perplexity", fmt(num(get(p2, "train.ppl"))), "—", "—", "—", "—", '<td class="na">—</td>'],
    ]
    best_loss = num(get(p2, "best.val_loss"))
    if best_loss is not None:
        best_ep = get(p2, "best.epoch", get(p2, "best_epoch"))
        rows.insert(2, [f"best validation loss (epoch {fmt(best_ep)})", fmt(best_loss), fmt(uni_loss),
                        fmt(bi_loss), "—", fmt_range(*SEED_PHASE2["loss"]),
                        in_range(best_loss, *SEED_PHASE2["loss"])])
    out.append(table(["", "model", "unigram", "bigram", "majority token", "seed's claim", "vs seed's claim"],
                     rows, "criteria"))
    out.append(table(["does the model beat…", "answer"], [
        ["the unigram baseline (val loss)", beats_cell(b["unigram"])],
        ["the bigram baseline (val loss)", beats_cell(b["bigram"])],
        ["always predicting the most frequent token (val accuracy)", beats_cell(b["majority"])],
    ], "criteria"))
    sentences = []
    if b["unigram"] is not None:
        sentences.append(f"The model {'beats' if b['unigram'] else 'does NOT beat'} the unigram baseline "
                         f"(val perplexity {fmt(ppl)} vs {fmt(uni_ppl)})")
    if b["bigram"] is not None:
        sentences.append(f"{'beats' if b['bigram'] else 'does NOT beat'} the bigram baseline ({fmt(bi_ppl)})")
    if b["majority"] is not None:
        sentences.append(f"its accuracy {fmt_pct(acc_pct)} is {'above' if b['majority'] else 'NOT above'} "
                         f"always predicting the most frequent token ({fmt_pct(maj_pct)})")
    if sentences:
        ok = all(x is not False for x in b.values())
        out.append(f'<p class="oneline {"okt" if ok else "badt"}">' + esc(", ".join(sentences)) + ".</p>")
    out.append('<p class="note">The seed\'s "10–15% accuracy" is the majority-token rate of this data; '
               'a model is only interesting where it beats these baselines. The model column is the last '
               f'epoch ({esc(fmt(get(p2, "epochs")))}) of metrics/phase2.json; the best validation loss was at '
               f'epoch {esc(fmt(get(p2, "best_epoch")))}.</p>')
    return "\n".join(out)


def generation_body(root: Path, cfg: ReportConfig, seed: int) -> str:
    ckpt = root / paths.PHASE2_BEST
    tok_file = root / paths.TOKENIZER_DIR / "tokenizer.json"
    if not ckpt.exists():
        return na(f"{paths.PHASE2_BEST} is missing (stage phase2_lm has not run)")
    if not tok_file.exists():
        return na(f"{paths.TOKENIZER_DIR / 'tokenizer.json'} is missing (stage tokenize_cache has not run)")
    if not cfg.prompts:
        return na("report.prompts is empty")
    try:
        gen = importlib.import_module("newllm.generate")
    except ImportError as e:
        return na(f"newllm.generate cannot be imported ({e})")
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(tok_file))
    model = gen.load_for_generation(ckpt, device="cpu")
    mode = ("greedy (temperature 0)" if cfg.temperature == 0 else
            f"sampled: temperature {cfg.temperature:g}, top_k {cfg.top_k or 'off'}, seed {seed}")
    items = []
    for prompt in cfg.prompts:
        try:
            cont = gen.generate(model, tokenizer, prompt, max_new_tokens=cfg.max_new_tokens,
                                temperature=cfg.temperature, top_k=cfg.top_k, seed=seed)
            body = f'<span class="prompt">{visible(prompt)}</span><span class="cont">{visible(cont)}</span>'
            if not str(cont).strip():
                body += '<span class="na"> (only whitespace was generated)</span>'
        except Exception as e:  # one failing prompt does not hide the others
            body = (f'<span class="prompt">{visible(prompt)}</span>'
                    f'<span class="na"> [generation failed: {esc(type(e).__name__)}: {esc(e)}]</span>')
        items.append(f'<div class="gen">{body}</div>')
    return (f'<p class="note">{esc(cfg.max_new_tokens)} new tokens per prompt, {esc(mode)}, from '
            f'{esc(paths.PHASE2_BEST)} (the kept checkpoint). <span class="prompt">Prompt</span> then '
            f'<span class="cont">continuation</span>; a line break is shown as <span class="ws">↵</span>.</p>'
            + "".join(items))


def timings_body(inp: Inputs) -> str:
    stages = [("fetch_ultrachat", "fetch"), ("tokenize_cache", "data"), ("phase1_fixed_point", "phase1"),
              ("validate_rank", "validate"), ("phase2_lm", "phase2")]
    cols = ["time_s", "tokens_per_s", "peak_rss_mb", "peak_cuda_mb"]
    present = [c for c in cols if any(get(getattr(inp, a), c) is not None for _, a in stages)]
    if not present:
        return na("no stage metrics record timings (" + inp.why("phase1", "phase2") + ")")
    heads = {"time_s": "wall time (s)", "tokens_per_s": "tokens/s", "peak_rss_mb": "peak host RSS (MB)",
             "peak_cuda_mb": "peak CUDA (MB)"}
    rows = []
    for stage, attr in stages:
        m = getattr(inp, attr)
        if m is None:
            rows.append([stage] + [f'<td class="na">{esc(NA)}</td>'] + ["—"] * (len(present) - 1))
            continue
        rows.append([stage] + [fmt(num(get(m, c))) if get(m, c) is not None else "—" for c in present])
    dev = inp.first(("phase2", "device"), ("phase1", "device"))
    note = f'<p class="note">Device: {esc(dev)}.</p>' if dev else ""
    return table(["stage"] + [heads[c] for c in present], rows, "criteria") + note


SECTION_TITLES = [
    ("criteria", "Success criteria (seed) and references"),
    ("passes", "Phase 1 pass curves"),
    ("spectrum", "Singular-value spectra"),
    ("convergence", "Convergence check"),
    ("phase2", "Phase 2: next-token prediction"),
    ("generation", "Generated continuations"),
    ("timings", "Timings and peak memory"),
]


def build_report(root: Path, cfg: ReportConfig, seed: int) -> str:
    """The whole report as one self-contained HTML string."""
    root = Path(root)
    inp = Inputs.load(root)
    vd = verdict(inp)
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
        banner_html(vd),
        f"<nav>{nav}</nav>",
        guarded("run", "What was run", lambda: header_body(inp, vd)),
    ]
    parts += [guarded(a, t, builders[a]) for a, t in SECTION_TITLES]
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"
