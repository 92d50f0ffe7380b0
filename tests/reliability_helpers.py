"""Helpers of the reliability tests: stage scripts run as subprocesses in a temp dir.

A *prepared* directory holds a complete tiny run (data, tokens, Phase 1, validate_rank,
and Phase 2 + report when those stages exist), made once per test worker by running
the real stage scripts; a test copies it and breaks one thing.
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
from conftest import ROOT, TINY_PARAMS, deep_update

from newllm import pipeline

STAGES = [s.name for s in pipeline.STAGES]
# volatile metrics: wall time, speed, memory
VOLATILE = ("time", "tokens_per_s", "tok_per_s", "peak", "rss", "_mb", "elapsed")


def chain() -> list[str]:
    return list(STAGES)


def write_params(d: Path, update: dict | None = None, name: str = "params.yaml") -> Path:
    path = d / name
    path.write_text(yaml.safe_dump(deep_update(TINY_PARAMS, update or {})))
    return path


class Result:
    def __init__(self, p: subprocess.CompletedProcess, seconds: float):
        self.returncode, self.stdout, self.stderr, self.seconds = p.returncode, p.stdout, p.stderr, seconds

    def __repr__(self) -> str:
        return f"exit {self.returncode} after {self.seconds:.1f}s\n--- stderr ---\n{self.stderr[-3000:]}"


def run_stage(d: Path, stage: str, *args: str, timeout: float = 300) -> Result:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py"), *args], cwd=d,
                       capture_output=True, text=True, env=env, timeout=timeout)
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
    scripts = [str(ROOT / "stages" / f"{s}.py") for s in stages or chain()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", _CHAIN_DRIVER, *scripts], cwd=d, capture_output=True,
                       text=True, env=env, timeout=timeout)
    assert p.returncode == 0, repr(Result(p, time.monotonic() - t0))


def assert_clean_error(r: Result, *needles: str) -> None:
    """Exit 2 with a one-line `error: ...` naming what is wrong, no traceback."""
    assert r.returncode == 2, repr(r)
    assert "Traceback" not in r.stderr, repr(r)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert errors, repr(r)
    for needle in needles:
        assert needle in errors[-1], f"{needle!r} not in {errors[-1]!r}"


def snapshot(d: Path) -> dict[str, str]:
    """Every file under ``d`` and the sha256 of its bytes."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


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


def load_json(path: Path):
    return json.loads(path.read_text())
