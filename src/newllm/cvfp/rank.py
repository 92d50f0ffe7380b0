"""Metrics of a context matrix: effective rank in O(N d^2) and degeneracy checks (docs/metrics.md)."""
from __future__ import annotations

import math

import torch


def gram(c: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """``C^T C`` in float64, accumulated over row chunks (never an N x N matrix)."""
    d = c.shape[1]
    g = torch.zeros(d, d, dtype=torch.float64)
    for a in range(0, c.shape[0], chunk):
        block = c[a:a + chunk].detach().to("cpu", torch.float64)
        g += block.T @ block
    return g


def singular_values(c: torch.Tensor) -> torch.Tensor:
    """Singular values of C (descending) from the eigenvalues of its d x d Gram matrix."""
    ev = torch.linalg.eigvalsh(gram(c))
    return ev.clamp_min(0).sqrt().flip(0)


def effective_rank(s: torch.Tensor) -> float:
    """``exp(-sum p log p)`` with ``p = s / sum s``; 0 for a zero matrix."""
    total = float(s.sum())
    if total <= 0 or not math.isfinite(total):
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def gaussian_er(n: int, d: int, seed: int, chunk: int = 65536) -> float:
    """ER of an n x d standard Gaussian matrix, generated in chunks."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.zeros(d, d, dtype=torch.float64)
    for a in range(0, n, chunk):
        block = torch.randn(min(chunk, n - a), d, generator=gen, dtype=torch.float64)
        g += block.T @ block
    return effective_rank(torch.linalg.eigvalsh(g).clamp_min(0).sqrt().flip(0))


def mean_pairwise_cosine(c: torch.Tensor, pairs: int, seed: int) -> float:
    """Mean cosine over ``pairs`` random pairs i != j (not all N^2)."""
    n = c.shape[0]
    if n < 2:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (pairs,), generator=gen)
    j = (i + torch.randint(1, n, (pairs,), generator=gen)) % n
    a, b = c[i].double(), c[j].double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)
    return float(cos.mean())


# Flags (documented in docs/metrics.md): a "global attractor" is every context pointing
# the same way; "near zero" is contexts vanishing; "collapsed" is either, or a rank
# below 10% of the dimension.
ATTRACTOR_COS = 0.95
NEAR_ZERO_NORM = 1e-3
COLLAPSE_ER_PCT = 10.0


def context_report(c: torch.Tensor, pairs: int, seed: int) -> dict:
    s = singular_values(c)
    er = effective_rank(s)
    d = c.shape[1]
    cos = mean_pairwise_cosine(c, pairs, seed)
    norm = float(c.double().norm(dim=1).mean())
    attractor = bool(cos > ATTRACTOR_COS)
    near_zero = bool(norm < NEAR_ZERO_NORM)
    er_pct = 100.0 * er / d
    return {"er": round(er, 4), "er_pct": round(er_pct, 4), "mean_cos": round(cos, 6),
            "mean_norm": round(norm, 6), "global_attractor": attractor, "near_zero": near_zero,
            "collapsed": bool(attractor or near_zero or er_pct < COLLAPSE_ER_PCT),
            "singular_values": s}
