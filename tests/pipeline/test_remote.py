"""`dvc push` to a local remote (as the Drive folder on Colab) and `dvc pull` back: with the
cache and every DVC output gone, and in a fresh clone."""
from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

from helpers.repo import DvcRepo
from newllm.io import state_dict_digest

CACHED = ["data/raw/train.jsonl", "data/raw/val.jsonl", "data/raw/test.jsonl", "data/tokens/train.pt",
          "data/tokens/val.pt", "data/tokens/test.pt", "data/tokenizer/tokenizer.json", "data/contexts/train.pt",
          "data/contexts/val.pt", "data/contexts/test.pt", "data/gate.json", "models/phase1.pt", "models/phase1.json",
          "models/phase2_best.pt", "models/phase2_best.json", "metrics/rows/phase2.csv", "metrics/comparison.json"]


def files(d) -> dict:
    return {rel: hashlib.sha256((d / rel).read_bytes()).hexdigest() for rel in CACHED}


@pytest.mark.slow
def test_push_wipe_pull_restores_everything(reproduced, tmp_path):
    repo = reproduced.copy(tmp_path / "repo")
    repo.commit("run")
    before = files(repo.path)
    weights = state_dict_digest(torch.load(repo.path / "models/phase2_best.pt", weights_only=True)["model_state_dict"])

    remote = tmp_path / "drive" / "dvcstore"
    repo.dvc("remote", "add", "-d", "drive", str(remote))
    out = repo.dvc("push").stdout
    assert "files pushed" in out
    assert any((remote / "files" / "md5").rglob("*"))

    shutil.rmtree(repo.path / ".dvc" / "cache")
    shutil.rmtree(repo.path / "data")
    shutil.rmtree(repo.path / "models")
    status = repo.dvc("status").stdout
    assert "deleted" in status and "models/phase1.pt" in status

    repo.dvc("pull")
    assert files(repo.path) == before
    again = state_dict_digest(torch.load(repo.path / "models/phase2_best.pt", weights_only=True)["model_state_dict"])
    assert again == weights
    assert any((repo.path / ".dvc" / "cache" / "files" / "md5").rglob("*"))  # the cache is filled again
    assert repo.up_to_date()
    assert repo.ran_stages(repo.repro().stdout) == []  # nothing to recompute

    # another machine: a clone of the commit (dvc.lock and metrics in git), the same remote
    repo.run("git", "clone", "-q", str(repo.path), str(tmp_path / "clone"))
    clone = DvcRepo(tmp_path / "clone")
    clone.dvc("remote", "add", "-d", "--local", "drive", str(remote))
    clone.dvc("pull")
    assert files(clone.path) == before
    assert clone.up_to_date()
