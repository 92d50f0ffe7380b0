"""Nothing that chooses reads the test split: with the test conversations replaced by garbage,
every training stage keeps the same epoch, the same weights and the same validation figures;
only the test figures change."""
from __future__ import annotations

import json

import pytest
import torch
from reliability_helpers import copy_run, run_chain, stable_metrics

from newllm.data.tokens import TokenSet, load_token_set, save_token_set

pytestmark = pytest.mark.slow

TRAINING = ["phase1_fixed_point", "validate_rank", "phase2_lm", "transformer_lm", "baselines", "report"]


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
