"""docs/objectives.md lists exactly the objectives of the registry, with the registry's formulas."""
from __future__ import annotations

import re
from pathlib import Path

from newllm.diversity import DIVERSITY

DOC = (Path(__file__).resolve().parents[1] / "docs" / "objectives.md").read_text(encoding="utf-8")


def test_the_objectives_table_is_the_registry():
    table = DOC[DOC.index("| name | `D(C)` |"):]
    rows = [line for line in table.splitlines()[2:] if line.startswith("| `")]
    names = [re.match(r"\| `(\w+)`", r).group(1) for r in rows]
    assert names == list(DIVERSITY)
    for name, row in zip(names, rows):
        assert f"`{DIVERSITY[name].formula}`" in row, (name, row)
