"""Rolling checkpoints (``newllm.resume``) around the training stages, in process: a checkpoint
made with other params is ignored with a message, the mirror copy (Google Drive on Colab) is used
when ``resume/`` is gone (a new Colab VM) and written where chmod is refused, and (``gpu``) a run
resumes across devices and keeps fp16's GradScaler state. The kill -9 of a real ``dvc repro``:
tests/pipeline/test_resume_kill9.py."""
from __future__ import annotations

import json
import os

import pytest
import torch

from helpers.chain import stable_metrics
from helpers.faults import interrupt
from helpers.repo import deep_update
from helpers.toy import write_gate, write_token_caches
from newllm.config import from_dict
from newllm.io import state_dict_digest

TOY = {"model": {"context_dim": 8, "embed_dim": 8, "num_layers": 2, "vocab_size": 64},
       "phase1": {"max_iterations": 4, "batch_tokens": 16, "min_converged_ratio": 1.0},
       "phase2": {"epochs": 3, "batch_tokens": 20, "chunk_tokens": 7, "learning_rate": 0.01},
       "runtime": {"device": "cpu"}}


def _cfg(stage_module, upd: dict | None = None, device: str = "cpu"):
    return from_dict(deep_update(deep_update(TOY, {"runtime": {"device": device}}), upd or {}), stage_module.SECTIONS)


def _phase1_outputs() -> dict:
    from newllm import paths
    return {"model": state_dict_digest(torch.load(paths.PHASE1_CKPT, weights_only=True)["model_state_dict"]),
            "contexts": state_dict_digest(torch.load(paths.CONTEXTS_TRAIN, weights_only=True)),
            "metrics": stable_metrics(json.loads(paths.PHASE1_METRICS.read_text()))}


def _phase2_outputs() -> dict:
    from newllm import paths
    return {"best": state_dict_digest(torch.load(paths.PHASE2_BEST, weights_only=True)["model_state_dict"]),
            "metrics": stable_metrics(json.loads(paths.PHASE2_METRICS.read_text()))}


@pytest.fixture
def toy_dir(tmp_path, monkeypatch, one_thread):
    """Token caches in ``tmp_path``, the working directory."""
    monkeypatch.chdir(tmp_path)
    write_token_caches()
    return tmp_path


def test_phase1_checkpoint_of_other_params_is_ignored_and_mirror_is_used(toy_dir, monkeypatch, caplog):
    from newllm.cvfp.phase1 import Phase1Trainer
    from newllm.stages import phase1_fixed_point as phase1
    caplog.set_level("INFO")
    other = {"phase1": {"learning_rate": 0.001}}
    phase1.run(_cfg(phase1, other))
    expected_other = _phase1_outputs()
    phase1.run(_cfg(phase1))
    expected = _phase1_outputs()
    assert expected != expected_other

    # interrupted in pass 2 with the default params; re-run with another learning rate
    with monkeypatch.context() as m:
        interrupt(m, Phase1Trainer, "run_unit", 2)
        with pytest.raises(KeyboardInterrupt):
            phase1.run(_cfg(phase1))
    assert torch.load("resume/phase1.pt", weights_only=True)["trainer"]["loop"]["done"] == 2
    caplog.clear()
    phase1.run(_cfg(phase1, other))
    assert "ignoring resume checkpoint resume/phase1.pt: it was made with other params or data" in caplog.text
    assert "starting from scratch" in caplog.text and "resumed phase1" not in caplog.text
    assert _phase1_outputs() == expected_other  # nothing of the other run was mixed in

    # a new Colab VM: resume/ is gone, the copy on Drive (mirror_dir) is found
    mirror = {"resume": {"mirror_dir": str(toy_dir / "drive" / "resume")}}
    with monkeypatch.context() as m:
        interrupt(m, Phase1Trainer, "run_unit", 3)
        with pytest.raises(KeyboardInterrupt):
            phase1.run(_cfg(phase1, mirror))
    assert (toy_dir / "drive/resume/phase1.pt").exists()
    (toy_dir / "resume/phase1.pt").unlink()
    caplog.clear()
    phase1.run(_cfg(phase1, mirror))
    assert f"resuming from {toy_dir / 'drive/resume/phase1.pt'}" in caplog.text
    assert "resumed phase1 after pass 2" in caplog.text
    assert _phase1_outputs() == expected
    assert not (toy_dir / "drive/resume/phase1.pt").exists()  # cleared on success, mirror too


def test_phase2_checkpoint_of_other_params_is_ignored_and_mirror_is_used(toy_dir, monkeypatch, caplog):
    from newllm import paths
    from newllm.cvfp.phase2 import Phase2Trainer
    from newllm.stages import phase1_fixed_point as phase1
    from newllm.stages import phase2_lm as phase2
    caplog.set_level("INFO")
    phase1.run(_cfg(phase1))
    write_gate()
    other = {"phase2": {"learning_rate": 0.02}}
    phase2.run(_cfg(phase2, other))
    expected_other = _phase2_outputs()
    phase2.run(_cfg(phase2))
    expected = _phase2_outputs()
    assert expected != expected_other

    with monkeypatch.context() as m:
        interrupt(m, Phase2Trainer, "run_unit", 2)
        with pytest.raises(KeyboardInterrupt):
            phase2.run(_cfg(phase2))
    caplog.clear()
    phase2.run(_cfg(phase2, other))
    assert "ignoring resume checkpoint resume/phase2.pt: it was made with other params or data" in caplog.text
    assert "resumed phase2" not in caplog.text
    assert _phase2_outputs() == expected_other

    mirror = {"resume": {"mirror_dir": str(toy_dir / "drive" / "resume")}}
    with monkeypatch.context() as m:
        interrupt(m, Phase2Trainer, "run_unit", 2)
        with pytest.raises(KeyboardInterrupt):
            phase2.run(_cfg(phase2, mirror))
    assert (toy_dir / "drive/resume/phase2.pt").exists()  # the kept epoch's weights are in it
    (toy_dir / "resume/phase2.pt").unlink()
    for p in (paths.PHASE2_BEST,):  # a fresh VM has no models/ either
        p.unlink(missing_ok=True)
    caplog.clear()
    phase2.run(_cfg(phase2, mirror))
    assert f"resuming from {toy_dir / 'drive/resume/phase2.pt'}" in caplog.text
    assert "resumed phase2 after epoch 2" in caplog.text
    assert _phase2_outputs() == expected
    assert not any((toy_dir / "drive/resume").glob("*.pt"))


def test_mirror_works_where_chmod_is_refused(tmp_path, monkeypatch, caplog):
    """Google Drive's FUSE mount may refuse chmod: the mirror copy must still be written."""
    from newllm.config import ResumeConfig
    from newllm.resume import ResumeStore

    def refuse(*a):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    cfg = ResumeConfig(dir=str(tmp_path / "resume"), mirror_dir=str(tmp_path / "drive" / "resume"))
    ResumeStore(cfg, "phase1", "fp").save({"x": torch.arange(3.0)})
    assert "could not mirror" not in caplog.text
    (tmp_path / "resume" / "phase1.pt").unlink()
    caplog.set_level("INFO")
    state = ResumeStore(cfg, "phase1", "fp").load()
    assert torch.equal(state["x"], torch.arange(3.0)) and "resuming from" in caplog.text


@pytest.mark.gpu
@pytest.mark.parametrize("first,second", [("cuda", "cpu"), ("cpu", "cuda")])
def test_phase1_and_phase2_resume_across_devices(tmp_path, monkeypatch, caplog, first, second):
    from newllm.cvfp.phase1 import Phase1Trainer
    from newllm.cvfp.phase2 import Phase2Trainer
    from newllm.stages import phase1_fixed_point as phase1
    from newllm.stages import phase2_lm as phase2
    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO")
    write_token_caches()
    with monkeypatch.context() as m:
        interrupt(m, Phase1Trainer, "run_unit", 2)
        with pytest.raises(KeyboardInterrupt):
            phase1.run(_cfg(phase1, device=first))
    phase1.run(_cfg(phase1, device=second))
    assert "resumed phase1 after pass 1" in caplog.text
    write_gate()
    with monkeypatch.context() as m:
        interrupt(m, Phase2Trainer, "run_unit", 2)
        with pytest.raises(KeyboardInterrupt):
            phase2.run(_cfg(phase2, device=first))
    m2 = phase2.run(_cfg(phase2, device=second))
    assert "resumed phase2 after epoch 2" in caplog.text and m2["device"] == second and m2["epochs"] == 3


@pytest.mark.gpu
def test_fp16_grad_scaler_state_survives_a_resume(tmp_path, monkeypatch):
    from newllm.cvfp.phase1 import Phase1Trainer
    from newllm.io import torch_load
    from newllm.stages import phase1_fixed_point as phase1
    monkeypatch.chdir(tmp_path)
    write_token_caches()
    fp16 = {"runtime": {"precision": "fp16"}}
    scales = []
    original = Phase1Trainer.load_state_dict

    def load(self, d):
        original(self, d)
        scales.append((d["scaler"]["scale"], self.scaler.get_scale()))

    with monkeypatch.context() as m:
        interrupt(m, Phase1Trainer, "run_unit", 2)
        with pytest.raises(KeyboardInterrupt):
            phase1.run(_cfg(phase1, fp16, device="cuda"))
    saved = torch_load(tmp_path / "resume/phase1.pt")["trainer"]["scaler"]
    assert saved is not None and saved["scale"] > 0
    monkeypatch.setattr(Phase1Trainer, "load_state_dict", load)
    phase1.run(_cfg(phase1, fp16, device="cuda"))
    assert scales and scales[0][0] == scales[0][1] == saved["scale"]
