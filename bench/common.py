"""Shared helpers for the benchmark scripts: data, matmul peak, FLOP counts, medians."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CHAT_SAMPLE = ROOT.parent / "shared" / "data" / "chat_sample.jsonl"


def median(xs):
    return statistics.median(xs)


def sync(device: str | torch.device) -> None:
    """Wait for the device's queued kernels, so that wall-clock times mean something on a GPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(m: int, k: int, n: int, precision: str = "fp32", repeats: int = 5,
                  device: str = "cpu") -> float:
    """The device's measured GFLOP/s for (m x k) @ (k x n), median of ``repeats``."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a = torch.randn(m, k).to(device, dtype)
    b = torch.randn(k, n).to(device, dtype)
    a @ b  # warm up
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * m * k * n / median(times) / 1e9


def chat_tokens(num_samples: int, val_fraction: float = 0.2, max_seq_length: int = 128):
    """Train/val TokenSets from ../shared/data/chat_sample.jsonl through the pipeline's own code
    (jsonl source, offline GPT-2 tokenizer); random ids when the file is absent."""
    from newllm.config import DataConfig
    from newllm.data.fetch import fetch_local
    from newllm.data.tokenize import conversation_text, tokenize_texts
    from newllm.data.tokenizer import build_tokenizer
    from newllm.data.tokens import TokenSet

    if not CHAT_SAMPLE.exists():
        print(f"note: {CHAT_SAMPLE} absent; using random token ids")
        g = torch.Generator().manual_seed(0)
        n_val = max(1, round(val_fraction * num_samples))
        mk = lambda n: TokenSet(torch.randint(0, 50257, (n * max_seq_length,), generator=g),  # noqa: E731
                                torch.arange(n + 1) * max_seq_length)
        return mk(num_samples), mk(n_val)
    cfg = DataConfig(source="jsonl", path=str(CHAT_SAMPLE), num_samples=num_samples, val_fraction=val_fraction,
                     max_seq_length=max_seq_length)
    raw = fetch_local(cfg)
    tok = build_tokenizer("gpt2-offline")
    train, _ = tokenize_texts(tok, [conversation_text(r) for r in raw.train], max_seq_length)
    val, _ = tokenize_texts(tok, [conversation_text(r) for r in raw.val], max_seq_length)
    return train, val


def add_pair_set_args(ap) -> None:
    """--anchors / --group-size: uniformity's pair set, as phase1.uniformity_anchors/_group_size."""
    from newllm.config import Phase1Config
    ap.add_argument("--anchors", type=int, default=Phase1Config().uniformity_anchors,
                    help="phase1.uniformity_anchors (0: every pair; K > 0 sets the group size to 0)")
    ap.add_argument("--group-size", type=int, default=Phase1Config().uniformity_group_size,
                    help="phase1.uniformity_group_size (0: every pair)")


def pair_set(args) -> None:
    """One pair set at a time: anchors set the group size to 0."""
    if args.anchors:
        args.group_size = 0
