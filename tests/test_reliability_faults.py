"""Numerical faults, interrupted writers and determinism.

NaN/Inf are injected through real inputs only: params that overflow (no LayerNorm, a
huge learning rate), a parameter set to NaN in a trainer run in-process, a poisoned
rolling checkpoint or a poisoned Phase 1 output. Each stops the stage with a message
naming the pass/epoch and the quantity, keeps the last good rolling checkpoint and the
previous outputs, and writes no metrics.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reliability_helpers import (
    assert_clean_error,
    chain,
    copy_run,
    load_json,
    run_chain,
    run_stage,
    snapshot,
    stable_csv,
    stable_metrics,
    write_params,
)

from newllm import config as config_mod
from newllm.errors import NumericalError
from newllm.io import state_dict_digest, torch_load
from newllm.resume import first_non_finite

P1, VAL, P2 = "phase1_fixed_point", "validate_rank", "phase2_lm"


def outputs(d: Path) -> dict[str, str]:
    """Every file except the rolling checkpoints (resume/) and params."""
    return {k: v for k, v in snapshot(d).items() if not k.startswith("resume/") and k != "params.yaml"}


def same_result(a: Path, b: Path, files: list[str]) -> None:
    """Two runs agree: metrics without timings, checkpoint contents, histories."""
    for rel in files:
        if rel.endswith(".json"):
            assert stable_metrics(load_json(a / rel)) == stable_metrics(load_json(b / rel)), rel
        elif rel.endswith(".csv"):
            assert stable_csv((a / rel).read_text()) == stable_csv((b / rel).read_text()), rel
        elif rel.endswith(".pt"):
            x, y = torch_load(a / rel), torch_load(b / rel)
            x, y = x.get("model_state_dict", x), y.get("model_state_dict", y)
            assert state_dict_digest(x) == state_dict_digest(y), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


PHASE1_FILES = ["metrics/phase1.json", "metrics/phase1_passes.csv", "models/phase1.pt", "models/phase1.json",
                "data/contexts/train.pt", "data/contexts/val.pt", "data/contexts/test.pt"]
PHASE2_FILES = ["metrics/phase2.json", "metrics/phase2_epochs.csv", "models/phase2_best.pt", "metrics/rows/phase2.csv"]


@pytest.fixture
def threads():
    """In-process stages set torch's thread count; give the worker its own back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------
# Phase 1


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


def _run_phase1_in_process(d: Path, monkeypatch, poison_before_pass: int | None = None) -> None:
    from newllm.cvfp.phase1 import Phase1Trainer
    from newllm.stages import phase1_fixed_point as phase1

    if poison_before_pass is not None:
        original = Phase1Trainer.run_unit

        def run_unit(self, k):
            if k == poison_before_pass:
                with torch.no_grad():
                    self.model.layers[0].fc.weight[0, 0] = float("nan")
            return original(self, k)

        monkeypatch.setattr(Phase1Trainer, "run_unit", run_unit)
    monkeypatch.chdir(d)
    phase1.run(config_mod.load("params.yaml", sections=phase1.SECTIONS))


def test_phase1_nan_parameter_stops_and_the_rerun_resumes_to_the_same_result(prepared_run, tmp_path,
                                                                            monkeypatch, threads):
    assert load_json(prepared_run / "metrics/phase1.json")["passes"] == 3  # the fault hits pass 2
    d = copy_run(prepared_run, tmp_path / "run")
    before = outputs(d)
    with pytest.raises(NumericalError) as err:
        _run_phase1_in_process(d, monkeypatch, poison_before_pass=2)
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


# ---------------------------------------------------------------------------
# Phase 2


def test_phase2_nan_parameter_stops_and_the_rerun_resumes_to_the_same_result(prepared_run, tmp_path,
                                                                            monkeypatch, threads):
    from newllm.cvfp.phase2 import Phase2Trainer
    from newllm.stages import phase2_lm as phase2

    assert load_json(prepared_run / "metrics/phase2.json")["epochs"] == 2  # the fault hits epoch 2
    d = copy_run(prepared_run, tmp_path / "run")
    final = ["metrics/phase2.json", "metrics/phase2_epochs.csv", "models/phase2_best.pt", "models/phase2_best.json"]
    before = {k: v for k, v in outputs(d).items() if k in final}
    original = Phase2Trainer.run_unit

    def run_unit(self, e):
        if e == 1:
            with torch.no_grad():
                self.model.head.weight[0, 0] = float("nan")
        return original(self, e)

    monkeypatch.setattr(Phase2Trainer, "run_unit", run_unit)
    monkeypatch.chdir(d)
    with pytest.raises(NumericalError) as err:
        phase2.run(config_mod.load("params.yaml", sections=phase2.SECTIONS))
    monkeypatch.undo()
    msg = str(err.value)
    assert "phase2 epoch 2: non-finite" in msg and "resume/phase2.pt (after epoch 1) is kept" in msg
    assert {k: v for k, v in outputs(d).items() if k in final} == before  # no success-looking metrics
    state = torch_load(d / "resume/phase2.pt")
    assert first_non_finite(state) is None

    r = run_stage(d, P2)
    assert r.returncode == 0, repr(r)
    assert "resumed phase2 after epoch 1" in r.stderr
    same_result(prepared_run, d, PHASE2_FILES)


# ---------------------------------------------------------------------------
# interrupted writers


WRITER = r"""
import sys, torch
from newllm.io import atomic_torch_save, atomic_write_json
path, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
i = 1
while True:
    if kind == "torch":
        atomic_torch_save({"v": torch.full((n,), float(i)), "i": i}, path)
    else:
        atomic_write_json(path, {"i": i, "v": [i] * n})
    print(i, flush=True)
    i += 1
"""


def _check_complete(path: Path, kind: str, n: int) -> int:
    if kind == "torch":
        obj = torch_load(path)
        assert obj["v"].numel() == n and bool((obj["v"] == obj["i"]).all())
    else:
        obj = load_json(path)
        assert obj["v"] == [obj["i"]] * n
    return obj["i"]


@pytest.mark.parametrize("kind, n", [("torch", 4_000_000), ("json", 300_000)])
def test_killed_writer_leaves_the_previous_file_intact(tmp_path, kind, n):
    """kill -9 while the temp file is being written: the final path keeps the previous
    complete version, and the leftover is a dot-file *.tmp no reader opens."""
    name = "big.pt" if kind == "torch" else "big.json"
    path = tmp_path / "out" / name
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed_mid_write = 0
    for attempt in range(3):
        if killed_mid_write:
            break
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(path), kind, str(n)], stdout=subprocess.PIPE,
                             text=True, env=env)
        try:
            assert p.stdout.readline().strip()  # one complete version exists
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # wait for the next temp file to appear, then kill
                if any(f.name.endswith(".tmp") for f in path.parent.iterdir()):
                    break
                time.sleep(0.001)
            os.kill(p.pid, signal.SIGKILL)
        finally:
            p.kill()
            p.wait()
        version = _check_complete(path, kind, n)
        assert version >= 1
        others = [f.name for f in path.parent.iterdir() if f.name != name]
        assert all(f.startswith(f".{name}.") and f.endswith(".tmp") for f in others), others
        killed_mid_write += bool(others)
        for f in others:  # the next attempt starts clean
            (path.parent / f).unlink()
    assert killed_mid_write >= 1  # at least one kill landed inside a write
    # leftovers are ignored by git and DVC
    from conftest import ROOT
    for ignore in (".gitignore", ".dvcignore"):
        assert "*.tmp" in (ROOT / ignore).read_text().split(), ignore


# ---------------------------------------------------------------------------
# determinism


def test_same_params_and_seed_give_identical_results(prepared_run, tmp_path):
    """A second run of the whole chain from scratch: the same metrics (but wall time,
    speed and memory), the same checkpoint contents, caches, contexts and gate."""
    d = tmp_path / "again"
    d.mkdir()
    write_params(d)
    run_chain(d)
    files = ["metrics/data.json", "data/tokens/train.pt", "data/tokens/val.pt", "data/tokens/test.pt",
             "data/raw/train.jsonl", "data/raw/val.jsonl", "data/raw/test.jsonl", *PHASE1_FILES]
    if VAL in chain():
        files += ["metrics/validate.json", "metrics/spectrum.csv", "metrics/convergence.csv", "data/gate.json"]
    if P2 in chain():
        files += [*PHASE2_FILES, "models/phase2_best.json"]
    same_result(prepared_run, d, files)
    metric_files = sorted(p.name for p in (prepared_run / "metrics").glob("*.json"))
    assert metric_files == sorted(p.name for p in (d / "metrics").glob("*.json"))
    for name in metric_files:
        same_result(prepared_run, d, [f"metrics/{name}"])
