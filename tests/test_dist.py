"""Data parallelism: 2 processes (gloo, CPU) equal 1 process with the same global batch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("dist_worker.py")


def run(tmp_path: Path, phase: str, nproc: int) -> dict:
    out = tmp_path / f"{phase}_{nproc}.pt"
    cmd = [sys.executable, str(WORKER), phase, str(out)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(WORKER), phase, str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return torch.load(out, weights_only=True)


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    return float((a - b).norm()) <= rel * float(b.norm()) + 1e-7


# batch-level objectives see the global batch on every rank (all-reduced contexts), so 2 ranks
# equal 1 process for them too
@pytest.mark.parametrize("phase", ["phase1", "phase2", "phase1_uniformity", "phase1_uniformity_groups"])
def test_two_processes_equal_one(tmp_path, phase):
    one = run(tmp_path, phase, 1)
    two = run(tmp_path, phase, 2)
    assert one["steps"] == two["steps"] > 0
    assert one["grads"].shape == two["grads"].shape
    for g1, g2 in zip(one["grads"], two["grads"]):  # the all-reduced gradient of every step
        assert close(g2, g1), (g2 - g1).norm()
    for k, v in one["layers"].items():
        assert close(two["layers"][k], v), k
    for key in ("prev_ctx", "carry", "mu"):
        if key in one:
            assert close(two[key], one[key]), key
    cols = ("cvfp_loss", "div_loss", "converged_frac", "mean_context_norm") if phase.startswith("phase1") else \
        ("train_loss", "val_loss", "val_acc")
    assert len(one["history"]) == len(two["history"]) > 0
    for h1, h2 in zip(one["history"], two["history"]):
        for col in cols:
            a, b = h1[col], h2[col]
            assert (a != a and b != b) or abs(a - b) <= 1e-5 * max(1.0, abs(a)), (col, a, b)
