"""The same-size causal transformer baseline: what a researcher would train instead of CVFP.

A GPT-style decoder built from PyTorch's own blocks (``nn.TransformerEncoderLayer`` with a
causal mask; attention is ``scaled_dot_product_attention`` inside it): token and learned
position embeddings of width ``model.embed_dim``, pre-LayerNorm blocks, a final LayerNorm and
a head with bias, like CVFP's. It trains on the same tokens with the settings of the
``transformer`` params section (by default Phase 2's epochs, optimizer, batch, clip, early
stopping) and is scored on exactly Phase 2's validation pairs:

- ``stream: sample``: every sample is a sequence; position ``t`` predicts ``t + 1``;
- ``stream: corpus``: the one stream is cut into windows of ``T + 1`` tokens that overlap by
  one, so every pair ``(t, t + 1)`` of the stream is scored exactly once (the first pair of
  a window sees no earlier context, unlike CVFP's carried context).
"""
from __future__ import annotations

import logging
import math
import time

import torch
from torch import nn

from newllm.config import TransformerConfig
from newllm.data.tokens import TokenSet
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


def cvfp_layer_parameters(embed_dim: int, context_dim: int, num_layers: int) -> int:
    """Parameters of CVFP's layers (linear + two LayerNorms each), the budget to match."""
    h = embed_dim + context_dim
    return num_layers * (h * h + h + 2 * context_dim + 2 * embed_dim)


def block_parameters(d: int, ff_mult: int) -> int:
    """Parameters of one pre-LN transformer block of width ``d``."""
    return 4 * d * d + 4 * d + 2 * d * ff_mult * d + ff_mult * d + d + 4 * d


def resolve_shape(cfg: TransformerConfig, embed_dim: int, context_dim: int, cvfp_layers: int) -> tuple[int, int]:
    """(layers, heads): ``num_layers`` 0 matches CVFP's layer budget in whole blocks (at least
    one); ``num_heads`` 0 takes heads of width 64 where ``d`` allows, else the largest divisor
    of ``d`` not above ``d / 64`` (at least 1)."""
    layers = cfg.num_layers or max(1, round(cvfp_layer_parameters(embed_dim, context_dim, cvfp_layers)
                                            / block_parameters(embed_dim, cfg.ff_mult)))
    heads = cfg.num_heads or max([h for h in range(1, max(1, embed_dim // 64) + 1) if embed_dim % h == 0])
    return layers, heads


class TransformerLM(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int, heads: int, ff_mult: int, max_len: int,
                 dropout: float, tie: bool, seed: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        block = nn.TransformerEncoderLayer(d, heads, ff_mult * d, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.drop = nn.Dropout(dropout)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # GPT-2's initialisation: N(0, 0.02^2) weights, zero biases
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
                elif "norm" not in name and not name.startswith("ln_f"):
                    p.zero_()
        if tie:
            self.head.weight = self.embed.weight

    def features(self, idx: torch.Tensor, ws: HeadWorkspace | None = None) -> torch.Tensor:
        """(S, T) token ids -> (S, T, d) final hidden states (causal: position t sees 0..t).
        With a workspace, the token embedding's gradient goes into its reused buffer."""
        t = idx.shape[1]
        if ws is not None and torch.is_grad_enabled() and self.embed.weight.requires_grad:
            tok = GatherRows.apply(self.embed.weight, idx.reshape(-1), ws).view(*idx.shape, -1)
        else:
            tok = self.embed(idx)
        x = self.drop(tok + self.pos(torch.arange(t, device=idx.device)))
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=idx.device)
        return self.ln_f(self.blocks(x, mask=mask, is_causal=True))


def context_length(*sets: TokenSet) -> int:
    """The transformer's context: the longest sample of any split (128 with the defaults)."""
    lengths = torch.cat([ts.offsets[1:] - ts.offsets[:-1] for ts in sets])
    return max(2, int(lengths.max()))


def sequences(tokens: torch.Tensor, offsets: torch.Tensor, stream: str, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), both (S, length), -1 where there is no target (padding, a stream's
    last token). ``sample``: one row per sample (at most ``length`` tokens); ``corpus``:
    windows of ``length + 1`` tokens overlapping by one."""
    tokens, offsets = tokens.long().cpu(), offsets.long().cpu()
    if stream == "sample":
        spans = [(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:]) if b > a]
        rows = [tokens[a:b] for a, b in spans]
    elif stream == "corpus":
        n = tokens.numel()
        rows = [tokens[k:min(k + length + 1, n)] for k in range(0, max(n - 1, 1), length)]
    else:
        raise ValueError(f"unknown stream mode {stream!r}")
    if any(r.numel() > length + 1 or (stream == "sample" and r.numel() > length) for r in rows):
        raise ValueError(f"a sequence is longer than the transformer's context of {length} tokens")
    inputs = torch.zeros(len(rows), length, dtype=torch.long)
    targets = torch.full((len(rows), length), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        k = min(r.numel(), length)
        inputs[i, :k] = r[:k]
        targets[i, :r.numel() - 1] = r[1:]
    return inputs, targets


class TransformerTrainer(Trainer):
    name = "transformer"

    def __init__(self, model: TransformerLM, train: tuple, val: tuple, cfg: TransformerConfig, rt: Runtime,
                 seed: int):
        self.model, self.cfg, self.seed = model.to(rt.device), cfg, seed
        self.train_x, self.train_y = (t.to(rt.device) for t in train)
        self.val_x, self.val_y = (t.to(rt.device) for t in val)
        self.num_train_targets = int((self.train_y >= 0).sum())
        self.num_val_targets = int((self.val_y >= 0).sum())
        self.ws = HeadWorkspace()  # the head's logits and casts, reused from chunk to chunk
        super().__init__([p for p in model.parameters() if p.requires_grad], OptimSpec.of(cfg), rt, cfg.epochs,
                         patience=cfg.early_stop_patience)

    def _per_batch(self) -> int:
        cfg = self.cfg
        return max(1, cfg.batch_tokens // self.train_x.shape[1]) if cfg.batch_tokens else self.train_x.shape[0]

    def steps_per_unit(self) -> int:
        return -(-self.train_x.shape[0] // self._per_batch())

    def _loss_backward(self, x: torch.Tensor, y: torch.Tensor, n_targets: int) -> float:
        """Forward of a batch, then the head and CE ``chunk_tokens`` targets at a time on detached
        features (one backward through the blocks at the end). Returns the summed CE."""
        cd = self.compute_dtype
        with self.rt.autocast():
            h = self.model.features(x, self.ws)
        rows = torch.nonzero((y >= 0).flatten()).squeeze(1)
        flat = h.reshape(-1, h.shape[-1])
        h_det = flat.detach().requires_grad_()
        head = self.model.head
        total = 0.0
        w_cast = self.weight_cast(self.model.head.weight, self.ws)
        for a in range(0, rows.numel(), self.cfg.chunk_tokens):
            r = rows[a:a + self.cfg.chunk_tokens]
            ce = LinearCrossEntropy.apply(h_det[r], head.weight, head.bias, y.flatten()[r], cd, w_cast, self.ws)
            loss = ce / n_targets
            self.backward(loss)
            total += float(ce.detach())
        flat.backward(h_det.grad)
        return total

    def run_unit(self, e: int) -> dict:
        cfg, st = self.cfg, self.state
        per_batch = self._per_batch()
        order = torch.randperm(self.train_x.shape[0], generator=torch.Generator().manual_seed(self.seed * 7919 + e))
        prog = Progress(f"transformer epoch {e + 1}/{cfg.epochs}", self.num_train_targets)
        t0, ce_sum, steps0 = time.perf_counter(), 0.0, st.steps
        self.model.train()
        seed_dropout(self.seed, e, self.model.drop.p)
        for a in range(0, order.numel(), per_batch):
            idx = order[a:a + per_batch].to(self.rt.device)
            ce, n_t = self.train_batch(self.train_x[idx], self.train_y[idx], e)
            if n_t:
                ce_sum += ce
                prog.update(n_t)
        self.opt.zero_grad(set_to_none=True)
        train_loss = ce_sum / max(self.num_train_targets, 1)
        val = self.evaluate()
        val_loss, val_acc = val.loss, val.acc
        rec = {"epoch": e + 1, "train_loss": train_loss, "train_ppl": ppl(train_loss), "val_loss": val_loss,
               "val_ppl": ppl(val_loss), "val_acc": val_acc, "optimizer_steps": st.steps - steps0,
               "time_s": round(time.perf_counter() - t0, 3)}
        log.info("transformer epoch %d/%d: train loss %.4f  val loss %.4f (ppl %.1f, acc %.2f%%)  %.1fs", e + 1,
                 cfg.epochs, train_loss, val_loss, rec["val_ppl"], 100 * val_acc, rec["time_s"])
        return rec

    def train_batch(self, x: torch.Tensor, y: torch.Tensor, e: int) -> tuple[float, int]:
        """One optimizer step on a batch of sequences (epoch ``e``): its summed CE and number of
        targets; a batch without targets takes no step."""
        n_t = int((y >= 0).sum())
        if n_t == 0:
            return 0.0, 0
        self.opt.zero_grad(set_to_none=False)  # AccumulateGrad then adds the workspace's buffers in place
        ce = self._loss_backward(x, y, n_t)
        if not math.isfinite(ce):
            raise NumericalError(f"transformer epoch {e + 1}: non-finite training loss")
        self.step(f"transformer epoch {e + 1}")
        return ce, n_t

    @torch.no_grad()
    def evaluate(self, seqs: tuple | None = None, pairs: bool = False) -> Scores:
        """Loss and top-1 accuracy over every pair of ``seqs`` (inputs, targets; default: the
        validation sequences); with ``pairs``, each pair's CE, in row-major order, which is the
        flat pair order of the token set (``sequences`` cuts its rows in order)."""
        xs, ys = (self.val_x, self.val_y) if seqs is None else (t.to(self.rt.device) for t in seqs)
        self.model.eval()
        w_cast = self.weight_cast(self.model.head.weight, self.ws)
        w = self.model.head.weight if w_cast is None else w_cast
        b = self.model.head.bias
        per_batch = max(1, 8192 // xs.shape[1])
        n = int((ys >= 0).sum())
        per = torch.empty(n, dtype=torch.float32, device=self.rt.device) if pairs else None
        ce_sum, hits, done = 0.0, 0, 0
        for a in range(0, xs.shape[0], per_batch):
            x, y = xs[a:a + per_batch], ys[a:a + per_batch]
            with self.rt.autocast():
                h = self.model.features(x)
            keep = (y >= 0).flatten()
            h, t = h.reshape(-1, h.shape[-1])[keep], y.flatten()[keep]
            for c in range(0, t.numel(), self.cfg.chunk_tokens):
                z = head_logits(h[c:c + self.cfg.chunk_tokens].to(w.dtype), w, self.ws)
                k = min(self.cfg.chunk_tokens, t.numel() - c)
                ce, hit = ce_rows(z, t[c:c + k], bias=b, per_row=None if per is None else per[done:done + k])
                ce_sum, hits, done = ce_sum + float(ce), hits + int(hit), done + k
        self.model.train()
        self.ws.clear()  # the head buffers go back to the OS between epochs
        if not math.isfinite(ce_sum):
            raise NumericalError("transformer: non-finite validation loss")
        return Scores(ce_sum / max(n, 1), hits / max(n, 1), n, None if per is None else per.cpu())
