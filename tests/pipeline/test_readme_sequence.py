"""The README's "Comparing runs" sequence works as written on a fresh repository (run, commit,
change num_samples, rerun, metrics diff, go back and restore from DVC's run-cache, an experiment,
exp show), with DVC's own output fitting 120 columns."""
from __future__ import annotations

import os
import re
import sys

import pytest

from helpers.repo import ROOT

README = (ROOT / "README.md").read_text()


def _sequence() -> list[str]:
    block = README[README.index("```bash\nsource .venv/bin/activate"):]
    block = block[len("```bash\n"):block.index("```", 8)]
    return [line.split("#")[0].strip() for line in block.splitlines()
            if line.strip() and not line.startswith("source ")]


@pytest.mark.slow
def test_the_readme_sequence_on_a_fresh_repository(reproduced, tmp_path):
    # a fresh repository after its first `dvc repro` (what scripts/run.sh runs after its set-up), at
    # num_samples: 50 as in params.yaml (the sequence edits it)
    repo = reproduced.copy(tmp_path / "repo")
    assert "num_samples: 50" in (repo.path / "params.yaml").read_text()
    assert "Running stage 'phase2_lm'" in reproduced.outputs[-1]
    env = {"PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "120"}
    head_first = (repo.path / "metrics.json").read_text()
    outputs: list[tuple[str, str]] = []
    for cmd in _sequence():
        p = repo.run("bash", "-c", cmd, env=env, timeout=900)  # as a user types it
        outputs.append((cmd, p.stdout + p.stderr))
        if cmd == "dvc repro":
            after = (repo.path / "metrics.json").read_text()  # the last one: after going back
        if "git commit" in cmd:  # every output is ignored: the run left only dvc.lock to commit
            assert repo.run("git", "status", "--porcelain", env=env).stdout == ""
    reruns = [out for cmd, out in outputs if cmd == "dvc repro"]
    assert len(reruns) == 2 and "Running stage 'fetch_ultrachat'" in reruns[0]  # the new num_samples
    restore = reruns[1]
    assert repo.ran_stages(restore) == []  # nothing trains going back (check_inputs always runs)
    for stage in ("phase1_fixed_point", "phase2_lm", "transformer_lm", "report"):
        assert f"Stage '{stage}' is cached - skipping run" in restore, stage
    assert after == head_first  # the restored outputs are the first run's
    outputs = dict(outputs)
    diff = outputs["dvc metrics diff"]
    assert "val_er" in diff and "test_ppl" in diff and "final_diff_e6" in diff
    show_cmd = next(c for c in outputs if c.startswith("dvc exp show"))
    show = outputs[show_cmd]
    assert "scale-78" in show and all(k in show for k in ("val_er", "final_diff_e6", "test_ppl", "data.num_samples")), show
    for cmd in ("dvc metrics diff", show_cmd):
        assert max(map(len, outputs[cmd].splitlines())) <= 120, (cmd, outputs[cmd])
    shown = repo.run("dvc", "metrics", "show", env=env).stdout  # piped, as scripts/run.sh prints it
    assert max(map(len, shown.splitlines())) <= 120, shown
    assert re.search(r"metrics\.json\s+\d", shown.splitlines()[1]), shown
