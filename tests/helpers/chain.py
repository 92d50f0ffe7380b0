"""The stage scripts run as subprocesses in a temporary directory, and how to compare runs.

A *prepared* directory holds a complete tiny run (data, tokens, baselines, Phase 1,
validate_rank, Phase 2, the transformer and the report), made once per test worker by the
``prepared_run`` fixture running the real stage scripts (in the worker's process); a test copies
it and breaks one thing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from helpers.repo import ROOT, TINY_PARAMS, deep_update
from newllm import pipeline
from newllm.io import state_dict_digest, torch_load

STAGES = [s.name for s in pipeline.STAGES]
# volatile metrics: wall time, speed, memory
VOLATILE = ("time", "tokens_per_s", "tok_per_s", "peak", "rss", "_mb", "elapsed")
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def write_params(d: Path, update: dict | None = None, name: str = "params.yaml") -> Path:
    """The tiny params, changed by ``update``, into ``d/name``."""
    path = d / name
    path.write_text(yaml.safe_dump(deep_update(TINY_PARAMS, update or {})))
    return path


class Result:
    def __init__(self, p: subprocess.CompletedProcess, seconds: float):
        self.returncode, self.stdout, self.stderr, self.seconds = p.returncode, p.stdout, p.stderr, seconds

    def __repr__(self) -> str:
        return f"exit {self.returncode} after {self.seconds:.1f}s\n--- stderr ---\n{self.stderr[-3000:]}"


class _StageServer:
    """This process's ``helpers/stage_server.py`` (started on first use)."""

    proc: subprocess.Popen | None = None

    @classmethod
    def run(cls, d: Path, script: Path, args: tuple[str, ...], timeout: float) -> subprocess.CompletedProcess:
        if cls.proc is None or cls.proc.poll() is not None:
            cls.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("stage_server.py"))],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, **ENV})
        out, err = d.parent / f".{d.name}.stdout", d.parent / f".{d.name}.stderr"
        req = {"script": str(script), "args": list(args), "cwd": str(d), "stdout": str(out), "stderr": str(err),
               "timeout": timeout}
        cls.proc.stdin.write(json.dumps(req) + "\n")
        cls.proc.stdin.flush()
        reply = cls.proc.stdout.readline()
        assert reply, f"the stage server ended (exit {cls.proc.poll()})"
        p = subprocess.CompletedProcess(req, json.loads(reply)["returncode"], out.read_text(), err.read_text())
        out.unlink()
        err.unlink()
        return p


def run_stage(d: Path, stage: str, *args: str, timeout: float = 300) -> Result:
    """``python stages/<stage>.py ARGS`` in ``d``: a new process with its own exit status, stdout and
    stderr, forked from a warm interpreter that has imported torch (helpers/stage_server.py)."""
    t0 = time.monotonic()
    p = _StageServer.run(d, ROOT / "stages" / f"{stage}.py", args, timeout)
    return Result(p, time.monotonic() - t0)


_CHAIN_DRIVER = """
import runpy, sys
for path in sys.argv[1:]:
    sys.argv = [path]
    runpy.run_path(path, run_name="__main__")
"""


def run_chain(d: Path, stages: list[str] | None = None, timeout: float = 600) -> None:
    """The stage scripts in order, in one interpreter (torch is imported once: the chain is
    the same code as ``python stages/<stage>.py`` one after the other, only faster)."""
    scripts = [str(ROOT / "stages" / f"{s}.py") for s in stages or STAGES]
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", _CHAIN_DRIVER, *scripts], cwd=d, capture_output=True,
                       text=True, env={**os.environ, **ENV}, timeout=timeout)
    assert p.returncode == 0, repr(Result(p, time.monotonic() - t0))


def run_chain_here(d: Path, stages: list[str] | None = None) -> None:
    """The stage scripts in order in this process, as ``run_chain``'s interpreter runs them (no
    subprocess: the tests that only read the run stay in the quick loop), with the working
    directory, ``sys.argv`` and torch's thread count given back afterwards."""
    import runpy

    import torch

    cwd, argv, threads = os.getcwd(), sys.argv, torch.get_num_threads()
    try:
        os.chdir(d)
        for stage in stages or STAGES:
            script = str(ROOT / "stages" / f"{stage}.py")
            sys.argv = [script]
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as e:  # stage_main's exit 2 on a NewLLMError (its message is on stderr)
                raise AssertionError(f"stages/{stage}.py exited with {e.code}") from None
    finally:
        os.chdir(cwd)
        sys.argv = argv
        torch.set_num_threads(threads)


def assert_clean_error(r: Result, *needles: str) -> None:
    """Exit 2 with a one-line `error: ...` naming what is wrong, no traceback."""
    assert r.returncode == 2, repr(r)
    assert "Traceback" not in r.stderr, repr(r)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert errors, repr(r)
    for needle in needles:
        assert needle in errors[-1], f"{needle!r} not in {errors[-1]!r}"


def refused_without_change(prepared: Path, tmp_path: Path, stage: str, corrupt, *needles: str) -> Result:
    """A copy of ``prepared`` broken by ``corrupt(run dir)``: ``stage`` refuses it with a clean
    error naming ``needles`` and leaves every file as it was."""
    d = copy_run(prepared, tmp_path / "run")
    corrupt(d)
    before = snapshot(d)
    r = run_stage(d, stage)
    assert_clean_error(r, *needles)
    assert snapshot(d) == before
    return r


def snapshot(d: Path) -> dict[str, str]:
    """Every file under ``d`` and the sha256 of its bytes."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def outputs(d: Path) -> dict[str, str]:
    """``snapshot`` without the rolling checkpoints (resume/) and params."""
    return {k: v for k, v in snapshot(d).items() if not k.startswith("resume/") and k != "params.yaml"}


def copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a run (the prepared run is shared and read-only)."""
    shutil.copytree(src, dst)
    return dst


def load_json(path: Path):
    return json.loads(path.read_text())


def stable_metrics(obj):
    """A metrics JSON without wall time, speed and memory figures."""
    if isinstance(obj, dict):
        return {k: stable_metrics(v) for k, v in obj.items() if not any(s in k for s in VOLATILE)}
    if isinstance(obj, list):
        return [stable_metrics(v) for v in obj]
    return obj


def stable_csv(text: str) -> list[list[str]]:
    rows = [line.split(",") for line in text.splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if not any(s in name for s in VOLATILE)] if rows else []
    return [[r[i] for i in keep if i < len(r)] for r in rows]


PHASE1_FILES = ["metrics/phase1.json", "metrics/phase1_passes.csv", "models/phase1.pt", "models/phase1.json",
                "data/contexts/train.pt", "data/contexts/val.pt", "data/contexts/test.pt"]
PHASE2_FILES = ["metrics/phase2.json", "metrics/phase2_epochs.csv", "models/phase2_best.pt", "metrics/rows/phase2.csv"]


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

