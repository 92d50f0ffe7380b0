"""Phase 2: next-token prediction (docs/model.md, "Phase 2") on the shared stream/scan engine.

Semantics
---------
- Streams: as in Phase 1 (``phase1.stream`` from the Phase 1 sidecar config).
  ``sample``: every sample is its own stream; ``corpus``: all tokens are one stream.
- Targets: token ``t`` of a stream predicts ``tok_{t+1}`` of the *same* stream. The last
  token of a stream has no target (``sample``: the last token of every sample;
  ``corpus``: only the corpus's last token, so pairs cross sample boundaries there,
  as in the original concatenated corpus). ``next_token_targets`` is that definition;
  the baselines use the same one.
- Input stream ``x_t = LN_e(E[tok_t])``; ``(c_t, x'_t) = F_theta(sg(c_{t-1}), x_t)``;
  logits ``= model.logits(c_t, x'_t)``: ``U x'_t + b`` (``predict_from: token``, the
  original) or ``U c_t + b`` (``predict_from: context``: a fresh head of width ``d_c``,
  see ``prepare_head``).
- An epoch is one pass over the training tokens with ``c_{-1} = 0`` per stream, no
  noise, the context carried from token to token and detached (no gradient through the
  history).
- ``phase2.freeze_context: true``: only the head trains. Theta (and the embedding) are
  fixed, so the head's input features are computed once (a no-grad scan with
  ``keep_x``) and the head is trained on them. ``false`` (default): layers and head
  train, plus the embedding ``E`` and ``LN_e`` when the embedding is random; they stay
  frozen when the Phase 1 sidecar says the embeddings are pretrained.
- Loss: cross-entropy. One Adam step (lr ``phase2.learning_rate``, gradient-norm clip
  ``phase2.gradient_clip``) per batch of ``phase2.batch_tokens`` tokens, a contiguous
  range of the engine's schedule order (``engine.batch_ranges``; 0 = one full-batch
  step per epoch, the original). A batch's loss is the sum of its tokens' CE divided by
  the number of targets in the batch; a batch without any target (possible only for
  tiny ``batch_tokens``) takes no step. Per batch: a no-grad scan gives each token's
  input context, then forward/backward in chunks of ``phase2.chunk_tokens`` targets, so
  the ``N x V`` logits never exist at once. This equals the per-token loop
  ``reference.phase2_reference`` (the tests prove it).
- Per epoch: train loss (mean CE over the epoch's targets, each taken with the
  parameters of its batch) and perplexity; validation loss, perplexity and top-1
  accuracy (theta frozen: a no-grad scan with ``keep_x`` and chunked logits, one pass,
  ``c_{-1} = 0``); ``time_s`` is the whole epoch (training + validation) and
  ``tokens_per_s`` = training tokens / ``time_s``.
- Mixed precision through ``Runtime.autocast()`` (the CE is taken in fp32); fp16 uses a
  GradScaler. A NaN/Inf loss or gradient norm stops with ``NumericalError`` naming the
  epoch and the quantity.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from newllm.config import Phase2Config
from newllm.cvfp.engine import Schedule, batch_ranges, chunks, scan
from newllm.cvfp.model import CVFPModel
from newllm.cvfp.noise import PassNoise, pass_noise, rank_rows
from newllm.cvfp.passes import embed_all
from newllm.data.tokens import next_token_targets
from newllm.dist import SINGLE, Dist
from newllm.errors import NumericalError
from newllm.lm_loss import (
    GatherRows,
    HeadWorkspace,
    LinearCrossEntropy,
    Scores,
    ce_rows,
    head_logits,
    ppl,
)
from newllm.runtime import Progress, Runtime
from newllm.train.core import Trainer, seed_dropout
from newllm.train.optim import OptimSpec

log = logging.getLogger(__name__)

SCAN_RANGE = 8192          # tokens per no-grad scan call for validation / frozen features
HEAD_SEED_OFFSET = 1_000_000_007  # the fresh context head: Generator seeded with seed + this
NOISE_SEED_OFFSET = 2_000_000_011  # phase2.context_noise_std: Phase 1's noise blocks, seed + this, pass = epoch


def prepare_head(model: CVFPModel, predict_from: str, seed: int) -> CVFPModel:
    """``predict_from: context`` gets a fresh head of width ``d_c`` (init N(0, 0.02^2), zero
    bias, from ``torch.Generator`` seeded with ``seed + HEAD_SEED_OFFSET``); ``token`` keeps
    the model's head."""
    if predict_from == model.head_from:
        return model
    if predict_from not in ("token", "context"):
        raise ValueError(f"unknown predict_from {predict_from!r}")
    dim = model.cfg.embed_dim if predict_from == "token" else model.cfg.context_dim
    w = model.head.weight
    model.head = nn.Linear(dim, model.cfg.vocab_size, device=w.device, dtype=w.dtype)
    model.head_from = predict_from
    model.reset_head(torch.Generator().manual_seed(seed + HEAD_SEED_OFFSET))
    return model


def trainable_parameters(model: CVFPModel, freeze_context: bool, embeddings_frozen: bool) -> list[nn.Parameter]:
    """The parameters Phase 2 trains, in a fixed order (layers, embedding, head); a head tied to
    the embedding appears once."""
    params: list[nn.Parameter] = []
    if not freeze_context:
        params += model.layer_parameters()
        if not embeddings_frozen:
            params += [model.embed.weight, *model.ln_e.parameters()]
    params += list(model.head.parameters())
    seen: set[int] = set()
    return [p for p in params if not (id(p) in seen or seen.add(id(p)))]


class _LMLoss(nn.Module):
    """The summed CE of a chunk as one module, so DDP can wrap every trained parameter."""

    def __init__(self, model: CVFPModel, dropout: float = 0.0):
        super().__init__()
        self.model = model
        self.dropout = dropout

    def forward(self, h, c_in, x, targets, cd, w_cast=None, ws=None):
        """``h`` given (frozen features): the head only; else ``F(c_in, x)`` first. Dropout on
        the head's input in training (``phase2.dropout``)."""
        m = self.model
        unused = None
        if h is None:
            c, x2 = m.step(c_in, x)
            h, unused = (x2, c) if m.head_from == "token" else (c, x2)
        if self.dropout > 0 and self.training:
            h = nn.functional.dropout(h, self.dropout)
        ce = LinearCrossEntropy.apply(h, m.head.weight, m.head.bias, targets, cd, w_cast, ws)
        return ce, unused


class Phase2Trainer(Trainer):
    name = "phase2"

    def __init__(self, model: CVFPModel, train_tokens: torch.Tensor, train_offsets: torch.Tensor,
                 val_tokens: torch.Tensor, val_offsets: torch.Tensor, cfg: Phase2Config, stream: str,
                 rt: Runtime, embeddings_frozen: bool | None = None, dist: Dist = SINGLE, seed: int = 0):
        self.model, self.cfg, self.stream, self.dist = model, cfg, stream, dist
        dev = rt.device
        if embeddings_frozen is None:
            embeddings_frozen = model.embeddings_source != "random"
        embeddings_frozen = embeddings_frozen or cfg.freeze_embeddings
        self.embeddings_frozen = embeddings_frozen
        self.seed = seed
        # the embedding changes during training only when it trains
        self.x_fixed = cfg.freeze_context or embeddings_frozen
        self.train = self._split(train_tokens, train_offsets, dev, shard=dist.active)
        self.val = self._split(val_tokens, val_offsets, dev)  # every rank validates on all of it
        params = trainable_parameters(model, cfg.freeze_context, embeddings_frozen)
        trained = {id(p) for p in params}
        for p in model.parameters():  # only what trains takes gradients (and DDP's all-reduce)
            p.requires_grad_(id(p) in trained)
        self.loss_module = _LMLoss(model, cfg.dropout)
        self.ddp = DDP(self.loss_module) if dist.active else None
        super().__init__(params, OptimSpec.of(cfg), rt, cfg.epochs, patience=cfg.early_stop_patience)
        self.features: torch.Tensor | None = None   # freeze_context: head inputs of the targets
        self.ws = HeadWorkspace()

    def _split(self, tokens: torch.Tensor, offsets: torch.Tensor, dev: torch.device, shard: bool = False) -> dict:
        """Schedule, targets and target counts of a token set. With ``shard`` (data parallel),
        ``sched`` holds this rank's streams; ``cum`` maps global schedule ranges to local ones
        and ``global_tcount`` counts the targets of global ranges (the loss normaliser)."""
        tokens = tokens.long()
        global_sched = Schedule.build(offsets, self.stream)
        tgt = next_token_targets(tokens, offsets, self.stream)

        def counts(sched: Schedule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            tgt_sched = tgt[sched.order]
            has = tgt_sched >= 0
            tcount = torch.zeros(sched.num_tokens + 1, dtype=torch.long)
            tcount[1:] = torch.cumsum(has.long(), 0)
            return tgt_sched[has], has, tcount

        sched, cum = global_sched, None
        if shard:
            sched, cum = global_sched.shard(self.dist.rank, self.dist.world)
        tgt_list, has, tcount = counts(sched)
        global_tcount = tcount if cum is None else counts(global_sched)[2]
        tokens = tokens.to(dev)
        x = embed_all(self.model, tokens, dev) if self.x_fixed else None
        return {"tokens": tokens, "sched": sched, "tgt_list": tgt_list.to(dev), "has": has,
                "tcount": tcount, "num_targets": int(global_tcount[-1]), "x": x, "cum": cum,
                "global_tcount": global_tcount, "num_tokens": global_sched.num_tokens, "global_sched": global_sched}

    # -- pieces ---------------------------------------------------------------------------------
    def _x_of(self, split: dict):
        if split["x"] is not None:
            return lambda idx: split["x"][idx]
        return lambda idx: self.model.embed_tokens(split["tokens"][idx])

    def _carry(self, split: dict) -> torch.Tensor:
        return torch.zeros(split["sched"].num_streams, self.model.cfg.context_dim,
                           dtype=self.model.head.weight.dtype, device=self.rt.device)

    def _head_inputs(self, split: dict, p0: int, p1: int, carry: torch.Tensor) -> torch.Tensor:
        """No-grad scan of schedule range [p0, p1): the head inputs of its targets (schedule order)."""
        token = self.model.head_from == "token"
        with self.rt.autocast():  # outer context: the weights' casts are cached for the whole scan
            out = scan(self.model.step, split["sched"], p0, p1, carry, self._x_of(split), keep_x=token,
                       autocast=self.rt.autocast())
        feats = out.x_out if token else out.c_out
        sel = torch.nonzero(split["has"][p0:p1]).squeeze(1).to(feats.device)
        return feats[sel].to(self.model.head.weight.dtype)

    def _compute_features(self) -> torch.Tensor:
        """freeze_context: theta is fixed, so the head inputs of every training target once."""
        tr = self.train
        carry = self._carry(tr)
        feats = [self._head_inputs(tr, p0, p1, carry) for p0, p1 in batch_ranges(tr["sched"].num_tokens, SCAN_RANGE)]
        out = torch.cat(feats)
        if not bool(torch.isfinite(out).all()):
            raise NumericalError("phase2: non-finite head inputs (NaN/Inf) from the frozen Phase 1 model; "
                                 "the Phase 1 checkpoint is numerically broken")
        return out

    def steps_per_unit(self) -> int:
        """Batches with at least one target (a batch without one takes no step)."""
        tc = self.train["global_tcount"]
        return sum(int(tc[p1]) > int(tc[p0]) for p0, p1 in batch_ranges(self.train["num_tokens"], self.cfg.batch_tokens))

    def load_extra_state(self, d: dict) -> None:
        if self.x_fixed:  # the embedding is frozen, but recompute from the loaded weights anyway
            for split in (self.train, self.val):
                split["x"] = embed_all(self.model, split["tokens"], self.rt.device)
        self.features = None

    # -- one epoch --------------------------------------------------------------------------------
    def run_unit(self, e: int) -> dict:
        """Train epoch ``e`` (0-based) and validate; returns its record (``epoch`` is 1-based)."""
        cfg, tr, st = self.cfg, self.train, self.state
        n = tr["num_tokens"]
        if cfg.freeze_context and self.features is None:
            self.features = self._compute_features()
        carry = self._carry(tr)
        prog = Progress(f"phase2 epoch {e + 1}/{cfg.epochs}", n)
        t0 = time.perf_counter()
        ce_sum, steps0 = 0.0, st.steps
        self.model.train()
        self.loss_module.train()
        noise = pass_noise(self.seed + NOISE_SEED_OFFSET, e, self.model.cfg.context_dim, cfg.context_noise_std,
                           self.rt.device)
        seed_dropout(self.seed, e, cfg.dropout)
        for p0, p1 in batch_ranges(n, cfg.batch_tokens):
            ce_sum += self._train_batch(p0, p1, carry, e, noise)
            prog.update(p1 - p0)
        self.opt.zero_grad(set_to_none=True)  # free the gradients for validation and the checkpoint
        ce_sum = self.dist.sum_floats(ce_sum)[0]
        train_loss = ce_sum / max(tr["num_targets"], 1)
        val = self.evaluate(e=e)
        val_loss, val_acc = val.loss, val.acc
        el = time.perf_counter() - t0
        rec = {"epoch": e + 1, "train_loss": train_loss, "train_ppl": ppl(train_loss), "val_loss": val_loss,
               "val_ppl": ppl(val_loss), "val_acc": val_acc, "optimizer_steps": st.steps - steps0,
               "time_s": round(el, 3), "tokens_per_s": round(n / el, 1)}
        log.info("phase2 epoch %d/%d: train loss %.4f (ppl %.1f)  val loss %.4f (ppl %.1f, acc %.2f%%)  "
                 "%d steps  %.1fs  %.0f tok/s", e + 1, cfg.epochs, train_loss, rec["train_ppl"], val_loss,
                 rec["val_ppl"], 100 * val_acc, rec["optimizer_steps"], el, rec["tokens_per_s"])
        return rec

    def _train_batch(self, p0: int, p1: int, carry: torch.Tensor, e: int, noise: PassNoise | None = None) -> float:
        """One optimizer step on the global schedule range [p0, p1) (every rank calls it; a rank
        computes the tokens of its own streams). Returns this rank's summed CE."""
        tr, model, dist = self.train, self.model, self.dist
        nt = int(tr["global_tcount"][p1]) - int(tr["global_tcount"][p0])  # targets of the whole batch
        noise_rows = rank_rows(noise, p0, p1, tr["global_sched"], dist) if self.features is None else None
        if tr["cum"] is not None:
            p0, p1 = int(tr["cum"][p0]), int(tr["cum"][p1])
        t0, t1 = int(tr["tcount"][p0]), int(tr["tcount"][p1])
        if self.features is None:
            # no-grad scan: each token's input context (and the carry for the next batch)
            with self.rt.autocast():  # outer context: the weights' casts are cached for the whole scan
                out = scan(model.step, tr["sched"], p0, p1, carry, self._x_of(tr), noise_rows,
                           autocast=self.rt.autocast())
            sel = torch.nonzero(tr["has"][p0:p1]).squeeze(1).to(self.rt.device)
            c_in = out.c_in[sel]
            flat = tr["sched"].order[p0:p1].to(self.rt.device)[sel]
        if nt == 0:
            return 0.0
        targets = tr["tgt_list"][t0:t1]  # this rank's targets of the batch, schedule order
        # zeroed, not freed (once per batch; the epoch's end frees them): AccumulateGrad then adds
        # the workspace's gradient buffers in place instead of taking fresh V x d tensors per chunk
        self.opt.zero_grad(set_to_none=False)
        ce_total = 0.0
        cd = self.compute_dtype
        # the head weight in the compute dtype: cast once per batch, not per chunk
        w_cast = self.weight_cast(model.head.weight, self.ws)
        # a rank without targets in this batch still takes part in the gradient all-reduce
        spans = list(chunks(t1 - t0, self.cfg.chunk_tokens)) or [(0, 0)]
        for i, (a, b) in enumerate(spans):
            if self.features is not None:
                h, c, x = self.features[t0 + a:t0 + b], None, None
            else:
                idx = flat[a:b]
                h, c = None, c_in[a:b]
                x = tr["x"][idx] if tr["x"] is not None else \
                    model.ln_e(GatherRows.apply(model.embed.weight, tr["tokens"][idx], self.ws))
            sync = contextlib.nullcontext() if (self.ddp is None or i == len(spans) - 1) else self.ddp.no_sync()
            with sync:
                with self.rt.autocast():
                    ce, unused = (self.ddp or self.loss_module)(h, c, x, targets[a:b], cd, w_cast, self.ws)
                ce_val = float(ce.detach())
                if not math.isfinite(ce_val):
                    raise NumericalError(
                        f"phase2 epoch {e + 1}: non-finite train loss (NaN/Inf) at schedule tokens {p0}-{p1} "
                        f"(cross-entropy sum {ce_val}); the last good checkpoint is kept")
                loss = ce / nt
                if self.ddp is not None:  # DDP averages over ranks (we want the sum); every
                    loss = loss * dist.world  # parameter takes part in each synchronised backward
                    if unused is not None:
                        loss = loss + 0.0 * unused.float().sum()
                self.backward(loss)
            ce_total += ce_val
            del h, ce, loss
        self.step(f"phase2 epoch {e + 1}, schedule tokens {p0}-{p1}")
        return ce_total

    def split(self, tokens: torch.Tensor, offsets: torch.Tensor) -> dict:
        """Another token set (the test split) prepared like the validation split."""
        return self._split(tokens, offsets, self.rt.device)

    @torch.no_grad()
    def evaluate(self, split: dict | None = None, e: int | None = None, pairs: bool = False) -> Scores:
        """Loss and top-1 accuracy on ``split`` (default: validation): theta frozen, one pass,
        c_{-1} = 0 per stream; with ``pairs``, each pair's CE in flat pair order."""
        va, model = split or self.val, self.model
        model.eval()
        n = va["sched"].num_tokens
        carry = self._carry(va)
        ce_sum, correct = 0.0, 0
        cd = self.compute_dtype
        w_cast = self.weight_cast(model.head.weight, self.ws)
        per = torch.empty(va["tgt_list"].numel(), dtype=torch.float32, device=self.rt.device) if pairs else None
        for p0, p1 in batch_ranges(n, SCAN_RANGE):
            feats = self._head_inputs(va, p0, p1, carry)
            t0 = int(va["tcount"][p0])
            for a, b in chunks(feats.shape[0], self.cfg.chunk_tokens):
                tg = va["tgt_list"][t0 + a:t0 + b]
                h = feats[a:b] if cd is None else feats[a:b].to(cd)
                z = head_logits(h, model.head.weight if w_cast is None else w_cast, self.ws)
                ce, hits = ce_rows(z, tg, bias=model.head.bias, per_row=None if per is None else per[t0 + a:t0 + b])
                ce_sum += float(ce)
                correct += int(hits)
                del z
        model.train()
        self.ws.clear()  # the head buffers go back to the OS between epochs (checkpoint writes)
        nt = max(va["num_targets"], 1)
        loss = ce_sum / nt
        if not math.isfinite(loss):
            where = f"epoch {e + 1}" if e is not None else "evaluation"
            raise NumericalError(f"phase2 {where}: non-finite validation loss (NaN/Inf); "
                                 f"the last good checkpoint is kept")
        if per is not None:  # schedule order -> flat order of the pairs' input tokens
            flat = va["sched"].order[va["has"]]
            per = per.cpu()[torch.argsort(flat)]
        return Scores(loss, correct / nt, va["num_targets"], per)
