"""What each Phase 1 diversity objective costs per optimizer batch, beside the batch's own
training step. Prints, for B contexts of width d: the objective's value-and-gradient time
(``newllm.cvfp.objectives.value_and_grad``, as the trainer calls it once per batch) and the
time of one fused training batch of the model (scan + backward + Adam step) at 1 and 6 layers,
so the overhead is the ratio. Median of ``--repeats``. Not a test: it prints what it measured.

    python bench/bench_objectives.py                      # B = phase1.batch_tokens, d 768
    python bench/bench_objectives.py --batch 4096 --dim 768
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import add_pair_set_args, pair_set

from newllm.config import ModelConfig, Phase1Config
from newllm.cvfp.model import build_model
from newllm.cvfp.objectives import OBJECTIVES, value_and_grad
from newllm.cvfp.phase1 import Phase1Trainer
from newllm.data.tokens import TokenSet
from newllm.runtime import Runtime


def timed(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def batch_step_time(batch: int, dim: int, layers: int, precision: str, repeats: int) -> float:
    """One training batch of ``batch`` tokens shaped like a 100k-token pass's (hundreds of
    streams, so a batch is one or two scan steps wide): a pass of 4 batches over ``batch / 2``
    streams of 8 tokens, timed, divided by 4."""
    streams, length = batch // 2, 8
    ts = TokenSet(torch.randint(0, 50257, (streams * length,)), torch.arange(streams + 1) * length)
    cfg = Phase1Config(batch_tokens=batch, max_iterations=2, diversity="none", min_converged_ratio=1.0)
    model = build_model(ModelConfig(context_dim=dim, embed_dim=dim, num_layers=layers), seed=0)
    tr = Phase1Trainer(model, ts.tokens, ts.offsets, cfg, Runtime(torch.device("cpu"), precision), seed=0)
    tr.run_unit(0)
    return timed(lambda: tr.run_unit(1), repeats) / 4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=Phase1Config().batch_tokens)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    add_pair_set_args(ap)
    args = ap.parse_args()
    pair_set(args)
    g = torch.Generator().manual_seed(0)
    c = torch.nn.functional.layer_norm(torch.randn(args.batch, args.dim, generator=g), (args.dim,))
    mu = c.mean(0)
    cfg = Phase1Config(uniformity_anchors=args.anchors, uniformity_group_size=args.group_size)
    steps = {layers: batch_step_time(args.batch, args.dim, layers, args.precision, args.repeats) for layers in (1, 6)}
    print(f"B = {args.batch} contexts of width {args.dim} (uniformity anchors {args.anchors}, group size {args.group_size}), {torch.get_num_threads()} threads; a training batch "
          f"({args.precision}, fused scan + backward + Adam): 1 layer {1000 * steps[1]:.1f} ms, 6 layers "
          f"{1000 * steps[6]:.1f} ms")
    print("| objective | value + gradient, ms | vs a 1-layer batch | vs a 6-layer batch |")
    print("|---|---|---|---|")
    mm = Runtime(torch.device("cpu"), args.precision).compute_dtype  # as the trainer passes it
    for name in OBJECTIVES:
        t = timed(lambda: value_and_grad(name, c, mu, cfg, True, mm), args.repeats)
        print(f"| {name} | {1000 * t:.2f} | {100 * t / steps[1]:.1f}% | {100 * t / steps[6]:.1f}% |", flush=True)


if __name__ == "__main__":
    main()
