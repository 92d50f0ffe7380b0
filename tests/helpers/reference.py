"""Plain per-token reference implementations, kept to prove the batched engine exact.

One token at a time, in the schedule order the engine defines (streams sorted by
length, longest first, ties in sample order; position-major: every stream's
token t before any stream's token t+1). Slow on purpose: no batching at all.
"""
from __future__ import annotations

import torch

from newllm.config import Phase1Config
from newllm.cvfp.model import CVFPModel
from newllm.cvfp.noise import pass_noise
from newllm.cvfp.objectives import OBJECTIVES, fixed_point_term, phase1_loss


def _step(params: list, opt: torch.optim.Optimizer, clip: float, grad_sink) -> None:
    """Report the gradients (tests), clip, step, clear."""
    if grad_sink is not None:
        grad_sink([torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params])
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    opt.zero_grad(set_to_none=True)


def token_order(offsets: list[int], mode: str) -> list[tuple[int, int, int]]:
    """(flat index, stream, t) in schedule order."""
    if mode == "corpus":
        streams = [(0, offsets[-1])]
    else:
        streams = [(offsets[i], offsets[i + 1] - offsets[i]) for i in range(len(offsets) - 1)
                   if offsets[i + 1] > offsets[i]]
    streams = sorted(streams, key=lambda s: -s[1])  # Python's sort is stable
    out = []
    for t in range(max((s[1] for s in streams), default=0)):
        for j, (start, length) in enumerate(streams):
            if t < length:
                out.append((start + t, j, t))
    return out


def phase1_reference(model: CVFPModel, tokens: torch.Tensor, offsets: torch.Tensor, cfg: Phase1Config,
                     seed: int, grad_sink=None) -> dict:
    """Phase 1 token by token: each token's forward on its own; at the end of a batch the loss
    ``(1-w) mean_t L_cvfp + w D(C)`` of the batch's contexts (kept with their graphs) and one
    backward through all of them, then an optimizer step. Returns per-pass contexts (flat
    order), steps and mu."""
    order = token_order(offsets.tolist(), cfg.stream)
    n, d_c = tokens.numel(), model.cfg.context_dim
    params = model.layer_parameters()
    opt = torch.optim.Adam(params, lr=cfg.learning_rate)
    w = cfg.dist_reg_weight
    objective = OBJECTIVES[cfg.diversity]
    n_streams = max(j for _, j, _ in order) + 1
    carry = [torch.zeros(d_c) for _ in range(n_streams)]
    prev = None
    mu = None
    steps = 0
    contexts = []
    for k in range(cfg.max_iterations):
        train = k >= 1
        noise = pass_noise(seed, k, d_c, cfg.context_noise_std) if train else None
        noise = noise.rows(0, n) if noise is not None else None  # by schedule position
        cur = torch.zeros(n, d_c)
        b_size = n if (cfg.batch_tokens <= 0 or cfg.batch_tokens >= n) else cfg.batch_tokens
        batch_c, batch_cvfp = [], []
        conv = 0
        for pos, (i, j, t) in enumerate(order):
            c_in = carry[j].clone()
            if noise is not None and t > 0:
                c_in = c_in + noise[pos]
            with torch.set_grad_enabled(train):
                x = model.embed_tokens(tokens[i:i + 1]).detach()
                c, _ = model.step(c_in.unsqueeze(0), x)
                c = c[0]
            if train:
                batch_c.append(c)
                batch_cvfp.append(fixed_point_term(c.unsqueeze(0), prev[i].unsqueeze(0))[0])
                conv += int(float(((c.detach() - prev[i]) ** 2).mean()) < cfg.convergence_threshold)
            carry[j] = c.detach()
            cur[i] = c.detach()
            if train and ((pos + 1) % b_size == 0 or pos + 1 == n):
                big_c = torch.stack(batch_c)
                loss = phase1_loss(torch.stack(batch_cvfp).sum(), objective(big_c, mu, cfg), w, len(batch_cvfp))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                _step(params, opt, cfg.gradient_clip, grad_sink)
                steps += 1
                mu = cfg.ema_momentum * mu + (1 - cfg.ema_momentum) * big_c.detach().mean(0)
                batch_c, batch_cvfp = [], []
        if k == 0:
            mu = cur.mean(0)
        contexts.append(cur)
        prev = cur
        if train and conv / n >= cfg.min_converged_ratio:
            break
    return {"contexts": contexts, "steps": steps, "mu": mu}


def phase2_reference(model: CVFPModel, tokens: torch.Tensor, offsets: torch.Tensor, cfg, stream: str,
                     embeddings_frozen: bool, grad_sink=None, seed: int = 0) -> dict:
    """Phase 2 token by token (``newllm.cvfp.phase2`` semantics): each token's forward with
    ``c_{-1} = 0`` per stream and the context carried detached, its own CE divided by the
    number of targets of its batch and its own backward; an optimizer step at every batch
    boundary that holds a target. Returns the per-epoch train losses and the step count."""
    from torch.nn import functional as Fn

    from newllm.cvfp.phase2 import (
        NOISE_SEED_OFFSET,
        next_token_targets,
        trainable_parameters,
    )
    from newllm.train.optim import OptimSpec, make_optimizer

    order = token_order(offsets.tolist(), stream)
    tokens = tokens.long()
    n, d_c = tokens.numel(), model.cfg.context_dim
    tgt = next_token_targets(tokens, offsets, stream)
    embeddings_frozen = embeddings_frozen or cfg.freeze_embeddings
    params = trainable_parameters(model, cfg.freeze_context, embeddings_frozen)
    train_embed = not (cfg.freeze_context or embeddings_frozen)
    opt = make_optimizer(params, cfg.learning_rate, cfg.weight_decay)  # the trainer's (fused where available)
    n_streams = max(j for _, j, _ in order) + 1
    b_size = n if (cfg.batch_tokens <= 0 or cfg.batch_tokens >= n) else cfg.batch_tokens
    has = [int(tgt[i]) >= 0 for i, _, _ in order]
    total_targets = sum(has)
    spec = OptimSpec.of(cfg)  # the learning rate of each step (constant, or warm-up and cosine)
    total_steps = cfg.epochs * sum(any(has[b:b + b_size]) for b in range(0, n, b_size))
    losses, steps = [], 0
    for epoch in range(cfg.epochs):
        carry = [torch.zeros(d_c) for _ in range(n_streams)]
        noise = pass_noise(seed + NOISE_SEED_OFFSET, epoch, d_c, cfg.context_noise_std)
        noise = noise.rows(0, n) if noise is not None else None  # by schedule position
        ce_sum = 0.0
        opt.zero_grad(set_to_none=True)
        for pos, (i, j, t) in enumerate(order):
            b0 = (pos // b_size) * b_size
            b1 = min(b0 + b_size, n)
            n_targets = sum(has[b0:b1])
            x = model.embed_tokens(tokens[i:i + 1])
            if not train_embed:
                x = x.detach()
            c_in = carry[j] if noise is None or t == 0 else carry[j] + noise[pos]
            c, x2 = model.step(c_in.unsqueeze(0), x)
            carry[j] = c[0].detach()
            if has[pos]:
                ce = Fn.cross_entropy(model.logits(c, x2), tgt[i:i + 1], reduction="sum")
                (ce / n_targets).backward()
                ce_sum += float(ce.detach())
            if pos + 1 == b1 and n_targets > 0:
                for group in opt.param_groups:
                    group["lr"] = spec.lr_at(steps, total_steps)
                _step(params, opt, cfg.gradient_clip, grad_sink)
                steps += 1
        losses.append(ce_sum / max(total_targets, 1))
    return {"train_loss": losses, "steps": steps}
