"""With real `dvc repro` in a temporary repository: a bad params.yaml stops the run before DVC
removes any output; a stage that fails later names `dvc checkout`, which brings its outputs back;
editing the data file re-runs the pipeline from fetch_ultrachat, and only then."""
from __future__ import annotations

import hashlib
import json

import pytest

from helpers.repo import make_dvc_repo

pytestmark = pytest.mark.slow

KEPT = ["data/raw/train.jsonl", "data/tokens/train.pt", "models/phase1.pt", "models/phase2_best.pt",
        "metrics/phase2.json"]


def _digests(repo) -> dict:
    return {f: hashlib.sha256((repo.path / f).read_bytes()).hexdigest() for f in KEPT}


def test_bad_params_stop_before_any_output_is_removed_and_checkout_restores(reproduced, tmp_path):
    repo = reproduced.copy(tmp_path / "repo")
    repo.commit("run")
    before = _digests(repo)
    good = (repo.path / "params.yaml").read_text()
    for bad, needles in (({"phase2": {"epoch": 3}}, ["phase2.epoch", "Allowed keys"]),
                         ({"data": {"num_samples": -5}}, ["data.num_samples = -5", "an integer >= 1"])):
        repo.set_params(bad)
        p = repo.repro("phase2_lm", check=False)
        assert p.returncode != 0
        err = p.stdout + p.stderr
        for needle in (*needles, "checked before any other stage runs", "no output was removed"):
            assert needle in err, (needle, err[-2000:])
        assert repo.ran_stages(p.stdout) == []
        assert _digests(repo) == before  # nothing was removed or rewritten
        (repo.path / "params.yaml").write_text(good)
    # a misspelt key (DVC's own params check would name only the missing key)
    (repo.path / "params.yaml").write_text(good.replace("num_samples:", "num_sample:"))
    p = repo.repro("phase2_lm", check=False)
    assert p.returncode != 0 and "data.num_sample" in p.stderr and "Allowed keys" in p.stderr, p.stderr[-2000:]
    assert _digests(repo) == before
    (repo.path / "params.yaml").write_text(good)
    # a fault only a stage itself can see: DVC has removed that stage's outputs, the error says how
    # to get them back
    repo.set_params({"runtime": {"device": "cuda"}})
    p = repo.repro("phase2_lm", check=False)
    assert p.returncode != 0 and "dvc checkout phase1_fixed_point" in p.stderr, p.stderr[-2000:]
    assert not (repo.path / "models/phase1.pt").exists()
    (repo.path / "params.yaml").write_text(good)
    repo.dvc("checkout", "phase1_fixed_point")
    assert _digests(repo) == before
    assert repo.ran_stages(repo.repro("phase2_lm").stdout) == []  # everything is as it was


def test_editing_the_data_file_reruns_fetch_and_only_then(tmp_path):
    rows = [{"prompt": f"q{i}", "prompt_id": f"id{i}",
             "messages": [{"role": "user", "content": f"question number {i} " * 6},
                          {"role": "assistant", "content": f"answer number {i} " * 6}]} for i in range(12)]
    repo = make_dvc_repo(tmp_path / "repo", {"data": {"source": "jsonl", "path": "chats.jsonl", "num_samples": 6}})
    data = repo.path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    repo.commit("data")
    assert repo.ran_stages(repo.repro("tokenize_cache").stdout) == ["fetch_ultrachat", "tokenize_cache"]
    assert repo.ran_stages(repo.repro("tokenize_cache").stdout) == []  # unchanged file: nothing re-runs
    for r in rows:  # a corrected file
        r["messages"][1]["content"] = r["messages"][1]["content"].replace("answer", "reply")
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert repo.ran_stages(repo.repro("tokenize_cache").stdout) == ["fetch_ultrachat", "tokenize_cache"]
    # a source that reads no file is not affected by one, and says so when data.path is set
    repo.set_params({"data": {"source": "chatterbot", "num_samples": 6}})
    p = repo.repro("tokenize_cache")
    assert repo.ran_stages(p.stdout) == ["fetch_ultrachat", "tokenize_cache"]
    assert "data.path is set ('chats.jsonl') but data.source is 'chatterbot', which does not read it" in p.stderr
    data.write_text("")
    assert repo.ran_stages(repo.repro("tokenize_cache").stdout) == []
