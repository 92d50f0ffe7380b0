"""Run a few steps of a phase in this process (or under torchrun) and save the result.

Used by tests/test_dist.py: ``python tests/dist_worker.py phase1 OUT`` or under
``python -m torch.distributed.run --nproc_per_node 2 tests/dist_worker.py phase1 OUT``.
"""
from __future__ import annotations

import sys

import torch
from grad_spy import spy_gradients
from toy import from_lists

import newllm.cvfp.phase1 as phase1_module
import newllm.cvfp.phase2 as phase2_module
from newllm.config import ModelConfig, Phase1Config, Phase2Config
from newllm.cvfp.model import build_model
from newllm.cvfp.phase1 import Phase1Trainer
from newllm.cvfp.phase2 import Phase2Trainer
from newllm.data.tokens import TokenSet
from newllm.dist import init_from_env, shutdown
from newllm.runtime import Runtime
import newllm.train.core as train_core

TINY = ModelConfig(context_dim=8, embed_dim=6, num_layers=2, vocab_size=50)


def tokens() -> TokenSet:
    g = torch.Generator().manual_seed(0)
    return from_lists([torch.randint(0, 50, (n,), generator=g).tolist() for n in (9, 7, 7, 4, 3, 1, 6)])


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


def main() -> None:
    torch.set_num_threads(1)
    phase, out = sys.argv[1], sys.argv[2]
    dist = init_from_env("cpu")
    result = {"phase1": run_phase1, "phase2": run_phase2,
              "phase1_uniformity": lambda d: run_phase1(d, "uniformity"),
              "phase1_uniformity_groups": lambda d: run_phase1(d, "uniformity", uniformity_group_size=4),
              "phase1_vicreg": lambda d: run_phase1(d, "vicreg")}[phase](dist)
    if dist.main:
        torch.save(result, out)
    shutdown(dist)


if __name__ == "__main__":
    main()
