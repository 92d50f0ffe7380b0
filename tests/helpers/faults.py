"""Faults to inject: ways to break one file of a prepared run (each returns a function of the
run directory), a checkpoint that would run code when unpickled, and a trainer interrupted at
a given pass or epoch."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from helpers.chain import write_params
from newllm.config import ModelConfig
from newllm.cvfp.model import build_model
from newllm.io import torch_load


def truncate(rel: str, keep: float = 0.5):
    def f(d: Path) -> None:
        data = (d / rel).read_bytes()
        (d / rel).write_bytes(data[: int(len(data) * keep)])
    return f


def garbage(rel: str):
    def f(d: Path) -> None:
        (d / rel).write_bytes(os.urandom(4096))
    return f


def resave(rel: str, make):
    """Replace ``rel`` by torch.save(make(old object))."""
    def f(d: Path) -> None:
        old = torch_load(d / rel)
        torch.save(make(old), d / rel)
    return f


def overwrite(rel: str, data: bytes):
    def f(d: Path) -> None:
        (d / rel).write_bytes(data)
    return f


def change_json(rel: str, change):
    def f(d: Path) -> None:
        obj = json.loads((d / rel).read_text())
        change(obj)
        (d / rel).write_text(json.dumps(obj))
    return f


def set_params(update: dict):
    def f(d: Path) -> None:
        write_params(d, update)
    return f


def remove(rel: str):
    def f(d: Path) -> None:
        (d / rel).unlink()
    return f


def token_cache(ids: list[int], offsets: list[int], dtype=torch.int32) -> dict:
    """A token cache's contents (what ``save_token_set`` writes) with the given ids."""
    return {"tokens": torch.tensor(ids, dtype=dtype), "offsets": torch.tensor(offsets), "format": 1}


def other_model_state(**model) -> dict:
    """The weights of a model of another shape than the tiny run's."""
    cfg = ModelConfig(**{"context_dim": 16, "embed_dim": 16, "num_layers": 2, **model})
    return build_model(cfg, 0).state_dict()


def with_state(state: dict):
    return lambda ck: {**ck, "model_state_dict": state}


class Payload:
    """Unpickling this would create ``marker`` (what a hostile checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


class Plain:
    def __init__(self):
        self.x = 1


def interrupt(monkeypatch, cls, method: str, at: int) -> None:
    """``cls.method(self, k)`` raises KeyboardInterrupt when ``k == at``: what Ctrl-C or a lost
    Colab runtime leaves (the last rolling checkpoint)."""
    original = getattr(cls, method)

    def dying(self, k):
        if k == at:
            raise KeyboardInterrupt
        return original(self, k)

    monkeypatch.setattr(cls, method, dying)


def poison_before(monkeypatch, cls, at: int, poison) -> None:
    """``cls.run_unit(self, k)`` calls ``poison(self)`` (under no_grad) before unit ``at``."""
    original = cls.run_unit

    def run_unit(self, k):
        if k == at:
            with torch.no_grad():
                poison(self)
        return original(self, k)

    monkeypatch.setattr(cls, "run_unit", run_unit)
