"""Stage phase2_lm: next-token training on the Phase 1 model, checkpoints, history, metrics.

Reads the token caches, the Phase 1 model (``pipeline.phase1.load_checkpoint``) and the
validation gate (a DVC dependency: a failed verdict is logged loudly, not fatal; set
``validate.enforce`` to stop before this stage). Writes, atomically:

- ``models/phase2_best.pt`` (lowest validation loss) and ``models/model_latest.pt``
  (final), each ``{"model_state_dict", "config": {seed, model, phase1: {stream},
  phase2}, "epoch", "phase2_history": {"train_loss": [...], "val_loss": [...]}}`` plus a
  JSON sidecar (``paths.sidecar``) with the config, epoch, best epoch and metrics;
- ``metrics/phase2.json`` and ``metrics/phase2_epochs.csv`` (one row per epoch, with the
  unigram/bigram perplexities as constant columns so plots can draw them as lines).

A rolling resume checkpoint (``resume/phase2.pt``) is kept every
``phase2.checkpoint_every`` epochs and the best model so far in ``resume/phase2_best.pt``
(``dvc repro`` deletes ``models/`` outputs before re-running), both cleared on success.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import torch

from newllm import paths
from newllm.baselines.ngram import baselines
from newllm.config import STAGE_SECTIONS, Config
from newllm.cvfp.phase2 import (
    EpochRecord,
    Phase2Trainer,
    limit_heap_retention,
    ppl,
    prepare_head,
)
from newllm.data.tokens import load_token_set
from newllm.dist import init_from_env, shutdown
from newllm.errors import CheckpointError, NumericalError
from newllm.io import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    csv_text,
    read_json,
    state_dict_digest,
)
from newllm.resume import ResumeStore, fingerprint, first_non_finite
from newllm.runtime import Runtime, merge_peaks, oom_advice, peak_memory
from newllm.stages.phase1_fixed_point import load_checkpoint

log = logging.getLogger(__name__)
SECTIONS = STAGE_SECTIONS["phase2_lm"]
CSV_COLUMNS = ["epoch", "train_loss", "train_ppl", "val_loss", "val_ppl", "val_acc", "optimizer_steps",
               "time_s", "tokens_per_s", "unigram_ppl", "bigram_ppl"]


def check_gate() -> dict:
    gate = read_json(paths.GATE, "validation gate")
    if not isinstance(gate, dict) or "passed" not in gate:
        raise CheckpointError(f"validation gate {paths.GATE} has no verdict; re-run `dvc repro validate_rank`")
    if not gate["passed"]:
        bar = "!" * 78
        for line in (bar, "phase2_lm: the Phase 1 model FAILED validate_rank (see metrics/validate.json).",
                     "Phase 2 runs on a model that failed validation; its results say nothing about a",
                     "working fixed point. Set validate.enforce: true to stop the pipeline instead.", bar):
            log.warning(line)
    return gate


def model_state(tr: Phase2Trainer) -> dict:
    return {k: v.detach().cpu() for k, v in tr.model.state_dict().items()}


def _kept(store: ResumeStore, last_epoch: int | None) -> str:
    """What a failed run leaves behind, for its error message."""
    if not store.enabled:
        rolling = "No rolling checkpoint is kept (resume.enabled is false)."
    elif not last_epoch:
        rolling = "No rolling checkpoint was written (the fault came before the first completed epoch)."
    else:
        rolling = (f"The rolling checkpoint {store.paths[0]} (after epoch {last_epoch}) is kept: a re-run "
                   f"with the same params resumes from it, other params start afresh.")
    return (f"Nothing final was written ({paths.PHASE2_LATEST}, {paths.PHASE2_METRICS} are not updated; "
            f"{paths.PHASE2_BEST} holds the best epoch so far, if any). {rolling}")


def _r(v: float, nd: int = 6) -> float:
    return round(float(v), nd)


def run(cfg: Config) -> dict:
    t_start = time.perf_counter()
    dist = init_from_env("cuda" if cfg.runtime.device != "cpu" and torch.cuda.is_available() else "cpu")
    rt = Runtime.from_config(cfg.runtime)
    limit_heap_retention()  # ~0.6 GB less peak RSS at 100k tokens (see its docstring)
    gate = check_gate()
    model, side = load_checkpoint(rt)
    mcfg = model.cfg
    try:
        stream = side["config"]["phase1"]["stream"]
    except (KeyError, TypeError):
        raise CheckpointError(f"phase1 sidecar {paths.PHASE1_SIDECAR} lacks phase1.stream; "
                              f"re-run `dvc repro phase1_fixed_point`") from None
    p2 = cfg.phase2
    prepare_head(model, p2.predict_from, cfg.seed)
    train = load_token_set(paths.TOKENS_TRAIN, mcfg.vocab_size)
    val = load_token_set(paths.TOKENS_VAL, mcfg.vocab_size)
    base = baselines(train.tokens, train.offsets, val.tokens, val.offsets, stream, mcfg.vocab_size)
    log.info("baselines on the validation pairs: unigram ppl %.1f, bigram ppl %.1f, majority acc %.2f%%",
             base["unigram_ppl"], base["bigram_ppl"], 100 * base["majority_acc"])

    embeddings_frozen = model.embeddings_source != "random"

    def new_trainer() -> Phase2Trainer:
        m, _ = load_checkpoint(rt)
        prepare_head(m, p2.predict_from, cfg.seed)
        return Phase2Trainer(m, train.tokens, train.offsets, val.tokens, val.offsets, p2, stream, rt,
                             embeddings_frozen=embeddings_frozen, dist=dist)

    trainer = Phase2Trainer(model, train.tokens, train.offsets, val.tokens, val.offsets, p2, stream, rt,
                            embeddings_frozen=embeddings_frozen, dist=dist)
    tokens_digest = state_dict_digest({"t": train.tokens, "o": train.offsets, "vt": val.tokens, "vo": val.offsets})
    fp = fingerprint({k: v for k, v in cfg.section_dict("phase2").items() if k != "checkpoint_every"},
                     cfg.runtime.precision, cfg.seed, side.get("model_digest"), tokens_digest)
    store = ResumeStore(cfg.resume, "phase2", fp)
    best_store = ResumeStore(cfg.resume, "phase2_best", fp)

    run_config = {"seed": cfg.seed, "model": dataclasses.asdict(mcfg), "phase1": {"stream": stream},
                  "phase2": cfg.section_dict("phase2")}
    embeddings = model.embeddings_source
    trained_embeddings = not (embeddings_frozen or p2.freeze_context)

    def payload(tr: Phase2Trainer) -> dict:
        h = tr.state.history
        return {"model_state_dict": model_state(tr),
                "config": run_config, "epoch": tr.state.epochs_done,
                "phase2_history": {"train_loss": [r["train_loss"] for r in h],
                                   "val_loss": [r["val_loss"] for r in h]}}

    def sidecar(tr: Phase2Trainer, rec: dict) -> dict:
        return {"config": run_config, "epoch": tr.state.epochs_done, "best_epoch": tr.state.best_epoch,
                "embeddings": embeddings, "embeddings_trained": trained_embeddings,
                "phase1_model_digest": side.get("model_digest"),
                "metrics": {k: rec[k] for k in ("train_loss", "train_ppl", "val_loss", "val_ppl", "val_acc")}}

    def write_best(obj: dict, meta: dict) -> None:
        atomic_torch_save(obj, paths.PHASE2_BEST)
        atomic_write_json(paths.sidecar(paths.PHASE2_BEST), meta)

    resumed = store.load()
    if resumed is not None:
        try:
            trainer.load_state_dict(resumed["trainer"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
            # same params and data, but a layout this code does not read (another version)
            log.warning("ignoring resume checkpoint %s: unreadable state (%s: %s); starting from scratch",
                        store.paths[0], type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            resumed = None
            del trainer, model  # possibly half-loaded: rebuild from the Phase 1 checkpoint
            trainer = new_trainer()
            model = trainer.model
    if resumed is not None:
        log.info("resumed phase2 after epoch %d (%d optimizer steps)", trainer.state.epochs_done,
                 trainer.state.steps)
        best = best_store.load()
        if best is not None and best.get("epoch") == trainer.state.best_epoch:
            if dist.main:
                write_best(best["checkpoint"], best["sidecar"])
        elif best is not None and int(best.get("epoch", 0)) > trainer.state.best_epoch:
            pass  # saved after the rolling checkpoint: the re-run epochs find (and rewrite) it again
        elif trainer.state.best_epoch:
            raise CheckpointError(f"resume checkpoint of phase2 is after epoch {trainer.state.epochs_done} but "
                                  f"the best model (epoch {trainer.state.best_epoch}) is not in "
                                  f"{cfg.resume.dir}; delete {cfg.resume.dir}/phase2.pt to start over")

    saved = {"epoch": trainer.state.epochs_done if resumed is not None else None}

    def on_epoch_end(tr: Phase2Trainer, rec: EpochRecord, improved: bool) -> None:
        if not dist.main:  # every rank holds the same weights; rank 0 alone writes
            return
        if improved:
            obj, meta = payload(tr), sidecar(tr, rec.as_row())
            write_best(obj, meta)
            best_store.save({"epoch": rec.epoch, "checkpoint": obj, "sidecar": meta})
            del obj
        if tr.state.epochs_done % p2.checkpoint_every == 0 or tr.done:
            store.save({"trainer": tr.state_dict()})
            saved["epoch"] = tr.state.epochs_done

    with oom_advice("phase2_lm", "phase2.batch_tokens"):
        try:
            state = trainer.run(on_epoch_end=on_epoch_end)
        except NumericalError as e:
            raise NumericalError(f"{e}. {_kept(store, saved['epoch'])} Try a lower phase2.learning_rate or "
                                 f"runtime.precision: fp32.") from None
    memory = dist.memory(peak_memory(rt.device))
    if not dist.main:
        shutdown(dist)
        return {}
    bad = first_non_finite({k: v for k, v in model_state(trainer).items()})
    if bad is not None:
        raise NumericalError(f"phase2: NaN/Inf in the model weights ({bad}) after epoch {state.epochs_done}. "
                             f"{_kept(store, saved['epoch'])} Try a lower phase2.learning_rate.")

    hist = state.history
    last = hist[-1]
    atomic_torch_save(payload(trainer), paths.PHASE2_LATEST)
    atomic_write_json(paths.sidecar(paths.PHASE2_LATEST), sidecar(trainer, last))
    rows = [{**{k: r[k] for k in CSV_COLUMNS[:-2]}, "unigram_ppl": _r(base["unigram_ppl"], 4),
             "bigram_ppl": _r(base["bigram_ppl"], 4)} for r in hist]
    atomic_write_text(paths.PHASE2_HISTORY, csv_text(rows))
    epoch_s = sum(r["time_s"] for r in hist)
    metrics = {
        "val": {"loss": _r(last["val_loss"]), "ppl": _r(last["val_ppl"], 4), "acc": _r(last["val_acc"])},
        "train": {"loss": _r(last["train_loss"]), "ppl": _r(last["train_ppl"], 4)},
        "best": {"epoch": state.best_epoch, "val_loss": _r(state.best_val_loss),
                 "val_ppl": _r(ppl(state.best_val_loss), 4)},
        "baseline": {"unigram_loss": _r(base["unigram_loss"]), "unigram_ppl": _r(base["unigram_ppl"], 4),
                     "bigram_loss": _r(base["bigram_loss"]), "bigram_ppl": _r(base["bigram_ppl"], 4),
                     "majority_acc": _r(base["majority_acc"]), "majority_token": base["majority_token"]},
        "beats_unigram": bool(last["val_loss"] < base["unigram_loss"]),
        "beats_bigram": bool(last["val_loss"] < base["bigram_loss"]),
        "epochs": state.epochs_done, "optimizer_steps": state.steps, "best_epoch": state.best_epoch,
        "tokens": train.num_tokens, "val_tokens": val.num_tokens,
        "train_targets": trainer.train["num_targets"], "val_targets": trainer.val["num_targets"],
        "time_s": round(time.perf_counter() - t_start, 2),
        "epoch_time_s": round(epoch_s, 2),
        "tokens_per_s": round(train.num_tokens * len(hist) / epoch_s, 1) if epoch_s > 0 else None,
        "embeddings": embeddings, "embeddings_trained": trained_embeddings,
        "freeze_context": p2.freeze_context, "predict_from": p2.predict_from, "stream": stream,
        "phase1_passed_validation": bool(gate["passed"]),
        "precision": rt.precision, "device": rt.device.type,
        **merge_peaks(memory, peak_memory(rt.device)),
    }
    atomic_write_json(paths.PHASE2_METRICS, metrics)
    store.clear()
    best_store.clear()
    shutdown(dist)
    log.info("phase2 done: %d epochs, %d optimizer steps, val loss %.4f (ppl %.1f, acc %.2f%%) vs unigram ppl "
             "%.1f / bigram ppl %.1f; best epoch %d; %.1fs", state.epochs_done, state.steps, last["val_loss"],
             last["val_ppl"], 100 * last["val_acc"], base["unigram_ppl"], base["bigram_ppl"], state.best_epoch,
             metrics["time_s"])
    return metrics
