"""Stage phase2_lm: Phase 2 next-token training on the Phase 1 model (``newllm.cvfp.phase2``).

Trains on the training split, keeps the epoch with the lowest validation loss (early stopping
reads validation only) and scores that kept model once on the test split. Writes:

- ``models/phase2_best.pt``: the kept epoch's model (``{"model_state_dict", "config", "epoch",
  "phase2_history"}``) with its JSON sidecar (``paths.sidecar``);
- ``metrics/phase2.json``: ``test`` (the reported figures) and ``val`` of the kept epoch,
  ``last`` (the last epoch), counts, time and memory;
- ``metrics/phase2_epochs.csv``: one row per epoch;
- ``metrics/rows/phase2.csv``: each test conversation's summed cross-entropy (for the
  intervals of ``newllm.bootstrap``).

A rolling resume checkpoint (``resume/phase2.pt``, with the kept epoch's weights) is kept
every ``phase2.checkpoint_every`` epochs and cleared on success.
"""
from __future__ import annotations

import logging
import time

from newllm import paths, pipeline
from newllm.bootstrap import row_sums, rows_csv
from newllm.config import Config
from newllm.cvfp import checkpoint
from newllm.cvfp.phase2 import Phase2Trainer, prepare_head
from newllm.data.tokens import TokenSet, load_token_set, pair_rows
from newllm.dist import init_from_env, shutdown
from newllm.errors import CheckpointError, NumericalError
from newllm.io import atomic_write_json, atomic_write_text, csv_text, read_json, state_dict_digest
from newllm.memory import limit_heap_retention
from newllm.resume import fingerprint, first_non_finite
from newllm.runtime import Runtime, device_type, merge_peaks, peak_memory
from newllm.train.resumable import run_resumable

log = logging.getLogger(__name__)
SECTIONS = pipeline.sections("phase2_lm")
CSV_COLUMNS = ["epoch", "train_loss", "train_ppl", "val_loss", "val_ppl", "val_acc", "optimizer_steps",
               "time_s", "tokens_per_s"]
KEPT = f"Nothing final was written ({paths.PHASE2_BEST}, {paths.PHASE2_METRICS})."


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
    test = load_token_set(paths.TOKENS_TEST, vocab)

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
    metrics = _write_outputs(cfg, trainer, out, gate, {"train": train, "val": val, "test": test},
                             time.perf_counter() - t_start, merge_peaks(memory, peak_memory(rt.device)))
    run_.done()
    shutdown(dist)
    return metrics


def _test_scores(trainer: Phase2Trainer, test: TokenSet) -> dict:
    """The kept epoch's figures on the test split; its per-conversation sums into metrics/rows/."""
    trainer.model.load_state_dict(trainer.state.kept)
    scores = trainer.evaluate(trainer.split(test.tokens, test.offsets), pairs=True)
    rows = pair_rows(test.tokens, test.offsets, trainer.stream)
    atomic_write_text(paths.rows_file("phase2"), rows_csv(row_sums(rows, {"cvfp": scores.pair_ce})))
    return {"loss": _r(scores.loss), "ppl": _r(scores.ppl, 4), "acc": _r(scores.acc)}


def _write_outputs(cfg: Config, trainer: Phase2Trainer, out: Outputs, gate: dict, sets: dict[str, TokenSet],
                   seconds: float, memory: dict) -> dict:
    st, p2 = trainer.state, cfg.phase2
    hist, last = st.history, st.history[-1]
    kept = hist[st.best - 1]
    out.write(paths.PHASE2_BEST, st.kept, hist[:st.best], st.best)
    atomic_write_text(paths.PHASE2_HISTORY, csv_text([{k: r[k] for k in CSV_COLUMNS} for r in hist]))
    params = {id(p): p for p in trainer.model.parameters()}.values()
    epoch_s = sum(r["time_s"] for r in hist)
    test = _test_scores(trainer, sets["test"])
    metrics = {
        "test": test,
        "val": {"loss": _r(kept["val_loss"]), "ppl": _r(kept["val_ppl"], 4), "acc": _r(kept["val_acc"])},
        "train": {"loss": _r(kept["train_loss"]), "ppl": _r(kept["train_ppl"], 4)},
        "last": {"epoch": last["epoch"], "val": {"loss": _r(last["val_loss"]), "ppl": _r(last["val_ppl"], 4),
                                                 "acc": _r(last["val_acc"])},
                 "train": {"loss": _r(last["train_loss"]), "ppl": _r(last["train_ppl"], 4)}},
        "best": {"epoch": st.best, "val_loss": _r(st.best_loss), "val_ppl": _r(kept["val_ppl"], 4)},
        "epochs": st.done, "optimizer_steps": st.steps, "best_epoch": st.best,
        "stopped_early": st.stopped_early, "tokens": sets["train"].num_tokens, "val_tokens": sets["val"].num_tokens,
        "test_tokens": sets["test"].num_tokens, "train_targets": trainer.train["num_targets"],
        "val_targets": trainer.val["num_targets"],
        "parameters": sum(p.numel() for p in params), "trained_parameters": sum(p.numel() for p in trainer.params),
        "time_s": round(seconds, 2), "epoch_time_s": round(epoch_s, 2),
        "tokens_per_s": round(sets["train"].num_tokens * len(hist) / epoch_s, 1) if epoch_s > 0 else None,
        "embeddings": out.embeddings, "embeddings_trained": out.trained_embeddings,
        "tie_embeddings": cfg.model.tie_embeddings, "freeze_context": p2.freeze_context,
        "predict_from": p2.predict_from, "stream": trainer.stream,
        "phase1_passed_validation": bool(gate["passed"]),
        "precision": trainer.rt.precision, "device": trainer.rt.device.type, **memory,
    }
    atomic_write_json(paths.PHASE2_METRICS, metrics)
    log.info("phase2 done: %d epochs, %d optimizer steps; kept epoch %d (val loss %.4f): test loss %.4f (ppl %.1f, "
             "acc %.2f%%); last epoch val loss %.4f; %.1fs", st.done, st.steps, st.best, kept["val_loss"],
             test["loss"], test["ppl"], 100 * test["acc"], last["val_loss"], seconds)
    return metrics
