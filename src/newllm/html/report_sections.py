"""The section bodies of the run report (``newllm.html.run_report``), and the comparisons they
share with its header: the original guide's figures, the models Phase 2 is measured against,
and the wording of every comparison in the figure's own direction (lower loss and perplexity
are better, higher accuracy and effective rank are better).

Each body takes the report's ``Inputs`` and returns HTML; a missing input makes it say
"not available: <why>" and every piece of text is escaped."""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from newllm import paths
from newllm.config import ReportConfig
from newllm.cvfp.rank import ATTRACTOR_COS, COLLAPSE_ER_PCT, NEAR_ZERO_NORM
from newllm.html.common import (
    NA,
    acc_scale,
    esc,
    flag_cell,
    fmt,
    fmt_change,
    fmt_pct,
    fmt_range,
    get,
    na,
    num,
    pass_fail,
    table,
    visible,
)
from newllm.html.plots import band, empty, figure, hline, img, xy

if TYPE_CHECKING:
    from newllm.html.run_report import Inputs

# The original guide's claimed figures (docs/metrics.md, "Terms").
GUIDE_PHASE1 = {"train_er_pct": (88.0, 90.0), "val_er_pct": (80.0, 83.0), "cvfp_loss": (0.0015, 0.002),
                "passes": (3, 5)}
GUIDE_PHASE2 = {"loss": (4.5, 5.5), "ppl": (90.0, 250.0), "acc_pct": (10.0, 15.0)}
# The original guide's success criteria, used when metrics/validate.json does not record them.
DEFAULT_THRESHOLDS = {"min_train_er_pct": 85.0, "min_val_er_pct": 75.0, "max_final_diff": 0.001}

NGRAMS = (("kn_trigram", "Kneser–Ney trigram"), ("kn_bigram", "Kneser–Ney bigram"),
          ("unigram", "smoothed unigram"))
ADD_ONE = (("unigram", "add-one unigram (old, weak)"), ("bigram", "add-one bigram (old, weak)"))
NA_CELL = '<td class="na">—</td>'


def thresholds(inp: Inputs) -> tuple[float, float, float, bool]:
    """(min train ER %, min val ER %, max final_diff, whether validate recorded them)."""
    th = get(inp.validate, "thresholds")
    th = th if isinstance(th, dict) else {}
    vals = [num(th.get(k)) for k in DEFAULT_THRESHOLDS]
    out = [DEFAULT_THRESHOLDS[k] if v is None else v for k, v in zip(DEFAULT_THRESHOLDS, vals)]
    return out[0], out[1], out[2], all(v is not None for v in vals)


def claim_cell(value: float | None, lo: float, hi: float, higher_better: bool, unit: str = "") -> str:
    """A measured figure against the original guide's claimed range, worded in the figure's own
    direction, so that a higher loss and a higher accuracy never read alike."""
    if value is None:
        return NA_CELL
    rng = fmt_range(lo, hi, unit)
    if lo <= value <= hi:
        return f'<td class="pass">within the claimed {esc(rng)}</td>'
    above = value > hi
    if higher_better:
        words = f"{'better' if above else 'worse'}: {'above' if above else 'below'} the claimed {rng}"
    else:
        words = f"{'worse' if above else 'better'}: {'higher' if above else 'lower'} than claimed {rng}"
    return f'<td class="{"pass" if words.startswith("better") else "warnc"}">{esc(words)}</td>'


# ---------------------------------------------------------------------------
# the models Phase 2 is measured against


@dataclass
class Scored:
    """One model's validation figures (accuracy as stored: a fraction or a percentage)."""
    name: str  # in a sentence
    label: str  # as a table row
    loss: float | None = None
    ppl: float | None = None
    acc: float | None = None
    params: str = "—"
    time_s: float | None = None
    same_as_kept: bool = False


def _count(v: Any) -> str:
    n = num(v)
    return "—" if n is None else fmt(int(n))


def cvfp_kept(inp: Inputs) -> Scored | None:
    """The kept checkpoint (lowest validation loss): what Phase 2 is judged by."""
    p2 = inp.phase2
    if p2 is None:
        return None
    ep = fmt(get(p2, "best_epoch", get(p2, "best.epoch")))
    return Scored("CVFP", f"CVFP, kept checkpoint (epoch {ep})", num(get(p2, "val.loss")), num(get(p2, "val.ppl")),
                  num(get(p2, "val.acc")), _count(get(p2, "parameters")), num(get(p2, "time_s")))


def cvfp_last(inp: Inputs) -> Scored | None:
    last = get(inp.phase2, "last")
    if not isinstance(last, dict):
        return None
    same = last.get("epoch") is not None and last.get("epoch") == get(inp.phase2, "best_epoch")
    return Scored("CVFP's last epoch", f"CVFP, last epoch (epoch {fmt(last.get('epoch'))})",
                  num(get(last, "val.loss")), num(get(last, "val.ppl")), num(get(last, "val.acc")),
                  _count(get(inp.phase2, "parameters")), same_as_kept=same)


def transformer_shape(t: dict) -> str:
    """"2 layers, 4 heads, d_model 64" from metrics/transformer.json (what is recorded of it)."""
    shape = []
    for key, word in (("layers", "layer"), ("heads", "head")):
        n = num(t.get(key))
        if n is not None:
            shape.append(f"{int(n)} {word}{'' if n == 1 else 's'}")
    if num(t.get("d_model")) is not None:
        shape.append(f"d_model {fmt(t.get('d_model'))}")
    return ", ".join(shape)


def transformer_scored(inp: Inputs) -> Scored | None:
    t = inp.transformer
    if t is None:
        return None
    shape = transformer_shape(t)
    label = "transformer, same size" + (f" ({shape})" if shape else "")
    return Scored("the same-size transformer", label, num(get(t, "val.loss")), num(get(t, "val.ppl")),
                  num(get(t, "val.acc")), _count(t.get("parameters")), num(t.get("time_s")))


def ngram_scored(inp: Inputs, which: tuple = NGRAMS, under: str = "") -> list[Scored]:
    """The n-gram baselines of metrics/baselines.json present in it (``under``: its add_one block)."""
    b, out = inp.baselines, []
    for key, label in which:
        loss, ppl = num(get(b, f"{under}{key}.loss")), num(get(b, f"{under}{key}.ppl"))
        if ppl is None and loss is not None:
            ppl = math.exp(loss)
        if ppl is not None:
            out.append(Scored(label, label, loss, ppl, time_s=num(get(b, "time_s"))))
    return out


def strongest(inp: Inputs) -> Scored | None:
    """The baseline with the lowest validation perplexity among the Kneser–Ney n-grams, the smoothed
    unigram and the same-size transformer, whichever are present."""
    tf = transformer_scored(inp)
    cands = ngram_scored(inp) + ([tf] if tf is not None and tf.ppl is not None else [])
    return min(cands, key=lambda s: s.ppl) if cands else None


def accuracy_scale(inp: Inputs) -> float:
    """100 when the stored accuracies are fractions (they are), 1 when percentages."""
    accs = [get(inp.phase2, "val.acc"), get(inp.phase2, "last.val.acc"), get(inp.baselines, "majority.acc"),
            get(inp.transformer, "val.acc"), *((inp.epochs or {}).get("val_acc") or [])]
    return acc_scale(*accs)


def rel_ppl(kept: Scored, other: Scored) -> float | None:
    """CVFP's perplexity relative to ``other``'s, in percent (negative: CVFP lower, better)."""
    if kept.ppl is None or not other.ppl:
        return None
    return 100 * (kept.ppl / other.ppl - 1)


def _better_word(rel: float) -> str:
    return "better" if rel < 0 else ("worse" if rel > 0 else "no better")


def phase2_line(inp: Inputs) -> tuple[str, str]:
    """(level, text) of the Phase 2 line under the banner: the kept checkpoint against the
    strongest baseline, on perplexity. level: "ok" better, "warn" not better, "na" unknown."""
    kept, best = cvfp_kept(inp), strongest(inp)
    if kept is None or kept.ppl is None:
        why = inp.why("phase2") if inp.phase2 is None else "metrics/phase2.json has no val.ppl"
        return "na", f"Phase 2: {NA} ({why})"
    head = (f"Phase 2 (kept checkpoint, epoch {fmt(get(inp.phase2, 'best_epoch', get(inp.phase2, 'best.epoch')))}): "
            f"validation perplexity {fmt(kept.ppl)}")
    if best is None:
        return "na", f"{head} — comparison with the baselines {NA} ({inp.why('baselines', 'transformer')})"
    rel = rel_ppl(kept, best)
    word = _better_word(rel)
    by = fmt_change(rel).lstrip("+−")
    return ("ok" if word == "better" else "warn",
            f"{head} — {word} than the strongest baseline, {best.name} (perplexity {fmt(best.ppl)}), by {by}")


def versus_cell(kept: Scored | None, other: Scored) -> str:
    """The "CVFP kept vs this" cell: perplexity where both have one, else accuracy."""
    if kept is None or other is kept:
        return NA_CELL
    if other.same_as_kept:
        return '<td class="na">the kept checkpoint itself</td>'
    rel = rel_ppl(kept, other)
    if rel is not None:
        word = _better_word(rel)
        return f'<td class="{"pass" if word == "better" else "warnc"}">CVFP {word} (ppl {fmt_change(rel)})</td>'
    if kept.acc is not None and other.acc is not None:
        word = "better" if kept.acc > other.acc else ("worse" if kept.acc < other.acc else "no better")
        s = acc_scale(kept.acc, other.acc)
        return (f'<td class="{"pass" if word == "better" else "warnc"}">CVFP {word} (accuracy '
                f'{fmt_pct(s * kept.acc)} vs {fmt_pct(s * other.acc)})</td>')
    return NA_CELL


def models_table(inp: Inputs, scale: float) -> str:
    """One row per model; a missing input is one row saying why."""
    kept = cvfp_kept(inp)
    rows: list[list[str]] = []

    def add(s: Scored | None, label: str = "", missing: str = "") -> None:
        if s is None:
            if label:
                rows.append([label, f'<td class="na" colspan="6">{esc(NA)}: {esc(inp.why(missing))}</td>'])
            return
        acc = None if s.acc is None else s.acc * scale
        rows.append([s.label, fmt(s.loss), fmt(s.ppl), fmt_pct(acc), s.params, fmt(s.time_s), versus_cell(kept, s)])

    add(kept, "CVFP", "phase2")
    add(cvfp_last(inp))
    add(transformer_scored(inp), "transformer, same size", "transformer")
    if inp.baselines is None:
        add(None, "n-gram baselines and majority token", "baselines")
    else:
        for s in ngram_scored(inp):
            add(s)
        maj = num(get(inp.baselines, "majority.acc"))
        if maj is not None:
            add(Scored("majority token", "majority token", acc=maj))
        for s in ngram_scored(inp, ADD_ONE, "add_one."):
            add(s)
    return table(["model", "validation loss", "perplexity", "top-1 accuracy", "parameters", "training time (s)",
                  "CVFP kept vs this"], rows, "criteria")


# ---------------------------------------------------------------------------
# sections


def criteria_body(inp: Inputs) -> str:
    v = inp.validate
    if v is None:
        return na(inp.why("validate"))
    t_min, v_min, fd_max, _ = thresholds(inp)
    crit = v.get("criteria") or {}
    t_er, v_er, fd = num(get(v, "train.er_pct")), num(get(v, "val.er_pct")), num(v.get("final_diff"))

    def decided(key: str, ok_fn: Callable[[], bool | None]) -> bool | None:
        return bool(crit[key]) if key in crit else ok_fn()

    ok_t = decided("train_er", lambda: None if t_er is None else t_er >= t_min)
    ok_v = decided("val_er", lambda: None if v_er is None else v_er >= v_min)
    ok_f = decided("final_diff", lambda: None if fd is None else fd <= fd_max)
    d_c = (inp.model_cfg() or {}).get("context_dim")

    def er_txt(pct: float | None, er_abs: Any) -> str:
        s = fmt_pct(pct)
        if num(er_abs) is not None and d_c:
            s += f" (ER {fmt(num(er_abs))} of {d_c})"
        return s

    refs_train = (f"untrained θ₀ {fmt_pct(get(v, 'train.er_pct_untrained'))}; "
                  f"input stream x {fmt_pct(get(v, 'input.er_pct'))}; "
                  f"Gaussian {fmt_pct(get(v, 'gaussian.er_pct'))}")
    refs_val = f"untrained θ₀ {fmt_pct(get(v, 'val.er_pct_untrained'))}"
    g_t, g_v = GUIDE_PHASE1["train_er_pct"], GUIDE_PHASE1["val_er_pct"]
    rows = [
        ["train ER", f"> {fmt(t_min)}%", er_txt(t_er, get(v, "train.er")), pass_fail(ok_t), refs_train,
         fmt_range(*g_t, "%"), claim_cell(t_er, *g_t, higher_better=True, unit="%")],
        ["validation ER", f"> {fmt(v_min)}%", er_txt(v_er, get(v, "val.er")), pass_fail(ok_v), refs_val,
         fmt_range(*g_v, "%"), claim_cell(v_er, *g_v, higher_better=True, unit="%")],
        ["final_diff", f"< {fmt(fd_max)}",
         fmt(fd, 3) + (" (trivial: the contexts collapsed)" if ok_f and v.get("collapsed") else ""),
         pass_fail(ok_f), f"mean ‖c^j − c^(j−1)‖ after {fmt(v.get('convergence_passes'))} frozen passes; "
                          f"original code: 33.6", "—", NA_CELL],
    ]
    verdict = '<b class="okt">PASSED</b>' if v.get("passed") else '<b class="badt">FAILED</b>'
    return "\n".join([
        table(["criterion", "the original guide's threshold", "measured", "verdict", "references",
               "the original guide's claim", "vs the original guide's claim"], rows, "criteria"),
        f'<p class="oneline">Overall: {verdict} the original guide\'s criteria (thresholds from params.yaml '
        '<code>validate</code>). A higher effective rank (ER) is better: the contexts use more directions.</p>',
        "<h3>Training</h3>" + _training_table(inp, d_c),
        "<h3>Degeneracy checks</h3>" + _degeneracy_table(v)])


def _training_table(inp: Inputs, d_c: Any) -> str:
    p1 = inp.phase1 or {}
    steps = inp.first(("phase1", "optimizer_steps"), ("validate", "optimizer_steps"))
    change = num(get(p1, "param_change"))
    steps_cell = (f'<td class="fail">{esc(fmt(steps))} — never trained</td>' if num(steps) == 0
                  else f"<td>{esc(fmt(steps))}</td>")
    change_cell = (f'<td class="fail">{esc(fmt(change))} — unchanged</td>' if change == 0
                   else f"<td>{esc(fmt(change))}</td>")
    frac = num(get(p1, "final_converged_frac"))
    rows = [
        ["optimizer steps", steps_cell, "0 means the original guard bug: ranks of an untrained network"],
        ["relative parameter change ‖θ−θ₀‖/‖θ₀‖", change_cell, ""],
        ["passes", fmt(get(p1, "passes")), f"the original guide's claim: convergence in "
                                           f"{fmt_range(*GUIDE_PHASE1['passes'])} passes"],
        ["final CVFP loss", fmt(num(get(p1, "final_cvfp_loss"))),
         f"the original guide's claim: {fmt_range(*GUIDE_PHASE1['cvfp_loss'])}"],
        ["final converged fraction", fmt_pct(100 * frac) if frac is not None else "—", ""],
        ["final mean context norm", fmt(num(get(p1, "final_context_norm"))),
         f"√d_c = {math.sqrt(d_c):.3g} with LayerNorm scale 1" if d_c else ""],
    ]
    return table(["", "value", "note"], rows, "kvtable")


def _degeneracy_table(v: dict) -> str:
    def flag_row(label: str, key: str, is_flag: bool) -> list[str]:
        cells = [label]
        for src in (f"train.{key}", f"val.{key}", f"untrained.train.{key}", f"untrained.val.{key}"):
            val = get(v, src)
            cells.append(flag_cell(val) if is_flag else fmt(num(val)))
        return cells

    return table(
        ["", "train", "validation", "train, untrained θ₀", "validation, untrained θ₀"],
        [flag_row(f"global attractor (mean cos > {ATTRACTOR_COS:g})", "global_attractor", True),
         flag_row(f"near zero (mean norm < {NEAR_ZERO_NORM:g})", "near_zero", True),
         flag_row(f"collapsed (either, or ER < {COLLAPSE_ER_PCT:g}%)", "collapsed", True),
         flag_row("mean pairwise cosine", "mean_cos", False),
         flag_row("mean context norm", "mean_norm", False)], "criteria")


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


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
        _integer_epochs(ax)
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
    _integer_epochs(ax)
    ax.legend(fontsize=8, loc="best")
    rows = [[fmt(x), fmt(y, 4)] for x, y in zip(xs, ys)]
    note = ""
    if zx:
        note = ('<p class="note">A diff of exactly 0 is a perfect fixed point; with a collapsed rank it '
                'means every context went to the same point (see the degeneracy checks).</p>')
    return img(fig, "convergence check diffs") + note + table(["pass", "diff"], rows, "small")


def phase2_curves(inp: Inputs, scale: float) -> str:
    """Loss, perplexity and accuracy per epoch, with the Kneser–Ney trigram and the same-size
    transformer as reference lines and the kept epoch marked."""
    ep, b, tf = inp.epochs or {}, inp.baselines, inp.transformer
    e = ep.get("epoch") or list(range(1, len(next(iter(ep.values()))) + 1))
    kn3_ppl = num(get(b, "kn_trigram.ppl"))
    if kn3_ppl is None:
        kn3_ppl = next((y for y in ep.get("kn_trigram_ppl") or [] if y is not None), None)
    kn3_loss = num(get(b, "kn_trigram.loss"))
    if kn3_loss is None and kn3_ppl:
        kn3_loss = math.log(kn3_ppl)
    maj, tf_acc = num(get(b, "majority.acc")), num(get(tf, "val.acc"))
    fig, axes = figure(1, 3, height=3.8)
    specs = [("cross-entropy loss", ("train_loss", "val_loss"), kn3_loss, num(get(tf, "val.loss")), "loss"),
             ("perplexity (log scale)", ("train_ppl", "val_ppl"), kn3_ppl, num(get(tf, "val.ppl")), "ppl"),
             ("validation top-1 accuracy (%)", (None, "val_acc"), None,
              None if tf_acc is None else tf_acc * scale, "acc_pct")]
    kept = num(get(inp.phase2, "best_epoch"))
    for ax, (title, cols, kn3, tf_val, claim) in zip(axes, specs):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        _integer_epochs(ax)
        for col, color, label in zip(cols, ("#1f5fa8", "#2e8b57"), ("train", "validation")):
            ys = (ep.get(col) or []) if col else []
            if col == "val_acc":
                ys = [None if y is None else y * scale for y in ys]
            px, py = xy(e, ys, positive=claim == "ppl")
            if px:
                ax.plot(px, py, "o-", color=color, label=label, markersize=4)
        hline(ax, kn3, "Kneser–Ney trigram", "#c0392b")
        hline(ax, tf_val, "transformer, same size", "#8e44ad", ":")
        if claim == "acc_pct":
            hline(ax, None if maj is None else maj * scale, "majority token", "#d2691e", "-.")
        band(ax, *GUIDE_PHASE2[claim], "the original guide's claim")
        if kept is not None:
            ax.axvline(kept, color="#555", linestyle=":", linewidth=1.0, label=f"kept (epoch {kept:g})")
        if claim == "ppl":
            ax.set_yscale("log")
        ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
    return img(fig, "Phase 2 epoch curves")


def guide_table(inp: Inputs, scale: float) -> str:
    """The kept checkpoint against the original guide's claimed Phase 2 figures."""
    kept = cvfp_kept(inp) or Scored("CVFP", "CVFP")
    figures = [("validation loss", kept.loss, "loss", "", False),
               ("validation perplexity", kept.ppl, "ppl", "", False),
               ("validation top-1 accuracy", None if kept.acc is None else kept.acc * scale, "acc_pct", "%", True)]
    rows = [[label, fmt_pct(v) if unit else fmt(v), fmt_range(*GUIDE_PHASE2[key], unit),
             claim_cell(v, *GUIDE_PHASE2[key], higher_better=hb, unit=unit)]
            for label, v, key, unit, hb in figures]
    return table(["CVFP, kept checkpoint", "measured", "the original guide's claim",
                  "vs the original guide's claim"], rows, "criteria")


def phase2_body(inp: Inputs) -> str:
    p2, ep = inp.phase2, inp.epochs
    if p2 is None and ep is None:
        return na(inp.why("phase2", "epochs"))
    scale = accuracy_scale(inp)
    out = [phase2_curves(inp, scale) if ep is not None else na(inp.why("epochs"))]
    pairs = get(inp.baselines, "val_pairs", get(p2, "val_targets"))
    out.append("<h3>Against the baselines</h3>" + models_table(inp, scale))
    out.append(f'<p class="note">All figures on the same {esc(fmt(pairs))} validation pairs; perplexity is the '
               'exponential of the loss (nats per token), lower is better, and "CVFP kept vs this" compares '
               'perplexities. The n-gram rows share the baselines stage\'s time. The add-one figures are the '
               'ones this project reported before: they give much of the probability mass to types never seen '
               'in training, so they flatter any model.</p>')
    if p2 is None:
        out.append(na(inp.why("phase2")))
        return "\n".join(out)
    maj = num(get(inp.baselines, "majority.acc"))
    maj_txt = (f"always predicting the most frequent training token scores {fmt_pct(maj * scale)} here"
               if maj is not None else f"the majority-token rate here is {NA} ({inp.why('baselines')})")
    out.append("<h3>Against the original guide's claimed figures</h3>" + guide_table(inp, scale))
    out.append(f'<p class="note">The original guide\'s "10–15% accuracy" is the majority-token rate of its '
               f'data; {esc(maj_txt)}.</p>')
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
            f"sampled: temperature {cfg.temperature:g}, top_k {cfg.top_k or 'off'}, random seed {seed}")
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


TIMED_STAGES = [("fetch_ultrachat", "fetch"), ("tokenize_cache", "data"), ("baselines", "baselines"),
                ("phase1_fixed_point", "phase1"), ("validate_rank", "validate"), ("phase2_lm", "phase2"),
                ("transformer_lm", "transformer")]


def timings_body(inp: Inputs) -> str:
    cols = ["time_s", "tokens_per_s", "peak_rss_mb", "peak_cuda_mb"]
    present = [c for c in cols if any(get(getattr(inp, a), c) is not None for _, a in TIMED_STAGES)]
    if not present:
        return na("no stage metrics record timings (" + inp.why("phase1", "phase2") + ")")
    heads = {"time_s": "wall time (s)", "tokens_per_s": "tokens/s", "peak_rss_mb": "peak host RSS (MB)",
             "peak_cuda_mb": "peak CUDA (MB)"}
    rows = []
    for stage, attr in TIMED_STAGES:
        m = getattr(inp, attr)
        if m is None:
            rows.append([stage] + [f'<td class="na">{esc(NA)}</td>'] + ["—"] * (len(present) - 1))
            continue
        rows.append([stage] + [fmt(num(get(m, c))) if get(m, c) is not None else "—" for c in present])
    dev = inp.first(("phase2", "device"), ("phase1", "device"))
    note = f'<p class="note">Device: {esc(dev)}.</p>' if dev else ""
    return table(["stage"] + [heads[c] for c in present], rows, "criteria") + note
