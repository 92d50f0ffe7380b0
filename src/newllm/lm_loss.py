"""The next-token loss of every language model here (CVFP's Phase 2 and the transformer
baseline): a head ``h W^T + b`` fused with the cross-entropy so that the chunk x vocabulary
logits exist once (``LinearCrossEntropy``), the same blocks for evaluation (``ce_rows``), the
embedding lookup whose gradient reuses a buffer (``GatherRows``), and the figures of a split
(``Scores``)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CE_BLOCK_BYTES = 3 << 20  # CPU: fp32 softmax workspace per row block (stays in L2/L3 across its passes)
CE_ROWS_CUDA = 256        # GPU: rows per block (bounds the fp32 temporaries)


def ce_block_rows(z: torch.Tensor) -> int:
    """Rows of logits taken at a time by the softmax. On CPU a block small enough for the
    cache: every pass (upcast, max, exp, sum, divide, downcast) then runs from cache
    (docs/results.md, "Phase 2's head")."""
    if z.device.type != "cpu":
        return CE_ROWS_CUDA
    return max(1, CE_BLOCK_BYTES // (4 * max(z.shape[1], 1)))


class LinearCrossEntropy(torch.autograd.Function):
    """``sum_i CE(h_i W^T + b, y_i)`` holding one ``(n, V)`` buffer instead of four.

    The forward computes the logits (matmul in ``compute_dtype``), the summed loss (softmax
    in fp32, or in the parameters' dtype when that is wider, a few rows at a time, see
    ``ce_block_rows``) and, in the same buffer and in place, its gradient with respect to
    the logits (``softmax - onehot``); the backward only multiplies that buffer into the
    input/weight/bias gradients (the bias gradient, a column sum, as a matmul with ones).
    Mathematically ``F.cross_entropy(head(h), y, reduction="sum")``; it exists because the
    chunk x vocabulary logits, their log-softmax and their gradients dominate Phase 2's
    memory.
    """

    @staticmethod
    def forward(ctx, h, weight, bias, target, compute_dtype, weight_cast=None, ws=None):
        with torch.autocast(h.device.type, enabled=False):
            cd = compute_dtype or weight.dtype
            hc = h.to(cd)
            wc = weight_cast if weight_cast is not None else weight.to(cd)  # the batch's cast, if given
            if ws is not None and ws.busy:  # a second forward before the backward: no sharing
                ws = None
            z = head_logits(hc, wc, ws)                # (n, V) logits without the bias
            loss, _ = ce_rows(z, target, grad=True, bias=bias)  # z is now d loss / d logits
            if ws is not None:
                ws.busy = True
        ctx.save_for_backward(hc, wc, z)
        ctx.dtypes = (h.dtype, weight.dtype, bias.dtype)
        ctx.ws = ws
        return loss.to(weight.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        hc, wc, g = ctx.saved_tensors
        h_dt, w_dt, b_dt = ctx.dtypes
        ws = ctx.ws
        gh = gw = gb = None
        with torch.autocast(g.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                gh = (g @ wc).to(h_dt).mul_(grad_loss.to(h_dt))
            if ctx.needs_input_grad[1]:
                shape = (g.shape[1], hc.shape[1])
                if ws is None:
                    gw = (g.t() @ hc).to(w_dt).mul_(grad_loss.to(w_dt))
                elif g.dtype == w_dt:  # fp32: scale the (n, d) input, not the (V, d) product
                    gw = torch.mm(g.t(), hc * grad_loss.to(w_dt), out=ws.held("grad_weight_out", shape, w_dt, g.device))
                else:
                    gw_c = torch.mm(g.t(), hc, out=ws.get("grad_weight", shape, g.dtype, g.device))
                    gw = ws.held("grad_weight_out", shape, w_dt, g.device)
                    gw.copy_(gw_c).mul_(grad_loss.to(w_dt))
            if ctx.needs_input_grad[2]:  # the column sum as a matmul: much faster than a dim-0 sum
                ones = torch.ones(1, g.shape[0], dtype=g.dtype, device=g.device)
                gb = (ones @ g).squeeze(0).to(b_dt).mul_(grad_loss.to(b_dt))
        if ws is not None:
            ws.busy = False
        return gh, gw, gb, None, None, None, None


class HeadWorkspace:
    """Buffers the head reuses from chunk to chunk (logits, the weight-gradient product, the
    weight cast). A fresh chunk x vocabulary buffer per chunk would cost its page faults every
    time (glibc serves it by mmap)."""

    def __init__(self):
        self._bufs: dict[str, torch.Tensor] = {}
        self._held: dict[str, torch.Tensor] = {}
        self.busy = False  # the logits buffer holds a chunk whose backward has not run yet

    def get(self, name: str, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        n = math.prod(shape)
        t = self._bufs.get(name)
        if t is None or t.dtype != dtype or t.device != device or t.numel() < n:
            t = self._bufs[name] = torch.empty(n, dtype=dtype, device=device)
        return t[:n].view(shape)

    def held(self, name: str, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A buffer returned as a gradient. The workspace keeps a reference to the very tensor,
        so autograd's AccumulateGrad never adopts it as ``.grad`` (it copies it when ``.grad``
        is None and adds it in place otherwise); the next chunk may then overwrite it."""
        t = self.get(name, shape, dtype, device)
        self._held[name] = t
        return t

    def clear(self) -> None:
        self._bufs.clear()
        self._held.clear()
        self.busy = False


class GatherRows(torch.autograd.Function):
    """``weight[idx]`` (the embedding lookup) whose weight gradient goes into a reused dense
    buffer of the workspace (zeroed, then ``index_add_``) instead of the fresh ``V x d``
    tensor ``nn.Embedding``'s backward allocates (and page-faults in) at every call."""

    @staticmethod
    def forward(ctx, weight, idx, ws):
        ctx.save_for_backward(idx)
        ctx.meta = (tuple(weight.shape), weight.dtype, weight.device, ws)
        return weight.index_select(0, idx)

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        shape, dtype, device, ws = ctx.meta
        gw = ws.held("grad_embed", shape, dtype, device).zero_()
        gw.index_add_(0, idx, g.to(dtype))
        return gw, None, None


def head_logits(h: torch.Tensor, w: torch.Tensor, ws: HeadWorkspace | None = None) -> torch.Tensor:
    """``h @ w.T`` (no bias: ``ce_rows`` adds it block by block, in fp32), into the
    workspace's logits buffer when one is given."""
    if ws is None:
        return h @ w.t()
    return torch.mm(h, w.t(), out=ws.get("logits", (h.shape[0], w.shape[0]), h.dtype, h.device))


def ce_rows(z: torch.Tensor, target: torch.Tensor, grad: bool = False, bias: torch.Tensor | None = None,
            per_row: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed CE of logits ``z + bias`` (n, V) and the number of rows whose first maximal logit
    is the target (top-1 hits), a block of ``ce_block_rows`` rows at a time in fp32 (or
    ``z``'s dtype when wider); ``per_row`` (n,), when given, receives each row's CE. Overwrites
    ``z``: with ``grad`` it becomes ``softmax(z + bias) - onehot(target)`` in ``z``'s own dtype."""
    acc = torch.float32 if z.dtype in (torch.bfloat16, torch.float16) else z.dtype
    bias = None if bias is None else bias.detach().to(acc)
    loss = torch.zeros((), dtype=acc, device=z.device)
    hits = torch.zeros((), dtype=torch.long, device=z.device)
    step = ce_block_rows(z)
    # one upcast buffer for all blocks (z's own memory when z is already fp32/fp64)
    blk = None if acc == z.dtype else torch.empty(min(step, z.shape[0]), z.shape[1], dtype=acc, device=z.device)
    for r0 in range(0, z.shape[0], step):
        r1 = min(r0 + step, z.shape[0])
        zs = z[r0:r1]
        zb = zs if blk is None else blk[:r1 - r0].copy_(zs)
        if bias is not None:
            zb.add_(bias)
        rows = torch.arange(r1 - r0, device=z.device)
        t = target[r0:r1]
        picked = zb[rows, t]
        m, top = zb.max(1, keepdim=True)  # first maximal index, as argmax
        hits += (top.squeeze(1) == t).sum()
        zb.sub_(m).exp_()
        tot = zb.sum(1, keepdim=True)
        row_ce = (m + tot.log()).squeeze(1) - picked
        loss += row_ce.sum()
        if per_row is not None:
            per_row[r0:r1] = row_ce
        if grad:
            zb.div_(tot)
            zb[rows, t] -= 1
            if blk is not None:
                zs.copy_(zb)
    return loss, hits


@dataclass
class Scores:
    """A language model's figures on one split: mean CE (nats) and top-1 accuracy over its
    ``targets`` next-token pairs, and, when asked for, each pair's CE in flat pair order
    (``newllm.data.tokens.pair_rows`` gives their rows)."""
    loss: float
    acc: float
    targets: int
    pair_ce: torch.Tensor | None = None

    @property
    def ppl(self) -> float:
        return ppl(self.loss)


def ppl(loss: float) -> float:
    """Perplexity, capped so a diverged loss stays a finite JSON number."""
    return math.exp(min(loss, 700.0))
