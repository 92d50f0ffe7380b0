"""Files (``newllm.io``): a writer killed mid-write leaves the previous complete file, and a
checkpoint carrying pickled objects is refused with nothing in it run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.chain import load_json
from helpers.faults import Payload, Plain
from helpers.repo import ROOT
from newllm.errors import CheckpointError
from newllm.io import torch_load

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


@pytest.mark.slow
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
    for ignore in (".gitignore", ".dvcignore"):
        assert "*.tmp" in (ROOT / ignore).read_text().split(), ignore


@pytest.mark.parametrize("obj", [
    pytest.param(lambda m: {"model_state_dict": {"w": torch.zeros(2)}, "extra": Payload(m)}, id="reduce-payload"),
    pytest.param(lambda m: {"model_state_dict": {"w": torch.zeros(2)}, "extra": Plain()}, id="class-instance"),
    pytest.param(lambda m: {"hook": os.system}, id="function"),
])
def test_torch_load_refuses_pickled_objects(tmp_path, obj):
    marker = tmp_path / "executed"
    path = tmp_path / "ckpt.pt"
    torch.save(obj(marker), path)
    with pytest.raises(CheckpointError, match=r"ckpt.pt holds objects other than tensors.*weights_only=True"):
        torch_load(path)
    assert not marker.exists()
