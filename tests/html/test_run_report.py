"""The run report's HTML (``newllm.html.run_report``): every text is escaped."""
from __future__ import annotations

import json

from helpers.report import render, section_of, text_of


def test_every_text_is_escaped(tiny_report):
    _, _, data = tiny_report
    data = json.loads(json.dumps(data))
    hostile = "<script>alert('x')</script> & more\n\n\tend"
    data["generation"]["items"] = [{"prompt": "Hi <b>there</b>", "continuation": hostile, "error": None},
                                   {"prompt": "boom", "continuation": None, "error": "RuntimeError: <oops>"}]
    data["run"]["recorded"][0]["sections"]["run"]["note"] = "<img src=x onerror=alert(1)>"
    data["phase2"]["models"][0]["label"] = "CVFP <i>"
    html = render(data)
    assert "<script>" not in html and "<b>there</b>" not in html and "<img src=x" not in html
    assert "<i>" not in html and "CVFP &lt;i&gt;" in html
    assert ('&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more<span class="ws">↵</span>'
            '<span class="ws">↵</span><span class="ws">⇥</span>end') in html
    gen = text_of(section_of(html, "generation"))
    assert "generation failed: RuntimeError: &lt;oops&gt;" in gen and "Hi &lt;b&gt;there&lt;/b&gt;" in gen
