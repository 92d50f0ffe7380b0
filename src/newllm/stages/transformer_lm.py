"""Stage transformer_lm: the same-size causal transformer baseline (``newllm.baselines.transformer``)
trained on the training split, its epoch kept on validation, scored on the test pairs Phase 2
scores. Writes metrics/transformer.json, metrics/transformer_epochs.csv and the per-conversation
test sums metrics/rows/transformer.csv; resumes from a rolling checkpoint like the CVFP phases.
Its weights are not kept as an output: nothing reads them, and they would double the DVC cache
of every configuration (its figures are what the comparison needs)."""
from __future__ import annotations

import logging
import time

from newllm import paths, pipeline
from newllm.baselines.ngram import pairs
from newllm.baselines.transformer import (
    TransformerLM,
    TransformerTrainer,
    block_parameters,
    context_length,
    cvfp_layer_parameters,
    resolve_shape,
    sequences,
)
from newllm.bootstrap import row_sums, rows_csv
from newllm.config import Config
from newllm.data.tokens import TokenSet, load_token_set, pair_rows
from newllm.errors import ConfigError, DataError
from newllm.io import atomic_write_json, atomic_write_text, csv_text, state_dict_digest
from newllm.lm_loss import Scores
from newllm.memory import limit_heap_retention
from newllm.resume import fingerprint
from newllm.runtime import Runtime, peak_memory
from newllm.train.resumable import run_resumable

log = logging.getLogger(__name__)
SECTIONS = pipeline.sections("transformer_lm")


def run(cfg: Config) -> dict:
    t_start = time.perf_counter()
    rt = Runtime.from_config(cfg.runtime)
    limit_heap_retention()
    m, tc, stream = cfg.model, cfg.transformer, cfg.phase1.stream
    train, val = load_token_set(paths.TOKENS_TRAIN, m.vocab_size), load_token_set(paths.TOKENS_VAL, m.vocab_size)
    test = load_token_set(paths.TOKENS_TEST, m.vocab_size)
    layers, heads = resolve_shape(tc, m.embed_dim, m.context_dim, m.num_layers)
    if m.embed_dim % heads:
        raise ConfigError("transformer.num_heads", tc.num_heads, f"a divisor of model.embed_dim ({m.embed_dim}), or 0")
    length = context_length(train, val, test)
    val_seq, test_seq = (sequences(ts.tokens, ts.offsets, stream, length) for ts in (val, test))
    for name, ts, seq in (("validation", val, val_seq), ("test", test, test_seq)):
        if int((seq[1] >= 0).sum()) != pairs(ts.tokens, ts.offsets, stream)[1].numel():
            raise DataError(f"transformer_lm: its {name} sequences do not cover Phase 2's {name} pairs")

    def fresh() -> TransformerTrainer:
        model = TransformerLM(m.vocab_size, m.embed_dim, layers, heads, tc.ff_mult, length, tc.dropout,
                              tc.tie_embeddings, cfg.seed)
        return TransformerTrainer(model, sequences(train.tokens, train.offsets, stream, length), val_seq, tc, rt,
                                  cfg.seed)

    fp = fingerprint(cfg.section_dict("transformer"), [layers, heads, length, m.vocab_size, m.embed_dim], stream,
                     cfg.runtime.precision, cfg.seed,
                     state_dict_digest({"t": train.tokens, "o": train.offsets, "vt": val.tokens, "vo": val.offsets}))
    run_ = run_resumable("transformer", cfg.resume, fp, fresh, tc.checkpoint_every, "Nothing was written.",
                         "Try a lower transformer.learning_rate.")
    trainer = run_.trainer
    shape = {"layers": layers, "heads": heads, "d_model": m.embed_dim, "ff_mult": tc.ff_mult, "context": length,
             "block_parameters": block_parameters(m.embed_dim, tc.ff_mult),
             "cvfp_layer_parameters": cvfp_layer_parameters(m.embed_dim, m.context_dim, m.num_layers)}
    trainer.model.load_state_dict(trainer.state.kept)
    scores = trainer.evaluate(test_seq, pairs=True)
    rows = pair_rows(test.tokens, test.offsets, stream)
    atomic_write_text(paths.rows_file("transformer"), rows_csv(row_sums(rows, {"transformer": scores.pair_ce})))
    metrics = _write_outputs(cfg, trainer, shape, train, scores, time.perf_counter() - t_start, peak_memory(rt.device))
    run_.done()
    return metrics


def _write_outputs(cfg: Config, trainer: TransformerTrainer, shape: dict, train: TokenSet, test: Scores,
                   seconds: float, memory: dict) -> dict:
    st = trainer.state
    kept, last = st.history[st.best - 1], st.history[-1]
    atomic_write_text(paths.TRANSFORMER_HISTORY, csv_text(st.history))
    epoch_s = sum(r["time_s"] for r in st.history)
    params = {id(p): p for p in trainer.model.parameters()}.values()

    def figs(r: dict) -> dict:
        return {"loss": round(r["val_loss"], 6), "ppl": round(r["val_ppl"], 4), "acc": round(r["val_acc"], 6)}

    metrics = {
        "test": {"loss": round(test.loss, 6), "ppl": round(test.ppl, 4), "acc": round(test.acc, 6)},
        "test_targets": test.targets,
        "val": figs(kept), "train": {"loss": round(kept["train_loss"], 6), "ppl": round(kept["train_ppl"], 4)},
        "last": {"epoch": last["epoch"], "val": figs(last)},
        "best_epoch": st.best, "epochs": st.done, "stopped_early": st.stopped_early,
        "optimizer_steps": st.steps, "parameters": sum(p.numel() for p in params), **shape,
        "val_targets": trainer.num_val_targets, "train_targets": trainer.num_train_targets,
        "tokens": train.num_tokens, "time_s": round(seconds, 2), "epoch_time_s": round(epoch_s, 2),
        "tokens_per_s": round(train.num_tokens * len(st.history) / epoch_s, 1) if epoch_s > 0 else None,
        "precision": trainer.rt.precision, "device": trainer.rt.device.type, **memory,
    }
    atomic_write_json(paths.TRANSFORMER_METRICS, metrics)
    log.info("transformer done (%d layers, %d heads, %.2f M parameters): kept epoch %d (val loss %.4f): test loss "
             "%.4f (ppl %.1f, acc %.2f%%), %.1fs", shape["layers"], shape["heads"], metrics["parameters"] / 1e6,
             st.best, kept["val_loss"], test.loss, test.ppl, 100 * test.acc, seconds)
    return metrics
