"""Stage phase1_fixed_point: train Phase 1, save checkpoint, contexts, history and metrics."""
from __future__ import annotations

import logging
import time

import torch

from newllm import paths
from newllm.config import STAGE_SECTIONS, Config, ModelConfig, from_dict
from newllm.cvfp.engine import Schedule
from newllm.cvfp.model import build_model, load_model_state
from newllm.cvfp.phase1 import (
    NOISE_SCHEME,
    Phase1Trainer,
    embed_all,
    frozen_passes,
    relative_change,
)
from newllm.data.tokens import TokenSet, load_token_set
from newllm.dist import init_from_env, shutdown
from newllm.errors import CheckpointError, ConfigError, NumericalError
from newllm.io import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    csv_text,
    read_json,
    state_dict_digest,
    torch_load,
)
from newllm.resume import (
    ResumeStore,
    fingerprint,
    first_non_finite,
    kept_message,
    resume_or_fresh,
)
from newllm.runtime import Runtime, device_type, merge_peaks, peak_memory

log = logging.getLogger(__name__)
SECTIONS = STAGE_SECTIONS["phase1_fixed_point"]


def _kept(store: ResumeStore, last_pass: int | None) -> str:
    return kept_message(store, "pass", last_pass, f"Nothing was written: {paths.PHASE1_CKPT}, "
                        f"{paths.CONTEXTS_TRAIN.parent}/ and {paths.PHASE1_METRICS} keep the previous run's files.")


def run(cfg: Config) -> dict:
    t_start = time.perf_counter()
    dist = init_from_env(device_type(cfg.runtime))
    rt = Runtime.from_config(cfg.runtime)
    m = cfg.model
    train = load_token_set(paths.TOKENS_TRAIN, m.vocab_size)
    val = load_token_set(paths.TOKENS_VAL, m.vocab_size)
    fp = fingerprint(cfg.section_dict("model"), {k: v for k, v in cfg.section_dict("phase1").items()
                                                 if k != "checkpoint_every"},
                     cfg.runtime.precision, cfg.seed, state_dict_digest({"t": train.tokens, "o": train.offsets}),
                     NOISE_SCHEME)
    store = ResumeStore(cfg.resume, "phase1", fp)

    def fresh() -> Phase1Trainer:
        model = build_model(m, cfg.seed).to(rt.device)
        return Phase1Trainer(model, train.tokens.to(rt.device), train.offsets, cfg.phase1, rt, cfg.seed, dist)

    trainer = fresh()
    theta0 = trainer.model.layer_state()
    val_sched = Schedule.build(val.offsets, cfg.phase1.stream)
    val_x = embed_all(trainer.model, val.tokens, rt.device)
    extra: dict = {}
    trainer, resumed = resume_or_fresh(
        store, trainer, lambda s: extra.update(val_untrained=s["val_untrained"].to(rt.device)), fresh,
        lambda tr: f"phase1 after pass {tr.state.passes_done - 1} ({tr.state.steps} optimizer steps)")
    # the untrained reference of the validation contexts: one frozen fp32 pass with theta_0
    val_untrained = extra["val_untrained"] if resumed is not None else frozen_passes(trainer.model, val_sched, val_x, 1)
    saved = {"pass": trainer.state.passes_done - 1 if resumed is not None else None}

    def checkpoint(tr: Phase1Trainer) -> None:
        k = tr.state.passes_done
        if k % cfg.phase1.checkpoint_every == 0 or tr.done:
            state = tr.state_dict()  # collective under data parallelism
            if dist.main:
                store.save({"trainer": state, "val_untrained": val_untrained.cpu()})
                saved["pass"] = k - 1

    try:
        trainer.run(on_pass_end=checkpoint)
    except NumericalError as e:
        raise NumericalError(f"{e}. {_kept(store, saved['pass'])} Try a lower phase1.learning_rate, "
                             f"model.layernorm_mix: 1.0 (LayerNorm bounds the contexts) or "
                             f"runtime.precision: fp32.") from None
    final = trainer.state_dict()  # the global view (collective)
    memory = dist.memory(peak_memory(rt.device))
    if not dist.main:
        shutdown(dist)
        return {}
    state = trainer.state
    state.prev_ctx, state.untrained_ctx = final["prev_ctx"], final["untrained_ctx"]
    # validation: theta frozen, no noise, fp32, as many passes as training ran, context carried
    val_ctx = frozen_passes(trainer.model, val_sched, val_x, state.passes_done)
    bad = first_non_finite({"model weights": trainer.model.state_dict(), "training contexts": state.prev_ctx,
                            "validation contexts": val_ctx, "context EMA mu": state.mu})
    if bad is not None:
        raise NumericalError(f"phase1: NaN/Inf in the {bad} after {state.passes_done} passes. "
                             f"{_kept(store, saved['pass'])} Try a lower phase1.learning_rate.")
    metrics = _write_outputs(cfg, trainer, train, val, val_ctx, val_untrained,
                             relative_change(theta0, trainer.model.layer_state()), time.perf_counter() - t_start,
                             merge_peaks(memory, peak_memory(rt.device)))
    store.clear()
    shutdown(dist)
    return metrics


def _write_outputs(cfg: Config, trainer: Phase1Trainer, train: TokenSet, val: TokenSet, val_ctx: torch.Tensor,
                   val_untrained: torch.Tensor, change: float, seconds: float, memory: dict) -> dict:
    """Checkpoint, sidecar, contexts, pass history and metrics of a finished run (each atomic)."""
    model, state, rt = trainer.model, trainer.state, trainer.rt
    passes = state.passes_done
    model_state = {k: v.cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({"model_state_dict": model_state, "optimizer_state_dict": trainer.opt.state_dict(),
                       "mu": state.mu.cpu(), "passes": passes, "format": 1}, paths.PHASE1_CKPT)
    sidecar = {
        "config": {"seed": cfg.seed, "model": cfg.section_dict("model"), "phase1": cfg.section_dict("phase1"),
                   "runtime": cfg.section_dict("runtime")},
        "embeddings": model.embeddings_source, "passes": passes, "pass_index": passes - 1,
        "optimizer_steps": state.steps, "stopped_early": state.stopped_early,
        "mu_norm": float(state.mu.norm()), "model_digest": state_dict_digest(model_state),
        "rng": {"init": f"torch.Generator seeded with seed={cfg.seed}", "noise": NOISE_SCHEME},
        "train_tokens": train.num_tokens, "val_tokens": val.num_tokens,
    }
    atomic_write_json(paths.PHASE1_SIDECAR, sidecar)
    atomic_torch_save({"contexts": state.prev_ctx.cpu(), "untrained": state.untrained_ctx.cpu()},
                      paths.CONTEXTS_TRAIN)
    atomic_torch_save({"contexts": val_ctx.cpu(), "untrained": val_untrained.cpu()}, paths.CONTEXTS_VAL)
    atomic_write_text(paths.PHASE1_HISTORY, csv_text(state.history))
    last = state.history[-1]
    train_passes = [h for h in state.history if h["pass_index"] >= 1]
    train_s = sum(h["time_s"] for h in train_passes)
    metrics = {
        "tokens": train.num_tokens, "val_tokens": val.num_tokens, "passes": passes,
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


def load_checkpoint(rt: Runtime) -> tuple[torch.nn.Module, dict]:
    """The Phase 1 model, rebuilt from its sidecar's config; mismatches are clear errors."""
    side = read_json(paths.PHASE1_SIDECAR, "phase1 sidecar")
    try:
        checked = from_dict({"seed": side["config"]["seed"], "model": side["config"]["model"],
                             "phase1": side["config"]["phase1"]}, sections=["model", "phase1"])
        mcfg, seed = checked.model, checked.seed
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"phase1 sidecar {paths.PHASE1_SIDECAR} lacks the model config ({e}); "
                              f"re-run `dvc repro phase1_fixed_point`") from None
    except ConfigError as e:
        raise CheckpointError(f"phase1 sidecar {paths.PHASE1_SIDECAR} holds an invalid config ({e.key} = "
                              f"{e.value!r}, expected {e.allowed}); it was not written by this version "
                              f"or was edited: re-run `dvc repro phase1_fixed_point`") from None
    ckpt = torch_load(paths.PHASE1_CKPT, "phase1 checkpoint")
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        raise CheckpointError(f"phase1 checkpoint {paths.PHASE1_CKPT} has no model_state_dict; "
                              f"re-run `dvc repro phase1_fixed_point`")
    model = build_model(ModelConfig(**{**mcfg.__dict__, "pretrained_embeddings": False}), seed)
    load_model_state(model, ckpt["model_state_dict"], f"phase1 checkpoint {paths.PHASE1_CKPT}")
    model.embeddings_source = side.get("embeddings", "random")
    return model.to(rt.device), side
