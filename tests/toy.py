"""Token sets for the tests: from explicit samples, or random ids of given lengths."""
from __future__ import annotations

import torch

from newllm.data.tokens import TokenSet


def from_lists(samples: list[list[int]]) -> TokenSet:
    lengths = torch.tensor([len(s) for s in samples], dtype=torch.int64)
    offsets = torch.zeros(len(samples) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    return TokenSet(torch.tensor([t for s in samples for t in s], dtype=torch.int64), offsets)


def random_tokens(seed: int = 0, lengths=(7, 3, 9, 1, 5), vocab: int = 50) -> TokenSet:
    g = torch.Generator().manual_seed(seed)
    return from_lists([torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths])


def phase2_inputs(passed: bool = True) -> None:
    """What phase2_lm reads besides the Phase 1 outputs and the token caches, in the current
    directory: the gate."""
    import json

    from newllm import paths

    paths.GATE.parent.mkdir(parents=True, exist_ok=True)
    paths.GATE.write_text(json.dumps({"passed": passed, "phase1_model": "x"}))
