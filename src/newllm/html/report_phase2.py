"""The run report's Phase 2 section, rendered from its data (``newllm.report.phase2``): the epoch
curves, every model on the test split with CVFP's paired difference and verdict, the validation
figures the choices were made on, and the original guide's claimed figures as a reference."""
from __future__ import annotations

from newllm.html.common import esc, na, table
from newllm.html.plots import figure, hline, img, xy
from newllm.values import NA, fmt, fmt_interval, fmt_pct, fmt_range, fmt_signed

VERDICT_CLASS = {"better": "pass", "worse": "warnc", "not distinguishable": "even"}


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def curves_html(d: dict) -> str:
    """Loss, perplexity and accuracy per epoch, with the validation figures of the strongest n-gram
    model, the transformer and the majority token as reference lines, and the kept epoch marked."""
    ng, tf = d["ngram"] or {}, d["transformer"]
    ng_label = f"{ng.get('label', 'n-gram')} (validation)"
    fig, axes = figure(1, 3, height=3.8)
    specs = [("cross-entropy loss", ("train_loss", "val_loss"), ng.get("loss"), tf["loss"], False),
             ("perplexity (log scale)", ("train_ppl", "val_ppl"), ng.get("ppl"), tf["ppl"], True),
             ("validation top-1 accuracy (%)", (None, "val_acc_pct"), None, tf["acc_pct"], False)]
    for ax, (title, cols, ng_val, tf_val, log_y) in zip(axes, specs):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        _integer_epochs(ax)
        for col, color, label in zip(cols, ("#1f5fa8", "#2e8b57"), ("train", "validation")):
            px, py = xy(d["epoch"], (d.get(col) or []) if col else [], positive=log_y)
            if px:
                ax.plot(px, py, "o-", color=color, label=label, markersize=4)
        hline(ax, ng_val, ng_label, "#c0392b")
        hline(ax, tf_val, "transformer, same size (validation)", "#8e44ad", ":")
        if cols[1] == "val_acc_pct":
            hline(ax, d["majority_acc_pct"], "majority token (validation)", "#d2691e", "-.")
        if d["kept"] is not None:
            ax.axvline(d["kept"], color="#555", linestyle=":", linewidth=1.0, label=f"kept (epoch {d['kept']:g})")
        if log_y:
            ax.set_yscale("log")
        ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
    return img(fig, "Phase 2 epoch curves")


def _verdict_cells(vs: dict | None) -> list[str]:
    if vs is None:
        return ['<td class="na">—</td>'] * 3
    cls = VERDICT_CLASS.get(vs["verdict"], "na")
    return [fmt_signed(vs["estimate"]), fmt_interval(vs["lo"], vs["hi"], signed=True),
            f'<td class="{cls}">{esc(vs["verdict"] or NA)}</td>']


def models_table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        if r.get("missing"):
            out.append([r["label"], f'<td class="na" colspan="8">{esc(NA)}: {esc(r["missing"])}</td>'])
            continue
        label = r["label"] + (" — the strongest n-gram model (chosen on validation)" if r["strongest"] else "")
        acc = None if r["acc"] is None else 100 * r["acc"]
        params = "—" if r["parameters"] is None else fmt(int(r["parameters"]))
        out.append([label, fmt(r["loss"]), fmt_interval(r["lo"], r["hi"]), fmt(r["ppl"]), fmt_pct(acc), params,
                    *_verdict_cells(r["vs"])])
    return table(["model", "test loss (nats)", "95% interval", "test perplexity", "test top-1 accuracy",
                  "parameters", "CVFP − this (test loss)", "95% interval of the difference", "CVFP is"],
                 out, "criteria")


def _settings_note(t: dict) -> str:
    if t.get("test_conversations") is None:
        return (f'<p class="na">Intervals {esc(NA)}: no per-conversation test losses '
                f'(stages not run: {esc(", ".join(t.get("missing_stages") or []) or "unknown")}).</p>')
    level = 100 * (t.get("level") or 0.95)
    text = (f"Test split: {fmt(t['test_conversations'])} conversations, {fmt(t['test_pairs'])} pairs (next-token "
            f"predictions). Every interval is a {level:g}% percentile bootstrap over the test conversations, "
            f"{fmt(t['resamples'])} resamples (report.bootstrap_seed {fmt(t['bootstrap_seed'])}); CVFP's difference "
            "with a baseline is taken on the same draws. Loss is the mean cross-entropy in nats per token, lower is "
            "better; perplexity is exp(loss). The majority token has an accuracy and no loss.")
    if t.get("missing_stages"):
        text += f" Not compared (stage not run): {', '.join(t['missing_stages'])}."
    return f'<p class="note">{esc(text)}</p>'


def _val_row(label: str, m: dict | None) -> list[str]:
    acc = None if m is None or m.get("acc") is None else 100 * m["acc"]
    return [label, fmt(m and m.get("loss")), fmt(m and m.get("ppl")), fmt_pct(acc)]


def chosen_table(c: dict) -> str:
    """The validation figures the choices were made on."""
    rows = []
    if c["cvfp"]:
        rows.append(_val_row(f"CVFP, kept epoch {fmt(c['cvfp']['epoch'])} of {fmt(c['cvfp']['epochs'])} "
                             "(the lowest validation loss)", c["cvfp"]))
    if c["cvfp_last"]:
        rows.append(_val_row(f"CVFP, last epoch ({fmt(c['cvfp_last']['epoch'])})", c["cvfp_last"]))
    if c["transformer"]:
        rows.append(_val_row(f"transformer, kept epoch {fmt(c['transformer']['epoch'])} of "
                             f"{fmt(c['transformer']['epochs'])}", c["transformer"]))
    for n in c["ngrams"]:
        mark = " — chosen as the strongest n-gram model" if n["key"] == c["strongest"] else ""
        rows.append(_val_row(n["label"] + mark, n))
    if c.get("majority_acc") is not None:
        rows.append(_val_row("majority token", {"acc": c["majority_acc"]}))
    if not rows:
        return na("no validation figures (no model stage has run)")
    return table(["model (validation split)", "validation loss", "validation perplexity", "validation top-1 accuracy"],
                 rows, "criteria")


def guide_html(g: dict) -> str:
    rows = [[r["figure"], fmt_pct(r["value"]) if r["unit"] else fmt(r["value"]), fmt_range(*r["claim"], r["unit"]),
             r["position"] or "—"] for r in g["rows"]]
    return (table(["figure", "CVFP on the test split", "the original guide's claim", "where it lies"], rows, "small")
            + f'<p class="note">{esc(g["note"])} A reference, not a criterion.</p>')


def _transformer_vs(tv: dict | None) -> str:
    if tv is None:
        return ""
    text = (f"The transformer against the strongest n-gram model, {tv['ngram']}: {tv['verdict']} (transformer − "
            f"it = {fmt_signed(tv['estimate'])} nats per token, 95% interval "
            f"{fmt_interval(tv['lo'], tv['hi'], signed=True)}).")
    return f'<p class="oneline">{esc(text)}</p>'


def phase2_html(d: dict) -> str:
    curves = d["curves"]
    out = [na(curves["missing"]) if curves.get("missing") else curves_html(curves),
           "<h3>Test split: every model</h3>", models_table(d["models"]), _settings_note(d["test"]),
           _transformer_vs(d["transformer_vs"]),
           "<h3>Validation split: what the choices were made on</h3>", chosen_table(d["chosen"])]
    if d["phase2_missing"]:
        out.append(na(d["phase2_missing"]))
    else:
        out.append("<h3>The original guide's claimed figures (a reference)</h3>" + guide_html(d["guide"]))
    return "\n".join(out)
