"""The README keeps its promises: its params table is the typed config's, params.yaml lists every
key, nothing points outside the repository, every DVC output is ignored by a committed
.gitignore, and the widest headline fits 120 columns. Its "Comparing runs" sequence:
tests/pipeline/test_readme_sequence.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from helpers.repo import ROOT
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


@pytest.mark.slow
def test_nothing_points_outside_the_repository():
    out = subprocess.run(["git", "grep", "-n", "-I", "-F", "../shared", "--", "README.md", "docs", "src", "stages",
                          "notebooks"], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout == "", out.stdout


@pytest.mark.slow
def test_every_dvc_output_is_ignored_by_a_committed_gitignore():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = [o if isinstance(o, str) else next(iter(o)) for s in stages.values()
            for o in s.get("outs", []) + s.get("metrics", [])]
    p = subprocess.run(["git", "check-ignore", "--no-index", *outs], cwd=ROOT, capture_output=True, text=True)
    assert sorted(p.stdout.split()) == sorted(outs)


@pytest.mark.slow
def test_the_widest_headline_fits_120_columns(tmp_path):
    """`dvc metrics show` of a headline whose verdicts are both at their widest."""
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
