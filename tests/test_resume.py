"""Resume after a hard interruption (Colab disconnect, kill -9).

Real ``dvc repro`` runs in temporary DVC repos: one is killed with SIGKILL (the whole
process group: dvc and the stage it runs) in the middle of Phase 1, re-run, killed again
in the middle of Phase 2 and re-run; it must end bitwise identical (weights, contexts,
metrics and histories but wall time, speed and memory) to an uninterrupted run with the
same params and seed. In-process tests cover the rules around it: a
checkpoint from other params is ignored with a message, and the mirror copy (Google
Drive on Colab) is used when ``resume/`` is gone (a new Colab VM).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_dvc_repo
from toy import from_lists, phase2_inputs

from newllm.io import state_dict_digest

# Big enough that a Phase 1 pass (~400 optimizer steps) and a Phase 2 epoch take a
# noticeable time (~0.5-2 s each here), small enough for the whole file to stay ~2 min.
KILL_PARAMS = {
    "data": {"num_samples": 24, "val_fraction": 0.25, "max_seq_length": 128},
    "model": {"context_dim": 32, "embed_dim": 32, "num_layers": 2},
    "phase1": {"max_iterations": 8, "batch_tokens": 8, "chunk_tokens": 1024, "min_converged_ratio": 1.0},
    "validate": {"convergence_passes": 2, "cosine_pairs": 200},
    "phase2": {"epochs": 4, "batch_tokens": 512, "chunk_tokens": 256},
    "runtime": {"device": "cpu", "threads": 1},
    "report": {"max_new_tokens": 3},
}
MODELS = ["models/phase1.pt", "models/phase2_best.pt"]
CONTEXTS = ["data/contexts/train.pt", "data/contexts/val.pt"]
VOLATILE = ("time", "tokens_per_s", "tok_per_s", "peak", "rss", "_mb", "elapsed")


def _stable(obj):
    """A metrics object without wall time, speed and memory figures."""
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if not any(s in k for s in VOLATILE)}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    return obj


def result(d: Path) -> dict:
    """Everything that must not depend on an interruption."""
    out = {}
    for rel in MODELS:
        out[rel] = state_dict_digest(torch.load(d / rel, weights_only=True)["model_state_dict"])
    for rel in CONTEXTS:
        out[rel] = state_dict_digest(torch.load(d / rel, weights_only=True))
    for p in sorted((d / "metrics").glob("*.json")):
        out[f"metrics/{p.name}"] = _stable(json.loads(p.read_text()))
    for p in sorted((d / "metrics").glob("*.csv")):
        with p.open() as f:
            out[f"metrics/{p.name}"] = [_stable(row) for row in csv.DictReader(f)]
    out["gate"] = json.loads((d / "data/gate.json").read_text())
    return out


def start_repro(d: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log.open("w") as f:
        return subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=d, stdout=f, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def wait_for(cond, proc: subprocess.Popen, log: Path, what: str, timeout: float = 180) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"dvc repro ended (exit {proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        if time.monotonic() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"timeout waiting for {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.02)


def kill9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage process it started
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def finish(d: Path, log: Path) -> str:
    proc = start_repro(d, log)
    assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]
    return log.read_text()


@pytest.fixture
def reference(tmp_path_factory):
    """An uninterrupted run of the same params and seed, started in the background."""
    d = tmp_path_factory.mktemp("reference") / "repo"
    make_dvc_repo(d, KILL_PARAMS)
    log = d.parent / "repro.log"
    proc = start_repro(d, log)

    def get() -> dict:
        assert proc.wait(timeout=400) == 0, log.read_text()[-4000:]
        return result(d)

    yield get
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_kill9_in_phase1_then_in_phase2_resumes_bitwise(reference, tmp_path):
    """One repository killed twice: in the middle of Phase 1, then (the re-run having finished
    Phase 1 from its checkpoint) in the middle of Phase 2; the third `dvc repro` finishes it."""
    d = tmp_path / "repo"
    make_dvc_repo(d, KILL_PARAMS)
    ckpt = d / "resume/phase1.pt"
    log1 = tmp_path / "killed1.log"
    proc = start_repro(d, log1)
    wait_for(ckpt.exists, proc, log1, "the first rolling checkpoint of Phase 1")
    first = ckpt.stat().st_mtime_ns
    # let at least one more pass complete, so the kill lands in a later pass's middle
    wait_for(lambda: ckpt.exists() and ckpt.stat().st_mtime_ns != first, proc, log1, "a second checkpoint")
    time.sleep(0.2)
    kill9(proc)
    assert not (d / "models/phase1.pt").exists(), "Phase 1 had finished before the kill"
    done = torch.load(ckpt, weights_only=True)["trainer"]["loop"]["done"]
    assert 2 <= done < KILL_PARAMS["phase1"]["max_iterations"]

    # the re-run resumes Phase 1, finishes it and is killed in Phase 2
    ckpt2 = d / "resume/phase2.pt"
    log2 = tmp_path / "killed2.log"
    proc = start_repro(d, log2)
    wait_for(ckpt2.exists, proc, log2, "the first rolling checkpoint of Phase 2", timeout=300)
    time.sleep(0.3)  # into the next epoch
    kill9(proc)
    out = log2.read_text()
    assert "Running stage 'fetch_ultrachat'" not in out  # completed stages are not re-run
    assert "resuming from resume/phase1.pt" in out
    assert f"resumed phase1 after pass {done - 1}" in out
    assert "phase1 pass 0 done" not in out  # nothing before the checkpoint is recomputed
    assert not ckpt.exists()  # cleared on success
    assert not (d / "models/phase2_best.pt").exists(), "Phase 2 had finished before the kill"
    done2 = torch.load(ckpt2, weights_only=True)["trainer"]["loop"]["done"]
    assert 1 <= done2 < KILL_PARAMS["phase2"]["epochs"]

    out = finish(d, tmp_path / "resumed.log")
    assert "Running stage 'phase1_fixed_point'" not in out
    assert "resuming from resume/phase2.pt" in out
    assert f"resumed phase2 after epoch {done2}" in out
    assert "phase2 epoch 1/" not in out
    assert not ckpt2.exists() and not (d / "resume/phase2_best.pt").exists()
    assert result(d) == reference()


# ---------------------------------------------------------------------------------------
# the rules around it, in process (small and fast)

TOY = {"model": {"context_dim": 8, "embed_dim": 8, "num_layers": 2, "vocab_size": 64},
       "phase1": {"max_iterations": 4, "batch_tokens": 16, "min_converged_ratio": 1.0},
       "phase2": {"epochs": 3, "batch_tokens": 20, "chunk_tokens": 7, "learning_rate": 0.01},
       "runtime": {"device": "cpu"}}


def _toy_inputs(d: Path) -> None:
    from newllm import paths
    from newllm.data.tokens import save_token_set

    def tokens(seed, lengths):
        g = torch.Generator().manual_seed(seed)
        return from_lists([torch.randint(0, 64, (n,), generator=g).tolist() for n in lengths])

    save_token_set(tokens(0, (12, 9, 16, 5, 12)), paths.TOKENS_TRAIN)
    save_token_set(tokens(1, (10, 7, 11)), paths.TOKENS_VAL)
    save_token_set(tokens(2, (9, 8)), paths.TOKENS_TEST)


def _cfg(stage_module, upd: dict | None = None):
    from conftest import deep_update

    from newllm.config import from_dict
    return from_dict(deep_update(TOY, upd or {}), stage_module.SECTIONS)


def _phase1_outputs() -> dict:
    from newllm import paths
    return {"model": state_dict_digest(torch.load(paths.PHASE1_CKPT, weights_only=True)["model_state_dict"]),
            "contexts": state_dict_digest(torch.load(paths.CONTEXTS_TRAIN, weights_only=True)),
            "metrics": _stable(json.loads(paths.PHASE1_METRICS.read_text()))}


def _phase2_outputs() -> dict:
    from newllm import paths
    return {"best": state_dict_digest(torch.load(paths.PHASE2_BEST, weights_only=True)["model_state_dict"]),
            "metrics": _stable(json.loads(paths.PHASE2_METRICS.read_text()))}


def _interrupt(monkeypatch, cls, method: str, at: int) -> None:
    original = getattr(cls, method)

    def dying(self, k):
        if k == at:
            raise KeyboardInterrupt  # what Ctrl-C / a lost Colab runtime leaves: the last checkpoint
        return original(self, k)

    monkeypatch.setattr(cls, method, dying)


@pytest.fixture
def toy_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(old)


def test_phase1_checkpoint_of_other_params_is_ignored_and_mirror_is_used(toy_dir, monkeypatch, caplog):
    from newllm.cvfp.phase1 import Phase1Trainer
    from newllm.stages import phase1_fixed_point as phase1
    caplog.set_level("INFO")
    _toy_inputs(toy_dir)
    other = {"phase1": {"learning_rate": 0.001}}
    phase1.run(_cfg(phase1, other))
    expected_other = _phase1_outputs()
    phase1.run(_cfg(phase1))
    expected = _phase1_outputs()
    assert expected != expected_other

    # interrupted in pass 2 with the default params; re-run with another learning rate
    with monkeypatch.context() as m:
        _interrupt(m, Phase1Trainer, "run_unit", 2)
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
        _interrupt(m, Phase1Trainer, "run_unit", 3)
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
    _toy_inputs(toy_dir)
    phase1.run(_cfg(phase1))
    phase2_inputs()
    other = {"phase2": {"learning_rate": 0.02}}
    phase2.run(_cfg(phase2, other))
    expected_other = _phase2_outputs()
    phase2.run(_cfg(phase2))
    expected = _phase2_outputs()
    assert expected != expected_other

    with monkeypatch.context() as m:
        _interrupt(m, Phase2Trainer, "run_unit", 2)
        with pytest.raises(KeyboardInterrupt):
            phase2.run(_cfg(phase2))
    caplog.clear()
    phase2.run(_cfg(phase2, other))
    assert "ignoring resume checkpoint resume/phase2.pt: it was made with other params or data" in caplog.text
    assert "resumed phase2" not in caplog.text
    assert _phase2_outputs() == expected_other

    mirror = {"resume": {"mirror_dir": str(toy_dir / "drive" / "resume")}}
    with monkeypatch.context() as m:
        _interrupt(m, Phase2Trainer, "run_unit", 2)
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
