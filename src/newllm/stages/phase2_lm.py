"""Stage phase2_lm: Phase 2 next-token training on the Phase 1 model (``newllm.cvfp.phase2``).

Writes:

- ``models/phase2_best.pt``: the kept checkpoint, the epoch with the lowest validation loss
  (``{"model_state_dict", "config", "epoch", "phase2_history"}``), and ``models/model_latest.pt``,
  the last epoch's weights, each with a JSON sidecar (``paths.sidecar``);
- ``metrics/phase2.json``: ``val``/``train`` of the kept checkpoint, ``last`` (the last epoch),
  the baselines of ``metrics/baselines.json`` and whether the kept checkpoint beats each;
- ``metrics/phase2_epochs.csv``: one row per epoch, with the strongest n-gram baseline's
  perplexity as a constant column so that plots draw it as a line.

A rolling resume checkpoint (``resume/phase2.pt``) is kept every ``phase2.checkpoint_every``
epochs and the best model so far in ``resume/phase2_best.pt`` (``dvc repro`` deletes
``models/`` outputs before re-running), both cleared on success.
"""
from __future__ import annotations

import logging
import time

from newllm import paths
from newllm.cvfp import checkpoint
from newllm.config import STAGE_SECTIONS, Config
from newllm.cvfp.phase2 import Phase2Trainer, prepare_head
from newllm.data.tokens import TokenSet, load_token_set, next_token_targets
from newllm.dist import init_from_env, shutdown
from newllm.errors import CheckpointError, NumericalError
from newllm.io import atomic_write_json, atomic_write_text, csv_text, read_json, state_dict_digest
from newllm.lm_loss import limit_heap_retention
from newllm.resume import fingerprint, first_non_finite
from newllm.runtime import Runtime, device_type, merge_peaks, peak_memory
from newllm.train.resumable import run_resumable

log = logging.getLogger(__name__)
SECTIONS = STAGE_SECTIONS["phase2_lm"]
CSV_COLUMNS = ["epoch", "train_loss", "train_ppl", "val_loss", "val_ppl", "val_acc", "optimizer_steps",
               "time_s", "tokens_per_s"]
KEPT = f"Nothing final was written ({paths.PHASE2_BEST}, {paths.PHASE2_LATEST}, {paths.PHASE2_METRICS})."


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


def read_baselines(val_targets: int) -> dict:
    """metrics/baselines.json, checked to score as many validation pairs as Phase 2."""
    base = read_json(paths.BASELINES_METRICS, "baselines")
    try:
        pairs = int(base["val_pairs"])
        _ = base["kn_trigram"]["loss"], base["add_one"]["unigram"]["loss"]
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"baselines {paths.BASELINES_METRICS} lack their figures; re-run "
                              f"`dvc repro baselines`") from None
    if pairs != val_targets:
        raise CheckpointError(f"baselines {paths.BASELINES_METRICS} scored {pairs} validation pairs, Phase 2 "
                              f"scores {val_targets}: they were computed on other tokens or another "
                              f"phase1.stream; re-run `dvc repro baselines`")
    return base


def _r(v: float, nd: int = 6) -> float:
    return round(float(v), nd)


class Outputs:
    """What the stage writes about a trainer: the model files of an epoch with their sidecars."""

    def __init__(self, cfg: Config, side: dict, stream: str, embeddings: str, trained_embeddings: bool):
        self.side, self.embeddings, self.trained_embeddings = side, embeddings, trained_embeddings
        self.run_config = {"seed": cfg.seed, "model": {**side["config"]["model"],
                                                       "tie_embeddings": cfg.model.tie_embeddings},
                           "phase1": {"stream": stream}, "phase2": cfg.section_dict("phase2")}

    def write(self, path, weights: dict, history: list[dict], best_epoch: int) -> None:
        rec = history[-1]
        checkpoint.save(path, checkpoint.phase2_payload(weights, self.run_config, history), {
            "config": self.run_config, "epoch": len(history), "best_epoch": best_epoch,
            "embeddings": self.embeddings, "embeddings_trained": self.trained_embeddings,
            "phase1_model_digest": self.side.get("model_digest"),
            "metrics": {k: rec[k] for k in ("train_loss", "train_ppl", "val_loss", "val_ppl", "val_acc")}})


def run(cfg: Config) -> dict:
    t_start = time.perf_counter()
    dist = init_from_env(device_type(cfg.runtime))
    rt = Runtime.from_config(cfg.runtime)
    limit_heap_retention()  # less peak RSS on glibc (see its docstring)
    gate = check_gate()
    _, side = checkpoint.load_phase1(rt)
    try:
        stream = side["config"]["phase1"]["stream"]
    except (KeyError, TypeError):
        raise CheckpointError(f"phase1 sidecar {paths.PHASE1_SIDECAR} lacks phase1.stream; "
                              f"re-run `dvc repro phase1_fixed_point`") from None
    p2, vocab = cfg.phase2, int(side["config"]["model"]["vocab_size"])
    train, val = load_token_set(paths.TOKENS_TRAIN, vocab), load_token_set(paths.TOKENS_VAL, vocab)

    def fresh() -> Phase2Trainer:
        model, _ = checkpoint.load_phase1(rt)
        prepare_head(model, p2.predict_from, cfg.seed)
        if cfg.model.tie_embeddings:
            if model.embeddings_source != "random":
                raise CheckpointError("model.tie_embeddings needs trainable embeddings; the Phase 1 model has "
                                      "pretrained (frozen) ones: set model.tie_embeddings: false")
            model.tie_head()
        return Phase2Trainer(model, train.tokens, train.offsets, val.tokens, val.offsets, p2, stream, rt,
                             dist=dist, seed=cfg.seed)

    base = read_baselines(int((next_token_targets(val.tokens, val.offsets, stream) >= 0).sum()))
    tokens_digest = state_dict_digest({"t": train.tokens, "o": train.offsets, "vt": val.tokens, "vo": val.offsets})
    fp = fingerprint({k: v for k, v in cfg.section_dict("phase2").items() if k != "checkpoint_every"},
                     cfg.model.tie_embeddings, cfg.runtime.precision, cfg.seed, side.get("model_digest"),
                     tokens_digest)
    run_ = run_resumable("phase2", cfg.resume, fp, fresh, p2.checkpoint_every, KEPT,
                         "Try a lower phase2.learning_rate or runtime.precision: fp32.", dist)
    trainer = run_.trainer
    memory = dist.memory(peak_memory(rt.device))
    if not dist.main:
        shutdown(dist)
        return {}
    bad = first_non_finite(dict(trainer.model.state_dict()))
    if bad is not None:
        raise NumericalError(f"phase2: NaN/Inf in the model weights ({bad}) after epoch {trainer.state.done}. "
                             f"{KEPT} Try a lower phase2.learning_rate.")
    out = Outputs(cfg, side, stream, trainer.model.embeddings_source,
                  not (trainer.embeddings_frozen or p2.freeze_context))
    metrics = _write_outputs(cfg, trainer, out, base, gate, train, val, time.perf_counter() - t_start,
                             merge_peaks(memory, peak_memory(rt.device)))
    run_.done()
    shutdown(dist)
    return metrics


def _baseline_block(base: dict) -> dict:
    """``baseline.*`` of metrics/phase2.json: ``unigram_*``/``bigram_*`` keep their old meaning
    (add-one; weak, kept for comparison with older runs), beside the strong baselines."""
    add = base["add_one"]
    return {"unigram_loss": _r(add["unigram"]["loss"]), "unigram_ppl": _r(add["unigram"]["ppl"], 4),
            "bigram_loss": _r(add["bigram"]["loss"]), "bigram_ppl": _r(add["bigram"]["ppl"], 4),
            "smoothed_unigram_loss": _r(base["unigram"]["loss"]), "smoothed_unigram_ppl": _r(base["unigram"]["ppl"], 4),
            "kn_bigram_loss": _r(base["kn_bigram"]["loss"]), "kn_bigram_ppl": _r(base["kn_bigram"]["ppl"], 4),
            "kn_trigram_loss": _r(base["kn_trigram"]["loss"]), "kn_trigram_ppl": _r(base["kn_trigram"]["ppl"], 4),
            "majority_acc": _r(base["majority"]["acc"]), "majority_token": base["majority"]["token"]}


def _write_outputs(cfg: Config, trainer: Phase2Trainer, out: Outputs, base: dict, gate: dict, train: TokenSet,
                   val: TokenSet, seconds: float, memory: dict) -> dict:
    st, p2 = trainer.state, cfg.phase2
    hist, last = st.history, st.history[-1]
    kept = hist[st.best - 1]
    out.write(paths.PHASE2_BEST, st.kept, hist[:st.best], st.best)
    out.write(paths.PHASE2_LATEST, checkpoint.state_on_cpu(trainer.model), hist, st.best)
    kn3 = _r(base["kn_trigram"]["ppl"], 4)
    atomic_write_text(paths.PHASE2_HISTORY, csv_text([{**{k: r[k] for k in CSV_COLUMNS}, "kn_trigram_ppl": kn3}
                                                      for r in hist]))
    epoch_s = sum(r["time_s"] for r in hist)
    bl = _baseline_block(base)
    loss = kept["val_loss"]
    metrics = {
        "val": {"loss": _r(loss), "ppl": _r(kept["val_ppl"], 4), "acc": _r(kept["val_acc"])},
        "train": {"loss": _r(kept["train_loss"]), "ppl": _r(kept["train_ppl"], 4)},
        "last": {"epoch": last["epoch"], "val": {"loss": _r(last["val_loss"]), "ppl": _r(last["val_ppl"], 4),
                                                 "acc": _r(last["val_acc"])},
                 "train": {"loss": _r(last["train_loss"]), "ppl": _r(last["train_ppl"], 4)}},
        "best": {"epoch": st.best, "val_loss": _r(st.best_loss), "val_ppl": _r(kept["val_ppl"], 4)},
        "baseline": bl,
        "beats_unigram": bool(loss < bl["unigram_loss"]), "beats_bigram": bool(loss < bl["bigram_loss"]),
        "beats_kn_bigram": bool(loss < bl["kn_bigram_loss"]), "beats_kn_trigram": bool(loss < bl["kn_trigram_loss"]),
        "beats_majority": bool(kept["val_acc"] > bl["majority_acc"]),
        "epochs": st.done, "optimizer_steps": st.steps, "best_epoch": st.best,
        "stopped_early": st.stopped_early, "tokens": train.num_tokens, "val_tokens": val.num_tokens,
        "train_targets": trainer.train["num_targets"], "val_targets": trainer.val["num_targets"],
        "parameters": sum(p.numel() for p in {id(p): p for p in trainer.model.parameters()}.values()),
        "trained_parameters": sum(p.numel() for p in trainer.params),
        "time_s": round(seconds, 2), "epoch_time_s": round(epoch_s, 2),
        "tokens_per_s": round(train.num_tokens * len(hist) / epoch_s, 1) if epoch_s > 0 else None,
        "embeddings": out.embeddings, "embeddings_trained": out.trained_embeddings,
        "tie_embeddings": cfg.model.tie_embeddings, "freeze_context": p2.freeze_context,
        "predict_from": p2.predict_from, "stream": trainer.stream,
        "phase1_passed_validation": bool(gate["passed"]),
        "precision": trainer.rt.precision, "device": trainer.rt.device.type, **memory,
    }
    atomic_write_json(paths.PHASE2_METRICS, metrics)
    log.info("phase2 done: %d epochs, %d optimizer steps; kept epoch %d: val loss %.4f (ppl %.1f, acc %.2f%%) vs "
             "Kneser-Ney trigram ppl %.1f; last epoch val loss %.4f; %.1fs", st.done, st.steps,
             st.best, loss, kept["val_ppl"], 100 * kept["val_acc"], bl["kn_trigram_ppl"],
             last["val_loss"], seconds)
    return metrics
