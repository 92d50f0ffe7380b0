"""Benchmark of the transformer baseline's training step (a script that prints figures, not a test).

    python bench/bench_transformer.py                        # fp32, the stage's shape at 100k tokens
    python bench/bench_transformer.py --precision bf16 --steps 6

Data: ``../shared/data/chat_sample.jsonl`` through the pipeline's own tokenizer (781 samples,
128 tokens each at most, as the 100k-token runs); random ids when the file is absent. Model:
what ``transformer_lm`` builds for 768/768 with one CVFP layer (``resolve_shape``: one block,
12 heads; tied embeddings, dropout 0.1). Times whole optimizer steps
(``TransformerTrainer.train_batch``: zero_grad, forward, fused head, backward, clip, Adam)
on consecutive batches of ``transformer.batch_tokens``; the first
two are warm-up. Prints the median and range, the steps an epoch takes, and the matmul
rate at the head's shape for comparison.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import chat_tokens, matmul_gflops, median, sync  # noqa: E402

from newllm.baselines.transformer import (  # noqa: E402
    TransformerLM,
    TransformerTrainer,
    context_length,
    resolve_shape,
    sequences,
)
from newllm.config import ModelConfig, RuntimeConfig, TransformerConfig  # noqa: E402
from newllm.memory import limit_heap_retention  # noqa: E402
from newllm.runtime import Runtime  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--samples", type=int, default=781, help="chat samples (781: about 100k training tokens)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--dim", type=int, default=768)
    args = ap.parse_args()
    limit_heap_retention()  # as the stage
    train, val = chat_tokens(args.samples)
    length = context_length(train, val)
    tc, vocab = TransformerConfig(), ModelConfig().vocab_size
    rt = Runtime.from_config(RuntimeConfig(device=args.device, precision=args.precision))
    layers, heads = resolve_shape(tc, args.dim, args.dim, 1)
    model = TransformerLM(vocab, args.dim, layers, heads, tc.ff_mult, length, tc.dropout, tc.tie_embeddings, seed=0)
    tr = TransformerTrainer(model, sequences(train.tokens, train.offsets, "sample", length),
                            sequences(val.tokens, val.offsets, "sample", length), tc, rt, seed=0)
    per = max(1, tc.batch_tokens // length)
    steps = -(-tr.train_x.shape[0] // per)
    times, targets = [], []
    for i in range(2 + args.steps):
        k = i % steps
        sync(rt.device)
        t0 = time.perf_counter()
        _, n = tr.train_batch(tr.train_x[k * per:(k + 1) * per], tr.train_y[k * per:(k + 1) * per], 0)
        sync(rt.device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
            targets.append(n)
    med = median(times)
    print(f"transformer step ({args.precision}, {rt.device.type}, {torch.get_num_threads()} threads): "
          f"median {med:.3f} s, min {min(times):.3f}, max {max(times):.3f} over {len(times)} steps "
          f"of {statistics.mean(targets):.0f} targets")
    print(f"  {steps} steps per epoch: about {med * steps:.0f} s of training per epoch")
    print(f"  matmul at the head's shape (1024 x {args.dim}) @ ({args.dim} x {vocab}): "
          f"{matmul_gflops(1024, args.dim, vocab, args.precision, device=args.device):.0f} GFLOP/s")


if __name__ == "__main__":
    main()
