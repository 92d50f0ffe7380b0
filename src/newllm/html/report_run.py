"""The run report's framing sections, rendered from their data (``newllm.report.header`` and
``newllm.report.samples``): what was run, the generated continuations, timings and peak memory."""
from __future__ import annotations

from newllm.html.common import esc, kv_line, na, table, visible
from newllm.values import NA, fmt

TIMING_HEADS = {"time_s": "wall time (s)", "tokens_per_s": "tokens/s", "peak_rss_mb": "peak host RSS (MB)",
                "peak_cuda_mb": "peak CUDA (MB)"}


def run_html(d: dict) -> str:
    rows = [[r["label"], r["text"]] for r in d["rows"]]
    out = [table(["", ""], rows, "kvtable"), "<h3>Parameters recorded with the checkpoints</h3>"]
    for rec in d["recorded"]:
        if rec.get("missing"):
            out.append(f"<h4>{esc(rec['label'])}</h4>" + na(rec["missing"]))
            continue
        lines = [f'<div class="cfg"><span class="sec">{esc(name)}</span> {kv_line(sec)}</div>'
                 for name, sec in rec["sections"].items()]
        out.append(f"<h4>{esc(rec['label'])}</h4>" + "".join(lines))
    return "\n".join(out)


def generation_html(d: dict) -> str:
    s = d["settings"]
    items = []
    for it in d["items"]:
        body = f'<span class="prompt">{visible(it["prompt"])}</span>'
        if it["error"] is not None:
            body += f'<span class="na"> [generation failed: {esc(it["error"])}]</span>'
        else:
            body += f'<span class="cont">{visible(it["continuation"])}</span>'
            if not str(it["continuation"]).strip():
                body += '<span class="na"> (only whitespace was generated)</span>'
        items.append(f'<div class="gen">{body}</div>')
    return (f'<p class="note">{esc(s["max_new_tokens"])} new tokens per prompt, {esc(s["mode"])}, from '
            f'{esc(s["checkpoint"])} (the kept epoch). <span class="prompt">Prompt</span> then '
            f'<span class="cont">continuation</span>; a line break is shown as <span class="ws">↵</span>.</p>'
            + "".join(items))


def timings_html(d: dict) -> str:
    cols = d["columns"]
    rows = []
    for r in d["rows"]:
        if r.get("missing"):
            rows.append([r["stage"], f'<td class="na">{esc(NA)}</td>'] + ["—"] * (len(cols) - 1))
        else:
            rows.append([r["stage"]] + [fmt(v) for v in r["values"]])
    note = f'<p class="note">Device: {esc(d["device"])}.</p>' if d.get("device") else ""
    return table(["stage"] + [TIMING_HEADS[c] for c in cols], rows, "criteria") + note
