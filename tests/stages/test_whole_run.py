"""Every stage in order, through the stage scripts without DVC: the same params and seed give
identical results, garbage test rows change only the test figures, and the chain runs on CUDA in
each precision (``gpu``)."""
from __future__ import annotations

import json

import pytest
import torch

from helpers.chain import (
    PHASE1_FILES,
    PHASE2_FILES,
    STAGES,
    copy_run,
    run_chain,
    same_result,
    stable_metrics,
    write_params,
)
from newllm.data.tokens import TokenSet, load_token_set, save_token_set

pytestmark = pytest.mark.slow
P2, VAL = "phase2_lm", "validate_rank"
TRAINING = ["phase1_fixed_point", "validate_rank", "phase2_lm", "transformer_lm", "baselines", "report"]


def test_same_params_and_seed_give_identical_results(prepared_run, tmp_path):
    """A second run of the whole chain from scratch: the same metrics (but wall time,
    speed and memory), the same checkpoint contents, caches, contexts and gate."""
    d = tmp_path / "again"
    d.mkdir()
    write_params(d)
    run_chain(d)
    files = ["metrics/data.json", "data/tokens/train.pt", "data/tokens/val.pt", "data/tokens/test.pt",
             "data/raw/train.jsonl", "data/raw/val.jsonl", "data/raw/test.jsonl", *PHASE1_FILES]
    if VAL in STAGES:
        files += ["metrics/validate.json", "metrics/spectrum.csv", "metrics/convergence.csv", "data/gate.json"]
    if P2 in STAGES:
        files += [*PHASE2_FILES, "models/phase2_best.json"]
    same_result(prepared_run, d, files)
    metric_files = sorted(p.name for p in (prepared_run / "metrics").glob("*.json"))
    assert metric_files == sorted(p.name for p in (d / "metrics").glob("*.json"))
    for name in metric_files:
        same_result(prepared_run, d, [f"metrics/{name}"])


def _figures(d):
    out = {}
    for name in ("phase2", "transformer", "validate", "baselines"):
        m = stable_metrics(json.loads((d / "metrics" / f"{name}.json").read_text()))
        test = {k: m.pop(k) for k in [k for k in m if k.startswith("test")]}
        if "untrained" in m:  # validate_rank: the untrained network's test ER
            test["untrained"] = m["untrained"].pop("test")
        out[name] = (m, test)
    return out


def test_garbage_test_rows_change_only_the_test_figures(prepared_run, tmp_path):
    base = copy_run(prepared_run, tmp_path / "base")
    bad = copy_run(prepared_run, tmp_path / "bad")
    test = load_token_set(bad / "data/tokens/test.pt")
    g = torch.Generator().manual_seed(0)
    save_token_set(TokenSet(torch.randint(0, 50257, test.tokens.shape, generator=g), test.offsets),
                   bad / "data/tokens/test.pt")
    run_chain(bad, TRAINING)
    before, after = _figures(base), _figures(bad)
    for name in before:
        kept, test_before = before[name]
        assert after[name][0] == kept, name  # same kept epoch, steps, validation figures, criteria
        assert after[name][1] != test_before, name  # the test figures did see the garbage
    assert before["phase2"][0]["best_epoch"] == after["phase2"][0]["best_epoch"]
    for ckpt in ("models/phase2_best.pt",):
        a = torch.load(base / ckpt, weights_only=True)["model_state_dict"]
        b = torch.load(bad / ckpt, weights_only=True)["model_state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), ckpt


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_stage_chain_on_cuda(tmp_path, precision):
    write_params(tmp_path, {"runtime": {"device": "cuda", "precision": precision, "threads": 0}})
    run_chain(tmp_path)
    for name in ("phase1", "validate", "phase2", "transformer"):
        m = json.loads((tmp_path / f"metrics/{name}.json").read_text())
        assert m.get("peak_cuda_mb", 0) > 0, name
    for name in ("phase1", "phase2", "transformer"):
        m = json.loads((tmp_path / f"metrics/{name}.json").read_text())
        assert m["device"] == "cuda" and m["precision"] == precision
    assert json.loads((tmp_path / "metrics.json").read_text())["val_ppl"] > 0
