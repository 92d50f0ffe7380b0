"""Resume after a hard interruption (Colab disconnect, kill -9), with real ``dvc repro`` in
temporary DVC repositories: one is killed with SIGKILL (the whole process group: dvc and the stage
it runs) in the middle of Phase 1, re-run, killed again in the middle of Phase 2 and re-run; it
must end bitwise identical (weights, contexts, metrics and histories but wall time, speed and
memory) to an uninterrupted run with the same params and seed. The rules around it, in process:
tests/test_resume.py."""
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

from helpers.chain import ENV, stable_metrics
from helpers.repo import make_dvc_repo
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


def result(d: Path) -> dict:
    """Everything that must not depend on an interruption."""
    out = {}
    for rel in MODELS:
        out[rel] = state_dict_digest(torch.load(d / rel, weights_only=True)["model_state_dict"])
    for rel in CONTEXTS:
        out[rel] = state_dict_digest(torch.load(d / rel, weights_only=True))
    for p in sorted((d / "metrics").glob("*.json")):
        out[f"metrics/{p.name}"] = stable_metrics(json.loads(p.read_text()))
    for p in sorted((d / "metrics").glob("*.csv")):
        with p.open() as f:
            out[f"metrics/{p.name}"] = [stable_metrics(row) for row in csv.DictReader(f)]
    out["gate"] = json.loads((d / "data/gate.json").read_text())
    return out


def start_repro(d: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, **ENV}
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
