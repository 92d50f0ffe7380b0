"""The skeleton every training stage runs: a trainer that resumes from its rolling checkpoint.

``run_resumable`` builds a fresh trainer, loads the rolling checkpoint of the stage when its
fingerprint matches (``newllm.resume``), runs the remaining epochs with a rolling checkpoint
every ``every`` of them (and after the last), and turns a numerical fault into one message:
what failed, which files are kept and what to try. The stage writes its outputs from the
returned trainer and then calls ``done()``, which removes the rolling checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from newllm.config import ResumeConfig
from newllm.dist import SINGLE, Dist
from newllm.errors import NumericalError
from newllm.resume import ResumeStore, kept_message, resume_or_fresh
from newllm.train.core import Trainer


def unit_label(trainer: Trainer, done: int) -> int:
    """The number of the last completed epoch (1-based) or pass (0-based: pass 0 is untrained)."""
    return done - 1 if trainer.unit == "pass" else done


@dataclass
class Resumed:
    trainer: Trainer
    store: ResumeStore
    resumed: bool

    def done(self) -> None:
        """The outputs are written: the rolling checkpoint is no longer needed."""
        self.store.clear()


def run_resumable(stage: str, resume: ResumeConfig, fp: str, fresh: Callable[[], Trainer], every: int,
                  outputs: str, hint: str, dist: Dist = SINGLE) -> Resumed:
    """Train ``fresh()`` (or its resumed state) to the end.

    ``fp``: the fingerprint of everything that determines the result; ``outputs``: what a failed
    run leaves of the previous outputs (for the error message); ``hint``: what to try after a
    numerical fault."""
    store = ResumeStore(resume, stage, fp)
    trainer, state = resume_or_fresh(
        store, fresh(), fresh,
        lambda tr: f"{tr.name} after {tr.unit} {unit_label(tr, tr.state.done)} ({tr.state.steps} optimizer steps)")
    saved = {"last": unit_label(trainer, trainer.state.done) if state is not None else None}

    def checkpoint(tr: Trainer, rec: dict, improved: bool) -> None:
        if tr.state.done % every == 0 or tr.done:
            snapshot = tr.state_dict()  # collective under data parallelism: every rank takes part
            if dist.main:  # every rank holds the same weights; rank 0 alone writes
                store.save({"trainer": snapshot})
                saved["last"] = unit_label(tr, tr.state.done)

    try:
        trainer.run(on_end=checkpoint)
    except NumericalError as e:
        raise NumericalError(f"{e}. {kept_message(store, trainer.unit, saved['last'], outputs)} {hint}") from None
    return Resumed(trainer, store, state is not None)
