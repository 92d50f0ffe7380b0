"""The comparison of experiments (a sweep or the scale ladder): one table row per experiment and
plots of the headline figures, against the training token count when the runs differ in scale,
else one bar per experiment. Self-contained HTML, like the run report."""
from __future__ import annotations

import math
from typing import Any

from newllm.html.common import CSS, esc, na, section, table
from newllm.html.plots import empty, figure, hline, img
from newllm.values import acc_scale, fmt, num

# Columns of the CSV and the HTML table after the swept params: (column, label). Metric columns
# are "<metrics file stem>.<key>".
FIGURES: list[tuple[str, str]] = [
    ("train_tokens", "train tokens"),
    ("val_tokens", "val tokens"),
    ("validate.train.er_pct", "train ER %"),
    ("validate.train.er_pct_untrained", "train ER % untrained"),
    ("validate.val.er_pct", "val ER %"),
    ("validate.val.er_pct_untrained", "val ER % untrained"),
    ("validate.test.er_pct", "test ER %"),
    ("validate.final_diff", "final_diff"),
    ("validate.passed", "passed"),
    ("validate.collapsed", "collapsed"),
    ("phase1.passes", "P1 passes"),
    ("phase1.param_change", "P1 param change"),
    ("phase2.test.loss", "test loss"),
    ("phase2.test.ppl", "test ppl"),
    ("phase2.test.acc", "test acc"),
    ("phase2.val.loss", "val loss (selection)"),
    ("phase2.best_epoch", "kept epoch"),
    ("transformer.test.ppl", "transformer test ppl"),
    ("transformer.val.loss", "transformer val loss (selection)"),
    ("transformer.best_epoch", "transformer kept epoch"),
    ("baselines.test.mkn_trigram.ppl", "modified KN trigram test ppl"),
    ("baselines.test.kn_trigram.ppl", "KN trigram test ppl"),
    ("baselines.test.kn_bigram.ppl", "KN bigram test ppl"),
    ("baselines.test.unigram.ppl", "unigram test ppl"),
    ("comparison.cvfp_vs.transformer.verdict", "CVFP vs transformer"),
    ("comparison.vs_ngram", "CVFP vs strongest n-gram"),
    ("phase1.time_s", "phase1 s"),
    ("validate.time_s", "validate s"),
    ("phase2.time_s", "phase2 s"),
    ("transformer.time_s", "transformer s"),
    ("phase1.tokens_per_s", "P1 tok/s"),
    ("phase2.tokens_per_s", "P2 tok/s"),
    ("phase1.peak_rss_mb", "P1 RSS MB"),
    ("phase2.peak_rss_mb", "P2 RSS MB"),
    ("phase1.peak_cuda_mb", "P1 CUDA MB"),
    ("phase2.peak_cuda_mb", "P2 CUDA MB"),
    ("phase1.device", "device"),
    ("phase1.precision", "precision"),
    ("rev", "rev"),
]
COLORS = {"phase1": "#1f5fa8", "validate": "#e67e22", "phase2": "#2e8b57"}


def table_columns(df, varied: list[str]) -> list[str]:
    """name, the swept params, then the figures, each only where some row has a value."""
    cols = ["name", *varied, *(c for c, _ in FIGURES)]
    return [c for c in cols if c in df.columns and df[c].notna().any()]


def _col(df, name: str) -> list:
    return [num(v) for v in df[name].tolist()] if name in df.columns else [None] * len(df)


def _series(ax, xs: list, ys: list, label: str, color: str, style: str = "o-") -> None:
    pts = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, label=label, markersize=5)


def short_count(n: float) -> str:
    """6400 -> '6.4k', 100000 -> '100k', 1500000 -> '1.5M'."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


class Axis:
    """The x axis of every plot: the training token count (log scale) when the runs differ in
    scale, else the experiments themselves, one position each."""

    def __init__(self, df):
        self.tokens = _col(df, "train_tokens")
        self.by_tokens = len({t for t in self.tokens if t is not None}) > 1
        self.names = [str(n) for n in df["name"].tolist()] if "name" in df.columns else []
        self.x = self.tokens if self.by_tokens else list(range(len(self.names)))

    def finish(self, ax, title: str, ylabel: str = "", logy: bool = False) -> None:
        from matplotlib.ticker import NullFormatter

        ax.set_title(title, fontsize=10)
        if ylabel:
            ax.set_ylabel(ylabel, fontsize=9)
        if self.by_tokens:
            ax.set_xlabel("training tokens (log scale)", fontsize=9)
            ax.set_xscale("log")
            xs = sorted({t for t in self.tokens if t is not None})
            if 0 < len(xs) <= 10:  # one labelled tick per scale, no log-minor clutter
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_xticks(xs, [short_count(x) for x in xs])
        else:
            ax.set_xticks(self.x, self.names, rotation=30, ha="right", fontsize=7)
        if logy:
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
        else:
            empty(ax)


def _phase1_plot(df, axis: Axis) -> str:
    fig, (ax_er, ax_fd) = figure(1, 2, height=3.8)
    for col, color, style, label in (("validate.train.er_pct", "#1f5fa8", "o-", "train ER"),
                                     ("validate.train.er_pct_untrained", "#1f5fa8", "s--", "train ER, untrained θ₀"),
                                     ("validate.val.er_pct", "#2e8b57", "o-", "val ER"),
                                     ("validate.val.er_pct_untrained", "#2e8b57", "s--", "val ER, untrained θ₀")):
        _series(ax_er, axis.x, _col(df, col), label, color, style)
    th_t = next((v for v in _col(df, "validate.thresholds.min_train_er_pct") if v is not None), 85.0)
    th_v = next((v for v in _col(df, "validate.thresholds.min_val_er_pct") if v is not None), 75.0)
    if ax_er.lines:
        hline(ax_er, th_t, f"criterion train > {th_t:g}%", "#c0392b")
        hline(ax_er, th_v, f"criterion val > {th_v:g}%", "#c0392b", ":")
    axis.finish(ax_er, "effective rank (% of d_c)", "ER %")
    fd = [None if v is None or v <= 0 else v for v in _col(df, "validate.final_diff")]
    _series(ax_fd, axis.x, fd, "final_diff", "#1f5fa8")
    th_fd = next((v for v in _col(df, "validate.thresholds.max_final_diff") if v is not None), 0.001)
    if ax_fd.lines:
        hline(ax_fd, th_fd, f"criterion < {th_fd:g}", "#c0392b")
    axis.finish(ax_fd, "convergence check: final_diff", "mean ‖c^j − c^(j−1)‖", logy=True)
    return img(fig, "Phase 1 metrics")


def _phase2_plot(df, axis: Axis) -> str:
    fig, (ax_p, ax_a) = figure(1, 2, height=3.8)
    _series(ax_p, axis.x, _col(df, "phase2.test.ppl"), "CVFP (kept checkpoint)", "#2e8b57")
    for col, color, style, label in (("baselines.test.mkn_trigram.ppl", "#8e44ad", "^:", "modified Kneser–Ney trigram"),
                                     ("baselines.test.unigram.ppl", "#c0392b", "s--", "unigram"),
                                     ("transformer.test.ppl", "#d2691e", "D-.", "transformer")):
        _series(ax_p, axis.x, _col(df, col), label, color, style)
    axis.finish(ax_p, "test perplexity (lower is better)", "ppl", logy=True)
    acc = _col(df, "phase2.test.acc")
    s = acc_scale(*acc)
    _series(ax_a, axis.x, [None if v is None else v * s for v in acc], "CVFP (kept checkpoint)", "#2e8b57")
    tf = _col(df, "transformer.test.acc")
    _series(ax_a, axis.x, [None if v is None else v * s for v in tf], "transformer", "#d2691e", "D-.")
    axis.finish(ax_a, "test top-1 accuracy (higher is better)", "%")
    return img(fig, "Phase 2 metrics")


def _cost_plot(df, axis: Axis, exps: dict) -> str:
    fig, (ax_t, ax_m) = figure(1, 2, height=3.8)
    for st, color in COLORS.items():
        e = exps.get(st)
        _series(ax_t, axis.x, _col(df, f"{st}.time_s"), st + (f" (∝ N^{e:.2f})" if e is not None else ""), color)
        _series(ax_m, axis.x, _col(df, f"{st}.peak_rss_mb"), f"{st} host RSS", color)
        _series(ax_m, axis.x, _col(df, f"{st}.peak_cuda_mb"), f"{st} CUDA", color, "s--")
    axis.finish(ax_t, "wall time per stage", "s", logy=True)
    axis.finish(ax_m, "peak memory", "MB")
    return img(fig, "time and memory")


def _cell(col: str, v: Any, acc_s: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, bool):
        return '<td class="pass">yes</td>' if v else '<td class="fail">no</td>'
    if col.endswith(".acc"):
        return f"{num(v) * acc_s:.2f}%" if num(v) is not None else str(v)
    if col == "rev":
        return str(v)[:7]
    if col.endswith(("final_diff", "param_change")):
        return fmt(num(v), 3)
    return fmt(int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 1e15 else v)


def build_html(df, others: list[dict], exps: dict, varied: list[str], title: str, csv_name: str) -> str:
    labels = dict(FIGURES)
    cols = table_columns(df, varied)
    acc_s = acc_scale(*_col(df, "phase2.test.acc"), *_col(df, "transformer.test.acc"))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title>", f"<style>{CSS}\ntable.wide{{font-size:.78em;}}</style></head>"
             "<body><main>", f"<h1>{esc(title)}</h1>"]
    swept = ", ".join(c.removeprefix("params.") for c in varied) or "nothing (one configuration)"
    parts.append(f'<p class="note">{len(df)} completed run(s) from <code>dvc exp show --json</code> and each '
                 f'run\'s metrics files, sorted by training tokens; the same rows are in <code>{esc(csv_name)}</code>. '
                 f'Params that differ between the runs: {esc(swept)}. Phase 2 figures are those of the kept '
                 f'checkpoint (the epoch with the lowest validation loss); <code>dvc metrics diff &lt;exp&gt; '
                 f'&lt;exp&gt;</code> compares any two runs.</p>')
    if df.empty:
        parts.append(section("table", "Runs", na("no completed experiment with metrics")))
    else:
        axis = Axis(df)
        head = [labels.get(c, c.removeprefix("params.")) for c in cols]
        rows = [[_cell(c, r.get(c), acc_s) for c in cols] for r in df.to_dict("records")]
        parts.append(section("table", "Runs", table(head, rows, "criteria wide")))
        parts.append(section("phase1", "Phase 1 fixed point", _phase1_plot(df, axis)
                             + '<p class="note">Dashed: the same effective rank with the untrained θ₀; a '
                               'trained model is only interesting where it differs from it. Red lines: the '
                               'original guide\'s criteria.</p>'))
        parts.append(section("phase2", "Phase 2 against the baselines", _phase2_plot(df, axis)))
        exp_rows = [[st, "—" if e is None else f"{e:.2f}"] for st, e in exps.items()]
        parts.append(section("cost", "Time and peak memory", _cost_plot(df, axis, exps)
                             + (table(["stage", "growth exponent of wall time (log-log least squares)"],
                                      exp_rows, "criteria") if axis.by_tokens else "")
                             + '<p class="note">An exponent near 1 is linear in the number of training tokens '
                               '(with the same passes/epochs; early stopping changes the work per run). A '
                               'stage\'s time_s includes its set-up, which flattens the exponent at small '
                               'scales.</p>'))
    if others:
        rows = [[str(o.get("name")), str(o.get("state")), str(o.get("rev") or "")[:7],
                 f"dvc queue logs {o.get('name')}"] for o in others]
        parts.append(section("others", "Experiments without results",
                             table(["experiment", "state", "rev", "its log"], rows, "criteria")))
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"
