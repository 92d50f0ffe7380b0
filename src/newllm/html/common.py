"""Pieces every HTML view shares: escaping, tables, sections, the stylesheet (and the number
formats of ``newllm.values``).
Nothing here refers to a network resource: the views are single self-contained files."""
from __future__ import annotations

import html
import json
import logging
from typing import Any, Callable

from newllm.values import NA

log = logging.getLogger(__name__)


def esc(x: Any) -> str:
    """HTML-escape any value's text (quotes included)."""
    return html.escape("" if x is None else str(x), quote=True)


def pass_fail(ok: bool | None) -> str:
    if ok is None:
        return '<td class="na">—</td>'
    return '<td class="pass">PASS</td>' if ok else '<td class="fail">FAIL</td>'


def flag_cell(flag: Any) -> str:
    if flag is None:
        return '<td class="na">—</td>'
    return '<td class="fail">YES</td>' if flag else '<td class="pass">no</td>'


def visible(text: Any) -> str:
    """Escaped text with line breaks and tabs shown as marks, so a run of newlines stays one line."""
    t = esc(text).replace("\r\n", "\n")
    return (t.replace("\n", '<span class="ws">↵</span>').replace("\r", '<span class="ws">␍</span>')
            .replace("\t", '<span class="ws">⇥</span>'))


def na(what: str) -> str:
    return f'<p class="na">{esc(NA)}: {esc(what)}</p>'


def table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Rows are lists of ready-made cells: '<td ...>' strings pass through, others are escaped."""
    def cell(c: str) -> str:
        return c if c.startswith("<td") or c.startswith("<th") else f"<td>{esc(c)}</td>"
    h = "".join(f"<th>{esc(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def kv_line(d: dict) -> str:
    """``key=value · key=value`` for a flat config section (escaped)."""
    items = []
    for k, v in d.items():
        if isinstance(v, dict):
            v = json.dumps(v, sort_keys=True)
        elif isinstance(v, (list, tuple)):
            v = json.dumps(list(v))
        items.append(f'<span class="kv"><b>{esc(k)}</b>=<code>{esc(v)}</code></span>')
    return " ".join(items)


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def guarded(anchor: str, title: str, fn: Callable[[], str]) -> str:
    """A section whose builder failed still appears, saying what went wrong."""
    try:
        return section(anchor, title, fn())
    except Exception as e:  # a broken input must not cost the whole report
        log.warning("report section %r failed: %s: %s", title, type(e).__name__, e)
        return section(anchor, title, na(f"this section could not be built ({type(e).__name__}: {e})"))


CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24;}
main{max-width:1140px;margin:0 auto;padding:18px 24px 60px;background:#fff;}
h1{font-size:1.6em;margin:.2em 0 .4em;} h2{font-size:1.25em;border-bottom:2px solid #dde2e8;padding-bottom:4px;
margin-top:1.8em;} h3{font-size:1.05em;margin:1.2em 0 .4em;} h4{font-size:.95em;margin:.8em 0 .3em;}
.banner{padding:12px 16px;border-radius:6px;margin:8px 0 16px;}
.banner .verdict{font-size:1.15em;font-weight:700;}
.banner ul{margin:6px 0 0 0;padding-left:20px;} .banner li{margin:2px 0;}
.banner.bad{background:#b00020;color:#fff;border:3px solid #6d0014;}
.banner.warn{background:#fff3cd;color:#5c4400;border:2px solid #e0b400;}
.banner.ok{background:#e3f6e8;color:#0a5c1f;border:2px solid #3aa35a;}
.p2line{padding:8px 16px;border-radius:6px;margin:0 0 14px;font-weight:600;}
.p2line.ok{background:#e3f6e8;color:#0a5c1f;border:2px solid #3aa35a;}
.p2line.warn{background:#fff3cd;color:#5c4400;border:2px solid #e0b400;}
.p2line.even{background:#eef1f5;color:#1b1f24;border:2px solid #9aa5b1;}
.p2line.na{background:#f1f2f4;color:#4a5059;border:2px solid #c9ced6;font-style:italic;}
.terms{font-size:.85em;color:#30363d;background:#f6f7f9;border-left:4px solid #c9ced6;padding:6px 12px;
margin:0 0 12px;} .terms ul{margin:4px 0;padding-left:18px;} .terms li{margin:2px 0;}
table{border-collapse:collapse;margin:6px 0 10px;font-size:.9em;}
th,td{border:1px solid #d5dae0;padding:4px 8px;text-align:left;vertical-align:top;}
th{background:#eef1f5;} table.kvtable td:first-child{font-weight:600;white-space:nowrap;}
table.kvtable thead{display:none;} table.small{font-size:.8em;}
td.pass{background:#d7f5dd;color:#0a5c1f;font-weight:600;} td.fail{background:#fbd5d5;color:#8b0000;font-weight:700;}
td.warnc{background:#fff3cd;color:#5c4400;} td.even{background:#eef1f5;color:#1b1f24;}
td.ref{color:#30363d;} td.na,.na{color:#7a7f87;font-style:italic;}
.okt{color:#0a5c1f;} .badt{color:#b00020;} p.oneline{font-size:1.0em;}
.note{color:#4a5059;font-size:.85em;} img.plot{max-width:100%;display:block;margin:6px 0;}
.cfg{font-size:.82em;margin:3px 0;line-height:1.6;} .cfg .sec{display:inline-block;min-width:70px;font-weight:700;}
.kv{margin-right:10px;white-space:nowrap;} code{font-family:Menlo,Consolas,monospace;font-size:.95em;}
.gen{border:1px solid #d5dae0;border-radius:4px;padding:8px 10px;margin:6px 0;white-space:pre-wrap;
font-family:Menlo,Consolas,monospace;font-size:.88em;word-break:break-word;}
.prompt{font-weight:700;color:#1b1f24;} .ws{color:#c0392b;font-weight:700;}
.cont{color:#1f5fa8;background:#eef4fb;margin-left:4px;}
nav{font-size:.85em;margin-bottom:6px;} nav a{margin-right:10px;color:#1f5fa8;}
"""

