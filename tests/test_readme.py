"""The README keeps its promises: its params table is the typed config's, nothing points outside
the repository, and its "Comparing runs" sequence works as written on a fresh repository (run,
commit, change num_samples, rerun, metrics diff, go back and restore from DVC's run-cache, an
experiment, exp show), with DVC's own output fitting 120 columns."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, make_dvc_repo

from newllm.config import describe

README = (ROOT / "README.md").read_text()


def test_params_table_is_the_typed_configs():
    start = README.index("| key | default | meaning |")
    table = README[start:README.index("\n\n", start)]
    assert table == describe(), "README's params table differs: paste the output of `python -m newllm.config`"


def test_params_yaml_lists_every_key_with_its_default():
    from newllm.config import SECTIONS, Config
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    defaults = Config().to_dict()
    for section in SECTIONS:
        assert set(raw[section]) == set(defaults[section]), section  # DVC's -S needs every key present


def test_nothing_points_outside_the_repository():
    out = subprocess.run(["git", "grep", "-n", "-I", "-F", "../shared", "--", "README.md", "docs", "src", "stages",
                          "notebooks"], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout == "", out.stdout


def test_every_dvc_output_is_ignored_by_a_committed_gitignore():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = [o if isinstance(o, str) else next(iter(o)) for s in stages.values()
            for o in s.get("outs", []) + s.get("metrics", [])]
    p = subprocess.run(["git", "check-ignore", "--no-index", *outs], cwd=ROOT, capture_output=True, text=True)
    assert sorted(p.stdout.split()) == sorted(outs)


def _sequence() -> list[str]:
    block = README[README.index("```bash\nsource .venv/bin/activate"):]
    block = block[len("```bash\n"):block.index("```", 8)]
    return [line.split("#")[0].strip() for line in block.splitlines()
            if line.strip() and not line.startswith("source ")]


@pytest.mark.slow
def test_the_readme_sequence_on_a_fresh_repository(tmp_path):
    # num_samples as in params.yaml (the sequence edits it); short rows keep the two trainings small
    repo = make_dvc_repo(tmp_path / "repo", {"data": {"num_samples": 50, "max_seq_length": 32}})
    env = {"PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "120"}
    first = repo.run("dvc", "repro", env=env).stdout  # what scripts/run.sh runs after its set-up
    assert "Running stage 'phase2_lm'" in first
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


def test_the_widest_headline_fits_120_columns(tmp_path):
    """`dvc metrics show` of a headline whose verdicts are both at their widest."""
    import json
    import subprocess

    from newllm.stages.report import HEADLINE

    widest = {"passed": True, "val_er": 92.0311, "final_diff_e6": 3.6212, "test_ppl": 12345.67,
              "vs_ngram": "not distinguishable", "vs_tf": "not distinguishable", "minutes": 123.4}
    assert set(widest) == {k for k, *_ in HEADLINE} | {"minutes"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "metrics.json").write_text(json.dumps(widest))
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - metrics.json\n")
    out = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show"], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "COLUMNS": "200"}, check=True).stdout
    assert "not distinguishable" in out and max(map(len, out.splitlines())) <= 120, out
