"""The CVFP model files (``newllm.cvfp.checkpoint``): Phase 1 keeps only what it trained and
rebuilds the rest from the seed, checked against the digest of the model it trained."""
from __future__ import annotations

import json

import pytest
import torch

from helpers.toy import write_token_caches
from newllm import paths
from newllm.config import from_dict
from newllm.cvfp.checkpoint import load_phase1
from newllm.errors import CheckpointError
from newllm.io import state_dict_digest
from newllm.runtime import Runtime

PARAMS = {"seed": 3, "model": {"context_dim": 8, "embed_dim": 8, "vocab_size": 64},
          "phase1": {"max_iterations": 3, "batch_tokens": 32}, "runtime": {"device": "cpu"},
          "resume": {"enabled": False}}


CPU = Runtime(torch.device("cpu"), "fp32")


@pytest.fixture
def phase1_run(tmp_path, monkeypatch, one_thread):
    from newllm.stages import phase1_fixed_point
    monkeypatch.chdir(tmp_path)
    write_token_caches(train=(16,) * 8, val=(16,) * 3, test=(16,) * 3)
    phase1_fixed_point.run(from_dict(PARAMS, phase1_fixed_point.SECTIONS))
    return tmp_path


def test_phase1_file_holds_the_trained_layers_and_rebuilds_the_trained_model(phase1_run):
    saved = torch.load(paths.PHASE1_CKPT, weights_only=True)
    assert saved["model_state_dict"] and all(k.startswith("layers.") for k in saved["model_state_dict"])
    model, side = load_phase1(CPU)
    assert state_dict_digest({k: v for k, v in model.state_dict().items()}) == side["model_digest"]
    for k, v in saved["model_state_dict"].items():
        assert torch.equal(model.state_dict()[k], v), k


def test_phase1_model_that_the_seed_does_not_rebuild_is_refused(phase1_run):
    side = json.loads(paths.PHASE1_SIDECAR.read_text())
    side["config"]["seed"] = 4  # another initialisation: another embedding and head
    paths.PHASE1_SIDECAR.write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="not the one Phase 1 trained"):
        load_phase1(CPU)
