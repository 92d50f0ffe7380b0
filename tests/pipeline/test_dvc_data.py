"""The two data stages in a real temporary DVC repo: what `dvc repro` re-runs."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow
DATA_STAGES = ["fetch_ultrachat", "tokenize_cache"]


def test_repro_reruns_exactly_what_changed(reproduced, tmp_path):
    repo = reproduced.copy(tmp_path / "repo")
    assert repo.ran_stages(reproduced.outputs[0]) == DATA_STAGES  # `dvc repro tokenize_cache`, the first
    for out in ("data/raw/train.jsonl", "data/raw/val.jsonl", "data/tokens/train.pt",
                "data/tokens/val.pt", "data/tokenizer/tokenizer.json"):
        assert (repo.path / out).is_file(), out
    shown = json.loads(repo.dvc("metrics", "show", "metrics/data.json", "--json").stdout)
    metrics = next(iter(shown.values()))["data"]["metrics/data.json"]["data"]
    assert metrics["train"] == {"samples": 50, "tokens": 50 * 32, "short_samples": 0}
    assert metrics["val"]["samples"] == 25

    assert repo.ran_stages(repo.repro("tokenize_cache").stdout) == []

    repo.set_params({"data": {"num_samples": 4}})
    assert repo.ran_stages(repo.repro("tokenize_cache").stdout) == DATA_STAGES

    repo.set_params({"phase2": {"epochs": 3}})
    assert repo.ran_stages(repo.repro("tokenize_cache").stdout) == []
