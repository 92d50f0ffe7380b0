"""Stage phase1_fixed_point: train Phase 1, save checkpoint, contexts, history and metrics."""
from __future__ import annotations

import logging
import time

import torch

from newllm import paths, pipeline
from newllm.config import Config
from newllm.cvfp import checkpoint
from newllm.cvfp.engine import Schedule
from newllm.cvfp.model import build_model
from newllm.cvfp.noise import NOISE_SCHEME
from newllm.cvfp.passes import embed_all, frozen_passes
from newllm.cvfp.phase1 import Phase1Trainer, relative_change
from newllm.data.tokens import TokenSet, load_token_set
from newllm.dist import init_from_env, shutdown
from newllm.errors import NumericalError
from newllm.io import atomic_torch_save, atomic_write_json, atomic_write_text, csv_text, state_dict_digest
from newllm.resume import fingerprint, first_non_finite
from newllm.runtime import Runtime, device_type, merge_peaks, peak_memory
from newllm.train.resumable import run_resumable

log = logging.getLogger(__name__)
SECTIONS = pipeline.sections("phase1_fixed_point")
KEPT = (f"Nothing was written: {paths.PHASE1_CKPT}, {paths.CONTEXTS_TRAIN.parent}/ and {paths.PHASE1_METRICS} "
        f"keep the previous run's files.")


def run(cfg: Config) -> dict:
    t_start = time.perf_counter()
    dist = init_from_env(device_type(cfg.runtime))
    rt = Runtime.from_config(cfg.runtime)
    m = cfg.model
    train = load_token_set(paths.TOKENS_TRAIN, m.vocab_size)
    val = load_token_set(paths.TOKENS_VAL, m.vocab_size)
    test = load_token_set(paths.TOKENS_TEST, m.vocab_size)
    fp = fingerprint(cfg.section_dict("model"), {k: v for k, v in cfg.section_dict("phase1").items()
                                                 if k != "checkpoint_every"},
                     cfg.runtime.precision, cfg.seed, state_dict_digest({"t": train.tokens, "o": train.offsets}),
                     NOISE_SCHEME)

    def fresh() -> Phase1Trainer:
        model = build_model(m, cfg.seed).to(rt.device)
        return Phase1Trainer(model, train.tokens.to(rt.device), train.offsets, cfg.phase1, rt, cfg.seed, dist)

    # the untrained network (theta_0) and its validation and test contexts: the references
    untrained = build_model(m, cfg.seed).to(rt.device)
    theta0 = untrained.layer_state()
    held = {name: _HeldOut(untrained, ts, cfg.phase1.stream, rt.device) for name, ts in (("val", val), ("test", test))}
    del untrained
    run_ = run_resumable("phase1", cfg.resume, fp, fresh, cfg.phase1.checkpoint_every, KEPT,
                         "Try a lower phase1.learning_rate, model.layernorm_mix: 1.0 (LayerNorm bounds the "
                         "contexts) or runtime.precision: fp32.", dist)
    trainer = run_.trainer
    final = trainer.state_dict()  # the global view (collective)
    memory = dist.memory(peak_memory(rt.device))
    if not dist.main:
        shutdown(dist)
        return {}
    ctx = trainer.ctx
    ctx.prev_ctx, ctx.untrained_ctx = final["prev_ctx"], final["untrained_ctx"]
    # validation and test: theta frozen, no noise, fp32, as many passes as training ran, context carried
    for h in held.values():
        h.trained = frozen_passes(trainer.model, h.sched, h.x, trainer.state.done)
    bad = first_non_finite({"model weights": trainer.model.state_dict(), "training contexts": ctx.prev_ctx,
                            "validation contexts": held["val"].trained, "test contexts": held["test"].trained,
                            "context EMA mu": ctx.mu})
    if bad is not None:
        raise NumericalError(f"phase1: NaN/Inf in the {bad} after {trainer.state.done} passes. {KEPT} Try a "
                             f"lower phase1.learning_rate.")
    metrics = _write_outputs(cfg, trainer, train, held,
                             relative_change(theta0, trainer.model.layer_state()), time.perf_counter() - t_start,
                             merge_peaks(memory, peak_memory(rt.device)))
    run_.done()
    shutdown(dist)
    return metrics


class _HeldOut:
    """A held-out split's schedule and input stream, its untrained contexts (one frozen fp32 pass
    with theta_0) and, after training, its trained ones."""

    def __init__(self, untrained: torch.nn.Module, ts: TokenSet, stream: str, device: torch.device):
        self.num_tokens = ts.num_tokens
        self.sched = Schedule.build(ts.offsets, stream)
        self.x = embed_all(untrained, ts.tokens, device)
        self.untrained = frozen_passes(untrained, self.sched, self.x, 1)
        self.trained: torch.Tensor | None = None


def _write_outputs(cfg: Config, trainer: Phase1Trainer, train: TokenSet, held: dict[str, _HeldOut], change: float,
                   seconds: float, memory: dict) -> dict:
    """Checkpoint, sidecar, contexts, pass history and metrics of a finished run (each atomic)."""
    model, state, ctx, rt = trainer.model, trainer.state, trainer.ctx, trainer.rt
    passes = state.done
    model_state = checkpoint.state_on_cpu(model)
    sidecar = {
        "config": {"seed": cfg.seed, "model": cfg.section_dict("model"), "phase1": cfg.section_dict("phase1"),
                   "runtime": cfg.section_dict("runtime")},
        "embeddings": model.embeddings_source, "passes": passes, "pass_index": passes - 1,
        "optimizer_steps": state.steps, "stopped_early": state.stopped_early,
        "mu_norm": float(ctx.mu.norm()), "model_digest": state_dict_digest(model_state),
        "rng": {"init": f"torch.Generator seeded with seed={cfg.seed}", "noise": NOISE_SCHEME},
        "train_tokens": train.num_tokens, "val_tokens": held["val"].num_tokens,
        "test_tokens": held["test"].num_tokens,
    }
    checkpoint.save(paths.PHASE1_CKPT, {"model_state_dict": checkpoint.phase1_state(model), "mu": ctx.mu.cpu(),
                                        "passes": passes, "format": 3}, sidecar)
    atomic_torch_save({"contexts": ctx.prev_ctx.cpu(), "untrained": ctx.untrained_ctx.cpu()},
                      paths.CONTEXTS_TRAIN)
    for path, h in ((paths.CONTEXTS_VAL, held["val"]), (paths.CONTEXTS_TEST, held["test"])):
        atomic_torch_save({"contexts": h.trained.cpu(), "untrained": h.untrained.cpu()}, path)
    atomic_write_text(paths.PHASE1_HISTORY, csv_text(state.history))
    last = state.history[-1]
    train_passes = [h for h in state.history if h["pass_index"] >= 1]
    train_s = sum(h["time_s"] for h in train_passes)
    metrics = {
        "tokens": train.num_tokens, "val_tokens": held["val"].num_tokens, "test_tokens": held["test"].num_tokens,
        "passes": passes,
        "optimizer_steps": state.steps, "param_change": round(change, 6),
        "stopped_early": state.stopped_early, "embeddings": model.embeddings_source,
        "diversity": cfg.phase1.diversity,
        "final_cvfp_loss": last["cvfp_loss"] if passes > 1 else None,
        "final_div_loss": last["div_loss"] if passes > 1 else None,
        "final_converged_frac": last["converged_frac"], "final_context_norm": round(last["mean_context_norm"], 4),
        "time_s": round(seconds, 2),
        "tokens_per_s": round(train.num_tokens * len(train_passes) / train_s, 1) if train_s > 0 else None,
        "device": rt.device.type, "precision": rt.precision, **memory,
    }
    atomic_write_json(paths.PHASE1_METRICS, metrics)
    log.info("phase1 done: %d passes, %d optimizer steps, param change %.4f, %.1fs", passes, state.steps,
             change, seconds)
    return metrics
