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
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from newllm.config import Phase1Config
from newllm.cvfp.engine import Schedule, batch_ranges, chunks, scan
from newllm.cvfp.model import CVFPModel
from newllm.cvfp.noise import pass_noise, rank_rows
from newllm.cvfp.objectives import fixed_point_term, phase1_loss, value_and_grad
from newllm.dist import SINGLE, Dist
from newllm.errors import NumericalError
from newllm.runtime import Progress, Runtime
from newllm.train.core import Trainer
from newllm.train.optim import OptimSpec

log = logging.getLogger(__name__)

FUSE_MIN_ROWS = 256  # see Phase1Trainer._fusable


@dataclass
class Phase1Contexts:
    """The contexts a pass boundary needs to continue bit for bit (beside the loop state)."""
    mu: torch.Tensor | None = None
    carry: torch.Tensor | None = None       # (S, d_c) each stream slot's last context
    prev_ctx: torch.Tensor | None = None    # (N, d_c) contexts of the last completed pass
    untrained_ctx: torch.Tensor | None = None


class _Step(torch.nn.Module):
    """``F_theta`` as a module of its own, so DDP can wrap exactly the trained layers."""

    def __init__(self, model: CVFPModel):
        super().__init__()
        self.layers = model.layers

    def forward(self, c: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            c, x = layer(c, x)
        return c, x


class Phase1Trainer(Trainer):
    name, unit = "phase1", "pass"

    def __init__(self, model: CVFPModel, tokens: torch.Tensor, offsets: torch.Tensor,
                 cfg: Phase1Config, rt: Runtime, seed: int, dist: Dist = SINGLE):
        self.model, self.cfg, self.seed, self.dist = model, cfg, seed, dist
        self.global_sched = Schedule.build(offsets, cfg.stream)
        if dist.active:  # this rank's streams; global batch ranges map to local ones via cum
            self.sched, self.cum = self.global_sched.shard(dist.rank, dist.world)
        else:
            self.sched, self.cum = self.global_sched, None
        self.tokens = tokens.to(rt.device)
        self.step_module = _Step(model)
        self.ddp = DDP(self.step_module) if dist.active else None
        self.ctx = Phase1Contexts()
        # no kept epoch: the fixed point is the last pass's network
        super().__init__(model.layer_parameters(), OptimSpec.of(cfg), rt, cfg.max_iterations, keep_best=False)

    def steps_per_unit(self) -> int:
        return len(batch_ranges(self.global_sched.num_tokens, self.cfg.batch_tokens))

    def converged(self, record: dict) -> bool:
        return record["pass_index"] >= 1 and record["converged_frac"] >= self.cfg.min_converged_ratio

    def saved_module(self) -> torch.nn.Module:
        return self.model.layers

    def x_of(self, idx: torch.Tensor) -> torch.Tensor:
        """The input stream ``x = LN_e(E[tok])`` of flat tokens ``idx``, computed when needed
        (fp32, outside autocast, row by row the same as ``embed_all``): the embedding is frozen
        in Phase 1, and not holding ``x`` for every token saves N x d_e x 4 bytes for a gather
        and a LayerNorm per step."""
        with torch.no_grad(), torch.autocast(self.rt.device.type, enabled=False):
            return self.model.embed_tokens(self.tokens[idx]).to(self.model.ln_e.weight.dtype)

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

    def extra_state(self) -> dict:
        """The contexts, in the global view (collective under data parallelism: every rank calls it)."""
        c = self.ctx
        return {"mu": c.mu, "carry": None if c.carry is None else self._global_carry(c.carry),
                "prev_ctx": self._gathered(c.prev_ctx), "untrained_ctx": self._gathered(c.untrained_ctx)}

    def load_extra_state(self, d: dict) -> None:
        t = lambda v: None if v is None else v.to(self.rt.device)  # noqa: E731
        carry = t(d["carry"])
        if carry is not None and self.dist.active:
            carry = carry[self.dist.rank::self.dist.world].clone()
        self.ctx = Phase1Contexts(t(d["mu"]), carry, t(d["prev_ctx"]), t(d["untrained_ctx"]))

    # -- one pass ------------------------------------------------------------------------------
    def run_unit(self, k: int) -> dict:
        """Pass ``k``: pass 0 is the untrained forward (fp32 whatever the precision: it is the
        untrained reference), passes ``k >= 1`` train one optimizer step per batch."""
        cfg, ctx, sched, dev = self.cfg, self.ctx, self.sched, self.rt.device
        n, d_c = self.global_sched.num_tokens, self.model.cfg.context_dim
        train = k >= 1
        if k == 0:
            ctx.carry = torch.zeros(sched.num_streams, d_c, device=dev)
        noise = pass_noise(self.seed, k, d_c, cfg.context_noise_std, dev) if train else None
        cur = torch.zeros(n, d_c, device=dev) if self.dist.active else torch.empty(n, d_c, device=dev)
        sums = dict.fromkeys(("cvfp", "div", "conv", "mse", "norm"), 0.0)
        steps0 = self.state.steps
        prog = Progress(f"phase1 pass {k}/{cfg.max_iterations - 1}" + ("" if train else " (untrained forward)"), n)
        t0 = time.perf_counter()
        ranges = batch_ranges(n, cfg.batch_tokens) if train else batch_ranges(n, max(cfg.chunk_tokens, 65536))
        for p0, p1 in ranges:
            l0, l1 = self._local(p0, p1)
            fused = train and self._fusable(l0, l1)
            autocast = self.rt.autocast() if train else contextlib.nullcontext()
            with autocast:  # outer context: the weights' casts are cached for the whole scan
                out = scan(self.model.step, sched, l0, l1, ctx.carry, self.x_of, rank_rows(noise, p0, p1, self.global_sched, self.dist),
                           autocast=self.rt.autocast() if train else None, grad=fused)
            c_graph = out.c_out if fused else None
            c_now = out.c_out.detach().to(cur.dtype)
            self._check_contexts(c_now, k, p0, p1, sums)
            idx = sched.order[l0:l1]
            cur[idx] = c_now
            if train:
                prev = ctx.prev_ctx[idx]
                mse = ((c_now - prev) ** 2).mean(1)
                sums["conv"] += float((mse < cfg.convergence_threshold).sum())
                sums["mse"] += float(mse.sum())
                self._train_batch(out.c_in, idx, prev, c_now, sums, k, p0, p1, c_graph)
                batch_mean = self.dist.sum_(c_now.sum(0)) / (p1 - p0)
                ctx.mu = cfg.ema_momentum * ctx.mu + (1 - cfg.ema_momentum) * batch_mean
            prog.update(p1 - p0)
        if k == 0:
            ctx.untrained_ctx = cur.clone()
            ctx.mu = self.dist.sum_(cur.sum(0)) / n
        ctx.prev_ctx = cur
        return self._record(k, sums, self.state.steps - steps0, time.perf_counter() - t0)

    def _check_contexts(self, c: torch.Tensor, k: int, p0: int, p1: int, sums: dict) -> None:
        if not bool(torch.isfinite(c).all()):
            raise NumericalError(f"phase1 pass {k}: non-finite contexts (NaN/Inf) at tokens "
                                 f"{p0}-{p1} of the schedule")
        norm_sum = float(c.norm(dim=1).sum())
        if not math.isfinite(norm_sum):
            raise NumericalError(f"phase1 pass {k}: the context norm overflows (sum of |c| = "
                                 f"{norm_sum}) at tokens {p0}-{p1} of the schedule")
        sums["norm"] += norm_sum

    def _record(self, k: int, sums: dict, steps: int, seconds: float) -> dict:
        """The pass's history row (figures summed over ranks); the losses of pass 0 do not exist
        (no update), so they are NaN in the row and absent from the log line."""
        n, w = self.global_sched.num_tokens, self.cfg.dist_reg_weight
        tot = dict(zip(sums, self.dist.sum_floats(*sums.values())))
        train = k >= 1
        nan = float("nan")
        cvfp, div = (tot["cvfp"] / n, tot["div"] / n) if train else (nan, nan)
        rec = {"pass_index": k, "cvfp_loss": cvfp, "div_loss": div, "total_loss": phase1_loss(cvfp, div, w, 1),
               "converged_frac": tot["conv"] / n if train else 0.0,
               "mean_diff_mse": tot["mse"] / n if train else nan, "mean_context_norm": tot["norm"] / n,
               "optimizer_steps": steps, "time_s": round(seconds, 3), "tokens_per_s": round(n / seconds, 1)}
        if train:
            log.info("phase1 pass %d done: cvfp %.5f %s %.4f converged %.1f%% |c| %.2f steps %d  %.1fs %.0f tok/s",
                     k, cvfp, self.cfg.diversity, div, 100 * rec["converged_frac"], rec["mean_context_norm"], steps,
                     seconds, rec["tokens_per_s"])
        else:
            log.info("phase1 pass 0 done (untrained forward, no update): |c| %.2f  %.1fs %.0f tok/s",
                     rec["mean_context_norm"], seconds, rec["tokens_per_s"])
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
        cfg, mu = self.cfg, self.ctx.mu
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
                l_cvfp = fixed_point_term(c, prev[a:e])
                loss = phase1_loss(l_cvfp.sum(), 0.0 if div_grad is None else (c * div_grad[a:e]).sum(), w, b)
                if not bool(torch.isfinite(loss)):
                    raise NumericalError(f"phase1 pass {k}: non-finite loss at schedule tokens {p0 + a}-{p0 + e} "
                                         f"(cvfp {float(l_cvfp.detach().sum()):.4g}, {self.cfg.diversity} {div:.4g})")
                if self.ddp is not None:  # DDP averages gradients over ranks (we want their sum);
                    loss = loss * self.dist.world + 0.0 * x_out.sum()  # every parameter takes part
                self.backward(loss)
            sums["cvfp"] += float(l_cvfp.detach().sum())
        if self.dist.main:  # the global batch's value, counted once over the ranks
            sums["div"] += div * b
        self.step(f"phase1 pass {k}, schedule tokens {p0}-{p1}")


def relative_change(theta0: dict, theta: dict) -> float:
    """``|theta - theta_0| / |theta_0|`` over the tensors of ``theta0``, on the CPU whatever device
    either state lives on."""
    num = math.sqrt(sum(float(((theta[k].detach().float().cpu() - v.detach().float().cpu()) ** 2).sum())
                        for k, v in theta0.items()))
    den = math.sqrt(sum(float((v.detach().float().cpu() ** 2).sum()) for v in theta0.values()))
    return num / den if den > 0 else float("nan")
