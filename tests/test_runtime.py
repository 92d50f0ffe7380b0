"""Device choice, mixed precision, peak memory and the CUDA out-of-memory message.

There is no GPU here: CUDA's presence, its memory counter and an out-of-memory error are
simulated with monkeypatch (hardware, not product behaviour, is faked).
"""
from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers.repo import ROOT
from helpers.toy import write_gate, write_token_caches
from newllm.config import Phase1Config, RuntimeConfig
from newllm.cvfp.model import build_model
from newllm.cvfp.phase1 import Phase1Trainer
from newllm.errors import NewLLMError
from newllm.runtime import OutOfMemoryError, Runtime, oom_advice, peak_memory

OOM_TEXT = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 14.75 GiB total capacity)"
KNOBS = ("chunk_tokens", "batch_tokens", "data.num_samples", "runtime.precision")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch believes a T4 is present (nothing is ever allocated on it in these tests)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 1536 * 2**20)


# ----------------------------------------------------------------------------- device


def test_auto_picks_cpu_without_cuda():
    assert not torch.cuda.is_available()
    assert Runtime.from_config(RuntimeConfig(device="auto")).device.type == "cpu"
    with pytest.raises(NewLLMError, match=r"runtime.device = 'cuda' but no CUDA GPU.*auto or cpu"):
        Runtime.from_config(RuntimeConfig(device="cuda"))


def test_auto_picks_cuda_when_present(fake_cuda, caplog):
    caplog.set_level("INFO")
    assert Runtime.from_config(RuntimeConfig(device="auto")).device.type == "cuda"
    assert "device cuda (Tesla T4)" in caplog.text
    assert Runtime.from_config(RuntimeConfig(device="cuda")).device.type == "cuda"
    assert Runtime.from_config(RuntimeConfig(device="cpu")).device.type == "cpu"


# ----------------------------------------------------------------------------- precision


@pytest.mark.parametrize("precision, dtype", [("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_and_scaler_follow_the_precision(precision, dtype):
    rt = Runtime(torch.device("cpu"), precision)
    with rt.autocast():
        y = torch.nn.functional.linear(torch.randn(4, 8), torch.randn(3, 8))
    assert y.dtype == (dtype or torch.float32)
    assert (rt.grad_scaler() is not None) == (precision == "fp16")


CPU_FLAGS = {"bf16": ("amx_tile", "avx512_bf16"), "fp16": ("amx_fp16",)}  # /proc/cpuinfo's names


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_half_precision_on_a_cpu_without_its_instructions_warns(precision, caplog):
    """bf16/fp16 on a CPU that has no matrix instructions for them is emulated (on an AVX2-only
    CPU, docs/colab.md): the stage says so and names fp32. Judged by the kernel's CPU flags."""
    info = Path("/proc/cpuinfo")
    if not info.exists():
        pytest.skip("no /proc/cpuinfo to read the CPU flags from")
    flags = set(next(line for line in info.read_text().splitlines() if line.startswith("flags")).split())
    native = precision == "fp32" or any(f in flags for f in CPU_FLAGS[precision])
    caplog.set_level("INFO")
    Runtime.from_config(RuntimeConfig(device="cpu", precision=precision))
    warned = "runtime.precision = " in caplog.text
    assert warned == (not native), (sorted(flags & {"amx_tile", "amx_fp16", "avx512_bf16", "avx2"}), caplog.text)
    if warned:
        assert "runtime.precision: fp32 is the fast choice" in caplog.text


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_phase1_trains_in_mixed_precision(precision):
    from newllm.config import ModelConfig
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 50, (60,), generator=g)
    offsets = torch.tensor([0, 20, 35, 60])
    model = build_model(ModelConfig(context_dim=16, embed_dim=16, num_layers=2, vocab_size=50), seed=0)
    before = {k: v.clone() for k, v in model.layer_state().items()}
    tr = Phase1Trainer(model, tokens, offsets, Phase1Config(max_iterations=3, batch_tokens=16,
                                                            min_converged_ratio=1.0),
                       Runtime(torch.device("cpu"), precision), seed=0)
    assert (tr.scaler is not None) == (precision == "fp16")
    st = tr.run()
    assert st.steps > 0 and all(math.isfinite(h["mean_context_norm"]) for h in st.history)
    assert any(not torch.equal(before[k], v) for k, v in model.layer_state().items())
    if tr.scaler is not None:  # the scaler's state is part of the resume state
        assert tr.state_dict()["scaler"]["scale"] > 0


# ----------------------------------------------------------------------------- peak memory


def test_peak_memory_rss_always_cuda_on_gpu(fake_cuda):
    cpu = peak_memory(torch.device("cpu"))
    assert set(cpu) == {"peak_rss_mb"} and cpu["peak_rss_mb"] > 10
    gpu = peak_memory(torch.device("cuda"))
    assert gpu["peak_cuda_mb"] == 1536.0 and gpu["peak_rss_mb"] > 10


# ----------------------------------------------------------------------------- out of memory


def test_oom_becomes_a_message_naming_the_knobs():
    with pytest.raises(NewLLMError) as err:
        with oom_advice("phase2_lm", "phase2.batch_tokens"):
            raise OutOfMemoryError(OOM_TEXT)
    msg = str(err.value)
    assert msg.startswith("phase2_lm ran out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB")
    for knob in ("phase2.chunk_tokens", "phase2.batch_tokens", "data.num_samples", "runtime.precision: bf16 or fp16"):
        assert knob in msg, knob
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no traceback chain
    # anything else passes through untouched
    with pytest.raises(ValueError, match="other"):
        with oom_advice("phase2_lm", "phase2.batch_tokens"):
            raise ValueError("other")
    assert OutOfMemoryError is torch.cuda.OutOfMemoryError


TOY = {"model": {"context_dim": 8, "embed_dim": 8, "num_layers": 2, "vocab_size": 64},
       "phase1": {"max_iterations": 3, "batch_tokens": 16},
       "phase2": {"epochs": 2, "batch_tokens": 20, "chunk_tokens": 7},
       "runtime": {"device": "cpu", "threads": 1}}


def _inputs(d: Path) -> None:
    """Token caches and TOY's params.yaml in ``d``."""
    write_token_caches(d, train=(12, 9, 16, 5), val=(10, 7), test=(8, 6))
    (d / "params.yaml").write_text(yaml.safe_dump(TOY))


def _run_stage_script(stage: str, monkeypatch, capsys) -> tuple[int, str]:
    """``python stages/<stage>.py`` in this process (so the hardware fault can be simulated)."""
    monkeypatch.setattr(sys, "argv", [str(ROOT / "stages" / f"{stage}.py")])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "stages" / f"{stage}.py"), run_name="__main__")
        raise SystemExit(0)
    return exit_.value.code, capsys.readouterr().err


def _oom(*args, **kwargs):
    raise OutOfMemoryError(OOM_TEXT)


@pytest.mark.parametrize("target", ["newllm.cvfp.phase1.Phase1Trainer.run_unit",    # in the training loop
                                    "newllm.stages.phase1_fixed_point.frozen_passes"])   # before it (validation)
def test_phase1_stage_oom_message(target, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    monkeypatch.setattr(target, _oom)
    code, err = _run_stage_script("phase1_fixed_point", monkeypatch, capsys)
    assert code == 2, err
    line = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert line and "phase1_fixed_point ran out of GPU memory (CUDA out of memory" in line[0], err
    for knob in ("phase1.chunk_tokens", "phase1.batch_tokens", "data.num_samples", "runtime.precision"):
        assert knob in line[0], knob
    assert "Traceback" not in err
    assert not (tmp_path / "models/phase1.pt").exists()


@pytest.mark.parametrize("target", ["newllm.cvfp.phase2.Phase2Trainer.run_unit",   # in the training loop
                                    "newllm.stages.phase2_lm.check_gate"])  # before it
def test_phase2_stage_oom_message(target, tmp_path, monkeypatch, capsys):
    from newllm.config import from_dict
    from newllm.stages import phase1_fixed_point as phase1
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    phase1.run(from_dict(TOY, phase1.SECTIONS))
    write_gate()
    monkeypatch.setattr(target, _oom)
    code, err = _run_stage_script("phase2_lm", monkeypatch, capsys)
    assert code == 2, err
    line = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert line and "phase2_lm ran out of GPU memory" in line[0], err
    for knob in ("phase2.chunk_tokens", "phase2.batch_tokens", "data.num_samples", "runtime.precision"):
        assert knob in line[0], knob
    assert not (tmp_path / "models/phase2_best.pt").exists()


def test_stages_record_precision_device_and_peak_memory(tmp_path, monkeypatch):
    from newllm.config import from_dict
    from newllm.stages import phase1_fixed_point as phase1
    from newllm.stages import phase2_lm as phase2
    monkeypatch.chdir(tmp_path)
    _inputs(tmp_path)
    cfg = {**TOY, "runtime": {"device": "auto", "precision": "fp16", "threads": 1}}
    m1 = phase1.run(from_dict(cfg, phase1.SECTIONS))
    write_gate()
    m2 = phase2.run(from_dict(cfg, phase2.SECTIONS))
    for m in (m1, m2):
        assert m["device"] == "cpu" and m["precision"] == "fp16" and m["peak_rss_mb"] > 10
        assert "peak_cuda_mb" not in m  # only on a GPU
    assert m1["optimizer_steps"] > 0 and math.isfinite(m2["val"]["loss"])
