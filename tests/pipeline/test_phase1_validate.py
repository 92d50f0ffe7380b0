"""Phase 1 and validate_rank as real DVC stages in a temporary repo (tiny model): what `dvc repro
validate_rank` runs and re-runs, and an enforced failed verdict stopping the stage."""
from __future__ import annotations

import json

import pytest

from newllm.io import torch_load


@pytest.mark.slow
def test_phase1_and_validate_stages_and_rerun_rules(reproduced, tmp_path):
    repo = reproduced.copy(tmp_path / "repo")
    # the reproduced repository's first two steps: `dvc repro tokenize_cache`, then `dvc repro
    # validate_rank`, which ran Phase 1 and validate_rank only (no baseline, no Phase 2)
    ran = [repo.ran_stages(out) for out in reproduced.outputs[:2]]
    assert ran == [["fetch_ultrachat", "tokenize_cache"], ["phase1_fixed_point", "validate_rank"]]
    p1 = json.loads((repo.path / "metrics/phase1.json").read_text())
    assert p1["optimizer_steps"] > 0 and p1["param_change"] > 0
    assert p1["passes"] >= 2 and p1["embeddings"] == "random"
    v = json.loads((repo.path / "metrics/validate.json").read_text())
    for key in ("er_pct", "er_pct_untrained"):
        assert 0 < v["train"][key] <= 100
    assert isinstance(v["passed"], bool) and v["final_diff"] >= 0
    side = json.loads((repo.path / "models/phase1.json").read_text())
    assert side["config"]["model"]["context_dim"] == 16 and side["optimizer_steps"] == p1["optimizer_steps"]
    ckpt = torch_load(repo.path / "models/phase1.pt")
    assert set(ckpt) >= {"model_state_dict", "mu"} and "optimizer_state_dict" not in ckpt
    ctx = torch_load(repo.path / "data/contexts/train.pt")
    assert ctx["contexts"].shape == (p1["tokens"], 16)
    assert not (repo.path / "resume/phase1.pt").exists()  # rolling checkpoint cleared on success
    repo.commit("run")

    # nothing changed: nothing runs
    assert repo.ran_stages(repo.repro("validate_rank").stdout) == []

    # a validate threshold that cannot flip the verdict re-runs only validate_rank,
    # and the gate that phase2 depends on keeps its bytes
    gate = (repo.path / "data/gate.json").read_bytes()
    if v["passed"]:
        repo.set_params({"validate": {"min_train_er_pct": v["train"]["er_pct"] - 1}})
    else:
        # final_diff fails or an ER fails; lowering the other thresholds keeps a failed criterion
        failing = [k for k, ok in v["criteria"].items() if not ok]
        upd = {"max_final_diff": v["final_diff"] * 2} if "final_diff" not in failing else {"min_val_er_pct": 1.0}
        repo.set_params({"validate": upd})
    assert repo.ran_stages(repo.repro("validate_rank").stdout) == ["validate_rank"]
    v2 = json.loads((repo.path / "metrics/validate.json").read_text())
    assert v2["passed"] == v["passed"]
    assert (repo.path / "data/gate.json").read_bytes() == gate

    # what a phase1 param re-runs: tests/pipeline/test_chain.py


@pytest.mark.slow
def test_enforced_failed_verdict_stops_the_stage(reproduced, tmp_path):
    repo = reproduced.copy(tmp_path / "repo")
    repo.set_params({"validate": {"enforce": True, "max_final_diff": 0.0, "min_train_er_pct": 100.0}})
    p = repo.repro("validate_rank", check=False)
    assert p.returncode != 0
    assert "validate.enforce is true" in p.stdout + p.stderr
    v = json.loads((repo.path / "metrics/validate.json").read_text())
    assert v["passed"] is False
