"""Effective rank and degeneracy checks (``newllm.cvfp.rank``) against matrices with known answers."""
from __future__ import annotations

import pytest
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


@pytest.mark.parametrize("k, d", [(1, 4), (3, 8), (8, 8)])
def test_k_equal_singular_values_have_effective_rank_k(k, d):
    """A matrix whose columns are orthogonal, k of them of one length and the rest zero: its
    singular values are k equal ones, p = 1/k each, entropy log k, effective rank exactly k."""
    s = [2.5] * k + [0.0] * (d - k)
    assert effective_rank(singular_values(matrix_with_singular_values(s, 64, seed=k))) == pytest.approx(k, rel=1e-6)
    assert effective_rank(torch.tensor(s, dtype=torch.float64)) == pytest.approx(k, rel=1e-12)


@pytest.mark.parametrize("s, er", [
    # p = 1/2, 1/4, 1/8, 1/8: entropy (1/2 + 2/4 + 6/8) log 2 = 1.75 log 2
    ([4.0, 2.0, 1.0, 1.0], 2 ** 1.75),
    # p = 3/4, 1/4: exp(entropy) = (4/3)^(3/4) 4^(1/4) = 4 / 3^(3/4)
    ([3.0, 1.0], 4 / 3 ** 0.75),
    # a zero singular value adds nothing: p = 1/2, 1/2
    ([5.0, 5.0, 0.0], 2.0),
])
def test_effective_rank_by_hand(s, er):
    """exp(entropy of s / sum s), worked out by hand for these numbers, from the singular values
    and from a matrix with orthogonal columns of those lengths (whatever their scale)."""
    assert effective_rank(torch.tensor(s, dtype=torch.float64)) == pytest.approx(er, rel=1e-12)
    for scale in (1.0, 1e-3, 1e3):
        c = matrix_with_singular_values([scale * v for v in s], 50)
        assert effective_rank(singular_values(c)) == pytest.approx(er, rel=1e-6)


def test_effective_rank_of_nothing_is_zero():
    assert effective_rank(torch.zeros(5)) == 0.0
    assert effective_rank(singular_values(torch.zeros(10, 4))) == 0.0


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


@pytest.fixture
def sampled_pairs(monkeypatch):
    """The index draws of newllm.cvfp.rank, recorded (the real ``torch.randint`` runs)."""
    draws = []
    real = torch.randint

    def randint(*args, **kwargs):
        out = real(*args, **kwargs)
        draws.append(out.clone())
        return out

    monkeypatch.setattr(torch, "randint", randint)
    return draws


def test_pairwise_cosine_is_the_mean_over_the_sampled_pairs_only(sampled_pairs):
    """On 50,000 rows (all pairs would be 2.5e9), the mean cosine is the plain mean over exactly
    ``pairs`` drawn pairs of distinct rows: recomputed pair by pair from the recorded draws."""
    n, pairs = 50_000, 300
    c = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    got = mean_pairwise_cosine(c, pairs, seed=3)
    first, offset = sampled_pairs  # the first rows, then each second row's offset from its first
    assert first.shape == offset.shape == (pairs,)
    second = (first + offset) % n
    assert bool(((first >= 0) & (first < n) & (second != first)).all())
    cosines = [float(torch.nn.functional.cosine_similarity(c[a].double(), c[b].double(), dim=0))
               for a, b in zip(first.tolist(), second.tolist())]
    assert got == pytest.approx(sum(cosines) / pairs, rel=1e-12, abs=1e-15)
    assert mean_pairwise_cosine(c, pairs, seed=3) == got  # seeded
    assert mean_pairwise_cosine(torch.ones(n, 4), 1000, 0) == pytest.approx(1.0, rel=1e-9)
