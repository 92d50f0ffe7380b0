"""Data parallelism (``newllm.dist``): 2 processes (gloo, CPU) under torchrun equal 1 process with
the same global batch, gradients of every step, weights, contexts and the logged history."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.dist_worker import PHASES
from helpers.repo import TESTS
from newllm.dist import SINGLE

pytestmark = pytest.mark.slow
# batch-level objectives see the global batch on every rank (all-reduced contexts), so 2 ranks
# equal 1 process for them too
TESTED = ["phase1", "phase2", "phase1_uniformity", "phase1_uniformity_groups"]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    """Every tested phase run by 2 processes under one torchrun (one launch, one process group);
    the results of rank 0 as OUT/<phase>.pt."""
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "helpers.dist_worker", str(out), *TESTED], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    return float((a - b).norm()) <= rel * float(b.norm()) + 1e-7


@pytest.mark.parametrize("phase", TESTED)
def test_two_processes_equal_one(two_processes, phase, one_thread):
    one = PHASES[phase](SINGLE)  # the same code in this process, without a process group
    two = torch.load(two_processes / f"{phase}.pt", weights_only=True)
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
