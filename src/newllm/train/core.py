"""The training core of Phase 1, Phase 2 and the transformer baseline.

A trainer subclasses ``Trainer`` and keeps only its batch maths: ``run_unit(k)`` trains epoch
(or pass) ``k`` and returns its record, calling ``backward`` and ``step`` for every optimizer
step. The core holds the rest, once:

- the loop (``run``) and its state (``LoopState``): epochs done, optimizer steps, the history,
  early stopping and the kept weights. With ``keep_best`` the kept epoch is the one with the
  lowest ``val_loss`` (the validation split: nothing here reads test), and ``patience`` N stops
  the run once N epochs in a row did not lower it; ``converged(record)`` lets a trainer stop on
  its own criterion (Phase 1's converged fraction);
- the precision step: the fp16 GradScaler, the gradient-norm clip, the non-finite check, the
  learning rate of the schedule (``newllm.train.optim``) and the optimizer step;
- the head weight cast once per batch for a half-precision run;
- the state dict of everything a resumed run needs to continue bit for bit.

``on_end(trainer, record, improved)`` runs after each epoch (the stage's rolling checkpoint).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_

from newllm.errors import NumericalError
from newllm.runtime import Runtime
from newllm.train.optim import OptimSpec, make_optimizer

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    done: int = 0                 # epochs (passes) completed
    steps: int = 0                # optimizer steps taken
    history: list = field(default_factory=list)  # one record (dict) per epoch
    best: int = 0                 # 1-based epoch of the kept weights (0: none yet)
    best_loss: float = math.inf   # its validation loss
    kept: dict | None = None      # CPU copy of the kept epoch's weights
    stopped_early: bool = False


def cpu_copy(state: dict) -> dict:
    """A CPU copy of a state dict that keeps tied tensors tied (one copy per storage)."""
    copies: dict = {}
    out = {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype)
        if key not in copies:
            copies[key] = v.detach().to("cpu", copy=True)
        out[k] = copies[key]
    return out


def seed_dropout(seed: int, epoch: int, p: float) -> None:
    """Seed the dropout masks of an epoch from (seed, epoch) alone, so that a run resumed at that
    epoch draws the same masks as one that never stopped (no-op without dropout)."""
    if p > 0:
        torch.manual_seed(seed * 1_000_003 + epoch)


class Trainer:
    """Base of every trainer. Subclasses set ``name`` ("phase2"), ``unit`` ("epoch"), ``model``
    and implement ``run_unit(k) -> dict`` and ``steps_per_unit() -> int``; they call
    ``super().__init__`` once their data is ready (it counts the schedule's steps)."""

    name = "train"
    unit = "epoch"

    def __init__(self, params: list[nn.Parameter], spec: OptimSpec, rt: Runtime, max_units: int,
                 patience: int = 0, keep_best: bool = True):
        self.params, self.spec, self.rt = params, spec, rt
        self.max_units, self.patience, self.keep_best = max_units, patience, keep_best
        self.opt = make_optimizer(params, spec.lr, spec.weight_decay)
        self.scaler = rt.grad_scaler()
        self.state = LoopState()
        self.total_steps = max(1, max_units * self.steps_per_unit())

    # -- what a subclass provides ------------------------------------------------------------
    model: nn.Module

    def run_unit(self, k: int) -> dict:
        raise NotImplementedError

    def steps_per_unit(self) -> int:
        raise NotImplementedError

    def converged(self, record: dict) -> bool:
        """A trainer's own stopping criterion, checked after every epoch."""
        return False

    def saved_module(self) -> nn.Module:
        """The module whose weights the resume state holds (Phase 1: only the layers)."""
        return self.model

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, d: dict) -> None:
        pass

    # -- the loop ------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.state.stopped_early or self.state.done >= self.max_units

    def run(self, on_end=None, until: int | None = None) -> LoopState:
        """Run the remaining epochs (or up to epoch ``until``); ``on_end(trainer, record, improved)``
        after each."""
        while not self.done and (until is None or self.state.done < until):
            rec = self.run_unit(self.state.done)
            improved = self.end_unit(rec)
            if on_end is not None:
                on_end(self, rec, improved)
        return self.state

    def end_unit(self, rec: dict) -> bool:
        """Book epoch ``rec``: history, kept weights, early stop. Whether it improved."""
        st = self.state
        st.history.append(rec)
        st.done += 1
        improved = False
        if self.keep_best:
            improved = rec["val_loss"] < st.best_loss
            if improved:
                st.best, st.best_loss = st.done, rec["val_loss"]
                st.kept = cpu_copy(self.model.state_dict())
            elif self.patience and st.done - st.best >= self.patience:
                st.stopped_early = True
                log.info("%s: early stop after %s %d (%d %ss without a better validation loss than %s %d)",
                         self.name, self.unit, st.done, self.patience, self.unit, self.unit, st.best)
        if self.converged(rec):
            st.stopped_early = True
        return improved

    # -- the precision step --------------------------------------------------------------------
    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, where: str) -> None:
        """One optimizer step on the gradients ``backward`` left: unscale (fp16), clip, stop on a
        non-finite norm (fp16: the scaler skips such a step), the schedule's rate, step."""
        if self.scaler:
            self.scaler.unscale_(self.opt)
        norm = clip_grad_norm_(self.params, self.spec.clip)
        lr = self.spec.lr_at(self.state.steps, self.total_steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            if not bool(torch.isfinite(norm)):
                raise NumericalError(f"{where}: non-finite gradient norm ({float(norm)}); the step was not taken")
            self.opt.step()
        self.state.steps += 1

    def weight_cast(self, weight: torch.Tensor, ws) -> torch.Tensor | None:
        """``weight`` in a half-precision run's compute dtype, copied once per batch into the
        workspace ``ws`` (None in fp32: no cast)."""
        cd = self.compute_dtype
        if cd is None:
            return None
        w = weight.detach()
        return ws.get("weight_cast", tuple(w.shape), cd, w.device).copy_(w)

    @property
    def compute_dtype(self) -> torch.dtype | None:
        """The matmul dtype of a bf16/fp16 run (None in fp32)."""
        return None if self.rt.precision == "fp32" else self.rt.compute_dtype

    # -- state for resume ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"loop": asdict(self.state), "model": cpu_copy(self.saved_module().state_dict()),
                "optimizer": self.opt.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                **self.extra_state()}

    def load_state_dict(self, d: dict) -> None:
        self.saved_module().load_state_dict(d["model"])
        self.opt.load_state_dict(d["optimizer"])
        if self.scaler and d.get("scaler"):
            self.scaler.load_state_dict(d["scaler"])
        loop = d["loop"]
        self.state = LoopState(int(loop["done"]), int(loop["steps"]), list(loop["history"]), int(loop["best"]),
                               float(loop["best_loss"]), loop["kept"], bool(loop["stopped_early"]))
        self.load_extra_state(d)
