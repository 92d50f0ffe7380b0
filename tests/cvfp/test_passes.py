"""The frozen passes behind validate_rank's convergence check (``newllm.cvfp.passes``)."""
from __future__ import annotations

import pytest
import torch

from helpers.toy import TINY_MODEL, random_tokens
from newllm.cvfp.engine import Schedule
from newllm.cvfp.model import build_model
from newllm.runtime import Runtime

TINY = TINY_MODEL


@pytest.mark.parametrize("mode", ["sample", "corpus"])
def test_convergence_diffs_match_a_per_token_loop(mode):
    """validate_rank's final_diff: frozen passes carrying each stream's last context, diff_j =
    mean |c^j - c^(j-1)|, checked against a plain loop over streams and tokens."""
    from newllm.cvfp.passes import convergence_diffs, embed_all
    ts = random_tokens()
    model = build_model(TINY, seed=4)
    rt = Runtime(torch.device("cpu"), "fp32")
    x = embed_all(model, ts.tokens, rt.device)
    start = torch.randn(ts.num_tokens, TINY.context_dim, generator=torch.Generator().manual_seed(1))
    diffs = convergence_diffs(model, Schedule.build(ts.offsets, mode), x, start.clone(), 3)
    off = ts.offsets.tolist()
    streams = [(0, off[-1])] if mode == "corpus" else [(off[i], off[i + 1]) for i in range(len(off) - 1)]
    prev, expected = start.clone(), []
    with torch.no_grad():
        for _ in range(3):
            cur = torch.empty_like(prev)
            for a, e in streams:
                c = prev[e - 1:e]
                for i in range(a, e):
                    c, _ = model.step(c, x[i:i + 1])
                    cur[i] = c[0]
            expected.append(float((cur - prev).norm(dim=1).mean()))
            prev = cur
    assert diffs == pytest.approx(expected, rel=1e-5)
    assert expected[0] > 0
