"""Bad params stop the stage at once: exit 2, `error: ...` naming the key and what is
allowed, no traceback, no file written or changed.

Every case runs the real stage script in a copy of a complete tiny run, so a stage that
did not check its params first would find valid inputs and start computing.
"""
from __future__ import annotations

import pytest
import torch
from reliability_helpers import (
    assert_clean_error,
    copy_run,
    run_stage,
    snapshot,
    write_params,
)

P1, VAL, FETCH, TOK = "phase1_fixed_point", "validate_rank", "fetch_ultrachat", "tokenize_cache"
NAN, INF = float("nan"), float("inf")
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")

# (stage, params: a dict merged into the tiny params, or the whole file as text, key, allowed)
CASES = [
    # seed
    pytest.param(P1, {"seed": -1}, "seed", "an integer >= 0", id="seed-negative"),
    pytest.param(FETCH, {"seed": "0"}, "seed", "an integer >= 0", id="seed-string"),
    pytest.param(VAL, {"seed": 1.5}, "seed", "an integer >= 0", id="seed-float"),
    # data
    pytest.param(FETCH, {"data": {"source": "hub"}}, "data.source", "one of 'ultrachat', 'chatterbot', 'jsonl'",
                 id="data-source-choice"),
    pytest.param(FETCH, {"data": {"num_samples": True}}, "data.num_samples", "an integer >= 1",
                 id="data-bool-for-int"),
    pytest.param(FETCH, {"data": {"num_samples": 0}}, "data.num_samples", "an integer >= 1", id="data-zero-samples"),
    pytest.param(FETCH, {"data": {"val_fraction": 1.0}}, "data.val_fraction", "> 0 and < 1",
                 id="data-val-fraction-1"),
    pytest.param(FETCH, {"data": {"val_fraction": NAN}}, "data.val_fraction", "a finite number",
                 id="data-val-fraction-nan"),
    pytest.param(TOK, {"data": {"max_seq_length": "128"}}, "data.max_seq_length", "an integer >= 2",
                 id="data-string-for-int"),
    pytest.param(TOK, {"data": {"tokenizer": "gpt3"}}, "data.tokenizer", "one of 'gpt2', 'gpt2-offline'",
                 id="data-tokenizer-choice"),
    pytest.param(FETCH, {"data": ["chatterbot", 6]}, "data", "a mapping", id="data-list-for-mapping"),
    pytest.param(FETCH, {"data": {"num_sample": 6}}, "data.num_sample", "unknown key (typo?)",
                 id="data-unknown-key"),
    pytest.param(FETCH, {"data": {"source": "jsonl", "path": ""}}, "data.path",
                 "when data.source is 'jsonl'", id="cross-jsonl-needs-path"),
    pytest.param(FETCH, {"data": {"source": "jsonl", "path": "no/such/file.jsonl"}}, "data.path",
                 "give a JSONL or Parquet file", id="cross-jsonl-path-missing"),
    pytest.param(FETCH, {"data": {"num_samples": 5000}}, "data.num_samples", "Use data.num_samples <=",
                 id="cross-validation-rows-available"),
    # model
    pytest.param(P1, {"model": {"context_dim": 0}}, "model.context_dim", "an integer >= 1", id="model-dim-zero"),
    pytest.param(P1, {"model": {"embed_dim": 16.5}}, "model.embed_dim", "an integer >= 1", id="model-float-for-int"),
    pytest.param(P1, {"model": {"layernorm_mix": 1.5}}, "model.layernorm_mix", ">= 0 and <= 1",
                 id="model-mix-range"),
    pytest.param(P1, {"model": {"layernorm_trainable": "maybe"}}, "model.layernorm_trainable", "true or false",
                 id="model-string-for-bool"),
    pytest.param(P1, {"model": {"vocab_size": INF}}, "model.vocab_size", "an integer >= 2", id="model-inf"),
    pytest.param(P1, {"model": {"pretrained_embeddings": True}}, "model.embed_dim",
                 "768 when model.pretrained_embeddings is true", id="cross-pretrained-needs-768"),
    pytest.param(P1, {"model": {"pretrained_embeddings": True, "embed_dim": 768, "vocab_size": 1000}},
                 "model.vocab_size", "50257 when model.pretrained_embeddings", id="cross-pretrained-vocab"),
    # phase1
    pytest.param(P1, {"phase1": {"learning_rate": "1e-3"}}, "phase1.learning_rate",
                 "YAML read '1e-3' as a string", id="phase1-exponent-string"),
    pytest.param(P1, {"phase1": {"learning_rate": INF}}, "phase1.learning_rate", "a finite number > 0",
                 id="phase1-lr-inf"),
    pytest.param(P1, {"phase1": {"dist_reg_weight": NAN}}, "phase1.dist_reg_weight", "a finite number",
                 id="phase1-nan"),
    pytest.param(P1, {"phase1": {"stream": "document"}}, "phase1.stream", "one of 'sample', 'corpus'",
                 id="phase1-stream-choice"),
    pytest.param(P1, {"phase1": {"ema_momentum": 1.0}}, "phase1.ema_momentum", "< 1", id="phase1-momentum-1"),
    pytest.param(P1, {"phase1": {"batch_tokens": -1}}, "phase1.batch_tokens", "an integer >= 0",
                 id="phase1-negative-batch"),
    pytest.param(P1, {"phase1": [1, 2]}, "phase1", "a mapping", id="phase1-list-for-mapping"),
    # validate
    pytest.param(VAL, {"validate": {"min_train_er_pct": 150}}, "validate.min_train_er_pct", "<= 100",
                 id="validate-range"),
    pytest.param(VAL, {"validate": {"enforce": 1}}, "validate.enforce", "true or false",
                 id="validate-int-for-bool"),
    pytest.param(VAL, {"validate": {"cosine_pairs": 0}}, "validate.cosine_pairs", "an integer >= 1",
                 id="validate-zero-pairs"),
    # phase2
    pytest.param("phase2_lm", {"phase2": {"predict_from": "hidden"}}, "phase2.predict_from",
                 "one of 'token', 'context'", id="phase2-choice"),
    pytest.param("phase2_lm", {"phase2": {"epochs": 0}}, "phase2.epochs", "an integer >= 1",
                 id="phase2-zero-epochs"),
    pytest.param("phase2_lm", {"phase2": {"learning_rate": -0.1}}, "phase2.learning_rate", "> 0",
                 id="phase2-negative-lr"),
    # runtime
    pytest.param(P1, {"runtime": {"device": "tpu"}}, "runtime.device", "one of 'auto', 'cpu', 'cuda'",
                 id="runtime-device-choice"),
    pytest.param(P1, {"runtime": {"device": "cuda"}}, "runtime.device = 'cuda'", "use runtime.device: auto or cpu",
                 id="runtime-cuda-without-gpu", marks=needs_no_cuda),
    pytest.param(VAL, {"runtime": {"threads": -2}}, "runtime.threads", "an integer >= 0", id="runtime-threads"),
    pytest.param(P1, {"runtime": {"precision": "fp8"}}, "runtime.precision", "one of 'fp32', 'bf16', 'fp16'",
                 id="runtime-precision-choice"),
    # resume
    pytest.param(P1, {"resume": {"enabled": "true"}}, "resume.enabled", "true or false", id="resume-string-bool"),
    pytest.param(P1, {"resume": {"dir": "data/contexts/ckpt"}}, "resume.dir",
                 "outside the DVC outputs (data/contexts/", id="cross-resume-dir-in-dvc-output"),
    pytest.param(P1, {"resume": {"mirror_dir": "./resume"}}, "resume.mirror_dir", "other than resume.dir",
                 id="cross-mirror-is-dir"),
    # report
    pytest.param("report", {"report": {"prompts": "Hello"}}, "report.prompts", "a list of strings",
                 id="report-string-for-list"),
    pytest.param("report", {"report": {"temperature": -1.0}}, "report.temperature", "a finite number >= 0",
                 id="report-negative-temperature"),
    # dist
    pytest.param(P1, {"dist": {"nproc": 0}}, "dist.nproc", "an integer >= 1", id="dist-zero"),
    # the file itself
    pytest.param(P1, {"phase3": {"epochs": 1}}, "phase3", "unknown key (typo?)", id="unknown-section"),
    pytest.param(P1, "seed: 0\nphase1: [unclosed\n", "params.yaml", "valid YAML", id="unparsable-yaml"),
    pytest.param(P1, "phase1:\n  learning_rate: 0.002\n  learning_rate: 0.1\n", "params.yaml",
                 "found duplicate key 'learning_rate'", id="duplicate-key"),
    pytest.param(VAL, "- seed\n- 0\n", "params.yaml", "a YAML mapping of sections", id="top-level-list"),
    pytest.param(VAL, None, "nope.yaml", "an existing params.yaml", id="params-file-missing"),
]


@pytest.mark.parametrize("stage, params, key, allowed", CASES)
def test_bad_params_stop_the_stage_before_any_work(prepared_run, tmp_path, stage, params, key, allowed):
    d = copy_run(prepared_run, tmp_path / "run")
    args: tuple[str, ...] = ()
    if params is None:
        args = ("--params", "nope.yaml")
    elif isinstance(params, str):
        (d / "params.yaml").write_text(params)
    else:
        write_params(d, params)
    before = snapshot(d)
    r = run_stage(d, stage, *args)
    assert_clean_error(r, key, allowed)
    assert " INFO " not in r.stderr, repr(r)  # stopped before the stage logged any work (no timing asserts)
    assert snapshot(d) == before  # nothing written, nothing changed


def test_there_are_enough_cases():
    sections = {"seed", "data", "model", "phase1", "validate", "phase2", "runtime", "resume", "report", "dist"}
    covered = {str(c.values[2]).split(".")[0].split(" ")[0] for c in CASES}
    assert sections <= covered and len(CASES) >= 25
