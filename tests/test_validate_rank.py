"""validate_rank measures in fp32 whatever precision trained the model: a bf16-trained model gets
the same verdict and final_diff from a bf16 and an fp32 run of the stage, and a bf16 check
could never pass (its frozen passes stop at the rounding floor of |c|)."""
from __future__ import annotations

import json

import pytest
import torch
from toy import random_tokens

from newllm import paths
from newllm.config import from_dict
from newllm.cvfp.engine import Schedule, scan
from newllm.cvfp.passes import embed_all
from newllm.data.tokens import load_token_set, save_token_set
from newllm.io import torch_load
from newllm.runtime import Runtime

pytestmark = pytest.mark.usefixtures("one_thread")

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
    save_token_set(random_tokens(0, (32,) * 12, vocab=64), paths.TOKENS_TRAIN)
    save_token_set(random_tokens(1, (32,) * 4, vocab=64), paths.TOKENS_VAL)
    save_token_set(random_tokens(2, (32,) * 3, vocab=64), paths.TOKENS_TEST)
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
    save_token_set(random_tokens(0, (32,) * 12, vocab=64), paths.TOKENS_TRAIN)
    save_token_set(random_tokens(1, (32,) * 4, vocab=64), paths.TOKENS_VAL)
    save_token_set(random_tokens(2, (32,) * 3, vocab=64), paths.TOKENS_TEST)
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
