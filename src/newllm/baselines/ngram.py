"""Count-based baselines, scored on exactly the next-token pairs Phase 2 scores.

Pairs are Phase 2's (``newllm.cvfp.phase2.next_token_targets``): ``(tok_t, tok_{t+1})`` within
a stream. Every count comes from the training pairs; a loss is the mean cross-entropy (nats)
over the validation pairs. Formulas (docs/baselines.md):

- ``unigram``: absolute discounting interpolated with the uniform distribution over the
  vocabulary, ``p(w) = max(c(w) - D, 0)/N + D T/N * 1/V`` (T: types seen);
- ``kn_bigram``, ``kn_trigram``: interpolated Kneser-Ney (Chen & Goodman 1998) with one
  discount per order, ``D = n1 / (n1 + 2 n2)`` from that order's training counts (continuation
  counts for the lower orders); the lowest order is the continuation unigram, itself
  interpolated with the uniform distribution so that no token has probability 0. The
  trigram's history of a stream's first pair is padded with a start symbol;
- ``majority``: the accuracy of always predicting the most frequent training target;
- ``add_one``: the add-one unigram and bigram the project reported before (they give about
  a third of the probability mass to the ~50k types never seen in 100k training tokens, so
  they flatter any model; kept, labelled, for comparison with older runs).

Nothing is tuned on the validation pairs. Vectorised: n-grams are int64 codes, counted with
``torch.unique`` and looked up with ``torch.searchsorted``.
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
        """The closed-form absolute discount ``n1 / (n1 + 2 n2)`` (0.5 when undefined)."""
        n1, n2 = int((self.n == 1).sum()), int((self.n == 2).sum())
        return n1 / (n1 + 2 * n2) if n1 + 2 * n2 > 0 else 0.5


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


def smoothed_unigram(train_w: torch.Tensor, val_w: torch.Tensor, vocab: int) -> torch.Tensor:
    """Absolute discounting of the training target counts, interpolated with the uniform."""
    c = Counts(train_w)
    n = float(train_w.numel())
    total = torch.full(val_w.shape, n, dtype=torch.float64)
    types = torch.full(val_w.shape, float(c.keys.numel()), dtype=torch.float64)
    return _interpolate(c.of(val_w), total, types, c.discount(), torch.full_like(total, 1.0 / vocab))


def add_one(train_v: torch.Tensor, train_w: torch.Tensor, val_v: torch.Tensor, val_w: torch.Tensor,
            vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The add-one unigram ``(n(w)+1)/(N+V)`` and bigram ``(n(v,w)+1)/(n(v,.)+V)`` probabilities."""
    uni = (Counts(train_w).of(val_w) + 1.0) / (train_w.numel() + vocab)
    bi = (Counts(train_v * vocab + train_w).of(val_v * vocab + val_w) + 1.0) / (Counts(train_v).of(val_v) + vocab)
    return uni, bi


def _scores(p: torch.Tensor) -> dict:
    loss = -float(torch.log(p).mean())
    return {"loss": loss, "ppl": math.exp(loss)}


def evaluate(train_tokens: torch.Tensor, train_offsets: torch.Tensor, val_tokens: torch.Tensor,
             val_offsets: torch.Tensor, stream: str, vocab_size: int) -> dict:
    """Every baseline's validation loss and perplexity (and the majority accuracy)."""
    V = int(vocab_size)
    tr = triples(train_tokens, train_offsets, stream, V)
    va = triples(val_tokens, val_offsets, stream, V)
    if va.shape[0] == 0:
        raise ValueError("no validation pairs: every validation stream has a single token")
    uni_add, bi_add = add_one(tr[:, 1], tr[:, 2], va[:, 1], va[:, 2], V)
    counts = torch.bincount(tr[:, 2], minlength=V)
    majority = int(torch.argmax(counts)) if tr.shape[0] else 0
    kn2, kn3 = KneserNey(tr, V, 2), KneserNey(tr, V, 3)
    return {
        "unigram": _scores(smoothed_unigram(tr[:, 2], va[:, 2], V)),
        "kn_bigram": {**_scores(kn2.prob(va)), "discount": kn2.d_top},
        "kn_trigram": {**_scores(kn3.prob(va)), "discount": kn3.d_top},
        "majority": {"acc": float((va[:, 2] == majority).double().mean()), "token": majority},
        "add_one": {"unigram": _scores(uni_add), "bigram": _scores(bi_add)},
        "train_pairs": int(tr.shape[0]), "val_pairs": int(va.shape[0]),
    }


def baselines(train_tokens: torch.Tensor, train_offsets: torch.Tensor, val_tokens: torch.Tensor,
              val_offsets: torch.Tensor, stream: str, vocab_size: int) -> dict:
    """The add-one unigram/bigram and majority figures in the flat form Phase 2's metrics used."""
    e = evaluate(train_tokens, train_offsets, val_tokens, val_offsets, stream, vocab_size)
    add = e["add_one"]
    return {"unigram_loss": add["unigram"]["loss"], "unigram_ppl": add["unigram"]["ppl"],
            "bigram_loss": add["bigram"]["loss"], "bigram_ppl": add["bigram"]["ppl"],
            "majority_acc": e["majority"]["acc"], "majority_token": e["majority"]["token"],
            "train_pairs": e["train_pairs"], "val_pairs": e["val_pairs"]}
