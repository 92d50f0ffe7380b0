"""Stage validate_rank (``newllm.stages.validate_rank``): it measures in fp32 whatever precision
trained the model, the default objective passes where the original term collapses, and unusable
or non-finite Phase 1 outputs are a clear error that changes nothing."""
from __future__ import annotations

import json

import pytest
import torch

from helpers.chain import (
    assert_clean_error,
    copy_run,
    refused_without_change,
    run_stage,
    snapshot,
)
from helpers.faults import (
    Payload,
    change_json,
    other_model_state,
    overwrite,
    resave,
    token_cache,
    truncate,
    with_state,
)
from helpers.toy import write_token_caches
from newllm import paths
from newllm.config import from_dict
from newllm.cvfp.engine import Schedule, scan
from newllm.cvfp.passes import embed_all
from newllm.data.tokens import load_token_set
from newllm.io import torch_load
from newllm.runtime import Runtime

VAL = "validate_rank"


PARAMS = {"model": {"context_dim": 32, "embed_dim": 32, "num_layers": 1, "vocab_size": 64},
          "phase1": {"diversity": "uniformity", "batch_tokens": 64, "max_iterations": 10,
                     "min_converged_ratio": 1.0},
          "validate": {"convergence_passes": 8, "cosine_pairs": 200},
          "runtime": {"device": "cpu", "precision": "bf16"}}


def _validate(precision: str) -> dict:
    from newllm.stages import validate_rank
    cfg = from_dict({**PARAMS, "runtime": {"device": "cpu", "precision": precision}}, validate_rank.SECTIONS)
    return validate_rank.run(cfg)


def test_bf16_trained_model_checked_in_fp32_whatever_the_precision(tmp_path, monkeypatch):
    from newllm.stages import phase1_fixed_point
    monkeypatch.chdir(tmp_path)
    write_token_caches(train=(32,) * 12, val=(32,) * 4, test=(32,) * 3)
    phase1_fixed_point.run(from_dict(PARAMS, phase1_fixed_point.SECTIONS))  # trained in bf16

    as_bf16, as_fp32 = _validate("bf16"), _validate("fp32")
    assert as_bf16["final_diff"] == as_fp32["final_diff"]
    assert as_bf16["passed"] == as_fp32["passed"] and as_bf16["criteria"] == as_fp32["criteria"]
    assert as_fp32["check_precision"] == "fp32"
    assert as_fp32["final_diff"] < 1e-3  # this tiny model has a real fixed point, seen in fp32
    assert json.loads(paths.VALIDATE_METRICS.read_text())["final_diff"] == as_fp32["final_diff"]

    # the same frozen passes under bf16 autocast stall at the rounding of |c| (~|c| 2^-9), above 1e-3
    from newllm.cvfp.checkpoint import load_phase1
    model, _ = load_phase1(Runtime(torch.device("cpu"), "fp32"))
    train = load_token_set(paths.TOKENS_TRAIN)
    x = embed_all(model, train.tokens, torch.device("cpu"))
    sched = Schedule.build(train.offsets, "sample")
    ctx = torch_load(paths.CONTEXTS_TRAIN)["contexts"]
    carry, diffs = ctx[sched.last_index()].clone(), []
    for _ in range(8):
        cur = torch.empty_like(ctx)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            cur[sched.order] = scan(model.step, sched, 0, sched.num_tokens, carry, lambda i: x[i]).c_out.float()
        diffs.append(float((cur - ctx).norm(dim=1).mean()))
        ctx = cur
    assert min(diffs[-3:]) > 5e-3 > 5 * as_fp32["final_diff"], diffs


def test_default_objective_keeps_the_rank_where_the_original_term_collapses(tmp_path, monkeypatch):
    """Same tiny model, data and schedule; only phase1.diversity differs. The default objective
    (whatever params.yaml ships) passes with a trained ER above the untrained network's; the
    original guide's ema_distance collapses the contexts."""
    from newllm.config import Phase1Config
    from newllm.stages import phase1_fixed_point, validate_rank
    monkeypatch.chdir(tmp_path)
    write_token_caches(train=(32,) * 12, val=(32,) * 4, test=(32,) * 3)
    verdicts = {}
    for diversity in (Phase1Config().diversity, "ema_distance"):
        params = {"model": {"context_dim": 32, "embed_dim": 32, "vocab_size": 64},
                  "phase1": {"diversity": diversity, "batch_tokens": 64, "learning_rate": 0.01},
                  "validate": {"convergence_passes": 8, "cosine_pairs": 200},
                  "runtime": {"device": "cpu", "precision": "fp32"}, "resume": {"enabled": False}}
        phase1_fixed_point.run(from_dict(params, phase1_fixed_point.SECTIONS))
        verdicts[diversity] = validate_rank.run(from_dict(params, validate_rank.SECTIONS))
    default, original = verdicts[Phase1Config().diversity], verdicts["ema_distance"]
    assert default["passed"] and not default["collapsed"]
    assert default["train"]["er_pct"] > default["train"]["er_pct_untrained"]
    assert original["collapsed"] and not original["passed"]
    assert original["train"]["er_pct"] < 0.25 * original["train"]["er_pct_untrained"]


CKPT, SIDE = "models/phase1.pt", "models/phase1.json"


@pytest.mark.slow
@pytest.mark.parametrize("corrupt, needles", [
    pytest.param(resave("data/tokens/val.pt", lambda o: token_cache([15496], [0, 1])),
                 ["data/tokens/val.pt holds 1 token", "needs at least 2", "data.val_fraction"], id="tokens-one-token"),
    pytest.param(truncate(CKPT), [CKPT, "corrupt or truncated", "re-run"], id="checkpoint-truncated"),
    pytest.param(resave(CKPT, with_state(other_model_state(context_dim=8))),
                 [CKPT, "does not fit the configured model", "shape mismatch", "another model size"],
                 id="checkpoint-other-model-size"),
    pytest.param(resave(CKPT, lambda ck: ck["model_state_dict"]), [CKPT, "has no model_state_dict"],
                 id="checkpoint-bare-state-dict"),
    pytest.param(resave("data/contexts/val.pt", lambda o: {k: v[:, :8] for k, v in o.items()}),
                 ["data/contexts/val.pt", "does not match the token cache"], id="contexts-other-size"),
    pytest.param(overwrite(SIDE, b'{"config": '), [SIDE, "not valid JSON"], id="sidecar-garbage"),
    pytest.param(change_json(SIDE, lambda s: s["config"]["model"].update(context_dim="16")),
                 [SIDE, "invalid config", "model.context_dim"], id="sidecar-invalid-config"),
])
def test_unusable_phase1_output_is_a_clear_error_and_changes_nothing(prepared_run, tmp_path, corrupt, needles):
    """A damaged or mismatched Phase 1 model, sidecar, contexts or token cache: the stage script
    exits 2 naming the file and what to do, with every file as it was."""
    refused_without_change(prepared_run, tmp_path, VAL, corrupt, *needles)


@pytest.mark.slow
def test_a_checkpoint_carrying_code_is_refused_unrun(prepared_run, tmp_path):
    """A Phase 1 model holding a pickled object that would run code: refused, the code never runs."""
    marker = tmp_path / "executed"
    refused_without_change(prepared_run, tmp_path, VAL, resave(CKPT, lambda o: {**o, "extra": Payload(marker)}),
                           CKPT, "holds objects other than tensors", "refusing to unpickle")
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("poison, needles", [
    pytest.param("data/contexts/train.pt", ["data/contexts/train.pt holds NaN/Inf", "phase1_fixed_point"],
                 id="nan-contexts"),
    pytest.param("models/phase1.pt", ["models/phase1.pt holds NaN/Inf weights", "layers.0.fc.weight"],
                 id="nan-weights"),
])
def test_validate_refuses_non_finite_phase1_outputs(prepared_run, tmp_path, poison, needles):
    d = copy_run(prepared_run, tmp_path / "run")
    obj = torch_load(d / poison)
    target = obj["model_state_dict"]["layers.0.fc.weight"] if "model_state_dict" in obj else obj["contexts"]
    target[0, 0] = float("inf") if "contexts" in poison else float("nan")
    torch.save(obj, d / poison)
    before = snapshot(d)
    r = run_stage(d, VAL)
    assert_clean_error(r, *needles)
    assert snapshot(d) == before  # metrics/validate.json and the gate untouched
