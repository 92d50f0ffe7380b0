"""python -m newllm.show: every detailed figure of a run, one per line, filtered by pattern."""
from __future__ import annotations

import json

from newllm import show


def test_every_file_and_key_one_per_line(prepared_run, capsys):
    assert show.main(["--root", str(prepared_run)]) == 0
    out = capsys.readouterr().out.splitlines()
    files = ["metrics.json", *sorted(f"metrics/{p.name}" for p in (prepared_run / "metrics").glob("*.json"))]
    assert [line for line in out if not line.startswith(" ")] == files
    phase2 = json.loads((prepared_run / "metrics/phase2.json").read_text())
    assert any(line.split() == ["test.loss", str(phase2["test"]["loss"])] for line in out)
    assert show.main(["--root", str(prepared_run), "verdict"]) == 0
    only = capsys.readouterr().out.splitlines()
    assert only[0] == "metrics/comparison.json" and all("verdict" in line for line in only[1:]) and len(only) > 2
    assert show.main(["--root", str(prepared_run), "no-such-key"]) == 1
