"""The pipeline's stages, declared once (dvc.yaml runs them; a test keeps the two in agreement).

For each stage: its name (``stages/<name>.py`` runs ``newllm.stages.<name>.run``), the params
sections it validates before any work, its detailed metrics file, the batch-size param its
out-of-memory advice names first (stages that train), whether its metrics record a wall time
(``time_s``: the headline's ``minutes`` and the report's timings), whether it runs on
``runtime.device`` (checked before any work) and whether it runs under ``dist.nproc`` processes. The params check, the
stage entry point, the report and the sweep comparison read their stage lists from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from newllm import paths
from newllm.config import SECTIONS


@dataclass(frozen=True)
class Stage:
    name: str
    sections: tuple[str, ...]
    metrics: Path | None = None
    oom_key: str | None = None
    timed: bool = True
    device: bool = False
    distributed: bool = False

    @property
    def label(self) -> str:
        """The stem of its metrics file: the prefix of its figures in the sweep comparison."""
        return self.metrics.stem if self.metrics else self.name


STAGES: tuple[Stage, ...] = (
    Stage("check_inputs", tuple(SECTIONS), timed=False),  # every section: checked before any stage runs
    Stage("fetch_ultrachat", ("data",), paths.FETCH_METRICS),
    Stage("tokenize_cache", ("data",), paths.DATA_METRICS),
    Stage("baselines", ("phase1",), paths.BASELINES_METRICS),
    Stage("phase1_fixed_point", ("model", "phase1", "runtime", "resume", "dist"), paths.PHASE1_METRICS,
          "phase1.batch_tokens", device=True, distributed=True),
    Stage("validate_rank", ("validate", "runtime"), paths.VALIDATE_METRICS, device=True),
    Stage("phase2_lm", ("model", "phase2", "runtime", "resume", "dist"), paths.PHASE2_METRICS, "phase2.batch_tokens",
          device=True, distributed=True),
    Stage("transformer_lm", ("model", "phase1", "transformer", "runtime", "resume"), paths.TRANSFORMER_METRICS,
          "transformer.batch_tokens", device=True),
    Stage("report", ("report",), paths.COMPARISON, timed=False),
)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def sections(name: str) -> list[str]:
    """The params sections stage ``name`` validates."""
    return list(BY_NAME[name].sections)
