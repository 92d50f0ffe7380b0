"""The Phase 1 diversity objectives (``newllm.cvfp.objectives``): finite on any batch,
uniformity's hand-written gradient against autograd, and its bf16 matmuls."""
from __future__ import annotations

import math

import pytest
import torch

import newllm.cvfp.phase1 as p1mod
from helpers.toy import random_tokens
from newllm.config import ModelConfig, Phase1Config
from newllm.diversity import DIVERSITY
from newllm.cvfp.model import build_model
from newllm.cvfp.phase1 import Phase1Trainer
from newllm.runtime import Runtime


@pytest.mark.parametrize("diversity", tuple(DIVERSITY))
def test_every_objective_is_finite_on_a_one_token_batch(diversity):
    """A pass's last batch can hold a single token (e.g. 1,025 tokens in 1,024-token batches)."""
    from newllm.cvfp.objectives import value_and_grad
    c = torch.nn.functional.layer_norm(torch.randn(1, 8), (8,))
    value, grad = value_and_grad(diversity, c, c[0] * 0.5, Phase1Config())
    assert math.isfinite(value)
    assert grad is None or bool(torch.isfinite(grad).all())


def _plain_uniformity(c: torch.Tensor, t: float, anchors: int, group_size: int = 0) -> torch.Tensor:
    """The formula as written, left to autograd: log mean exp(-t ||z_i - z_j||^2) over the pairs
    i != j: j in the anchors (every ceil(b/K)-th row; every row for K = 0), or i and j in the
    same one of ceil(b/K) groups, row i in group i mod ceil(b/K)."""
    b = c.shape[0]
    z = torch.nn.functional.normalize(c, dim=1)
    js = list(range(b)) if anchors == 0 or b <= anchors else list(range(0, b, math.ceil(b / anchors)))
    groups = 1 if group_size == 0 or b <= group_size else math.ceil(b / group_size)
    pairs = [(i, j) for i in range(b) for j in js if i != j and i % groups == j % groups]
    d2 = torch.stack([(z[i] - z[j]).pow(2).sum() for i, j in pairs])
    return torch.logsumexp(-t * d2, 0) - math.log(len(pairs))


@pytest.mark.parametrize("b,t,anchors,group_size", [
    (2, 2.0, 0, 0), (9, 2.0, 0, 0), (64, 2.0, 0, 0), (40, 300.0, 0, 0),
    (9, 2.0, 4, 0), (64, 2.0, 16, 0), (10, 2.0, 2, 0), (40, 300.0, 7, 0),
    (9, 2.0, 0, 4), (64, 2.0, 0, 16), (10, 2.0, 0, 2), (3, 2.0, 0, 2), (40, 300.0, 0, 7), (7, 2.0, 0, 7)])
def test_uniformity_hand_written_gradient_equals_autograd(b, t, anchors, group_size):
    """uniformity's backward is written by hand (all pairs and groups: one matmul, the score
    matrix being symmetric); in float64 it is the plain formula's autograd gradient, for every
    pair, anchors and groups (uneven ones included), also where exp would underflow."""
    from newllm.cvfp.objectives import value_and_grad
    g = torch.Generator().manual_seed(b)
    c = (torch.randn(b, 12, generator=g, dtype=torch.float64) + 0.7).requires_grad_()
    want = _plain_uniformity(c, t, anchors, group_size)
    (want_grad,) = torch.autograd.grad(want, c)
    cfg = Phase1Config(uniformity_temperature=t, uniformity_anchors=anchors, uniformity_group_size=group_size)
    value, grad = value_and_grad("uniformity", c.detach(), c[0].detach(), cfg)
    assert value == pytest.approx(float(want.detach()), rel=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)


def test_uniformity_matmuls_follow_a_bf16_run(monkeypatch):
    """A bf16 run computes uniformity's two b x b matmuls in bf16 (the objective's cost; the
    reductions stay fp32): the trainer passes its autocast dtype, the gradient really changes,
    and stays within bf16 rounding of the fp32 one."""
    from newllm.cvfp import objectives
    seen = []
    real = p1mod.value_and_grad
    monkeypatch.setattr(p1mod, "value_and_grad", lambda *a: seen.append(a[-1]) or real(*a))
    ts = random_tokens(lengths=(12, 12))
    for prec in ("fp32", "bf16"):
        model = build_model(ModelConfig(context_dim=16, embed_dim=16, num_layers=1, vocab_size=50), seed=1)
        Phase1Trainer(model, ts.tokens, ts.offsets, Phase1Config(max_iterations=2, batch_tokens=8),
                      Runtime(torch.device("cpu"), prec), seed=0).run()
    assert set(seen) == {torch.float32, torch.bfloat16}

    g = torch.Generator().manual_seed(0)
    c = torch.nn.functional.layer_norm(torch.randn(256, 64, generator=g), (64,)) + 0.3
    v32, g32 = objectives.value_and_grad("uniformity", c, c[0], Phase1Config(), True, torch.float32)
    v16, g16 = objectives.value_and_grad("uniformity", c, c[0], Phase1Config(), True, torch.bfloat16)
    assert g16.dtype == torch.float32
    rel = float((g16 - g32).norm() / g32.norm())
    assert 0 < rel < 0.02
    assert v16 == pytest.approx(v32, abs=0.02)
    # every other objective ignores the dtype: its matmuls stay fp32
    _, gv = objectives.value_and_grad("vicreg", c, c[0], Phase1Config(), True, torch.bfloat16)
    torch.testing.assert_close(gv, objectives.value_and_grad("vicreg", c, c[0], Phase1Config())[1], rtol=0, atol=0)
