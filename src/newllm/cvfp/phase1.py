"""Phase 1: fixed-point context learning (docs/model.md, "Phase 1").

Pass 0 runs the untrained network (no noise, no update, fp32) and gives the first
contexts ``c^0``, the untrained reference and the initial EMA ``mu`` (their mean).
Passes ``k >= 1`` train, one Adam step per batch of ``phase1.batch_tokens`` tokens on
``(1-w) mean_t mean_i (c^k_t - sg(c^{k-1}_t))_i^2 + w D(C)``, with ``D`` the diversity
objective ``phase1.diversity`` of the batch's contexts ``C`` (``newllm.cvfp.objectives``),
then ``mu <- m mu + (1-m) mean(C)``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.nn.utils import clip_grad_norm_

from newllm.config import Phase1Config
from newllm.cvfp.engine import Schedule, batch_ranges, chunks, scan
from newllm.cvfp.model import CVFPModel
from newllm.cvfp.objectives import value_and_grad
from newllm.dist import SINGLE, Dist
from newllm.errors import NumericalError
from newllm.runtime import Progress, Runtime

log = logging.getLogger(__name__)

FUSE_MIN_ROWS = 256  # see Phase1Trainer._fusable


NOISE_BLOCK = 4096  # schedule positions per noise block (see PassNoise)


def noise_block_seed(seed: int, k: int, b: int) -> int:
    """The generator seed of noise block ``b`` of pass ``k``."""
    return ((seed * 1_000_003 + k) * 65_537 + b) % 2 ** 63


NOISE_SCHEME = (f"pass k, block b of {NOISE_BLOCK} schedule positions: torch.Generator seeded with "
                f"((seed*1000003+k)*65537+b) mod 2^63 (phase1.noise_block_seed)")


class PassNoise:
    """The context noise ``eps`` of one training pass, by *global schedule position*.

    Position ``p`` takes row ``p % NOISE_BLOCK`` of block ``p // NOISE_BLOCK``, a
    ``(NOISE_BLOCK, d)`` standard normal draw from a generator seeded with
    ``noise_block_seed(seed, k, b)``, times ``std``. The draws do not depend on
    ``batch_tokens``, the number of ranks or where a run was resumed, and a batch costs one
    block (12 MB at d = 768), not a pass-long ``(N, d)`` tensor (305 MB at 100k tokens)."""

    def __init__(self, seed: int, k: int, d: int, std: float, device: torch.device | str = "cpu"):
        self.seed, self.k, self.d, self.std, self.device = seed, k, d, std, torch.device(device)
        self._cache: tuple[int, torch.Tensor] | None = None

    def block(self, b: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != b:
            gen = torch.Generator().manual_seed(noise_block_seed(self.seed, self.k, b))
            self._cache = (b, (torch.randn(NOISE_BLOCK, self.d, generator=gen) * self.std).to(self.device))
        return self._cache[1]

    def rows(self, p0: int, p1: int) -> torch.Tensor:
        """``(p1 - p0, d)``: the noise of global schedule positions ``[p0, p1)``."""
        if p1 <= p0:
            return torch.zeros(0, self.d, device=self.device)
        parts = []
        for b in range(p0 // NOISE_BLOCK, (p1 - 1) // NOISE_BLOCK + 1):
            a, e = max(p0, b * NOISE_BLOCK), min(p1, (b + 1) * NOISE_BLOCK)
            parts.append(self.block(b)[a - b * NOISE_BLOCK:e - b * NOISE_BLOCK])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def pass_noise(seed: int, k: int, d: int, std: float, device: torch.device | str = "cpu") -> PassNoise | None:
    """The noise of training pass ``k`` (None when ``std`` is 0)."""
    return PassNoise(seed, k, d, std, device) if std > 0 else None


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


@dataclass
class PassRecord:
    pass_index: int
    cvfp_loss: float
    div_loss: float
    total_loss: float
    converged_frac: float
    mean_diff_mse: float
    mean_context_norm: float
    optimizer_steps: int
    time_s: float
    tokens_per_s: float

    def as_row(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Phase1State:
    """Everything a pass boundary needs to continue bitwise-identically."""
    passes_done: int = 0
    steps: int = 0
    mu: torch.Tensor | None = None
    carry: torch.Tensor | None = None       # (S, d_c) each stream slot's last context
    prev_ctx: torch.Tensor | None = None    # (N, d_c) contexts of the last completed pass
    untrained_ctx: torch.Tensor | None = None
    history: list = field(default_factory=list)
    stopped_early: bool = False


class _Step(torch.nn.Module):
    """``F_theta`` as a module of its own, so DDP can wrap exactly the trained layers."""

    def __init__(self, model: CVFPModel):
        super().__init__()
        self.layers = model.layers

    def forward(self, c: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            c, x = layer(c, x)
        return c, x


class Phase1Trainer:
    def __init__(self, model: CVFPModel, tokens: torch.Tensor, offsets: torch.Tensor,
                 cfg: Phase1Config, rt: Runtime, seed: int, dist: Dist = SINGLE):
        self.model, self.cfg, self.rt, self.seed, self.dist = model, cfg, rt, seed, dist
        self.global_sched = Schedule.build(offsets, cfg.stream)
        if dist.active:  # this rank's streams; global batch ranges map to local ones via cum
            self.sched, self.cum = self.global_sched.shard(dist.rank, dist.world)
        else:
            self.sched, self.cum = self.global_sched, None
        self.tokens = tokens.to(rt.device)
        self.params = model.layer_parameters()
        self.step_module = _Step(model)
        self.ddp = DDP(self.step_module) if dist.active else None
        self.opt = torch.optim.Adam(self.params, lr=cfg.learning_rate)
        self.scaler = rt.grad_scaler()
        self.state = Phase1State()

    def x_of(self, idx: torch.Tensor) -> torch.Tensor:
        """The input stream ``x = LN_e(E[tok])`` of flat tokens ``idx``, computed when needed
        (fp32, outside autocast, row by row the same as ``embed_all``): the embedding is frozen
        in Phase 1, and not holding ``x`` for every token saves N x d_e x 4 bytes (305 MB at
        100k tokens) for a gather and a LayerNorm per step."""
        with torch.no_grad(), torch.autocast(self.rt.device.type, enabled=False):
            return self.model.embed_tokens(self.tokens[idx]).to(self.model.ln_e.weight.dtype)

    def _noise_rows(self, noise: PassNoise | None, p0: int, p1: int) -> torch.Tensor | None:
        """This rank's noise rows for global schedule range [p0, p1), in local schedule order."""
        if noise is None:
            return None
        rows = noise.rows(p0, p1)
        if self.cum is None:
            return rows
        mine = self.global_sched.stream_of[p0:p1] % self.dist.world == self.dist.rank
        return rows[mine.to(rows.device)]

    def _local(self, p0: int, p1: int) -> tuple[int, int]:
        return (p0, p1) if self.cum is None else (int(self.cum[p0]), int(self.cum[p1]))

    # -- state for resume: always the global view, whatever the number of ranks ---------------
    def _global_carry(self, carry: torch.Tensor) -> torch.Tensor:
        if not self.dist.active:
            return carry
        full = torch.zeros(self.global_sched.num_streams, carry.shape[1], device=carry.device,
                           dtype=carry.dtype)
        full[self.dist.rank::self.dist.world] = carry
        return self.dist.sum_(full)

    def _gathered(self, t: torch.Tensor | None) -> torch.Tensor | None:
        """Per-token tensors hold zeros at other ranks' tokens: their sum is the full tensor."""
        return t if t is None or not self.dist.active else self.dist.sum_(t.clone())

    def state_dict(self) -> dict:
        """The loop state (collective under data parallelism: every rank must call it)."""
        s = self.state
        return {"passes_done": s.passes_done, "steps": s.steps, "mu": s.mu,
                "carry": None if s.carry is None else self._global_carry(s.carry),
                "prev_ctx": self._gathered(s.prev_ctx), "untrained_ctx": self._gathered(s.untrained_ctx),
                "history": s.history, "stopped_early": s.stopped_early,
                "layers": {k: v.cpu() for k, v in self.model.layers.state_dict().items()},
                "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None}

    def load_state_dict(self, d: dict) -> None:
        dev = self.rt.device
        self.model.layers.load_state_dict(d["layers"])
        self.opt.load_state_dict(d["optimizer"])
        if self.scaler and d.get("scaler"):
            self.scaler.load_state_dict(d["scaler"])
        t = lambda v: None if v is None else v.to(dev)  # noqa: E731
        carry = t(d["carry"])
        if carry is not None and self.dist.active:
            carry = carry[self.dist.rank::self.dist.world].clone()
        self.state = Phase1State(d["passes_done"], d["steps"], t(d["mu"]), carry, t(d["prev_ctx"]),
                                 t(d["untrained_ctx"]), list(d["history"]), d["stopped_early"])

    @property
    def done(self) -> bool:
        return self.state.stopped_early or self.state.passes_done >= self.cfg.max_iterations

    # -- the loop ----------------------------------------------------------------------------
    def run(self, on_pass_end=None) -> Phase1State:
        """Run remaining passes; ``on_pass_end(trainer)`` after each (rolling checkpoints)."""
        while not self.done:
            self.run_pass(self.state.passes_done)
            if on_pass_end is not None:
                on_pass_end(self)
        return self.state

    def run_pass(self, k: int) -> PassRecord:
        """Pass ``k``: pass 0 is the untrained forward (fp32 whatever the precision: it is the
        untrained reference), passes ``k >= 1`` train one optimizer step per batch."""
        cfg, st, sched, dev = self.cfg, self.state, self.sched, self.rt.device
        n, d_c = self.global_sched.num_tokens, self.model.cfg.context_dim
        train = k >= 1
        if k == 0:
            st.carry = torch.zeros(sched.num_streams, d_c, device=dev)
        noise = pass_noise(self.seed, k, d_c, cfg.context_noise_std, dev) if train else None
        cur = torch.zeros(n, d_c, device=dev) if self.dist.active else torch.empty(n, d_c, device=dev)
        sums = dict.fromkeys(("cvfp", "div", "conv", "mse", "norm"), 0.0)
        steps0 = st.steps
        prog = Progress(f"phase1 pass {k}/{cfg.max_iterations - 1}" + ("" if train else " (untrained forward)"), n)
        t0 = time.perf_counter()
        ranges = batch_ranges(n, cfg.batch_tokens) if train else batch_ranges(n, max(cfg.chunk_tokens, 65536))
        for p0, p1 in ranges:
            l0, l1 = self._local(p0, p1)
            fused = train and self._fusable(l0, l1)
            autocast = self.rt.autocast() if train else contextlib.nullcontext()
            with autocast:  # outer context: the weights' casts are cached for the whole scan
                out = scan(self.model.step, sched, l0, l1, st.carry, self.x_of, self._noise_rows(noise, p0, p1),
                           autocast=self.rt.autocast() if train else None, grad=fused)
            c_graph = out.c_out if fused else None
            c_now = out.c_out.detach().to(cur.dtype)
            self._check_contexts(c_now, k, p0, p1, sums)
            idx = sched.order[l0:l1]
            cur[idx] = c_now
            if train:
                prev = st.prev_ctx[idx]
                mse = ((c_now - prev) ** 2).mean(1)
                sums["conv"] += float((mse < cfg.convergence_threshold).sum())
                sums["mse"] += float(mse.sum())
                self._train_batch(out.c_in, idx, prev, c_now, sums, k, p0, p1, c_graph)
                batch_mean = self.dist.sum_(c_now.sum(0)) / (p1 - p0)
                st.mu = cfg.ema_momentum * st.mu + (1 - cfg.ema_momentum) * batch_mean
            prog.update(p1 - p0)
        if k == 0:
            st.untrained_ctx = cur.clone()
            st.mu = self.dist.sum_(cur.sum(0)) / n
        rec = self._record(k, sums, st.steps - steps0, time.perf_counter() - t0)
        st.prev_ctx = cur
        st.history.append(rec.as_row())
        st.passes_done = k + 1
        if train and rec.converged_frac >= cfg.min_converged_ratio:
            st.stopped_early = True
        return rec

    def _check_contexts(self, c: torch.Tensor, k: int, p0: int, p1: int, sums: dict) -> None:
        if not bool(torch.isfinite(c).all()):
            raise NumericalError(f"phase1 pass {k}: non-finite contexts (NaN/Inf) at tokens "
                                 f"{p0}-{p1} of the schedule")
        norm_sum = float(c.norm(dim=1).sum())
        if not math.isfinite(norm_sum):
            raise NumericalError(f"phase1 pass {k}: the context norm overflows (sum of |c| = "
                                 f"{norm_sum}) at tokens {p0}-{p1} of the schedule")
        sums["norm"] += norm_sum

    def _record(self, k: int, sums: dict, steps: int, seconds: float) -> PassRecord:
        """The pass's history row (figures summed over ranks); the losses of pass 0 do not exist
        (no update), so they are NaN in the row and absent from the log line."""
        n, w = self.global_sched.num_tokens, self.cfg.dist_reg_weight
        tot = dict(zip(sums, self.dist.sum_floats(*sums.values())))
        train = k >= 1
        nan = float("nan")
        cvfp, div = (tot["cvfp"] / n, tot["div"] / n) if train else (nan, nan)
        rec = PassRecord(pass_index=k, cvfp_loss=cvfp, div_loss=div, total_loss=(1 - w) * cvfp + w * div,
                         converged_frac=tot["conv"] / n if train else 0.0,
                         mean_diff_mse=tot["mse"] / n if train else nan, mean_context_norm=tot["norm"] / n,
                         optimizer_steps=steps, time_s=round(seconds, 3), tokens_per_s=round(n / seconds, 1))
        if train:
            log.info("phase1 pass %d done: cvfp %.5f %s %.4f converged %.1f%% |c| %.2f steps %d  %.1fs %.0f tok/s",
                     k, cvfp, self.cfg.diversity, div, 100 * rec.converged_frac, rec.mean_context_norm, steps,
                     seconds, rec.tokens_per_s)
        else:
            log.info("phase1 pass 0 done (untrained forward, no update): |c| %.2f  %.1fs %.0f tok/s",
                     rec.mean_context_norm, seconds, rec.tokens_per_s)
        return rec

    def _fusable(self, l0: int, l1: int) -> bool:
        """Whether the scan of local range [l0, l1) can itself be the batch's forward pass (its
        graph kept): single process, the batch within one chunk, and steps at least
        ``FUSE_MIN_ROWS`` streams wide on average, so the step-shaped backward matmuls stay
        efficient; not for autocast on CPU. Saves the second forward: 6 instead of 8 N D^2 L
        FLOPs per training pass (docs/design.md)."""
        if self.ddp is not None or not 0 < l1 - l0 <= self.cfg.chunk_tokens:
            return False
        if self.rt.device.type == "cpu" and self.rt.precision != "fp32":
            # bf16 on CPU: fused was a little faster but peaked higher (the step-sized autocast
            # copies kept for the backward fragment the heap); docs/design.md
            return False
        n_steps = int(self.sched.time_of[l1 - 1]) - int(self.sched.time_of[l0]) + 1
        return (l1 - l0) / n_steps >= FUSE_MIN_ROWS

    def _diversity(self, c_now: torch.Tensor, p0: int, p1: int) -> tuple[float, torch.Tensor | None]:
        """The batch's diversity value and its gradient with respect to this rank's contexts.
        Under data parallelism the objective sees the *global* batch (every rank's contexts,
        all-reduced into schedule order), so it equals the single-process batch exactly."""
        cfg, mu = self.cfg, self.state.mu
        need_grad = cfg.dist_reg_weight > 0
        if not self.dist.active:
            return value_and_grad(cfg.diversity, c_now, mu, cfg, need_grad, self.rt.compute_dtype)
        mine = (self.global_sched.stream_of[p0:p1] % self.dist.world == self.dist.rank).to(c_now.device)
        full = torch.zeros(p1 - p0, c_now.shape[1], dtype=c_now.dtype, device=c_now.device)
        full[mine] = c_now
        value, grad = value_and_grad(cfg.diversity, self.dist.sum_(full), mu, cfg, need_grad,
                                     self.rt.compute_dtype)
        return value, None if grad is None else grad[mine]

    def _train_batch(self, c_in: torch.Tensor, idx: torch.Tensor, prev: torch.Tensor, c_now: torch.Tensor,
                     sums: dict, k: int, p0: int, p1: int, c_graph: torch.Tensor | None = None) -> None:
        """One optimizer step on global batch [p0, p1) (every rank calls it; this rank holds ``idx``).
        Loss ``(1-w) mean_t L_cvfp + w D(C)``: ``dD/dC`` is taken once on the whole batch's
        contexts ``c_now`` and pushed through each chunk's graph as ``sum(c * dD/dC)``.
        ``c_graph``: the batch's contexts with their graph from a fused scan (no forward here)."""
        w, b = self.cfg.dist_reg_weight, p1 - p0
        div, div_grad = self._diversity(c_now, p0, p1)
        if not math.isfinite(div):
            raise NumericalError(f"phase1 pass {k}: non-finite {self.cfg.diversity} value ({div}) at "
                                 f"schedule tokens {p0}-{p1}")
        self.opt.zero_grad(set_to_none=True)
        spans = [(0, idx.numel())] if c_graph is not None else list(chunks(idx.numel(), self.cfg.chunk_tokens))
        spans = spans or [(0, 0)]
        fwd = self.ddp if self.ddp is not None else self.step_module
        for i, (a, e) in enumerate(spans):
            sync = contextlib.nullcontext() if (i == len(spans) - 1 or self.ddp is None) else self.ddp.no_sync()
            with sync:
                if c_graph is not None:
                    c, x_out = c_graph, None
                else:
                    with self.rt.autocast():
                        c, x_out = fwd(c_in[a:e], self.x_of(idx[a:e]))
                c = c.to(prev.dtype)
                l_cvfp = ((c - prev[a:e]) ** 2).mean(1)
                loss = (1 - w) * l_cvfp.sum() / b
                if div_grad is not None:
                    loss = loss + w * (c * div_grad[a:e]).sum()
                if not bool(torch.isfinite(loss)):
                    raise NumericalError(f"phase1 pass {k}: non-finite loss at schedule tokens {p0 + a}-{p0 + e} "
                                         f"(cvfp {float(l_cvfp.detach().sum()):.4g}, {self.cfg.diversity} {div:.4g})")
                if self.ddp is not None:  # DDP averages gradients over ranks (we want their sum);
                    loss = loss * self.dist.world + 0.0 * x_out.sum()  # every parameter takes part
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            sums["cvfp"] += float(l_cvfp.detach().sum())
        if self.dist.main:  # the global batch's value, counted once over the ranks
            sums["div"] += div * b
        self._step(k, p0, p1)

    def _step(self, k: int, p0: int, p1: int) -> None:
        if self.scaler:
            self.scaler.unscale_(self.opt)
        grad_norm = float(clip_grad_norm_(self.params, self.cfg.gradient_clip))
        if self.scaler is None and not math.isfinite(grad_norm):  # (fp16: the scaler skips such steps)
            raise NumericalError(f"phase1 pass {k}: non-finite gradient norm ({grad_norm}) at schedule "
                                 f"tokens {p0}-{p1}; the step was not taken")
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.state.steps += 1


def relative_change(theta0: dict, theta: dict) -> float:
    """``|theta - theta_0| / |theta_0|`` over the tensors of ``theta0``, on the CPU whatever device
    either state lives on."""
    num = math.sqrt(sum(float(((theta[k].detach().float().cpu() - v.detach().float().cpu()) ** 2).sum())
                        for k, v in theta0.items()))
    den = math.sqrt(sum(float((v.detach().float().cpu() ** 2).sum()) for v in theta0.values()))
    return num / den if den > 0 else float("nan")
