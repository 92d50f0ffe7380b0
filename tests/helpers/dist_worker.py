"""A few steps of a phase with the gradients of every step, in this process (``PHASES[name](SINGLE)``)
or as a script under torchrun: ``python -m torch.distributed.run --nproc_per_node 2 -m
helpers.dist_worker OUT_DIR phase1 phase2 ...`` with tests/ on PYTHONPATH (tests/test_dist.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

import newllm.train.core as train_core
from helpers.grad_spy import spy_gradients
from helpers.toy import TINY_MODEL, random_tokens
from newllm.config import Phase1Config, Phase2Config
from newllm.cvfp.model import build_model
from newllm.cvfp.phase1 import Phase1Trainer
from newllm.cvfp.phase2 import Phase2Trainer
from newllm.data.tokens import TokenSet
from newllm.dist import init_from_env, shutdown
from newllm.runtime import Runtime

TINY = TINY_MODEL


def tokens() -> TokenSet:
    return random_tokens(0, (9, 7, 7, 4, 3, 1, 6), vocab=50)


def run_phase1(dist, diversity: str = "ema_distance", **pair_set) -> dict:
    ts = tokens()
    model = build_model(TINY, seed=1)
    # uniformity with 4 anchors in 10-token batches: every 3rd context of the *global* batch;
    # or groups of 4: 3 interleaved groups of the global batch
    pair_set = pair_set or {"uniformity_anchors": 4, "uniformity_group_size": 0}
    cfg = Phase1Config(max_iterations=3, batch_tokens=10, chunk_tokens=3, min_converged_ratio=1.0,
                       diversity=diversity, **pair_set)
    tr = Phase1Trainer(model, ts.tokens, ts.offsets, cfg, Runtime(torch.device("cpu"), "fp32"), seed=2, dist=dist)
    with spy_gradients(train_core, flat=True) as grads:
        tr.run()
    state = tr.state_dict()
    return {"grads": torch.stack(grads), "layers": state["model"], "history": state["loop"]["history"],
            "prev_ctx": state["prev_ctx"], "carry": state["carry"], "mu": state["mu"], "steps": state["loop"]["steps"]}


def run_phase2(dist) -> dict:
    ts, vs = tokens(), tokens()
    model = build_model(TINY, seed=1)
    cfg = Phase2Config(epochs=2, batch_tokens=10, chunk_tokens=3, dropout=0.0)  # masks are drawn per rank
    tr = Phase2Trainer(model, ts.tokens, ts.offsets, vs.tokens, vs.offsets, cfg, "sample",
                       Runtime(torch.device("cpu"), "fp32"), dist=dist)
    with spy_gradients(train_core, flat=True) as grads:
        tr.run()
    return {"grads": torch.stack(grads), "layers": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "history": tr.state.history, "steps": tr.state.steps}


PHASES = {"phase1": run_phase1, "phase2": run_phase2,
          "phase1_uniformity": lambda d: run_phase1(d, "uniformity"),
          "phase1_uniformity_groups": lambda d: run_phase1(d, "uniformity", uniformity_group_size=4),
          "phase1_vicreg": lambda d: run_phase1(d, "vicreg")}


def main() -> None:
    """``OUT_DIR PHASE...``: each phase in turn in one process group, saved as OUT_DIR/PHASE.pt."""
    torch.set_num_threads(1)
    out, phases = Path(sys.argv[1]), sys.argv[2:]
    dist = init_from_env("cpu")
    for phase in phases:
        result = PHASES[phase](dist)
        if dist.main:
            torch.save(result, out / f"{phase}.pt")
    shutdown(dist)


if __name__ == "__main__":
    main()
