"""Effective rank and degeneracy checks against matrices with known answers."""
from __future__ import annotations

import math

import torch

from newllm.cvfp.rank import (
    context_report,
    effective_rank,
    gaussian_er,
    mean_pairwise_cosine,
    singular_values,
)


def matrix_with_singular_values(s: list[float], n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = len(s)
    u, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v.T


def test_singular_values_from_gram_match_known_values():
    s = [10.0, 5.0, 2.0, 1.0, 0.5, 0.0]
    c = matrix_with_singular_values(s, 300)
    got = singular_values(c.float())
    assert torch.allclose(got[:5], torch.tensor(s[:5], dtype=torch.float64), rtol=1e-4)
    assert got[5] < 1e-2


def test_effective_rank_known_values():
    # equal singular values: ER = number of nonzero ones
    assert math.isclose(effective_rank(torch.tensor([3.0, 3.0, 3.0, 3.0])), 4.0, rel_tol=1e-9)
    assert math.isclose(effective_rank(torch.tensor([1.0, 0.0, 0.0])), 1.0, rel_tol=1e-9)
    s = torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    p = s / s.sum()
    expect = math.exp(-float((p * p.log()).sum()))
    assert math.isclose(effective_rank(singular_values(matrix_with_singular_values(s.tolist(), 50))), expect,
                        rel_tol=1e-6)
    assert effective_rank(torch.zeros(5)) == 0.0


def test_gram_is_chunked_and_matches_full_svd():
    c = torch.randn(1000, 16, generator=torch.Generator().manual_seed(1))
    full = torch.linalg.svdvals(c.double())
    assert torch.allclose(singular_values(c), full, rtol=1e-8)


def test_gaussian_reference_is_high_rank():
    er = gaussian_er(4000, 64, seed=0)
    assert 0.85 * 64 < er < 64


def test_collapse_flags():
    g = torch.Generator().manual_seed(0)
    healthy = torch.randn(2000, 32, generator=g)
    r = context_report(healthy, pairs=2000, seed=0)
    assert not r["collapsed"] and not r["global_attractor"] and r["er_pct"] > 80
    # one direction, growing norm: the collapse the original showed
    direction = torch.randn(32, generator=g)
    collapsed = torch.linspace(100, 1400, 2000).unsqueeze(1) * direction + 0.01 * torch.randn(2000, 32, generator=g)
    r = context_report(collapsed, pairs=2000, seed=0)
    assert r["collapsed"] and r["global_attractor"] and r["er_pct"] < 10
    zero = 1e-6 * torch.randn(100, 32, generator=g)
    assert context_report(zero, pairs=500, seed=0)["near_zero"]


def test_pairwise_cosine_is_sampled_not_quadratic():
    c = torch.ones(50_000, 4)
    assert math.isclose(mean_pairwise_cosine(c, 1000, 0), 1.0, rel_tol=1e-9)
