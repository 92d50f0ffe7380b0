"""The context noise of training passes and epochs, drawn by global schedule position so that
the draws do not depend on ``batch_tokens``, the number of ranks or where a run resumed.
Phase 1 adds it with ``phase1.context_noise_std``, Phase 2 with ``phase2.context_noise_std``.
"""
from __future__ import annotations

import torch

from newllm.cvfp.engine import Schedule
from newllm.dist import Dist

NOISE_BLOCK = 4096  # schedule positions per noise block (see PassNoise)


def noise_block_seed(seed: int, k: int, b: int) -> int:
    """The generator seed of noise block ``b`` of pass ``k``."""
    return ((seed * 1_000_003 + k) * 65_537 + b) % 2 ** 63


NOISE_SCHEME = (f"pass k, block b of {NOISE_BLOCK} schedule positions: torch.Generator seeded with "
                f"((seed*1000003+k)*65537+b) mod 2^63 (newllm.cvfp.noise.noise_block_seed)")


class PassNoise:
    """The context noise ``eps`` of one training pass, by *global schedule position*.

    Position ``p`` takes row ``p % NOISE_BLOCK`` of block ``p // NOISE_BLOCK``, a
    ``(NOISE_BLOCK, d)`` standard normal draw from a generator seeded with
    ``noise_block_seed(seed, k, b)``, times ``std``. The draws do not depend on
    ``batch_tokens``, the number of ranks or where a run was resumed, and a batch costs one
    block, not a pass-long ``(N, d)`` tensor."""

    def __init__(self, seed: int, k: int, d: int, std: float, device: torch.device | str = "cpu"):
        self.seed, self.k, self.d, self.std, self.device = seed, k, d, std, torch.device(device)
        self._cache: tuple[int, torch.Tensor] | None = None

    def block(self, b: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != b:
            gen = torch.Generator().manual_seed(noise_block_seed(self.seed, self.k, b))
            self._cache = (b, (torch.randn(NOISE_BLOCK, self.d, generator=gen) * self.std).to(self.device))
        return self._cache[1]

    def rows(self, p0: int, p1: int) -> torch.Tensor:
        """``(p1 - p0, d)``: the noise of global schedule positions ``[p0, p1)``."""
        if p1 <= p0:
            return torch.zeros(0, self.d, device=self.device)
        parts = []
        for b in range(p0 // NOISE_BLOCK, (p1 - 1) // NOISE_BLOCK + 1):
            a, e = max(p0, b * NOISE_BLOCK), min(p1, (b + 1) * NOISE_BLOCK)
            parts.append(self.block(b)[a - b * NOISE_BLOCK:e - b * NOISE_BLOCK])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def pass_noise(seed: int, k: int, d: int, std: float, device: torch.device | str = "cpu") -> PassNoise | None:
    """The noise of training pass ``k`` (None when ``std`` is 0)."""
    return PassNoise(seed, k, d, std, device) if std > 0 else None


def rank_rows(noise: PassNoise | None, p0: int, p1: int, global_sched: Schedule, dist: Dist) -> torch.Tensor | None:
    """This rank's rows of the noise of global schedule range [p0, p1), in local schedule order
    (all of them in a single process)."""
    if noise is None:
        return None
    rows = noise.rows(p0, p1)
    if not dist.active:
        return rows
    mine = global_sched.stream_of[p0:p1] % dist.world == dist.rank
    return rows[mine.to(rows.device)]
