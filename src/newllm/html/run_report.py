"""The run report: one self-contained HTML file (inline CSS, PNG plots as data URIs).

``build_report(data)`` renders the report's data (``newllm.report.build.report_data``, which
the report stage gathers) and computes nothing itself. It tells one story, in order:

- the banner: Phase 1's verdict against the original guide's criteria and nothing else;
- the Phase 2 line: CVFP's test loss and its verdict, with the interval, against the strongest
  n-gram model (chosen on validation) and the same-size transformer;
- the terms the report uses;
- the sections: what was run; the original guide's success criteria; Phase 1 pass curves;
  singular-value spectra; the convergence check; Phase 2 against every baseline on the test
  split; generated continuations; timings and peak memory.

A section whose data is ``{"missing": why}`` says "not available: why"; every piece of text is
HTML-escaped. Nothing refers to a network resource.
"""
from __future__ import annotations

from typing import Any, Callable

from newllm.html.common import CSS, esc, guarded, na
from newllm.html.report_phase1 import convergence_html, criteria_html, passes_html, spectrum_html
from newllm.html.report_phase2 import phase2_html
from newllm.html.report_run import generation_html, run_html, timings_html
from newllm.values import NA

SECTION_TITLES = [
    ("run", "What was run"),
    ("criteria", "The original guide's success criteria and references"),
    ("passes", "Phase 1 pass curves"),
    ("spectrum", "Singular-value spectra"),
    ("convergence", "Convergence check"),
    ("phase2", "Phase 2: next-token prediction on the test split, against the baselines"),
    ("generation", "Generated continuations"),
    ("timings", "Timings and peak memory"),
]
RENDERERS: dict[str, Callable[[dict], str]] = {
    "run": run_html, "criteria": criteria_html, "passes": passes_html, "spectrum": spectrum_html,
    "convergence": convergence_html, "phase2": phase2_html, "generation": generation_html, "timings": timings_html,
}


def missing(d: Any) -> str | None:
    """Why a piece of the data is absent (its ``missing`` entry), or None when it is there."""
    if not isinstance(d, dict):
        return "no data"
    return d.get("missing")


def banner_html(vd: Any) -> str:
    if missing(vd):
        return (f'<div class="banner warn" role="alert"><div class="verdict">Phase 1: {esc(NA)} '
                f'({esc(missing(vd))})</div></div>')
    lis = "".join(f'<li class="{esc(it["level"])}"><b>{esc(it["short"])}</b>: {esc(it["detail"])}</li>'
                  for it in vd["items"])
    return (f'<div class="banner {esc(vd["level"])}" role="alert"><div class="verdict">{esc(vd["line"])}</div>'
            f'<ul>{lis}</ul></div>')


def phase2_line_html(line: Any) -> str:
    if missing(line):
        return f'<div class="p2line na">Phase 2: {esc(NA)} ({esc(missing(line))})</div>'
    return f'<div class="p2line {esc(line["level"])}">{esc(line["text"])}</div>'


def terms_html(terms: Any) -> str:
    if not isinstance(terms, list):
        return f'<div class="terms">{na(missing(terms) or "no data")}</div>'
    items = "".join(f"<li><b>{esc(t['term'])}</b>: {esc(t['text'])}</li>" for t in terms)
    return f'<div class="terms"><b>Terms</b><ul>{items}</ul></div>'


def section_body(anchor: str, data: dict) -> str:
    d = data.get(anchor)
    why = missing(d)
    return na(why) if why else RENDERERS[anchor](d)


def build_report(data: dict) -> str:
    """The whole report as one self-contained HTML string."""
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in SECTION_TITLES)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>new-llm CVFP run report</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>new-llm: CVFP run report</h1>",
        banner_html(data.get("verdict")),
        phase2_line_html(data.get("phase2_line")),
        terms_html(data.get("terms")),
        f"<nav>{nav}</nav>",
    ]
    parts += [guarded(a, t, lambda a=a: section_body(a, data)) for a, t in SECTION_TITLES]
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"
