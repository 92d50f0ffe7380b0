"""Phase 1 benchmark: per-pass time, tokens/s, achieved GFLOP/s next to this machine's
measured matmul GFLOP/s at the same shapes, and peak RSS; plus the per-token reference.

    python bench/bench_phase1.py                      # 781 samples (100k tokens), 768/6, fp32 and bf16
    python bench/bench_phase1.py --samples 50 --passes 2 --precision bf16
    python bench/bench_phase1.py --device cuda --precision bf16 --reference-tokens 0   # a GPU

FLOPs of one pass (D = d_c + d_e, L layers, N tokens; matmuls only):
  pass 0 (scan only):          2 N D^2 L
  training pass: scan 2 N D^2 L + batched forward 2 N D^2 L + backward 4 N D^2 L = 8 N D^2 L,
                 or 6 N D^2 L for batches whose scan is their forward (Phase1Trainer._fusable:
                 fp32 with wide steps); the achieved GFLOP/s counts what was really computed
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the per-token reference
from common import add_pair_set_args, chat_tokens, matmul_gflops, median, pair_set, sync  # noqa: E402
from reference import phase1_reference  # noqa: E402

from newllm.config import ModelConfig, Phase1Config
from newllm.cvfp.engine import batch_ranges  # noqa: E402
from newllm.cvfp.model import build_model  # noqa: E402
from newllm.cvfp.phase1 import Phase1Trainer  # noqa: E402
from newllm.diversity import DIVERSITY  # noqa: E402
from newllm.runtime import Runtime, peak_rss_mb  # noqa: E402


def bench_batched(train, mcfg: ModelConfig, precision: str, passes: int, batch_tokens: int,
                  device: str = "cpu", diversity: str = Phase1Config().diversity,
                  anchors: int = Phase1Config().uniformity_anchors,
                  group_size: int = Phase1Config().uniformity_group_size) -> dict:
    model = build_model(mcfg, seed=0)
    cfg = Phase1Config(max_iterations=passes + 1, batch_tokens=batch_tokens, min_converged_ratio=1.0,
                       diversity=diversity, uniformity_anchors=anchors,
                       uniformity_group_size=group_size)
    tr = Phase1Trainer(model, train.tokens, train.offsets, cfg, Runtime(torch.device(device), precision), seed=0)
    times = []
    for k in range(passes + 1):
        sync(device)
        t = time.perf_counter()
        tr.run_unit(k)
        sync(device)
        times.append(time.perf_counter() - t)
    n = train.num_tokens
    d = mcfg.context_dim + mcfg.embed_dim
    units = sum((6 if tr._fusable(p0, p1) else 8) * (p1 - p0) for p0, p1 in batch_ranges(n, batch_tokens))
    flops_train = units * d * d * mcfg.num_layers
    t_train = median(times[1:])
    return {"pass0_s": times[0], "train_pass_s": t_train, "tokens_per_s": n / t_train,
            "gflops": flops_train / t_train / 1e9, "fused_frac": (8 * n - units) / (2 * n),
            "steps_per_pass": tr.state.steps / passes,
            "peak_rss_mb": peak_rss_mb(),
            "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0.0}


def bench_reference(train, mcfg: ModelConfig, n_tokens: int, batch_tokens: int) -> tuple[float, float]:
    """The per-token reference on the first samples holding about ``n_tokens`` tokens:
    tokens/s of its pass 0 (scan only) and of its training pass (pass 1), each timed on its own
    (a run of pass 0 alone, then a run of passes 0 and 1; the difference is pass 1).
    ``batch_tokens`` 1 is the original online algorithm (an Adam step per token), the
    reference the original algorithm is; the batched run's ``batch_tokens`` gives the like-for-like loop."""
    s = int((train.offsets <= n_tokens).sum()) - 1
    tokens, offsets = train.tokens[: int(train.offsets[s])], train.offsets[: s + 1]
    el = []
    for passes in (1, 2):
        model = build_model(mcfg, seed=0)
        # the online form is the original algorithm, with its objective (a batch-level one needs 2 tokens)
        div = "ema_distance" if batch_tokens == 1 else Phase1Config().diversity
        cfg = Phase1Config(max_iterations=passes, batch_tokens=batch_tokens, min_converged_ratio=1.0, diversity=div)
        t = time.perf_counter()
        phase1_reference(model, tokens, offsets, cfg, seed=0)
        el.append(time.perf_counter() - t)
    n = tokens.numel()
    return n / el[0], n / (el[1] - el[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=781)
    ap.add_argument("--max-seq-length", type=int, default=128, help="tokens kept per sample (1M tokens: --samples 1040 --max-seq-length 4096)")
    ap.add_argument("--passes", type=int, default=2, help="training passes timed (after pass 0)")
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    ap.add_argument("--batch-tokens", type=int, default=Phase1Config().batch_tokens)
    ap.add_argument("--context-dim", type=int, default=768)
    ap.add_argument("--layers", type=int, default=ModelConfig().num_layers)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: GFLOP/s against the GPU's own measured matmul peak")
    ap.add_argument("--reference-tokens", type=int, default=1000)
    ap.add_argument("--diversity", choices=tuple(DIVERSITY), default=Phase1Config().diversity,
                    help="the objective of the batched run (none: the pass without one, for its cost)")
    add_pair_set_args(ap)
    args = ap.parse_args()
    pair_set(args)
    logging.basicConfig(level=logging.WARNING)
    mcfg = ModelConfig(context_dim=args.context_dim, embed_dim=args.context_dim, num_layers=args.layers)
    train, _ = chat_tokens(args.samples, max_seq_length=args.max_seq_length)
    d = mcfg.context_dim + mcfg.embed_dim
    print(f"Phase 1 benchmark: {train.num_tokens} tokens in {train.num_samples} streams, model "
          f"{mcfg.context_dim}/{mcfg.embed_dim}/{mcfg.num_layers}, batch_tokens {args.batch_tokens}, "
          f"diversity {args.diversity} (anchors {args.anchors}, group size {args.group_size}), "
          f"{torch.get_num_threads()} threads")
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    results = {}
    for prec in precisions:
        peak = matmul_gflops(min(args.batch_tokens or 1024, 4096), d, d, prec, device=args.device)
        r = bench_batched(train, mcfg, prec, args.passes, args.batch_tokens, args.device, args.diversity, args.anchors,
                          args.group_size)
        results[prec] = r
        print(f"[{prec}] pass 0 (scan only) {r['pass0_s']:.1f}s | training pass (median of {args.passes}) "
              f"{r['train_pass_s']:.1f}s, {r['tokens_per_s']:,.0f} tok/s, {r['steps_per_pass']:.0f} steps/pass, "
              f"{100 * r['fused_frac']:.0f}% of tokens in fused batches | "
              f"{r['gflops']:.0f} GFLOP/s achieved vs {peak:.0f} GFLOP/s matmul peak "
              f"({args.batch_tokens}x{d}x{d}) on {args.device} | peak RSS {r['peak_rss_mb']:.0f} MB"
              + (f", peak CUDA {r['peak_cuda_mb']:.0f} MB" if args.device == "cuda" else ""))
    if args.reference_tokens:
        n = train.num_tokens
        for bt, what in ((args.batch_tokens, "same batch_tokens: the loop-vs-batched speed-up of one algorithm"),
                         (1, "batch_tokens 1: the original online algorithm")):
            ref0, ref1 = bench_reference(train, mcfg, args.reference_tokens, bt)
            print(f"[reference fp32, {what}] per-token loop on ~{args.reference_tokens} tokens: "
                  f"pass 0 {ref0:,.1f} tok/s, training pass {ref1:,.1f} tok/s")
            for prec, r in results.items():
                print(f"  batched {prec} (batch_tokens {args.batch_tokens}) / reference: training pass "
                      f"{r['tokens_per_s'] / ref1:,.0f}x, pass 0 {n / r['pass0_s'] / ref0:,.0f}x")


if __name__ == "__main__":
    main()
