"""The token cache format shared by every stage after tokenize_cache.

A token set is a flat int tensor of all tokens plus per-sample offsets
(sample ``s`` is ``tokens[offsets[s]:offsets[s+1]]``), saved with torch.save as
``{"tokens": int32 (N,), "offsets": int64 (S+1,), "format": 1}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from newllm.errors import DataError
from newllm.io import atomic_torch_save, torch_load

FORMAT = 1


@dataclass
class TokenSet:
    tokens: torch.Tensor   # int64 (N,)
    offsets: torch.Tensor  # int64 (S+1,)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.numel())

    @property
    def num_samples(self) -> int:
        return int(self.offsets.numel() - 1)


def next_token_targets(tokens: torch.Tensor, offsets: torch.Tensor, stream: str) -> torch.Tensor:
    """(N,) target id of every flat token (``tok_{t+1}`` in its stream), -1 where none: the
    next-token pairs that Phase 2 trains on and every baseline is scored on. ``sample``: the
    last token of every sample has no target; ``corpus``: only the corpus's last token."""
    tokens = tokens.long()
    offsets = offsets.long()
    n = tokens.numel()
    tgt = torch.full((n,), -1, dtype=torch.long)
    if n > 1:
        tgt[:-1] = tokens[1:]
    if stream == "sample":
        nonempty = offsets[1:] > offsets[:-1]
        tgt[(offsets[1:] - 1)[nonempty]] = -1
    elif stream != "corpus":
        raise ValueError(f"unknown stream mode {stream!r}")
    return tgt


def pair_rows(tokens: torch.Tensor, offsets: torch.Tensor, stream: str) -> torch.Tensor:
    """The sample (row, conversation) of every next-token pair, in flat pair order (the order of
    the tokens that have a target): the row of the pair's input token. Per-row sums of a
    model's losses are what the bootstrap over conversations resamples."""
    flat = torch.nonzero(next_token_targets(tokens, offsets, stream) >= 0).squeeze(1)
    return torch.searchsorted(offsets.long()[1:], flat, right=True)


def save_token_set(ts: TokenSet, path: str | Path) -> None:
    atomic_torch_save({"tokens": ts.tokens.to(torch.int32), "offsets": ts.offsets.to(torch.int64),
                       "format": FORMAT}, path)


def load_token_set(path: str | Path, vocab_size: int | None = None) -> TokenSet:
    """Load and check a token cache; anything wrong is a DataError naming the file."""
    obj = torch_load(path, "token cache")
    hint = "delete it and re-run `dvc repro tokenize_cache`"
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or not {"tokens", "offsets"} <= set(obj):
        raise DataError(f"token cache {path} is not in the expected format; {hint}")
    tokens, offsets = obj["tokens"], obj["offsets"]
    if not (isinstance(tokens, torch.Tensor) and isinstance(offsets, torch.Tensor)
            and tokens.dim() == 1 and offsets.dim() == 1 and offsets.numel() >= 1
            and not tokens.is_floating_point() and not offsets.is_floating_point()):
        raise DataError(f"token cache {path} has malformed tensors; {hint}")
    tokens, offsets = tokens.long(), offsets.long()
    if int(offsets[0]) != 0 or int(offsets[-1]) != tokens.numel() or bool((offsets[1:] < offsets[:-1]).any()):
        raise DataError(f"token cache {path} has inconsistent offsets (first {int(offsets[0])}, last "
                        f"{int(offsets[-1])}, tokens {tokens.numel()}); {hint}")
    if tokens.numel() == 0:
        raise DataError(f"token cache {path} holds no tokens: the dataset is empty; check data.* params")
    if vocab_size is not None:
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= vocab_size:
            bad = int(((tokens < 0) | (tokens >= vocab_size)).sum())
            raise DataError(f"token cache {path} holds {bad} token ids outside the vocabulary "
                            f"[0, {vocab_size}) (min {lo}, max {hi}): tokenizer and model.vocab_size "
                            f"disagree; {hint}")
    return TokenSet(tokens, offsets)
