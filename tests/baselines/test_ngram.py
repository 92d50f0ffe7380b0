"""The n-gram baselines (``newllm.baselines.ngram``): Kneser-Ney and its modified form against
hand-computed values and plain re-implementations, every distribution sums to one, and every
baseline scores exactly Phase 2's pairs."""
from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import torch

from helpers.toy import from_lists, random_tokens
from newllm.baselines import ngram
from newllm.baselines.transformer import sequences
from newllm.data.tokens import next_token_targets


def test_kneser_ney_by_hand():
    """Training stream 0 1 0 1 2 (V = 4, start symbol 4). Bigram: c(0 1) = 2, c(1 0) = c(1 2) = 1,
    so D2 = n1/(n1 + 2 n2) = 2/4; the continuation unigram has three types seen once (D1 = 1), so it
    is the uniform 1/4. Trigram: every trigram is seen once (D3 = 1); the middle order counts
    N1+(. 0 1) = 2, N1+(. 1 0) = N1+(. 1 2) = 1 (D = 1/2)."""
    V, B = 4, 4
    train = ngram.triples(torch.tensor([0, 1, 0, 1, 2]), torch.tensor([0, 5]), "sample", V)
    assert train.tolist() == [[B, 0, 1], [0, 1, 0], [1, 0, 1], [0, 1, 2]]
    kn2, kn3 = ngram.KneserNey(train, V, 2), ngram.KneserNey(train, V, 3)
    assert kn2.d_top == 0.5 and kn2.d1 == 1.0 and kn3.d_top == 1.0 and kn3.d2 == 0.5
    q = torch.tensor([[B, 0, 1], [0, 1, 2], [B, 3, 1], [2, 3, 0]])
    # p(1|0) = (2 - .5)/2 + .5 * 1/2 * 1/4; p(2|1) = (1 - .5)/2 + .5 * 2/2 * 1/4; unseen history: 1/4
    assert kn2.prob(q).tolist() == pytest.approx([0.8125, 0.375, 0.25, 0.25], abs=1e-12)
    # p(1|<s> 0) = 0 + 1 * 1/1 * p2(1|0) = 0.8125; p(2|0 1) = (1 - 1)/2 + 1 * 2/2 * p2(2|1) = 0.375
    assert kn3.prob(q).tolist() == pytest.approx([0.8125, 0.375, 0.25, 0.25], abs=1e-12)
    # smoothed unigram: targets 1 1 0 2 -> D = 1/2, 3 types: p(1) = 1.5/4 + .5 * 3/4 * 1/4
    uni = ngram.smoothed_unigram(train[:, 2], torch.tensor([1, 3]), V)
    assert uni.tolist() == pytest.approx([0.375 + 0.09375, 0.09375], abs=1e-12)


def _plain_kn(train: list[tuple[int, int, int]], V: int, order: int):
    """Interpolated Kneser-Ney written out with dicts and loops, for comparison."""
    def disc(counts):
        n1 = sum(1 for c in counts.values() if c == 1)
        n2 = sum(1 for c in counts.values() if c == 2)
        return n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5

    big = Counter((v, w) for _, v, w in train)
    left = Counter(w for (v, w) in big)  # distinct v before w
    d1, types1, total1 = disc(left), len(left), len(big)

    def p1(w):
        return max(left[w] - d1, 0) / total1 + d1 * types1 / total1 / V

    def level(counts, lower):
        d = disc(counts)
        ctx, types = defaultdict(float), defaultdict(int)
        for (h, w), c in counts.items():
            ctx[h] += c
            types[h] += 1
        return lambda h, w: (max(counts.get((h, w), 0) - d, 0) / ctx[h] + d * types[h] / ctx[h] * lower(h, w)
                             if ctx[h] else lower(h, w))

    if order == 2:
        top = level(dict(big), lambda h, w: p1(w))
        return lambda u, v, w: top(v, w)
    cont2 = Counter((v, w) for (u, v, w) in set(train))
    mid = level(dict(cont2), lambda h, w: p1(w))
    top = level(dict(Counter(((u, v), w) for u, v, w in train)), lambda h, w: mid(h[1], w))
    return lambda u, v, w: top((u, v), w)


# interpolated KN gives an unseen token nothing when its discount is 0; modified KN never does
@pytest.mark.parametrize("stream", ["sample", "corpus"])
@pytest.mark.parametrize("model, plain, seed, lengths, positive", [
    ("KneserNey", "_plain_kn", 0, (30, 12, 25, 1, 40), False),
    ("ModifiedKneserNey", "_plain_mkn", 3, (60, 12, 45, 1, 80), True)])
def test_kneser_ney_equals_a_plain_implementation_and_normalises(stream, model, plain, seed, lengths, positive):
    V = 9
    tr = random_tokens(seed, lengths, vocab=V)
    va = random_tokens(seed + 1, (15, 9, 20), vocab=V)
    train = ngram.triples(tr.tokens, tr.offsets, stream, V)
    val = ngram.triples(va.tokens, va.offsets, stream, V)
    rows = [tuple(r) for r in train.tolist()]
    for order in (2, 3):
        kn = getattr(ngram, model)(train, V, order)
        ref = globals()[plain](rows, V, order)
        assert kn.prob(val).tolist() == pytest.approx([ref(*r) for r in val.tolist()], rel=1e-12)
        for u, v in [(V, 0), (3, 4), (8, 8), (V, 7), (5, 5)]:  # seen and unseen histories
            p = kn.prob(torch.tensor([[u, v, w] for w in range(V)]))
            assert float(p.sum()) == pytest.approx(1.0, abs=1e-12) and (bool((p > 0).all()) or not positive)
    assert float(ngram.smoothed_unigram(train[:, 2], torch.arange(V), V).sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("stream", ["sample", "corpus"])
def test_every_baseline_scores_exactly_phase2s_pairs(stream):
    ts = random_tokens(2, (7, 3, 9, 1, 5, 6), vocab=20)
    tgt = next_token_targets(ts.tokens, ts.offsets, stream)
    want = sorted((int(a), int(b)) for a, b in zip(ts.tokens[tgt >= 0], tgt[tgt >= 0]))
    tri = ngram.triples(ts.tokens, ts.offsets, stream, 20)
    assert sorted(map(tuple, tri[:, 1:].tolist())) == want
    x, y = sequences(ts.tokens, ts.offsets, stream, 9)
    keep = y >= 0
    assert sorted(zip(x[keep].tolist(), y[keep].tolist())) == want
    scores, ce = ngram.Baselines(ts.tokens, ts.offsets, stream, 20).scores(ts.tokens, ts.offsets)
    assert scores["pairs"] == len(want) and all(v.numel() == len(want) for v in ce.values())


def test_majority_by_hand():
    train = from_lists([[0, 1, 0, 1, 2], [3]])
    val = from_lists([[1, 0, 3], [2, 1]])
    # train targets 1 0 1 2 (sample streams): 1 is the majority; val targets 0 3 1
    scores, _ = ngram.Baselines(train.tokens, train.offsets, "sample", 4).scores(val.tokens, val.offsets)
    assert scores["majority"] == {"acc": pytest.approx(1 / 3), "token": 1} and scores["pairs"] == 3


def _plain_mkn(train: list[tuple[int, int, int]], V: int, order: int):
    """Modified Kneser-Ney written out with dicts and loops: Chen & Goodman's D1, D2, D3+ per order
    (k/2 where undefined or not above 0), continuation counts below the top order."""
    def discounts(counts):
        n = [sum(1 for c in counts.values() if c == k) for k in range(5)]
        y = n[1] / (n[1] + 2 * n[2]) if n[1] else None
        ds = []
        for k in (1, 2, 3):
            d = k - (k + 1) * y * n[k + 1] / n[k] if y is not None and n[k] else 0.0
            ds.append(d if d > 0 else k / 2)
        return ds

    def level(counts, lower):
        d = discounts(counts)
        disc = lambda c: 0.0 if c == 0 else d[min(c, 3) - 1]  # noqa: E731
        total, gamma = defaultdict(float), defaultdict(float)
        for (h, w), c in counts.items():
            total[h] += c
            gamma[h] += disc(c)
        return lambda h, w: ((max(counts.get((h, w), 0) - disc(counts.get((h, w), 0)), 0) + gamma[h] * lower(h, w))
                             / total[h] if total[h] else lower(h, w))

    big = Counter((v, w) for _, v, w in train)
    uni = level(dict(Counter((0, w) for (v, w) in big)), lambda h, w: 1 / V)
    if order == 2:
        top = level(dict(big), lambda h, w: uni(0, w))
        return lambda u, v, w: top(v, w)
    mid = level(dict(Counter((v, w) for (u, v, w) in set(train))), lambda h, w: uni(0, w))
    top = level(dict(Counter(((u, v), w) for u, v, w in train)), lambda h, w: mid(h[1], w))
    return lambda u, v, w: top((u, v), w)


def test_modified_discounts_by_hand_and_when_nothing_occurs_once():
    # counts 1 1 1 2 2 3 4 -> n1..n4 = 3, 2, 1, 1: Y = 3/7, D1 = 1 - 2Y 2/3, D2 = 2 - 3Y 1/2, D3+ = 3 - 4Y 1/1
    c = ngram.Counts(torch.tensor([0, 1, 2, 3, 3, 4, 4, 5, 5, 5, 6, 6, 6, 6]))
    y = 3 / 7
    assert c.modified_discounts() == pytest.approx((1 - 2 * y * 2 / 3, 2 - 3 * y / 2, 3 - 4 * y))
    # every training bigram seen twice: no n1, so every closed form is undefined -> k/2
    V = 5
    train = ngram.triples(torch.tensor([0, 1, 0, 1, 0, 2, 3, 2, 3, 2]), torch.tensor([0, 5, 10]), "sample", V)
    mkn = ngram.ModifiedKneserNey(train, V, 2)
    assert mkn.top.d == (0.5, 1.0, 1.5)
    p = mkn.prob(torch.tensor([[V, 0, w] for w in range(V)]))
    assert float(p[4]) > 0 and float(p.sum()) == pytest.approx(1.0, abs=1e-12)  # token 4 never seen
