"""Rolling resume checkpoints, kept where ``dvc repro`` does not delete them.

A stage saves its full loop state every N passes/epochs to ``resume.dir`` (not a
DVC output) and, optionally, to ``resume.mirror_dir`` (e.g. Google Drive on
Colab). A re-run loads it only when its fingerprint (the params that determine
the result, plus a digest of the input tokens) matches; anything else is
ignored with a message, never mixed in. It is deleted after the stage succeeds.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import torch

from newllm.config import ResumeConfig
from newllm.errors import CheckpointError
from newllm.io import atomic_copy_file, atomic_torch_save, torch_load

log = logging.getLogger(__name__)


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def first_non_finite(obj: object, where: str = "") -> str | None:
    """The key path of the first floating-point tensor holding NaN/Inf, or None."""
    if isinstance(obj, torch.Tensor):
        return where or "value" if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = first_non_finite(v, f"{where}.{k}" if where else str(k))
        if found is not None:
            return found
    return None


class ResumeStore:
    def __init__(self, cfg: ResumeConfig, stage: str, fp: str):
        self.enabled = cfg.enabled
        self.fp = fp
        self.paths = [Path(cfg.dir) / f"{stage}.pt"]
        if cfg.mirror_dir:
            self.paths.append(Path(cfg.mirror_dir) / f"{stage}.pt")

    def load(self) -> dict | None:
        if not self.enabled:
            return None
        for path in self.paths:
            if not path.exists():
                continue
            try:
                state = torch_load(path, "resume checkpoint")
            except CheckpointError as e:
                log.warning("ignoring %s", e)
                continue
            if not isinstance(state, dict) or state.get("fingerprint") != self.fp:
                log.warning("ignoring resume checkpoint %s: it was made with other params or data "
                            "(fingerprint %s, this run %s); starting from scratch", path,
                            state.get("fingerprint") if isinstance(state, dict) else "?", self.fp)
                continue
            bad = first_non_finite(state)
            if bad is not None:
                log.warning("ignoring resume checkpoint %s: %s holds NaN/Inf values (a numerical "
                            "fault or a damaged file); starting from scratch", path, bad)
                continue
            log.info("resuming from %s", path)
            return state
        return None

    def save(self, state: dict) -> None:
        if not self.enabled:
            return
        state = dict(state, fingerprint=self.fp)
        atomic_torch_save(state, self.paths[0])
        for mirror in self.paths[1:]:
            try:
                atomic_copy_file(self.paths[0], mirror)
            except OSError as e:  # a slow or unmounted Drive must not kill training
                log.warning("could not mirror resume checkpoint to %s: %s", mirror, e)

    def clear(self) -> None:
        for path in self.paths:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("could not remove %s: %s", path, e)


# what a checkpoint written by another version of this code can raise while it is loaded
UNREADABLE_STATE = (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError)


def resume_or_fresh(store: ResumeStore, trainer, rebuild: Callable[[], Any], what: Callable[[Any], str]):
    """Load ``store``'s rolling checkpoint into ``trainer`` (``trainer.load_state_dict`` of its
    ``"trainer"`` entry). A checkpoint with the right fingerprint but a layout this code cannot
    read (another version) is ignored with a warning, and ``rebuild()`` gives a fresh trainer;
    ``what(trainer)`` describes the resumed state for the log. Returns ``(trainer, state or None)``."""
    state = store.load()
    if state is None:
        return trainer, None
    try:
        trainer.load_state_dict(state["trainer"])
    except UNREADABLE_STATE as e:
        log.warning("ignoring resume checkpoint %s: unreadable state (%s: %s); starting from scratch",
                    store.paths[0], type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return rebuild(), None
    log.info("resumed %s", what(trainer))
    return trainer, state


def kept_message(store: ResumeStore, unit: str, last: int | None, outputs: str) -> str:
    """What a failed run leaves behind, for its error message: ``outputs`` keep the previous
    run's files, and the rolling checkpoint (after ``unit`` ``last``) is kept or absent."""
    if not store.enabled:
        rolling = "No rolling checkpoint is kept (resume.enabled is false)."
    elif not last and last != 0:
        rolling = f"No rolling checkpoint was written (the fault came before the first completed {unit})."
    else:
        rolling = (f"The rolling checkpoint {store.paths[0]} (after {unit} {last}) is kept: a re-run "
                   f"with the same params resumes from it, other params start afresh.")
    return f"{outputs} {rolling}"
