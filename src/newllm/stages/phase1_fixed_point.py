"""Stage phase1_fixed_point: train Phase 1, save checkpoint, contexts, history and metrics."""
from __future__ import annotations

import csv
import io
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
from newllm.data.tokens import load_token_set
from newllm.dist import init_from_env, shutdown
from newllm.errors import CheckpointError, ConfigError, NumericalError
from newllm.io import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    read_json,
    state_dict_digest,
    torch_load,
)
from newllm.resume import ResumeStore, fingerprint, first_non_finite
from newllm.runtime import Runtime, merge_peaks, oom_advice, peak_memory

log = logging.getLogger(__name__)
SECTIONS = STAGE_SECTIONS["phase1_fixed_point"]


def history_csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and v != v else v) for k, v in r.items()})
    return buf.getvalue()


def run(cfg: Config) -> dict:
    t_start = time.perf_counter()
    dist = init_from_env("cuda" if cfg.runtime.device != "cpu" and torch.cuda.is_available() else "cpu")
    rt = Runtime.from_config(cfg.runtime)
    m = cfg.model
    train = load_token_set(paths.TOKENS_TRAIN, m.vocab_size)
    val = load_token_set(paths.TOKENS_VAL, m.vocab_size)
    model = build_model(m, cfg.seed).to(rt.device)
    theta0 = model.layer_state()
    fp = fingerprint(cfg.section_dict("model"), {k: v for k, v in cfg.section_dict("phase1").items()
                                                 if k != "checkpoint_every"},
                     cfg.runtime.precision, cfg.seed, state_dict_digest({"t": train.tokens, "o": train.offsets}),
                     NOISE_SCHEME)
    store = ResumeStore(cfg.resume, "phase1", fp)
    trainer = Phase1Trainer(model, train.tokens.to(rt.device), train.offsets, cfg.phase1, rt, cfg.seed, dist)
    val_sched = Schedule.build(val.offsets, cfg.phase1.stream)
    val_x = embed_all(model, val.tokens, rt.device)

    resumed = store.load()
    if resumed is not None:
        try:
            trainer.load_state_dict(resumed["trainer"])
            val_untrained = resumed["val_untrained"].to(rt.device)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
            # same params and data, but a layout this code does not read (another version)
            log.warning("ignoring resume checkpoint %s: unreadable state (%s: %s); starting from scratch",
                        store.paths[0], type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            resumed = None
            model = build_model(m, cfg.seed).to(rt.device)
            trainer = Phase1Trainer(model, train.tokens.to(rt.device), train.offsets, cfg.phase1, rt,
                                    cfg.seed, dist)
        else:
            log.info("resumed phase1 after pass %d (%d optimizer steps)", trainer.state.passes_done - 1,
                     trainer.state.steps)
    if resumed is None:
        val_untrained = frozen_passes(model, val_sched, val_x, 1, rt)
    saved = {"pass": trainer.state.passes_done - 1 if resumed is not None else None}

    def checkpoint(tr: Phase1Trainer) -> None:
        k = tr.state.passes_done
        if k % cfg.phase1.checkpoint_every == 0 or tr.done:
            state = tr.state_dict()  # collective under data parallelism
            if dist.main:
                store.save({"trainer": state, "val_untrained": val_untrained.cpu()})
                saved["pass"] = k - 1

    with oom_advice("phase1_fixed_point", "phase1.batch_tokens"):
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
        passes = state.passes_done
        # validation: theta frozen, no noise, as many passes as training ran, context carried
        val_ctx = frozen_passes(model, val_sched, val_x, passes, rt)
    train_time = time.perf_counter() - t_start

    model_state = {k: v.cpu() for k, v in model.state_dict().items()}
    bad = first_non_finite({"model weights": model_state, "training contexts": state.prev_ctx,
                            "validation contexts": val_ctx, "context EMA mu": state.mu})
    if bad is not None:
        raise NumericalError(f"phase1: NaN/Inf in the {bad} after {passes} passes. "
                             f"{_kept(store, saved['pass'])} Try a lower phase1.learning_rate.")
    change = relative_change(theta0, model.layer_state())
    atomic_torch_save({"model_state_dict": model_state, "optimizer_state_dict": trainer.opt.state_dict(),
                       "mu": state.mu.cpu(), "passes": passes, "format": 1}, paths.PHASE1_CKPT)
    digest = state_dict_digest(model_state)
    last = state.history[-1]
    sidecar = {
        "config": {"seed": cfg.seed, "model": cfg.section_dict("model"), "phase1": cfg.section_dict("phase1"),
                   "runtime": cfg.section_dict("runtime")},
        "embeddings": model.embeddings_source, "passes": passes, "pass_index": passes - 1,
        "optimizer_steps": state.steps, "stopped_early": state.stopped_early,
        "mu_norm": float(state.mu.norm()), "model_digest": digest,
        "rng": {"init": f"torch.Generator seeded with seed={cfg.seed}",
                "noise": NOISE_SCHEME},
        "train_tokens": train.num_tokens, "val_tokens": val.num_tokens,
    }
    atomic_write_json(paths.PHASE1_SIDECAR, sidecar)
    atomic_torch_save({"contexts": state.prev_ctx.cpu(), "untrained": state.untrained_ctx.cpu()},
                      paths.CONTEXTS_TRAIN)
    atomic_torch_save({"contexts": val_ctx.cpu(), "untrained": val_untrained.cpu()}, paths.CONTEXTS_VAL)
    atomic_write_text(paths.PHASE1_HISTORY, history_csv(state.history))
    train_passes = [h for h in state.history if h["pass_index"] >= 1]
    train_s = sum(h["time_s"] for h in train_passes)
    metrics = {
        "tokens": train.num_tokens, "val_tokens": val.num_tokens, "passes": passes,
        "optimizer_steps": state.steps, "param_change": round(change, 6),
        "stopped_early": state.stopped_early, "embeddings": model.embeddings_source,
        "final_cvfp_loss": last["cvfp_loss"] if passes > 1 else None,
        "final_div_loss": last["div_loss"] if passes > 1 else None,
        "final_converged_frac": last["converged_frac"], "final_context_norm": round(last["mean_context_norm"], 4),
        "time_s": round(train_time, 2),
        "tokens_per_s": round(train.num_tokens * len(train_passes) / train_s, 1) if train_s > 0 else None,
        "device": rt.device.type, "precision": rt.precision,
        **merge_peaks(memory, peak_memory(rt.device)),
    }
    atomic_write_json(paths.PHASE1_METRICS, metrics)
    store.clear()
    shutdown(dist)
    log.info("phase1 done: %d passes, %d optimizer steps, param change %.4f, %.1fs", passes, state.steps,
             change, train_time)
    return metrics


def _kept(store: ResumeStore, last_pass: int | None) -> str:
    """What a failed run leaves behind, for its error message."""
    if not store.enabled:
        rolling = "No rolling checkpoint is kept (resume.enabled is false)."
    elif last_pass is None:
        rolling = "No rolling checkpoint was written (the fault came before the first completed pass)."
    else:
        rolling = (f"The rolling checkpoint {store.paths[0]} (after pass {last_pass}) is kept: a re-run "
                   f"with the same params resumes from it, other params start afresh.")
    return (f"Nothing was written: {paths.PHASE1_CKPT}, {paths.CONTEXTS_TRAIN.parent}/ and "
            f"{paths.PHASE1_METRICS} keep the previous run's files. {rolling}")


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
