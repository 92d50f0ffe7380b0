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
import shutil
from pathlib import Path

from .config import ResumeConfig
from .errors import CheckpointError
from .io import atomic_torch_save, torch_load

log = logging.getLogger(__name__)


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
                mirror.parent.mkdir(parents=True, exist_ok=True)
                tmp = mirror.with_name(mirror.name + ".tmp")
                shutil.copyfile(self.paths[0], tmp)
                tmp.replace(mirror)
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
