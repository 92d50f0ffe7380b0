"""Stage report (``newllm.stages.report``): one self-contained HTML file, its path printed once, the
headline and comparison files; a damaged checkpoint only skips its section."""
from __future__ import annotations

import json

import pytest

from helpers.chain import copy_run, run_stage
from helpers.faults import truncate
from helpers.report import config, has_remote_refs
from newllm import paths

SECTIONS = ("run", "criteria", "passes", "spectrum", "convergence", "phase2", "generation", "timings")


def test_stage_writes_a_self_contained_report_and_prints_its_path_once(prepared_run, tmp_path, capsys,
                                                                       monkeypatch):
    from newllm.stages import report as stage
    root = copy_run(prepared_run, tmp_path / "run")
    monkeypatch.chdir(root)
    out = stage.run(config())
    assert out == (root / paths.REPORT).resolve()
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count(str(out)) == 1
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not has_remote_refs(html) and "http://" not in html and "https://" not in html
    assert html.count('src="data:image/png;base64,') == 4
    order = [html.index(f'<section id="{a}">') for a in SECTIONS]
    assert order == sorted(order) and "not available" not in html
    assert json.loads((root / paths.HEADLINE).read_text())["vs_ngram"] == "worse"
    assert json.loads((root / paths.COMPARISON).read_text())["test_conversations"] == 2
    assert stage.SECTIONS == ["report"]


@pytest.mark.slow
def test_report_skips_a_section_whose_checkpoint_is_damaged(prepared_run, tmp_path):
    d = copy_run(prepared_run, tmp_path / "run")
    assert (d / "models/phase2_best.pt").exists()
    truncate("models/phase2_best.pt")(d)
    r = run_stage(d, "report")
    assert r.returncode == 0, repr(r)
    assert "Traceback" not in r.stderr
    assert "models/phase2_best.pt is corrupt or truncated" in r.stderr  # the skipped section says why
    assert (d / "reports/report.html").stat().st_size > 0
