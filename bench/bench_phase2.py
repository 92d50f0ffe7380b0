"""Benchmark of Phase 2 training (a script that prints figures, not a test).

    python bench/bench_phase2.py --precision fp32 --epochs 1            # 100k tokens, 768/768/6
    python bench/bench_phase2.py --precision bf16 --epochs 1
    python bench/bench_phase2.py --tokens 12800 --epochs 2              # a quick trial

Data: ``../shared/data/chat_sample.jsonl`` (relative to the repo) tokenized with the
offline GPT-2 tokenizer, each conversation truncated to ``--seq`` tokens: ``tokens //
seq`` training streams and ``ceil(0.2 x that)`` validation streams (the pipeline's
``val_fraction``); random ids when the file is absent. Model: the full 768/768/6 CVFP
model with random embeddings (so the embedding trains too), ``freeze_context: false``.

FLOP count per epoch (multiply-adds count 2; ``D = d_c + d_e``, ``L`` layers, ``d_h`` the
head's input width, ``V`` the vocabulary, ``N`` training tokens, ``T`` training targets,
``N_v``/``T_v`` the same for validation; LayerNorm, ReLU, softmax, embedding gathers
and Adam are O(N D) or O(params) per step and left out)::

    layer forward per token  f_L = 2 L D^2
    head forward per target  f_H = 2 d_h V
    training = N f_L               (no-grad scan: each token's input context)
             + T (f_L + 2 f_L)     (layers: forward + backward, grad input and grad weight)
             + T (f_H + 2 f_H)     (head: forward + backward, grad input and grad weight)
    validation = N_v f_L + T_v f_H (scan with keep_x, chunked logits)

Beside the achieved GFLOP/s the script times ``torch.matmul`` at the shapes that
dominate (``(1024 x D) @ (D x D)`` and ``(1024 x d_e) @ (d_e x V)``) in the same
precision (median of a few runs) on this machine, before and after training (the mean
is reported; both are listed, since on a shared machine the load drifts), and the
FLOP-weighted matmul-bound rate the epoch could reach at those speeds.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CHAT_SAMPLE, chat_tokens, matmul_gflops, sync  # noqa: E402

from newllm.config import ModelConfig, Phase2Config  # noqa: E402
from newllm.cvfp.model import build_model, count_parameters  # noqa: E402
from newllm.cvfp.phase2 import Phase2Trainer  # noqa: E402
from newllm.memory import limit_heap_retention  # noqa: E402
from newllm.runtime import Runtime  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=100_000, help="training tokens (streams = tokens // seq)")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--dim", type=int, default=768, help="d_c = d_e")
    ap.add_argument("--layers", type=int, default=ModelConfig().num_layers)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: GFLOP/s against the GPU's own measured matmul peak")
    ap.add_argument("--batch-tokens", type=int, default=Phase2Config.batch_tokens)
    ap.add_argument("--chunk-tokens", type=int, default=Phase2Config.chunk_tokens)
    ap.add_argument("--threads", type=int, default=0, help="0 = all cores")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--default-malloc", action="store_true",
                    help="keep glibc's dynamic mmap threshold (the stage fixes it; see limit_heap_retention)")
    return ap.parse_args()


def timed_run(args, mcfg: ModelConfig) -> tuple:
    """Train the epochs; the trainer, the validation times, the wall time, the matmul rates before."""
    n_train = max(1, args.tokens // args.seq)
    train, val = chat_tokens(n_train, val_fraction=0.2, max_seq_length=args.seq)
    model = build_model(mcfg, seed=0)
    cfg = Phase2Config(epochs=args.epochs, batch_tokens=args.batch_tokens, chunk_tokens=args.chunk_tokens)
    rt = Runtime(torch.device(args.device), args.precision)
    D, dh, V = mcfg.context_dim + mcfg.embed_dim, mcfg.embed_dim, mcfg.vocab_size
    # matmul rates before and after training: on a shared machine the load can drift
    mm_before = (matmul_gflops(1024, D, D, args.precision, device=args.device),
                 matmul_gflops(1024, dh, V, args.precision, device=args.device))
    tr = Phase2Trainer(model, train.tokens, train.offsets, val.tokens, val.offsets, cfg, "sample", rt)
    val_times: list[float] = []
    evaluate = tr.evaluate

    def timed_evaluate(*a, **k):
        sync(args.device)
        t = time.perf_counter()
        out = evaluate(*a, **k)
        sync(args.device)
        val_times.append(time.perf_counter() - t)
        return out

    tr.evaluate = timed_evaluate
    t0 = time.perf_counter()
    tr.run()
    sync(args.device)
    return tr, train, val, val_times, time.perf_counter() - t0, mm_before


def figures(args, mcfg: ModelConfig, run: tuple, heap: str, rss_setup: float) -> dict:
    tr, train, val, val_times, wall, mm_before = run
    D, L, V, dh = mcfg.context_dim + mcfg.embed_dim, mcfg.num_layers, mcfg.vocab_size, mcfg.embed_dim
    N, T = train.num_tokens, tr.train["num_targets"]
    Nv, Tv = val.num_tokens, tr.val["num_targets"]
    f_L, f_H = 2 * L * D * D, 2 * dh * V
    flops_train = N * f_L + T * 3 * f_L + T * 3 * f_H
    flops_val = Nv * f_L + Tv * f_H
    epoch_s = statistics.median(h["time_s"] for h in tr.state.history)
    val_s = statistics.median(val_times)
    train_s = epoch_s - val_s
    mm_after = (matmul_gflops(1024, D, D, args.precision, device=args.device),
                matmul_gflops(1024, dh, V, args.precision, device=args.device))
    mm_layer, mm_head = (mm_before[0] + mm_after[0]) / 2, (mm_before[1] + mm_after[1]) / 2
    # share of the FLOPs at each shape -> the matmul-bound rate this work could reach
    share_L = (N * f_L + T * 3 * f_L + Nv * f_L) / (flops_train + flops_val)
    bound = 1.0 / (share_L / mm_layer + (1 - share_L) / mm_head)
    hist = tr.state.history
    return {
        "device": args.device, "precision": args.precision, "threads": torch.get_num_threads(),
        "data": f"{CHAT_SAMPLE.name} (offline GPT-2 tokenizer)" if CHAT_SAMPLE.exists() else "random ids",
        "model": f"{mcfg.context_dim}/{mcfg.embed_dim}/{L}", "params": count_parameters(tr.model),
        "train_tokens": N, "train_targets": T, "val_tokens": Nv, "val_targets": Tv,
        "batch_tokens": tr.cfg.batch_tokens, "chunk_tokens": tr.cfg.chunk_tokens, "epochs": args.epochs,
        "optimizer_steps": tr.state.steps,
        "epoch_s_median": round(epoch_s, 1), "train_s": round(train_s, 1), "val_s": round(val_s, 1),
        "tokens_per_s_epoch": round(N / epoch_s, 1), "tokens_per_s_train": round(N / train_s, 1),
        "tflop_per_epoch": round((flops_train + flops_val) / 1e12, 2),
        "gflops_achieved": round((flops_train + flops_val) / epoch_s / 1e9, 1),
        "gflops_train": round(flops_train / train_s / 1e9, 1), "gflops_val": round(flops_val / val_s / 1e9, 1),
        "matmul_gflops_layer_1024x%dx%d" % (D, D): round(mm_layer, 1),
        "matmul_gflops_head_1024x%dx%d" % (dh, V): round(mm_head, 1),
        "matmul_gflops_before_after": [round(v, 1) for v in (*mm_before, *mm_after)],
        "load_average_1min_end": round(os.getloadavg()[0], 2), "matmul_bound_gflops": round(bound, 1),
        "peak_rss_mb": round(rss_mb(), 1), "malloc": heap, "rss_before_trainer_mb": round(rss_setup, 1),
        "wall_s": round(wall, 1),
        "train_loss": [round(h["train_loss"], 4) for h in hist], "val_loss": [round(h["val_loss"], 4) for h in hist],
        "val_acc": [round(h["val_acc"], 4) for h in hist], "projected_10_epochs_min": round(10 * epoch_s / 60, 1),
    }


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    heap = "default glibc" if args.default_malloc else ("fixed 1 MB mmap threshold" if limit_heap_retention() else "default")
    mcfg = ModelConfig(context_dim=args.dim, embed_dim=args.dim, num_layers=args.layers)
    rss_setup = rss_mb()
    fig = figures(args, mcfg, timed_run(args, mcfg), heap, rss_setup)
    width = max(len(k) for k in fig)
    print(f"\nPhase 2 benchmark ({args.precision})")
    for k, v in fig.items():
        print(f"  {k:<{width}}  {v}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n")


if __name__ == "__main__":
    main()
