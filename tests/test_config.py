"""The params rules (``newllm.config``): every bad value is refused with a ConfigError naming the
key, the value and what is allowed, by the stage whose sections hold it and by check_inputs,
the first stage, which checks every section. What a stage script does with such an error (exit 2,
one `error:` line, nothing written) is tests/test_cli.py's."""
from __future__ import annotations

import math

import pytest

from helpers.chain import write_params
from newllm import pipeline
from newllm.config import from_dict, load
from newllm.errors import ConfigError

P1, VAL, FETCH, TOK, P2 = "phase1_fixed_point", "validate_rank", "fetch_ultrachat", "tokenize_cache", "phase2_lm"
NAN, INF = float("nan"), float("inf")
UNPARSABLE = "unparsable YAML"

# (stage, params: a dict merged into the tiny params, or the whole file as text, or None for no
# file, then the ConfigError's key, value and a part of what it allows)
CASES = [
    # seed
    pytest.param(P1, {"seed": -1}, "seed", -1, "an integer >= 0", id="seed-negative"),
    pytest.param(FETCH, {"seed": "0"}, "seed", "0", "an integer >= 0", id="seed-string"),
    pytest.param(VAL, {"seed": 1.5}, "seed", 1.5, "an integer >= 0", id="seed-float"),
    # data
    pytest.param(FETCH, {"data": {"source": "hub"}}, "data.source", "hub",
                 "one of 'ultrachat', 'chatterbot', 'jsonl'", id="data-source-choice"),
    pytest.param(FETCH, {"data": {"num_samples": True}}, "data.num_samples", True, "an integer >= 1",
                 id="data-bool-for-int"),
    pytest.param(FETCH, {"data": {"num_samples": 0}}, "data.num_samples", 0, "an integer >= 1",
                 id="data-zero-samples"),
    pytest.param(FETCH, {"data": {"val_fraction": 1.0}}, "data.val_fraction", 1.0, "> 0 and < 1",
                 id="data-val-fraction-1"),
    pytest.param(FETCH, {"data": {"val_fraction": NAN}}, "data.val_fraction", NAN, "a finite number",
                 id="data-val-fraction-nan"),
    pytest.param(TOK, {"data": {"max_seq_length": "128"}}, "data.max_seq_length", "128", "an integer >= 2",
                 id="data-string-for-int"),
    pytest.param(TOK, {"data": {"tokenizer": "gpt3"}}, "data.tokenizer", "gpt3", "one of 'gpt2', 'gpt2-offline'",
                 id="data-tokenizer-choice"),
    pytest.param(FETCH, {"data": ["chatterbot", 6]}, "data", ["chatterbot", 6], "a mapping",
                 id="data-list-for-mapping"),
    pytest.param(FETCH, {"data": {"num_sample": 6}}, "data.num_sample", 6, "unknown key (typo?)",
                 id="data-unknown-key"),
    pytest.param(FETCH, {"data": {"source": "jsonl", "path": ""}}, "data.path", "",
                 "when data.source is 'jsonl'", id="cross-jsonl-needs-path"),
    # model
    pytest.param(P1, {"model": {"context_dim": 0}}, "model.context_dim", 0, "an integer >= 1", id="model-dim-zero"),
    pytest.param(P1, {"model": {"embed_dim": 16.5}}, "model.embed_dim", 16.5, "an integer >= 1",
                 id="model-float-for-int"),
    pytest.param(P1, {"model": {"layernorm_mix": 1.5}}, "model.layernorm_mix", 1.5, ">= 0 and <= 1",
                 id="model-mix-range"),
    pytest.param(P1, {"model": {"layernorm_trainable": "maybe"}}, "model.layernorm_trainable", "maybe",
                 "true or false", id="model-string-for-bool"),
    pytest.param(P1, {"model": {"vocab_size": INF}}, "model.vocab_size", INF, "an integer >= 2", id="model-inf"),
    pytest.param(P1, {"model": {"pretrained_embeddings": True}}, "model.embed_dim", 16,
                 "768 when model.pretrained_embeddings is true", id="cross-pretrained-needs-768"),
    pytest.param(P1, {"model": {"pretrained_embeddings": True, "embed_dim": 768, "vocab_size": 1000}},
                 "model.vocab_size", 1000, "50257 when model.pretrained_embeddings", id="cross-pretrained-vocab"),
    # phase1
    pytest.param(P1, {"phase1": {"learning_rate": "1e-3"}}, "phase1.learning_rate", "1e-3",
                 "YAML read '1e-3' as a string", id="phase1-exponent-string"),
    pytest.param(P1, {"phase1": {"learning_rate": INF}}, "phase1.learning_rate", INF, "a finite number > 0",
                 id="phase1-lr-inf"),
    pytest.param(P1, {"phase1": {"dist_reg_weight": NAN}}, "phase1.dist_reg_weight", NAN, "a finite number",
                 id="phase1-nan"),
    pytest.param(P1, {"phase1": {"stream": "document"}}, "phase1.stream", "document", "one of 'sample', 'corpus'",
                 id="phase1-stream-choice"),
    pytest.param(P1, {"phase1": {"ema_momentum": 1.0}}, "phase1.ema_momentum", 1.0, "< 1",
                 id="phase1-momentum-1"),
    pytest.param(P1, {"phase1": {"batch_tokens": -1}}, "phase1.batch_tokens", -1, "an integer >= 0",
                 id="phase1-negative-batch"),
    pytest.param(P1, {"phase1": [1, 2]}, "phase1", [1, 2], "a mapping", id="phase1-list-for-mapping"),
    # validate
    pytest.param(VAL, {"validate": {"min_train_er_pct": 150}}, "validate.min_train_er_pct", 150.0, "<= 100",
                 id="validate-range"),
    pytest.param(VAL, {"validate": {"enforce": 1}}, "validate.enforce", 1, "true or false",
                 id="validate-int-for-bool"),
    pytest.param(VAL, {"validate": {"cosine_pairs": 0}}, "validate.cosine_pairs", 0, "an integer >= 1",
                 id="validate-zero-pairs"),
    # phase2
    pytest.param(P2, {"phase2": {"predict_from": "hidden"}}, "phase2.predict_from", "hidden",
                 "one of 'token', 'context'", id="phase2-choice"),
    pytest.param(P2, {"phase2": {"epochs": 0}}, "phase2.epochs", 0, "an integer >= 1", id="phase2-zero-epochs"),
    pytest.param(P2, {"phase2": {"learning_rate": -0.1}}, "phase2.learning_rate", -0.1, "> 0",
                 id="phase2-negative-lr"),
    # runtime
    pytest.param(P1, {"runtime": {"device": "tpu"}}, "runtime.device", "tpu", "one of 'auto', 'cpu', 'cuda'",
                 id="runtime-device-choice"),
    pytest.param(VAL, {"runtime": {"threads": -2}}, "runtime.threads", -2, "an integer >= 0",
                 id="runtime-threads"),
    pytest.param(P1, {"runtime": {"precision": "fp8"}}, "runtime.precision", "fp8", "one of 'fp32', 'bf16', 'fp16'",
                 id="runtime-precision-choice"),
    # resume
    pytest.param(P1, {"resume": {"enabled": "true"}}, "resume.enabled", "true", "true or false",
                 id="resume-string-bool"),
    pytest.param(P1, {"resume": {"dir": "data/contexts/ckpt"}}, "resume.dir", "data/contexts/ckpt",
                 "outside the DVC outputs (data/contexts/", id="cross-resume-dir-in-dvc-output"),
    pytest.param(P1, {"resume": {"mirror_dir": "./resume"}}, "resume.mirror_dir", "./resume",
                 "other than resume.dir", id="cross-mirror-is-dir"),
    # report
    pytest.param("report", {"report": {"prompts": "Hello"}}, "report.prompts", "Hello", "a list of strings",
                 id="report-string-for-list"),
    pytest.param("report", {"report": {"temperature": -1.0}}, "report.temperature", -1.0, "a finite number >= 0",
                 id="report-negative-temperature"),
    # dist
    pytest.param(P1, {"dist": {"nproc": 0}}, "dist.nproc", 0, "an integer >= 1", id="dist-zero"),
    # the file itself
    pytest.param(P1, {"phase3": {"epochs": 1}}, "phase3", {"epochs": 1}, "unknown key (typo?)", id="unknown-section"),
    pytest.param(P1, "seed: 0\nphase1: [unclosed\n", "params.yaml", UNPARSABLE, "valid YAML", id="unparsable-yaml"),
    pytest.param(P1, "phase1:\n  learning_rate: 0.002\n  learning_rate: 0.1\n", "params.yaml", UNPARSABLE,
                 "found duplicate key 'learning_rate'", id="duplicate-key"),
    pytest.param(VAL, "- seed\n- 0\n", "params.yaml", "list", "a YAML mapping of sections", id="top-level-list"),
    pytest.param(VAL, None, "params.yaml", "missing", "an existing params.yaml", id="params-file-missing"),
]


def same_value(a, b) -> bool:
    """Equal and of the same type (True == 1 in Python, but a bool is not an integer here), NaN
    equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("stage, params, key, value, allowed", CASES)
def test_a_bad_value_is_refused_naming_key_value_and_what_is_allowed(tmp_path, monkeypatch, stage, params, key,
                                                                     value, allowed):
    """The stage whose sections hold the key refuses it, and so does check_inputs (every
    section), with the same error: the first stage of a run stops it before any output is
    removed."""
    monkeypatch.chdir(tmp_path)
    if isinstance(params, str):
        (tmp_path / "params.yaml").write_text(params)
    elif params is not None:
        write_params(tmp_path, params)
    errors = []
    for name in (stage, "check_inputs"):
        with pytest.raises(ConfigError) as err:
            load("params.yaml", sections=pipeline.sections(name))
        errors.append(err.value)
    for e in errors:
        assert e.key == key and same_value(e.value, value), (e.key, e.value)
        assert allowed in e.allowed, e.allowed
        assert str(e).startswith(f"params.yaml: {key} = {e.value!r} is not allowed: expected ")
    assert str(errors[0]) == str(errors[1])


@pytest.mark.parametrize("stage", [s.name for s in pipeline.STAGES])
def test_the_tiny_params_are_valid_for_every_stage(tmp_path, stage):
    """The cases above differ from valid params in one place only."""
    load(write_params(tmp_path), sections=pipeline.sections(stage))


def test_a_stage_checks_only_its_own_sections():
    """A stage never fails on another stage's section (check_inputs has checked them all), but
    every stage refuses an unknown top-level key (a misspelt section)."""
    bad_phase2 = {"phase2": {"epochs": 0}}
    from_dict(bad_phase2, sections=pipeline.sections(P1))
    with pytest.raises(ConfigError, match="phase2.epochs"):
        from_dict(bad_phase2, sections=pipeline.sections(P2))
    for stage in pipeline.STAGES:
        with pytest.raises(ConfigError, match="phase3"):
            from_dict({"phase3": {}}, sections=list(stage.sections))


def test_batch_objectives_refuse_the_online_batch():
    with pytest.raises(ConfigError, match="phase1.batch_tokens.*at least 2"):
        from_dict({"phase1": {"diversity": "vicreg", "batch_tokens": 1}}, sections=["phase1"])
    with pytest.raises(ConfigError, match="phase1.batch_tokens.*between 2 and"):
        from_dict({"phase1": {"diversity": "uniformity", "batch_tokens": 0}}, sections=["phase1"])
    from_dict({"phase1": {"diversity": "ema_distance", "batch_tokens": 1}}, sections=["phase1"])
    from_dict({"phase1": {"diversity": "vicreg", "batch_tokens": 1, "dist_reg_weight": 0.0}}, sections=["phase1"])


def test_uniformity_pair_sets_are_one_choice():
    with pytest.raises(ConfigError, match="phase1.uniformity_group_size.*choose one"):
        from_dict({"phase1": {"uniformity_anchors": 8, "uniformity_group_size": 8}}, sections=["phase1"])
    with pytest.raises(ConfigError, match="phase1.uniformity_group_size.*at least 2"):
        from_dict({"phase1": {"uniformity_group_size": 1}}, sections=["phase1"])
