"""Real CUDA: the stage chain at tiny size, resume across devices, fp16's GradScaler state, and the
fast paths against the reference on the GPU. Marked ``gpu``: they run only where torch sees a
CUDA device (``bash scripts/test.sh`` on a GPU machine) and are skipped with the reason elsewhere.
Nothing here fakes a device: a faked device hides real device bugs (Phase 1 once trained ten
passes on a GPU and then crashed comparing a GPU and a CPU tensor)."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import deep_update
from reliability_helpers import run_chain, write_params
from test_resume import TOY, _interrupt, _toy_inputs
from toy import phase2_inputs, random_tokens

from newllm.config import ModelConfig, Phase1Config, from_dict

pytestmark = pytest.mark.gpu


def _cfg(stage_module, device: str, upd: dict | None = None):
    return from_dict(deep_update(TOY, {"runtime": {"device": device}, **(upd or {})}), stage_module.SECTIONS)


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


def test_relative_change_with_theta0_and_theta_on_different_devices():
    from newllm.cvfp.model import build_model
    from newllm.cvfp.phase1 import relative_change
    model = build_model(ModelConfig(context_dim=8, embed_dim=8, num_layers=1, vocab_size=30), seed=0).cuda()
    theta0 = {k: v.detach().clone() for k, v in model.layers.state_dict().items()}  # on the GPU
    with torch.no_grad():
        model.layers[0].fc.weight.add_(0.1)
    cpu = {k: v.cpu() for k, v in model.layers.state_dict().items()}
    assert relative_change(theta0, cpu) == pytest.approx(relative_change({k: v.cpu() for k, v in theta0.items()},
                                                                          model.layers.state_dict()))
    assert relative_change(theta0, cpu) > 0


@pytest.mark.parametrize("first,second", [("cuda", "cpu"), ("cpu", "cuda")])
def test_phase1_and_phase2_resume_across_devices(tmp_path, monkeypatch, caplog, first, second):
    from newllm.cvfp.phase1 import Phase1Trainer
    from newllm.cvfp.phase2 import Phase2Trainer
    from newllm.stages import phase1_fixed_point as phase1
    from newllm.stages import phase2_lm as phase2
    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO")
    _toy_inputs(tmp_path)
    with monkeypatch.context() as m:
        _interrupt(m, Phase1Trainer, "run_unit", 2)
        with pytest.raises(KeyboardInterrupt):
            phase1.run(_cfg(phase1, first))
    phase1.run(_cfg(phase1, second))
    assert "resumed phase1 after pass 1" in caplog.text
    phase2_inputs()
    with monkeypatch.context() as m:
        _interrupt(m, Phase2Trainer, "run_unit", 2)
        with pytest.raises(KeyboardInterrupt):
            phase2.run(_cfg(phase2, first))
    m2 = phase2.run(_cfg(phase2, second))
    assert "resumed phase2 after epoch 2" in caplog.text and m2["device"] == second and m2["epochs"] == 3


def test_fp16_grad_scaler_state_survives_a_resume(tmp_path, monkeypatch):
    from newllm.cvfp.phase1 import Phase1Trainer
    from newllm.io import torch_load
    from newllm.stages import phase1_fixed_point as phase1
    monkeypatch.chdir(tmp_path)
    _toy_inputs(tmp_path)
    fp16 = {"runtime": {"precision": "fp16"}}
    scales = []
    original = Phase1Trainer.load_state_dict

    def load(self, d):
        original(self, d)
        scales.append((d["scaler"]["scale"], self.scaler.get_scale()))

    with monkeypatch.context() as m:
        _interrupt(m, Phase1Trainer, "run_unit", 2)
        with pytest.raises(KeyboardInterrupt):
            phase1.run(_cfg(phase1, "cuda", fp16))
    saved = torch_load(tmp_path / "resume/phase1.pt")["trainer"]["scaler"]
    assert saved is not None and saved["scale"] > 0
    monkeypatch.setattr(Phase1Trainer, "load_state_dict", load)
    phase1.run(_cfg(phase1, "cuda", fp16))
    assert scales and scales[0][0] == scales[0][1] == saved["scale"]


@pytest.mark.parametrize("diversity", ["ema_distance", "uniformity", "vicreg"])
def test_phase1_on_cuda_matches_the_cpu(diversity):
    """The same run (fp32) on the GPU and on the CPU: contexts and weights agree to rounding."""
    from newllm.cvfp.model import build_model
    from newllm.cvfp.phase1 import Phase1Trainer
    from newllm.runtime import Runtime
    ts = random_tokens(0, (30, 20, 25, 12), vocab=50)
    cfg = Phase1Config(max_iterations=3, batch_tokens=16, diversity=diversity, min_converged_ratio=1.0)
    out = {}
    for dev in ("cpu", "cuda"):
        model = build_model(ModelConfig(context_dim=16, embed_dim=16, num_layers=2, vocab_size=50), seed=0)
        tr = Phase1Trainer(model.to(dev), ts.tokens, ts.offsets, cfg, Runtime(torch.device(dev), "fp32"), seed=1)
        tr.run()
        out[dev] = (tr.ctx.prev_ctx.cpu(), {k: v.cpu() for k, v in model.layers.state_dict().items()})
    assert torch.allclose(out["cpu"][0], out["cuda"][0], atol=1e-3, rtol=1e-3)
    for k, v in out["cpu"][1].items():
        assert torch.allclose(v, out["cuda"][1][k], atol=1e-3, rtol=1e-3), k
