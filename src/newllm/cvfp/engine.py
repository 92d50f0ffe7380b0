"""The stream/scan engine shared by Phase 1, validation and Phase 2.

A *stream* carries its context from token to token (docs/model.md, "Streams and
passes"). Streams advance in lockstep: position ``t`` of every stream that is
long enough is processed in one batched ``F`` call. Streams are sorted by length
(descending), so the streams active at position ``t`` are a prefix ``[0, n_t)``.

The *schedule order* of the tokens is position-major: all streams' position 0,
then all streams' position 1, ... An optimizer batch is a contiguous range of
that order. Because the context entering each step is detached, the loss of
every token in a batch depends only on its own ``(sg(c_{t-1}), x_t)``: a no-grad
scan gives those inputs, then one batched forward+backward over the batch's
tokens (in memory-bounding chunks) gives exactly the per-token loop's gradient.
``reference`` is that per-token loop, kept for the tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Schedule:
    order: torch.Tensor        # (N,) flat token index at each schedule position
    pos_starts: torch.Tensor   # (T+1,) schedule positions of time step t: [pos_starts[t], pos_starts[t+1])
    stream_of: torch.Tensor    # (N,) stream slot (sorted order) of each schedule position
    time_of: torch.Tensor      # (N,) time step t of each schedule position
    stream_first: torch.Tensor  # (S,) flat index of each stream slot's first token
    stream_len: torch.Tensor   # (S,) length of each stream slot (descending)

    @property
    def num_tokens(self) -> int:
        return int(self.order.numel())

    @property
    def num_streams(self) -> int:
        return int(self.stream_len.numel())

    @classmethod
    def build(cls, offsets: torch.Tensor, mode: str) -> "Schedule":
        """``mode='sample'``: every sample is a stream; ``'corpus'``: one stream of all tokens."""
        offsets = offsets.long()
        n = int(offsets[-1])
        if mode == "corpus":
            starts, lens = torch.zeros(1, dtype=torch.long), torch.tensor([n])
        elif mode == "sample":
            starts, lens = offsets[:-1], offsets[1:] - offsets[:-1]
            keep = lens > 0
            starts, lens = starts[keep], lens[keep]
        else:
            raise ValueError(f"unknown stream mode {mode!r}")
        # stable sort by length descending keeps sample order among equal lengths
        perm = torch.sort(-lens, stable=True).indices
        return cls._from_streams(starts[perm], lens[perm])

    @classmethod
    def _from_streams(cls, starts: torch.Tensor, lens: torch.Tensor) -> "Schedule":
        """Schedule of streams already sorted by length, descending."""
        n = int(lens.sum())
        t_max = int(lens[0]) if lens.numel() else 0
        # n_t = number of streams with length > t
        counts = (lens.unsqueeze(0) > torch.arange(t_max).unsqueeze(1)).sum(1) if t_max \
            else torch.zeros(0, dtype=torch.long)
        pos_starts = torch.zeros(t_max + 1, dtype=torch.long)
        pos_starts[1:] = torch.cumsum(counts, 0)
        time_of = torch.repeat_interleave(torch.arange(t_max), counts)
        stream_of = torch.arange(n) - pos_starts[time_of]
        order = starts[stream_of] + time_of
        return cls(order, pos_starts, stream_of, time_of, starts, lens)

    def shard(self, rank: int, world: int) -> tuple["Schedule", torch.Tensor]:
        """The streams of one data-parallel rank (slots j with j % world == rank).

        Returns the rank's schedule and ``cum`` (N+1,): the global schedule range [p0, p1)
        is the rank's local range [cum[p0], cum[p1]) (the global order restricted to the
        rank's streams is the local order)."""
        keep = torch.arange(self.num_streams) % world == rank
        local = Schedule._from_streams(self.stream_first[keep], self.stream_len[keep])
        mine = (self.stream_of % world == rank).long()
        cum = torch.zeros(self.num_tokens + 1, dtype=torch.long)
        cum[1:] = torch.cumsum(mine, 0)
        return local, cum

    def steps(self, p0: int, p1: int) -> Iterator[tuple[int, int, int, int]]:
        """Time steps covering schedule range [p0, p1): yields (t, a, b, j0) with schedule
        positions [a, b) and stream slots [j0, j0 + b - a)."""
        if p1 <= p0:
            return
        t = int(self.time_of[p0])
        while True:
            a = max(p0, int(self.pos_starts[t]))
            b = min(p1, int(self.pos_starts[t + 1]))
            yield t, a, b, a - int(self.pos_starts[t])
            if b >= p1:
                return
            t += 1

    def last_index(self) -> torch.Tensor:
        """(S,) flat index of each stream slot's last token."""
        return self.stream_first + self.stream_len - 1


def batch_ranges(n: int, batch_tokens: int) -> list[tuple[int, int]]:
    """Contiguous schedule ranges of ``batch_tokens`` (0 = one range of all ``n``)."""
    if batch_tokens <= 0 or batch_tokens >= n:
        return [(0, n)]
    return [(p, min(p + batch_tokens, n)) for p in range(0, n, batch_tokens)]


@dataclass
class ScanOut:
    c_in: torch.Tensor              # (b, d_c) context entering each token (noise included), schedule order
    c_out: torch.Tensor             # (b, d_c) context after F
    x_out: torch.Tensor | None      # (b, d_e) token stream after F, when asked


def scan(step: StepFn, sched: Schedule, p0: int, p1: int, carry: torch.Tensor,
         x_of: Callable[[torch.Tensor], torch.Tensor], noise: torch.Tensor | None = None,
         keep_x: bool = False, autocast=None, grad: bool = False) -> ScanOut:
    """Sequential scan of schedule range [p0, p1), updating ``carry`` (S, d_c) in place.

    ``x_of(flat_idx)`` gives the input stream for tokens; ``noise`` (p1 - p0, d_c), the rows of
    the range in schedule order, is added to the carried context for t > 0. No gradient by default; with
    ``grad`` the returned ``c_out`` carries the autograd graph of every step (each step's
    input context is still detached, so this is the batched forward of the range computed
    step by step: Phase 1 uses it to skip a second forward when the steps are wide).
    """
    b = p1 - p0
    d_c = carry.shape[1]
    c_in = torch.empty(b, d_c, dtype=carry.dtype, device=carry.device)
    c_out = None if grad else torch.empty_like(c_in)
    pieces = []
    x_out = None
    with torch.set_grad_enabled(grad):
        for t, a, e, j0 in sched.steps(p0, p1):
            j1 = j0 + (e - a)
            idx = sched.order[a:e]
            c = carry[j0:j1]
            if noise is not None and t > 0:
                c = c + noise[a - p0:e - p0]
            x = x_of(idx)
            with autocast if autocast is not None else _null():
                c2, x2 = step(c, x)
            c_in[a - p0:e - p0] = c
            if grad:
                pieces.append(c2)
            else:
                c_out[a - p0:e - p0] = c2
            carry[j0:j1] = c2.detach()
            if keep_x:
                if x_out is None:
                    x_out = torch.empty(b, x2.shape[1], dtype=torch.float32, device=carry.device)
                x_out[a - p0:e - p0] = x2.detach()
    if grad:
        c_out = torch.cat(pieces) if pieces else torch.empty(0, d_c, dtype=carry.dtype, device=carry.device)
    return ScanOut(c_in, c_out, x_out)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for a in range(0, n, size):
        yield a, min(a + size, n)
