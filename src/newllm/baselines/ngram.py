"""Count-based baselines, scored on exactly the next-token pairs Phase 2 scores.

Pairs are Phase 2's (``newllm.data.tokens.next_token_targets``): ``(tok_t, tok_{t+1})`` within a
stream. Every count comes from the training pairs; nothing is tuned on validation or test. A
loss is the mean cross-entropy (nats) over a split's pairs. Formulas (docs/metrics.md):

- ``unigram``: absolute discounting interpolated with the uniform distribution over the
  vocabulary, ``p(w) = max(c(w) - D, 0)/N + D T/N * 1/V`` (T: types seen);
- ``kn_bigram``, ``kn_trigram``: interpolated Kneser-Ney (Chen & Goodman 1998) with one
  discount per order, ``D = n1 / (n1 + 2 n2)`` from that order's training counts (continuation
  counts for the lower orders); the lowest order is the continuation unigram, itself
  interpolated with the uniform distribution so that no token has probability 0. The
  trigram's history of a stream's first pair is padded with a start symbol;
- ``mkn_trigram``: modified Kneser-Ney (Chen & Goodman 1998, section 3): three discounts per
  order, ``D1``, ``D2``, ``D3+`` for n-grams seen once, twice, three or more times, from the
  count-of-counts ``n1..n4`` of that order; the same backoff structure;
- ``majority``: the accuracy of always predicting the most frequent training target.

A discount whose closed form is undefined or not above 0 (a count-of-counts is 0, as when no
n-gram occurs exactly once) takes ``k/2`` for count class ``k``, so the uniform distribution
always keeps some mass and an unseen token never gets probability 0.

Vectorised: n-grams are int64 codes, counted with ``torch.unique`` and looked up with
``torch.searchsorted``.
"""
from __future__ import annotations

import math

import torch

from newllm.data.tokens import next_token_targets


def pairs(tokens: torch.Tensor, offsets: torch.Tensor, stream: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of every next-token pair within a stream, flat order."""
    tokens = tokens.long().cpu()
    tgt = next_token_targets(tokens, offsets.cpu(), stream)
    keep = tgt >= 0
    return tokens[keep], tgt[keep]


def triples(tokens: torch.Tensor, offsets: torch.Tensor, stream: str, bos: int) -> torch.Tensor:
    """(P, 3) rows ``(u, v, w)`` for every pair ``(v, w)`` of ``pairs``: ``u`` is the token before
    ``v`` in its stream, or ``bos`` at a stream's first token."""
    tokens = tokens.long().cpu()
    offsets = offsets.long().cpu()
    tgt = next_token_targets(tokens, offsets, stream)
    prev = torch.full_like(tokens, bos)
    prev[1:] = tokens[:-1]
    starts = offsets[:-1][offsets[1:] > offsets[:-1]] if stream == "sample" else offsets[:1]
    prev[starts] = bos
    keep = tgt >= 0
    return torch.stack([prev[keep], tokens[keep], tgt[keep]], 1)


class Counts:
    """Counts of int64 codes: ``of(q)`` looks up any codes (0 where unseen)."""

    def __init__(self, codes: torch.Tensor):
        self.keys, self.n = torch.unique(codes, return_counts=True)  # sorted

    def of(self, q: torch.Tensor) -> torch.Tensor:
        if self.keys.numel() == 0:
            return torch.zeros(q.shape, dtype=torch.float64)
        pos = torch.searchsorted(self.keys, q.contiguous()).clamp(max=self.keys.numel() - 1)
        return torch.where(self.keys[pos] == q, self.n[pos], torch.zeros_like(q)).double()

    def discount(self) -> float:
        """The closed-form absolute discount ``n1 / (n1 + 2 n2)`` (0.5 when it is undefined or 0)."""
        n1, n2 = int((self.n == 1).sum()), int((self.n == 2).sum())
        return n1 / (n1 + 2 * n2) if n1 > 0 else 0.5

    def modified_discounts(self) -> tuple[float, float, float]:
        """Chen & Goodman's ``D1, D2, D3+`` from the count-of-counts: ``Y = n1 / (n1 + 2 n2)``,
        ``D_k = k - (k + 1) Y n_{k+1} / n_k``; ``k/2`` where that is undefined or not above 0."""
        n = [int((self.n == k).sum()) for k in range(5)]
        y = n[1] / (n[1] + 2 * n[2]) if n[1] > 0 else None
        out = []
        for k in (1, 2, 3):
            d = k - (k + 1) * y * n[k + 1] / n[k] if y is not None and n[k] > 0 else 0.0
            out.append(d if d > 0 else k / 2)
        return out[0], out[1], out[2]


def _interpolate(count: torch.Tensor, total: torch.Tensor, types: torch.Tensor, d: float,
                 lower: torch.Tensor) -> torch.Tensor:
    """``max(count - d, 0)/total + d * types/total * lower``, and ``lower`` where ``total`` is 0."""
    safe = total.clamp_min(1.0)
    p = (count - d).clamp_min(0.0) / safe + d * types / safe * lower
    return torch.where(total > 0, p, lower)


class KneserNey:
    """Interpolated Kneser-Ney of order 2 or 3 from training triples ``(u, v, w)``; ``prob``
    scores validation triples. Vocabulary ids are < ``vocab``; ``vocab`` itself is the start
    symbol (a history only, never predicted)."""

    def __init__(self, train: torch.Tensor, vocab: int, order: int):
        if order not in (2, 3):
            raise ValueError(f"order must be 2 or 3, got {order}")
        self.V, self.order, self.B = vocab, order, vocab + 1
        u, v, w = train[:, 0], train[:, 1], train[:, 2]
        B = self.B
        vw = torch.unique(v * B + w)                       # bigram types (v, w)
        # continuation unigram: N1+(. w) = distinct v before w, over N1+(. .) bigram types
        self.cont1 = Counts(vw % B)
        self.n_bigram_types = float(vw.numel())
        self.d1 = self.cont1.discount()
        if order == 2:
            self.top = Counts(v * B + w)                   # c(v w)
            self.ctx = Counts(v)                           # c(v .)
            self.ctx_types = Counts(vw // B)               # N1+(v .)
        else:
            uvw = torch.unique((u * B + v) * B + w)        # trigram types
            self.cont2 = Counts(uvw % (B * B))             # N1+(. v w)
            self.cont2_ctx = Counts((uvw % (B * B)) // B)  # N1+(. v .) = sum_w N1+(. v w)
            self.cont2_types = Counts(torch.unique(uvw % (B * B)) // B)  # distinct w with N1+(. v w) > 0
            self.d2 = self.cont2.discount()
            self.top = Counts((u * B + v) * B + w)         # c(u v w)
            self.ctx = Counts(u * B + v)                   # c(u v .)
            self.ctx_types = Counts(uvw // B)              # N1+(u v .)
        self.d_top = self.top.discount()

    def unigram(self, w: torch.Tensor) -> torch.Tensor:
        types_seen = float(self.cont1.keys.numel())
        total = torch.full(w.shape, self.n_bigram_types, dtype=torch.float64)
        uniform = torch.full(w.shape, 1.0 / self.V, dtype=torch.float64)
        return _interpolate(self.cont1.of(w), total, torch.full_like(total, types_seen), self.d1, uniform)

    def prob(self, triples_: torch.Tensor) -> torch.Tensor:
        u, v, w = triples_[:, 0], triples_[:, 1], triples_[:, 2]
        B = self.B
        p = self.unigram(w)
        if self.order == 2:
            return _interpolate(self.top.of(v * B + w), self.ctx.of(v), self.ctx_types.of(v), self.d_top, p)
        p = _interpolate(self.cont2.of(v * B + w), self.cont2_ctx.of(v), self.cont2_types.of(v), self.d2, p)
        uv = u * B + v
        return _interpolate(self.top.of(uv * B + w), self.ctx.of(uv), self.ctx_types.of(uv), self.d_top, p)


class ModifiedTable:
    """One order of modified Kneser-Ney: counts ``c(h w)`` of the codes ``h * B + w`` (repeats
    count), and per history ``h`` the total ``c(h .)`` and the number of words after it seen
    once, twice and three or more times."""

    def __init__(self, codes: torch.Tensor, B: int):
        self.B = B
        self.counts = Counts(codes)
        self.d = self.counts.modified_discounts()
        self._d_of = torch.tensor([0.0, *self.d], dtype=torch.float64)  # D(c) for c = 0, 1, 2, 3+
        keys, n = self.counts.keys, self.counts.n
        self.hist, inv = torch.unique(keys // B, return_inverse=True)
        size = self.hist.numel()

        def per_history(v: torch.Tensor) -> torch.Tensor:
            return torch.zeros(size, dtype=torch.float64).scatter_add_(0, inv, v.double())

        self.total = per_history(n)
        self.gamma_num = per_history(self._d_of[n.clamp(max=3)])

    def _of_history(self, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.hist.numel() == 0:
            return torch.zeros(h.shape, dtype=torch.float64)
        pos = torch.searchsorted(self.hist, h.contiguous()).clamp(max=self.hist.numel() - 1)
        return torch.where(self.hist[pos] == h, v[pos], torch.zeros((), dtype=torch.float64))

    def prob(self, h: torch.Tensor, w: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        """``max(c - D(c), 0) / c(h .) + gamma(h) lower``, and ``lower`` for an unseen history."""
        c = self.counts.of(h * self.B + w)
        d = self._d_of[c.long().clamp(max=3)]
        total = self._of_history(h, self.total)
        safe = total.clamp_min(1.0)
        p = (c - d).clamp_min(0.0) / safe + self._of_history(h, self.gamma_num) / safe * lower
        return torch.where(total > 0, p, lower)


class ModifiedKneserNey:
    """Interpolated modified Kneser-Ney of order 2 or 3 from training triples ``(u, v, w)``, in
    the structure of ``KneserNey``: the highest order on counts, the lower ones on continuation
    counts, the lowest interpolated with the uniform distribution over ``vocab`` words."""

    def __init__(self, train: torch.Tensor, vocab: int, order: int):
        if order not in (2, 3):
            raise ValueError(f"order must be 2 or 3, got {order}")
        self.V, self.order, B = vocab, order, vocab + 1
        self.B = B
        u, v, w = train[:, 0], train[:, 1], train[:, 2]
        vw = torch.unique(v * B + w)
        self.uni = ModifiedTable(vw % B, B)               # continuation counts N1+(. w), history 0
        if order == 2:
            self.top = ModifiedTable(v * B + w, B)
        else:
            self.mid = ModifiedTable(torch.unique((u * B + v) * B + w) % (B * B), B)  # N1+(. v w)
            self.top = ModifiedTable((u * B + v) * B + w, B)

    def prob(self, triples_: torch.Tensor) -> torch.Tensor:
        u, v, w = triples_[:, 0], triples_[:, 1], triples_[:, 2]
        B = self.B
        p = self.uni.prob(torch.zeros_like(w), w, torch.full(w.shape, 1.0 / self.V, dtype=torch.float64))
        if self.order == 2:
            return self.top.prob(v, w, p)
        p = self.mid.prob(v, w, p)
        return self.top.prob(u * B + v, w, p)


def smoothed_unigram(train_w: torch.Tensor, w: torch.Tensor, vocab: int) -> torch.Tensor:
    """Absolute discounting of the training target counts, interpolated with the uniform."""
    c = Counts(train_w)
    total = torch.full(w.shape, float(train_w.numel()), dtype=torch.float64)
    types = torch.full(w.shape, float(c.keys.numel()), dtype=torch.float64)
    return _interpolate(c.of(w), total, types, c.discount(), torch.full_like(total, 1.0 / vocab))


MODELS = ("unigram", "kn_bigram", "kn_trigram", "mkn_trigram")


class Baselines:
    """Every count-based baseline fitted on the training pairs; ``pair_ce`` scores any split."""

    def __init__(self, train_tokens: torch.Tensor, train_offsets: torch.Tensor, stream: str, vocab_size: int):
        self.V, self.stream = int(vocab_size), stream
        tr = triples(train_tokens, train_offsets, stream, self.V)
        self.train_pairs = int(tr.shape[0])
        self.train_w = tr[:, 2]
        self.kn2, self.kn3 = KneserNey(tr, self.V, 2), KneserNey(tr, self.V, 3)
        self.mkn3 = ModifiedKneserNey(tr, self.V, 3)
        counts = torch.bincount(tr[:, 2], minlength=self.V)
        self.majority = int(torch.argmax(counts)) if tr.shape[0] else 0

    def pair_ce(self, tokens: torch.Tensor, offsets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each model's CE (nats) of every pair of a token set, flat pair order."""
        t = triples(tokens, offsets, self.stream, self.V)
        if t.shape[0] == 0:
            raise ValueError("no pairs: every stream of the split has a single token")
        probs = {"unigram": smoothed_unigram(self.train_w, t[:, 2], self.V), "kn_bigram": self.kn2.prob(t), "kn_trigram": self.kn3.prob(t),
                 "mkn_trigram": self.mkn3.prob(t)}
        return {k: -torch.log(p) for k, p in probs.items()}

    def scores(self, tokens: torch.Tensor, offsets: torch.Tensor) -> tuple[dict, dict[str, torch.Tensor]]:
        """Every model's loss and perplexity on a split (and the majority accuracy), and the
        per-pair CE."""
        ce = self.pair_ce(tokens, offsets)
        w = triples(tokens, offsets, self.stream, self.V)[:, 2]
        out: dict = {k: {"loss": float(v.mean()), "ppl": math.exp(float(v.mean()))} for k, v in ce.items()}
        out["kn_bigram"]["discount"], out["kn_trigram"]["discount"] = self.kn2.d_top, self.kn3.d_top
        out["mkn_trigram"]["discounts"] = list(self.mkn3.top.d)
        out["majority"] = {"acc": float((w == self.majority).double().mean()), "token": self.majority}
        out["pairs"] = int(w.numel())
        return out, ce
