"""Stage phase1_fixed_point (``newllm.stages.phase1_fixed_point``) through its script: an unusable
token cache is a clear error that changes nothing; a numerical fault stops the stage naming the
pass and the quantity, keeps the last good rolling checkpoint and the previous outputs; the re-run
resumes to the uninterrupted result.

NaN/Inf are injected through real inputs only: params that overflow (no LayerNorm, a huge learning
rate), a parameter set to NaN in a trainer run in-process, a poisoned rolling checkpoint."""
from __future__ import annotations

import pytest
import torch

from helpers.chain import (
    PHASE1_FILES,
    assert_clean_error,
    copy_run,
    load_json,
    outputs,
    refused_without_change,
    run_stage,
    same_result,
    write_params,
)
from helpers.faults import (
    Payload,
    garbage,
    poison_before,
    resave,
    set_params,
    token_cache,
    truncate,
)
from newllm import config as config_mod
from newllm.errors import NumericalError
from newllm.io import torch_load
from newllm.resume import first_non_finite

P1 = "phase1_fixed_point"


TOKENS = "data/tokens/train.pt"


@pytest.mark.slow
@pytest.mark.parametrize("corrupt, needles", [
    pytest.param(truncate(TOKENS), [TOKENS, "corrupt or truncated", "re-run"], id="tokens-truncated"),
    pytest.param(garbage("data/tokens/val.pt"), ["data/tokens/val.pt", "corrupt or truncated"], id="tokens-garbage"),
    pytest.param(resave(TOKENS, lambda o: o["tokens"].tolist()), [TOKENS, "not in the expected format"],
                 id="tokens-wrong-format"),
    pytest.param(resave(TOKENS, lambda o: {**o, "offsets": o["offsets"] * 2}), [TOKENS, "inconsistent offsets"],
                 id="tokens-bad-offsets"),
    pytest.param(resave(TOKENS, lambda o: token_cache([1, 2, 60000, 3], [0, 2, 4])),
                 [TOKENS, "1 token ids outside the vocabulary [0, 50257)", "tokenize_cache"], id="tokens-out-of-vocab"),
    pytest.param(set_params({"model": {"vocab_size": 1000}}),
                 [TOKENS, "outside the vocabulary [0, 1000)", "model.vocab_size"], id="vocab-smaller-than-tokenizer"),
    pytest.param(resave(TOKENS, lambda o: token_cache([], [0])), [TOKENS, "holds no tokens: the dataset is empty"],
                 id="tokens-empty-dataset"),
])
def test_unusable_token_cache_is_a_clear_error_and_changes_nothing(prepared_run, tmp_path, corrupt, needles):
    """A damaged, malformed or mismatched token cache: the stage script exits 2 naming the file
    and what to do, with every file as it was."""
    refused_without_change(prepared_run, tmp_path, P1, corrupt, *needles)


@pytest.mark.slow
def test_a_token_cache_carrying_code_is_refused_unrun(prepared_run, tmp_path):
    """A token cache holding a pickled object that would run code: refused, the code never runs."""
    marker = tmp_path / "executed"
    refused_without_change(prepared_run, tmp_path, P1, resave(TOKENS, lambda o: {**o, "extra": Payload(marker)}),
                           TOKENS, "holds objects other than tensors", "refusing to unpickle")
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("params, needles, kept_pass", [
    # no LayerNorm and the largest allowed learning rate: the first step blows the contexts up
    pytest.param({"model": {"layernorm_mix": 0.0}, "phase1": {"learning_rate": 10.0}},
                 ["phase1 pass 1: the context norm overflows"], 0, id="huge-learning-rate"),
    # no LayerNorm, one stream over the corpus: the carried context overflows in the untrained pass
    pytest.param({"model": {"layernorm_mix": 0.0}, "phase1": {"stream": "corpus"}},
                 ["phase1 pass 0: the context norm overflows"], None, id="context-overflow"),
])
def test_phase1_numerical_fault_stops_and_keeps_the_last_good_state(prepared_run, tmp_path, params, needles,
                                                                     kept_pass):
    d = copy_run(prepared_run, tmp_path / "run")
    write_params(d, params)
    before = outputs(d)
    r = run_stage(d, P1)
    assert_clean_error(r, *needles, "Nothing was written", "metrics/phase1.json keep the previous run's files")
    assert outputs(d) == before  # models/, contexts and metrics/phase1.json untouched
    ckpt = d / "resume" / "phase1.pt"
    if kept_pass is None:
        assert "No rolling checkpoint was written" in r.stderr and not ckpt.exists()
    else:
        assert f"resume/phase1.pt (after pass {kept_pass}) is kept" in r.stderr
        state = torch_load(ckpt)
        assert state["trainer"]["loop"]["done"] == kept_pass + 1 and first_non_finite(state) is None


@pytest.mark.slow
def test_phase1_nan_parameter_stops_and_the_rerun_resumes_to_the_same_result(prepared_run, tmp_path,
                                                                            monkeypatch, one_thread):
    assert load_json(prepared_run / "metrics/phase1.json")["passes"] == 3  # the fault hits pass 2
    d = copy_run(prepared_run, tmp_path / "run")
    before = outputs(d)
    from newllm.cvfp.phase1 import Phase1Trainer
    from newllm.stages import phase1_fixed_point as phase1

    poison_before(monkeypatch, Phase1Trainer, 2, lambda tr: tr.model.layers[0].fc.weight[0, 0].fill_(float("nan")))
    monkeypatch.chdir(d)
    with pytest.raises(NumericalError) as err:
        phase1.run(config_mod.load("params.yaml", sections=phase1.SECTIONS))
    msg = str(err.value)
    assert "phase1 pass 2: non-finite contexts" in msg and "resume/phase1.pt (after pass 1) is kept" in msg
    assert outputs(d) == before
    state = torch_load(d / "resume/phase1.pt")
    assert state["trainer"]["loop"]["done"] == 2 and first_non_finite(state) is None
    monkeypatch.undo()

    # the kept checkpoint poisoned (NaN weights, same fingerprint): ignored with a message,
    # a fresh start, the same result as the uninterrupted run
    d2 = copy_run(d, tmp_path / "poisoned")
    state2 = torch_load(d2 / "resume/phase1.pt")
    for v in state2["trainer"]["model"].values():
        v.fill_(float("nan"))
    torch.save(state2, d2 / "resume/phase1.pt")
    r = run_stage(d2, P1)
    assert r.returncode == 0, repr(r)
    assert "ignoring resume checkpoint resume/phase1.pt: trainer.model" in r.stderr
    assert "holds NaN/Inf values" in r.stderr and "resumed phase1" not in r.stderr
    same_result(prepared_run, d2, PHASE1_FILES)
    assert not (d2 / "resume/phase1.pt").exists()

    # the re-run resumes from the kept checkpoint and ends as if nothing had happened
    r = run_stage(d, P1)
    assert r.returncode == 0, repr(r)
    assert "resumed phase1 after pass 1" in r.stderr
    same_result(prepared_run, d, PHASE1_FILES)
    assert not (d / "resume/phase1.pt").exists()
