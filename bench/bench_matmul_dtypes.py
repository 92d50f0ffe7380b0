"""Is mixed precision worth it on this CPU? Times one matmul of Phase 1's shape (a 512-token
batch through a 768 x 768 layer, and a 2,048 x 768 by 768 x 3,072 one) in fp32, bf16 and fp16
and prints GFLOP/s beside what torch reports about the CPU's matrix instructions (the same
probes behind the stage's warning, newllm.runtime.cpu_has_native). Not a test.

    python bench/bench_matmul_dtypes.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_gflops  # noqa: E402

from newllm.runtime import NATIVE_HALF, cpu_has_native  # noqa: E402

SHAPES = [(512, 768, 768), (2048, 768, 3072)]


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for name in ("bf16", "fp16"):
        print(f"{name}: native matrix instructions {cpu_has_native(name)} (looks for {', '.join(NATIVE_HALF[name])})")
    for m, k, n in SHAPES:
        row = "  ".join(f"{name} {matmul_gflops(m, k, n, name, repeats=3):8.1f}" for name in ("fp32", "bf16", "fp16"))
        print(f"{m} x {k} @ {k} x {n}: GFLOP/s  {row}")


if __name__ == "__main__":
    main()
