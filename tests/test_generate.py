"""Text generation (``newllm.generate``) from a Phase 2 checkpoint: deterministic for a seed,
the prompt and the continuation told apart, and a clear error for a checkpoint that does not fit."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helpers.toy import TINY_MODEL
from newllm.config import ModelConfig, Phase2Config
from newllm.cvfp.model import build_model
from newllm.cvfp.phase2 import prepare_head
from newllm.errors import CheckpointError
from newllm.io import torch_load

TINY = TINY_MODEL


def gpt2_tokenizer():
    from newllm.data.tokenizer import build_tokenizer
    return build_tokenizer("gpt2-offline")


def save_latest(model, path, predict_from="token"):
    import dataclasses
    torch.save({"model_state_dict": model.state_dict(),
                "config": {"seed": 0, "model": dataclasses.asdict(model.cfg), "phase1": {"stream": "sample"},
                           "phase2": dataclasses.asdict(Phase2Config(predict_from=predict_from))},
                "epoch": 1, "phase2_history": {"train_loss": [1.0], "val_loss": [1.0]}}, path)


def test_generate_is_deterministic(tmp_path, capsys):
    from newllm.cvfp.checkpoint import load_phase2 as load_for_generation
    from newllm.generate import generate, main
    mcfg = ModelConfig(context_dim=8, embed_dim=8, num_layers=1, vocab_size=50257)
    ckpt = tmp_path / "model_latest.pt"
    save_latest(prepare_head(build_model(mcfg, seed=0), "context", seed=0), ckpt, "context")
    model = load_for_generation(ckpt)
    assert model.head_from == "context"
    tok = gpt2_tokenizer()
    assert tok.encode("Hello world", add_special_tokens=False).ids == [15496, 995]
    a = generate(model, tok, "Hello world", 8, temperature=0.8, top_k=40, seed=1)
    b = generate(model, tok, "Hello world", 8, temperature=0.8, top_k=40, seed=1)
    c = generate(model, tok, "Hello world", 8, temperature=0.8, top_k=40, seed=2)
    assert a == b and a != c and isinstance(a, str)
    assert generate(model, tok, "Hello world", 6, seed=0) == generate(model, tok, "Hello world", 6, seed=5)
    # CLI
    tok.save(str(tmp_path / "tokenizer.json"))
    main(["--checkpoint", str(ckpt), "--tokenizer", str(tmp_path), "--prompt", "Hello world",
          "--max-new-tokens", "8", "--temperature", "0.8", "--top-k", "40", "--seed", "1"])
    # the prompt and the continuation, told apart (repr keeps spaces and line breaks visible)
    assert capsys.readouterr().out == f"prompt:       {'Hello world'!r}\ncontinuation: {a!r}\n"
    main(["--checkpoint", str(ckpt), "--tokenizer", str(tmp_path), "--prompt", "Hello world",
          "--max-new-tokens", "8", "--temperature", "0.8", "--top-k", "40", "--seed", "1", "--continuation-only"])
    assert capsys.readouterr().out == a + "\n"


def test_generation_checkpoint_errors(tmp_path, capsys, monkeypatch):
    from newllm.cvfp.checkpoint import load_phase2 as load_for_generation
    from newllm.generate import main
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="model_state_dict"):
        load_for_generation(bad)
    wrong = tmp_path / "wrong.pt"
    save_latest(build_model(TINY, seed=0), wrong)
    obj = torch.load(wrong, weights_only=True)
    obj["config"]["model"]["context_dim"] = 9
    torch.save(obj, wrong)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_for_generation(wrong)
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", str(tmp_path / "missing.pt"), "--prompt", "hi"])
    assert e.value.code == 2 and "missing" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # outside a repository: the default paths are relative to it
    with pytest.raises(SystemExit) as e:
        main(["--prompt", "hi"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "is not under the current directory" in err and "run this from the repository" in err


@pytest.mark.slow
def test_generate_refuses_a_checkpoint_with_a_damaged_config(prepared_run, tmp_path):
    """``python -m newllm.generate`` on a checkpoint whose config is not valid params: exit 2 and
    the key named, no traceback."""
    ck = torch_load(prepared_run / "models/phase2_best.pt")
    ck["config"]["model"]["context_dim"] = "16"
    torch.save(ck, tmp_path / "bad.pt")
    p = subprocess.run([sys.executable, "-m", "newllm.generate", "--checkpoint", str(tmp_path / "bad.pt"),
                        "--tokenizer", str(prepared_run / "data/tokenizer"), "--prompt", "Hello"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "bad.pt has an invalid model config (model.context_dim = '16'" in p.stderr
