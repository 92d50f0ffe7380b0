"""The fused linear cross-entropy and the row-blocked cross-entropy (``newllm.lm_loss``) equal
``F.cross_entropy``: loss, top-1 hits and gradients."""
from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("dtype,cd,tol", [(torch.float64, None, 1e-12), (torch.float32, torch.bfloat16, 2e-2)])
def test_fused_linear_cross_entropy_equals_f_cross_entropy(dtype, cd, tol):
    from torch.nn import functional as Fn

    from newllm.lm_loss import LinearCrossEntropy
    g = torch.Generator().manual_seed(0)
    h0, w0, b0 = (torch.randn(*s, generator=g, dtype=dtype) for s in ((7, 5), (11, 5), (11,)))
    y = torch.randint(0, 11, (7,), generator=g)
    grads = []
    for fused in (True, False):
        h, w, b = (t.clone().requires_grad_() for t in (h0, w0, b0))
        loss = LinearCrossEntropy.apply(h, w, b, y, cd) if fused else \
            Fn.cross_entropy(Fn.linear(h, w, b), y, reduction="sum")
        (loss * 0.3).backward()
        grads.append((loss.detach(), h.grad, w.grad, b.grad))
    for a, b in zip(*grads):
        assert a.dtype == b.dtype and torch.allclose(a, b, atol=tol, rtol=tol), (a, b)


@pytest.mark.parametrize("block_bytes", [1, 4 * 11 * 3, 1 << 30])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_ce_rows_in_blocks_equals_cross_entropy_and_argmax(monkeypatch, block_bytes, dtype):
    """Loss, top-1 hits and the in-place gradient do not depend on the row-block size;
    ties count as hits only at the first maximal index (argmax's rule)."""
    from torch.nn import functional as Fn

    import newllm.lm_loss as p2
    monkeypatch.setattr(p2, "CE_BLOCK_BYTES", block_bytes)
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(10, 11, generator=g, dtype=torch.float64).to(dtype)
    z0[0, 2] = z0[0, 7] = z0[0].max() + 1  # a tie: argmax is 2
    y = torch.randint(0, 11, (10,), generator=g)
    y[0], y[1] = 7, int(z0[1].argmax())
    ref = z0.double()
    z = z0.clone()
    loss, hits = p2.ce_rows(z, y, grad=True)
    want = Fn.cross_entropy(ref, y, reduction="sum")
    grad = torch.softmax(ref, 1) - Fn.one_hot(y, 11).double()
    tol = 1e-12 if dtype == torch.float64 else 1e-2
    assert abs(float(loss) - float(want)) < tol * 10
    assert int(hits) == int((ref.argmax(1) == y).sum()) and int(hits) >= 1  # row 1 is a hit, row 0 not
    assert torch.allclose(z.double(), grad, atol=tol)
