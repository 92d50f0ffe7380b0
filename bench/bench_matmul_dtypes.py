"""Is mixed precision worth it on this CPU? Times one matmul of Phase 1's shape (a 512-token
batch through a 768 x 768 layer, and a 2,048 x 768 by 768 x 3,072 one) in fp32, bf16 and fp16
and prints GFLOP/s beside what torch reports about the CPU's matrix instructions (the same
probes behind the stage's warning, newllm.runtime.cpu_has_native). Not a test.

    python bench/bench_matmul_dtypes.py
"""
from __future__ import annotations

import time

import torch

from newllm.runtime import NATIVE_HALF, cpu_has_native

SHAPES = [(512, 768, 768), (2048, 768, 3072)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def gflops(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 1.0) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b  # warm-up (oneDNN picks its kernel)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for name in ("bf16", "fp16"):
        print(f"{name}: native matrix instructions {cpu_has_native(name)} (looks for {', '.join(NATIVE_HALF[name])})")
    for m, k, n in SHAPES:
        row = "  ".join(f"{name} {gflops(m, k, n, dt):8.1f}" for name, dt in DTYPES.items())
        print(f"{m} x {k} @ {k} x {n}: GFLOP/s  {row}")


if __name__ == "__main__":
    main()
