"""Passes with theta frozen: the measurements of Phase 1 (the untrained reference, the
validation contexts, the convergence check) and the input stream of a token set.

They always run in fp32, whatever ``runtime.precision`` trained the model (see
``frozen_passes``), and never update anything.
"""
from __future__ import annotations

import logging

import torch

from newllm.cvfp.engine import Schedule, batch_ranges, chunks, scan
from newllm.cvfp.model import CVFPModel
from newllm.runtime import Progress

log = logging.getLogger(__name__)


def embed_all(model: CVFPModel, tokens: torch.Tensor, device: torch.device, chunk: int = 16384) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.embed_tokens(tokens[a:e].to(device)).to(model.ln_e.weight.dtype)
                          for a, e in chunks(tokens.numel(), chunk)]) if tokens.numel() else \
            torch.zeros(0, model.cfg.embed_dim, device=device)


def frozen_passes(model: CVFPModel, sched: Schedule, x: torch.Tensor, passes: int,
                  carry: torch.Tensor | None = None, on_pass=None, chunk: int = 65536) -> torch.Tensor:
    """Run ``passes`` no-noise passes with theta frozen, carrying context between passes.

    Always in fp32, whatever ``runtime.precision`` trained the model: these passes are
    measurements (validation contexts, untrained references, the convergence check), and
    in bf16 the difference of two passes over the same contexts cannot fall below the
    rounding of |c| (about |c| * 2^-9), far above the check's 0.001 (docs/metrics.md).
    Returns the last pass's contexts (N, d_c) in flat order; ``on_pass(j, ctx)`` sees each."""
    d_c = model.cfg.context_dim
    n = sched.num_tokens
    if carry is None:
        carry = torch.zeros(sched.num_streams, d_c, device=x.device)
    carry = carry.float()
    ctx = torch.empty(n, d_c, device=x.device)
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        for j in range(passes):
            prog = Progress(f"frozen pass {j + 1}/{passes}", n)
            for p0, p1 in batch_ranges(n, chunk):
                out = scan(model.step, sched, p0, p1, carry, lambda idx: x[idx].float())
                ctx[sched.order[p0:p1]] = out.c_out
                prog.update(p1 - p0)
            if on_pass is not None:
                on_pass(j, ctx)
    return ctx


def convergence_diffs(model: CVFPModel, sched: Schedule, x: torch.Tensor, contexts: torch.Tensor,
                      passes: int) -> list[float]:
    """The convergence check: ``passes`` more frozen fp32 passes after ``contexts`` (N, d_c),
    carrying each stream's last context; ``diff_j`` = mean over tokens of ``|c^j - c^(j-1)|_2``.
    ``contexts`` is overwritten, pass by pass, and ends as the last pass's contexts."""
    carry = contexts[sched.last_index()].clone()
    diffs: list[float] = []

    def on_pass(j: int, ctx: torch.Tensor) -> None:
        diffs.append(float((ctx - contexts).norm(dim=1).mean()))
        contexts.copy_(ctx)
        log.info("convergence check pass %d/%d: mean |c_j - c_(j-1)| = %.6g", j + 1, passes, diffs[-1])

    frozen_passes(model, sched, x, passes, carry=carry, on_pass=on_pass)
    return diffs
