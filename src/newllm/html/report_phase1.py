"""The run report's Phase 1 sections, rendered from their data (``newllm.report.phase1``): the
original guide's criteria with references, the training record, the degeneracy checks, the pass
curves, the singular-value spectra and the convergence check."""
from __future__ import annotations

from newllm.html.common import esc, flag_cell, na, pass_fail, table
from newllm.html.plots import empty, figure, hline, img, xy
from newllm.values import fmt, fmt_pct


def _ref(text: str | None) -> str:
    return '<td class="na">—</td>' if text is None else f'<td class="ref">{esc(text)}</td>'


def criteria_html(d: dict) -> str:
    rows = [[r["name"], r["threshold"], r["measured"], pass_fail(r["ok"]), r["references"], r["claim"] or "—",
             _ref(r["vs_claim"])] for r in d["rows"]]
    verdict = '<b class="okt">PASSED</b>' if d["passed"] else '<b class="badt">FAILED</b>'
    return "\n".join([
        table(["criterion", "the original guide's threshold", "measured", "verdict", "references",
               "the original guide's claim", "against the guide's claim"], rows, "criteria"),
        f'<p class="oneline">Overall: {verdict} the original guide\'s criteria (thresholds from params.yaml '
        '<code>validate</code>), on the validation split; the test ER is shown beside them, not judged. A higher '
        'effective rank (ER) is better: the contexts use more directions. The guide\'s claimed figures are a '
        'reference only.</p>',
        "<h3>Training</h3>" + _training_table(d["training"]),
        "<h3>Degeneracy checks</h3>" + _degeneracy_table(d["degeneracy"])])


def _training_table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        value = fmt_pct(r["value"]) if r.get("unit") == "%" else fmt(r["value"])
        if r.get("bad"):
            cell = f'<td class="fail">{esc(value)} — {esc(r["note"])}</td>'
            out.append([r["label"], cell, ""])
        else:
            out.append([r["label"], value, r["note"]])
    return table(["", "value", "note"], out, "kvtable")


def _degeneracy_table(d: dict) -> str:
    rows = [[r["label"]] + [flag_cell(v) if r["flag"] else fmt(v) for v in r["values"]] for r in d["rows"]]
    return table([""] + d["columns"], rows, "criteria")


def _integer_epochs(ax) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _diversity_title(div: dict | None) -> str:
    if not div:
        return "diversity loss (objective not recorded)"
    return f"diversity loss {div['name']}: " + (div["formula"] or "(formula unknown)")


def _pass_panel(ax, x: list, ys: list | None, title: str, scale: str, training: bool) -> bool:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("pass index", fontsize=9)
    if ys is None:
        empty(ax, "column missing")
        return False
    px, py = xy(x, ys)
    if not px:
        empty(ax, "no training pass yet" if training else "no data")
        return False
    ax.plot(px, py, "o-", color="#1f5fa8", markersize=4)
    wide = min(py) > 0 and max(py) / min(py) > (10 if scale == "log" else 100)
    if scale in ("log", "auto") and wide:
        ax.set_yscale("log")
    _integer_epochs(ax)
    return True


def passes_html(d: dict) -> str:
    fig, axes = figure(2, 2, height=6.0)
    div_title = _diversity_title(d["diversity"])
    specs = [("cvfp_loss", "CVFP loss (MSE to previous pass)", "log", True),
             ("div_loss", div_title, "linear", True),
             ("converged_pct", "converged fraction (%)", "linear", False),
             ("mean_context_norm", "mean context norm ‖c‖", "auto", False)]
    for ax, (key, title, scale, training) in zip(axes, specs):
        drawn = _pass_panel(ax, d["x"], d[key], title, scale, training)
        if key == "converged_pct" and drawn:
            ax.set_ylim(-3, 103)
            if d["min_ratio_pct"] is not None:
                hline(ax, d["min_ratio_pct"], f"early-stop ratio {d['min_ratio_pct']:g}%", "#c0392b")
                ax.legend(fontsize=8, loc="center right")
    div = d["diversity"]
    objective = (f"The diversity objective that ran: {div['name']}, D(C) = {div['formula'] or 'not in the registry'}"
                 + (f" ({div['summary']})." if div.get("summary") else ".")) if div else \
        "The diversity objective is not recorded (metrics/validate.json, metrics/phase1.json)."
    note = (f'<p class="note">{esc(objective)} Pass 0 is the untrained forward pass (no loss, no update). '
            "A fixed point is only interesting together with a high rank: a context norm that grows "
            "without bound, or a converged fraction of 100% with a collapsed rank, is a collapse.</p>")
    return img(fig, f"Phase 1 pass curves; {div_title}") + note


SPECTRUM_STYLE = {"train": ("#1f5fa8", "-"), "val": ("#2e8b57", "-"), "test": ("#8e44ad", "-"),
                  "train_untrained": ("#888888", "--"), "input": ("#d2691e", ":")}


def spectrum_html(d: dict) -> str:
    fig, (ax,) = figure(1, 1, height=4.2)
    drawn = 0
    for line in d["lines"]:
        color, style = SPECTRUM_STYLE.get(line["column"], (None, "-"))
        label = line["label"] + ("" if line["er_pct"] is None else f" — ER {line['er_pct']:.2f}%")
        px, py = xy(d["rank"], line["values"], positive=True)
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


def convergence_html(d: dict) -> str:
    xs, ys, thr = d["pass"], d["diff"], d["threshold"]
    fig, (ax,) = figure(1, 1, width=8.0, height=3.0)
    px, py = xy(xs, ys, positive=True)
    zx = [x for x, y in zip(xs, ys) if x is not None and y is not None and y <= 0]
    floor_candidates = py + ([thr] if thr else [])
    floor = (min(floor_candidates) / 100) if floor_candidates else 1e-6
    if px:
        ax.plot(px, py, "o-", color="#1f5fa8", label="diff_j = mean ‖c^j − c^(j−1)‖")
    if zx:
        ax.plot(zx, [floor] * len(zx), "v", color="#c0392b", markersize=9, label=f"exactly 0 (drawn at {floor:.0e})")
    if thr is not None:
        hline(ax, thr, f"criterion final_diff < {thr:g}", "#c0392b")
    ax.set_yscale("log")
    ax.set_xlabel("frozen pass j", fontsize=9)
    ax.set_ylabel("diff", fontsize=9)
    _integer_epochs(ax)
    ax.legend(fontsize=8, loc="best")
    rows = [[fmt(x), fmt(y, 4)] for x, y in zip(xs, ys)]
    note = ""
    if d["exact_zero"]:
        note = ('<p class="note">A diff of exactly 0 is a perfect fixed point; with a collapsed rank it '
                'means every context went to the same point (see the degeneracy checks).</p>')
    return img(fig, "convergence check diffs") + note + table(["pass", "diff"], rows, "small")
