"""Stage phase2_lm (``newllm.stages.phase2_lm``): its outputs and metrics, the kept epoch's figures,
an identical result after an interruption, the gate, and unusable inputs or a numerical fault
(a clear error, the previous outputs kept, the re-run resuming to the uninterrupted result)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from helpers.chain import (
    PHASE2_FILES,
    copy_run,
    load_json,
    outputs,
    refused_without_change,
    run_stage,
    same_result,
)
from helpers.faults import (
    other_model_state,
    poison_before,
    remove,
    resave,
    truncate,
    with_state,
)
from helpers.toy import write_gate, write_token_caches
from newllm import config as config_mod
from newllm.config import from_dict
from newllm.errors import CheckpointError, NumericalError
from newllm.io import torch_load
from newllm.resume import first_non_finite

P2 = "phase2_lm"
PARAMS = {"model": {"context_dim": 8, "embed_dim": 8, "num_layers": 2, "vocab_size": 64},
          "phase1": {"max_iterations": 2, "batch_tokens": 16},
          "phase2": {"epochs": 3, "batch_tokens": 20, "chunk_tokens": 7, "learning_rate": 0.01},
          "runtime": {"device": "cpu"}}

pytestmark = pytest.mark.usefixtures("one_thread")


def stage_inputs(tmp_path, monkeypatch, passed=True):
    """Token caches, the Phase 1 outputs of PARAMS and a gate in ``tmp_path`` (the working directory)."""
    from newllm.stages import phase1_fixed_point as phase1
    monkeypatch.chdir(tmp_path)
    write_token_caches(train=(12, 9, 16, 5, 12), val=(10, 7, 11), test=(9, 6, 12, 1))
    phase1.run(from_dict(PARAMS, phase1.SECTIONS))
    write_gate(passed)


def test_stage_writes_outputs_and_resumes_identically(tmp_path, monkeypatch, caplog):
    from newllm import paths
    from newllm.cvfp.checkpoint import load_phase2 as load_for_generation
    from newllm.cvfp.phase2 import Phase2Trainer as T
    from newllm.stages import phase2_lm as phase2
    stage_inputs(tmp_path, monkeypatch, passed=False)
    cfg = from_dict(PARAMS, phase2.SECTIONS)
    m = phase2.run(cfg)
    assert "FAILED validate_rank" in caplog.text
    for key in ("epochs", "optimizer_steps", "best_epoch", "time_s", "tokens_per_s", "peak_rss_mb",
                "embeddings", "precision", "device", "test_tokens"):
        assert key in m, key
    assert set(m["val"]) >= {"loss", "ppl", "acc"} and set(m["train"]) >= {"loss", "ppl"}
    assert set(m["test"]) == {"loss", "ppl", "acc"} and not any(k.startswith("beats_") for k in m)
    assert json.loads(paths.PHASE2_METRICS.read_text()) == m
    rows = list(csv.DictReader(paths.PHASE2_HISTORY.open()))
    assert list(rows[0]) == phase2.CSV_COLUMNS and [r["epoch"] for r in rows] == ["1", "2", "3"]
    # the headline figures are the kept (best) epoch's, the last epoch's stand beside them
    kept = rows[m["best_epoch"] - 1]
    assert m["val"]["loss"] == pytest.approx(float(kept["val_loss"]), abs=1e-6)
    assert m["val"]["acc"] == pytest.approx(float(kept["val_acc"]), abs=1e-6)
    assert m["last"]["epoch"] == 3 and m["last"]["val"]["loss"] == pytest.approx(float(rows[-1]["val_loss"]), abs=1e-6)
    # the test figures are the kept epoch's: its per-conversation sums give the same loss
    table = {k: [float(r[k]) for r in csv.DictReader(paths.rows_file("phase2").open())] for k in ("targets", "cvfp")}
    assert sum(table["cvfp"]) / sum(table["targets"]) == pytest.approx(m["test"]["loss"], abs=1e-6)
    assert sum(table["targets"]) == 9 + 6 + 12 - 3  # one target fewer than tokens per sample
    best = torch.load(paths.PHASE2_BEST, weights_only=True)
    assert set(best) == {"model_state_dict", "config", "epoch", "phase2_history"}
    side = json.loads(paths.sidecar(paths.PHASE2_BEST).read_text())
    assert best["epoch"] == side["best_epoch"] == m["best_epoch"] == len(best["phase2_history"]["val_loss"])
    assert not any(Path("resume").glob("*.pt"))
    load_for_generation(paths.PHASE2_BEST)

    # interrupted after epoch 2 (a checkpoint was saved), then re-run: the same outputs
    paths.PHASE2_BEST.unlink()
    orig = T.run_unit

    def dying(self, e):
        if e == 2:
            raise KeyboardInterrupt
        return orig(self, e)

    monkeypatch.setattr(T, "run_unit", dying)
    with pytest.raises(KeyboardInterrupt):
        phase2.run(cfg)
    assert Path("resume/phase2.pt").exists()
    monkeypatch.setattr(T, "run_unit", orig)
    caplog.clear()
    with caplog.at_level("INFO"):
        m2 = phase2.run(cfg)
    assert "resumed phase2 after epoch 2" in caplog.text
    again = torch.load(paths.PHASE2_BEST, weights_only=True)
    for k, v in best["model_state_dict"].items():
        assert torch.equal(v, again["model_state_dict"][k]), k
    assert again["phase2_history"] == best["phase2_history"] and again["epoch"] == best["epoch"]
    assert m2["val"] == m["val"] and m2["test"] == m["test"] and m2["optimizer_steps"] == m["optimizer_steps"]
    assert m2["last"] == m["last"]


def test_stage_needs_the_gate(tmp_path, monkeypatch):
    from newllm import paths
    from newllm.stages import phase2_lm as phase2
    stage_inputs(tmp_path, monkeypatch)
    paths.GATE.unlink()
    with pytest.raises(CheckpointError, match="gate"):
        phase2.run(from_dict(PARAMS, phase2.SECTIONS))


def test_stage_ignores_an_unreadable_resume_state(tmp_path, monkeypatch, caplog):
    from newllm import paths
    from newllm.cvfp.phase2 import Phase2Trainer as T
    from newllm.stages import phase2_lm as phase2
    stage_inputs(tmp_path, monkeypatch)
    cfg = from_dict(PARAMS, phase2.SECTIONS)
    ref = phase2.run(cfg)
    ref_w = torch.load(paths.PHASE2_BEST, weights_only=True)["model_state_dict"]
    orig = T.run_unit

    def dying(self, e):
        if e == 1:
            raise KeyboardInterrupt
        return orig(self, e)

    monkeypatch.setattr(T, "run_unit", dying)
    with pytest.raises(KeyboardInterrupt):
        phase2.run(cfg)
    monkeypatch.setattr(T, "run_unit", orig)
    state = torch.load("resume/phase2.pt", weights_only=True)
    state["trainer"]["optimizer"] = {"state": {}, "param_groups": []}  # another layout; model already loaded
    torch.save(state, "resume/phase2.pt")
    m = phase2.run(cfg)
    assert "unreadable state" in caplog.text
    assert m["val"] == ref["val"] and m["last"] == ref["last"]
    for k, v in torch.load(paths.PHASE2_BEST, weights_only=True)["model_state_dict"].items():
        assert torch.equal(v, ref_w[k]), k


CKPT = "models/phase1.pt"


@pytest.mark.slow
@pytest.mark.parametrize("corrupt, needles", [
    pytest.param(truncate(CKPT, 0.9), [CKPT, "corrupt or truncated"], id="phase2-checkpoint-truncated"),
    pytest.param(resave(CKPT, with_state(other_model_state(vocab_size=1000))),
                 [CKPT, "does not fit the configured model", "embed.weight"], id="checkpoint-other-vocabulary"),
    pytest.param(remove("data/gate.json"), ["data/gate.json is missing", "dvc repro"], id="phase2-gate-missing"),
])
def test_unusable_input_is_a_clear_error_and_changes_nothing(prepared_run, tmp_path, corrupt, needles):
    """A damaged or mismatched Phase 1 model, or no gate: the stage script exits 2 naming the file
    and what to do, with every file as it was."""
    refused_without_change(prepared_run, tmp_path, P2, corrupt, *needles)


@pytest.mark.slow
def test_phase2_nan_parameter_stops_and_the_rerun_resumes_to_the_same_result(prepared_run, tmp_path,
                                                                            monkeypatch, one_thread):
    from newllm.cvfp.phase2 import Phase2Trainer
    from newllm.stages import phase2_lm as phase2

    assert load_json(prepared_run / "metrics/phase2.json")["epochs"] == 2  # the fault hits epoch 2
    d = copy_run(prepared_run, tmp_path / "run")
    final = ["metrics/phase2.json", "metrics/phase2_epochs.csv", "models/phase2_best.pt", "models/phase2_best.json"]
    before = {k: v for k, v in outputs(d).items() if k in final}
    poison_before(monkeypatch, Phase2Trainer, 1, lambda tr: tr.model.head.weight[0, 0].fill_(float("nan")))
    monkeypatch.chdir(d)
    with pytest.raises(NumericalError) as err:
        phase2.run(config_mod.load("params.yaml", sections=phase2.SECTIONS))
    monkeypatch.undo()
    msg = str(err.value)
    assert "phase2 epoch 2: non-finite" in msg and "resume/phase2.pt (after epoch 1) is kept" in msg
    assert {k: v for k, v in outputs(d).items() if k in final} == before  # no success-looking metrics
    state = torch_load(d / "resume/phase2.pt")
    assert first_non_finite(state) is None

    r = run_stage(d, P2)
    assert r.returncode == 0, repr(r)
    assert "resumed phase2 after epoch 1" in r.stderr
    same_result(prepared_run, d, PHASE2_FILES)
