"""Token sets for the tests (from explicit samples, or random ids of given lengths), the token
caches a stage reads, and the gate Phase 2 reads."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from newllm.config import ModelConfig
from newllm.data.tokens import TokenSet

# the smallest model the trainer tests use (d_e differs from d_c, so a transposed matrix shows)
TINY_MODEL = ModelConfig(context_dim=8, embed_dim=6, num_layers=2, vocab_size=50)


def from_lists(samples: list[list[int]]) -> TokenSet:
    lengths = torch.tensor([len(s) for s in samples], dtype=torch.int64)
    offsets = torch.zeros(len(samples) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    return TokenSet(torch.tensor([t for s in samples for t in s], dtype=torch.int64), offsets)


def random_tokens(seed: int = 0, lengths=(7, 3, 9, 1, 5), vocab: int = 50) -> TokenSet:
    g = torch.Generator().manual_seed(seed)
    return from_lists([torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths])


def write_token_caches(root: Path | str = ".", train=(12, 9, 16, 5, 12), val=(10, 7, 11), test=(9, 8),
                       vocab: int = 64) -> None:
    """The three token caches (``data/tokens/{train,val,test}.pt`` under ``root``) of random ids
    with the given sample lengths, seeded 0, 1 and 2: what tokenize_cache would have written."""
    from newllm import paths
    from newllm.data.tokens import save_token_set

    for seed, (path, lengths) in enumerate(((paths.TOKENS_TRAIN, train), (paths.TOKENS_VAL, val),
                                            (paths.TOKENS_TEST, test))):
        save_token_set(random_tokens(seed, lengths, vocab), Path(root) / path)


def write_gate(passed: bool = True) -> None:
    """What phase2_lm reads besides the Phase 1 outputs and the token caches, in the current
    directory: the gate."""
    from newllm import paths

    paths.GATE.parent.mkdir(parents=True, exist_ok=True)
    paths.GATE.write_text(json.dumps({"passed": passed, "phase1_model": "x"}))
