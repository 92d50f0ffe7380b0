"""Baselines reported beside Phase 2 on the same tokens (cvfp.md, "Phase 2").

Targets are Phase 2's (``newllm.cvfp.phase2.next_token_targets``): pairs ``(tok_t, tok_{t+1})``
within a stream. All counts come from the training pairs; the losses are the mean
cross-entropy (nats) over the validation pairs.

- unigram: ``p(b) = (n(b) + 1) / (N + V)`` with ``n(b)`` the count of ``b`` among the
  training targets, ``N`` their number (add-one over the vocabulary ``V``);
- bigram: ``p(b | a) = (n(a, b) + 1) / (n(a, .) + V)`` with ``n(a, .)`` the number of
  training pairs starting with ``a``;
- majority: the accuracy of always predicting the most frequent training target
  (lowest id among ties).

Vectorised: ``torch.bincount`` for the unigram and row counts; the pair counts of the
(up to ``V^2``) pair codes ``a * V + b`` through ``torch.unique`` + ``torch.searchsorted``.
"""
from __future__ import annotations

import math

import torch

from newllm.cvfp.phase2 import next_token_targets


def pairs(tokens: torch.Tensor, offsets: torch.Tensor, stream: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) of every next-token pair within a stream, flat order."""
    tokens = tokens.long().cpu()
    tgt = next_token_targets(tokens, offsets.cpu(), stream)
    keep = tgt >= 0
    return tokens[keep], tgt[keep]


def baselines(train_tokens: torch.Tensor, train_offsets: torch.Tensor, val_tokens: torch.Tensor,
              val_offsets: torch.Tensor, stream: str, vocab_size: int) -> dict:
    """Unigram/bigram (add-one) validation loss and perplexity, and the majority accuracy."""
    V = int(vocab_size)
    a_tr, b_tr = pairs(train_tokens, train_offsets, stream)
    a_va, b_va = pairs(val_tokens, val_offsets, stream)
    n_val = b_va.numel()
    if n_val == 0:
        raise ValueError("no validation pairs: every validation stream has a single token")
    uni = torch.bincount(b_tr, minlength=V).double()
    n_tr = float(b_tr.numel())
    uni_loss = -float(torch.log((uni[b_va] + 1.0) / (n_tr + V)).mean())

    row = torch.bincount(a_tr, minlength=V).double()
    codes, counts = torch.unique(a_tr * V + b_tr, return_counts=True)  # sorted
    q = a_va * V + b_va
    if codes.numel():
        pos = torch.searchsorted(codes, q).clamp(max=codes.numel() - 1)
        pair_n = torch.where(codes[pos] == q, counts[pos], torch.zeros_like(q)).double()
    else:
        pair_n = torch.zeros(n_val, dtype=torch.float64)
    bi_loss = -float(torch.log((pair_n + 1.0) / (row[a_va] + V)).mean())

    majority = int(torch.argmax(uni)) if n_tr else 0
    acc = float((b_va == majority).double().mean())
    return {
        "unigram_loss": uni_loss, "unigram_ppl": math.exp(uni_loss),
        "bigram_loss": bi_loss, "bigram_ppl": math.exp(bi_loss),
        "majority_acc": acc, "majority_token": majority,
        "train_pairs": int(n_tr), "val_pairs": int(n_val),
    }
