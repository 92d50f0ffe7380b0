"""The stages' outputs the run report reads (``newllm.paths``, relative to the run's root), and
the figures several sections derive from them. A missing or unreadable file is recorded with
the reason (``why``) instead of failing: its sections then say "not available"."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from newllm import paths
from newllm.cvfp.model import parameter_counts
from newllm.diversity import DIVERSITY
from newllm.pipeline import STAGES
from newllm.values import get, num, read_csv_columns


@dataclass
class Inputs:
    root: Path
    fetch: dict | None = None
    data: dict | None = None
    phase1: dict | None = None
    phase1_side: dict | None = None
    validate: dict | None = None
    phase2: dict | None = None
    phase2_side: dict | None = None
    passes: dict | None = None
    spectrum: dict | None = None
    convergence: dict | None = None
    epochs: dict | None = None
    baselines: dict | None = None
    transformer: dict | None = None
    problems: dict = field(default_factory=dict)

    # every stage's metrics file (attribute: its stem), then the other files the report reads
    FILES = {
        **{s.label: (s.metrics, s.name, "json") for s in STAGES if s.timed},
        "phase1_side": (paths.PHASE1_SIDECAR, "phase1_fixed_point", "json"),
        "phase2_side": (paths.sidecar(paths.PHASE2_BEST), "phase2_lm", "json"),
        "passes": (paths.PHASE1_HISTORY, "phase1_fixed_point", "csv"),
        "spectrum": (paths.SPECTRUM, "validate_rank", "csv"),
        "convergence": (paths.CONVERGENCE, "validate_rank", "csv"),
        "epochs": (paths.PHASE2_HISTORY, "phase2_lm", "csv"),
    }

    @classmethod
    def load(cls, root: Path | str) -> "Inputs":
        inp = cls(root=Path(root))
        for name, (rel, stage, kind) in cls.FILES.items():
            p = inp.root / rel
            if not p.exists():
                inp.problems[name] = f"{rel} is missing (stage {stage} has not run)"
                continue
            try:
                obj = _read(p, kind)
            except Exception as e:  # unreadable input: the section says so, the report goes on
                inp.problems[name] = f"{rel} is unreadable ({type(e).__name__}: {e})"
                continue
            setattr(inp, name, obj)
        return inp

    def why(self, *names: str) -> str:
        return "; ".join(self.problems[n] for n in names if n in self.problems) or "no data"

    def first(self, *pairs: tuple[str, str]) -> Any:
        """The first present value among (attribute, dotted key) pairs."""
        for attr, key in pairs:
            v = get(getattr(self, attr), key)
            if v is not None:
                return v
        return None

    # -- derived figures ----------------------------------------------------------------
    def model_cfg(self) -> dict | None:
        for side in (self.phase2_side, self.phase1_side):
            m = get(side, "config.model")
            if isinstance(m, dict):
                return m
        return None

    def head_from(self) -> str:
        return str(self.first(("phase2_side", "config.phase2.predict_from"), ("phase2", "predict_from")) or "token")

    def tied(self) -> bool:
        """Whether Phase 2's head weight is the embedding matrix (one parameter, counted once)."""
        tie = self.first(("phase2", "tie_embeddings"), ("phase2_side", "config.model.tie_embeddings"))
        if tie is None:
            tie = get(self.model_cfg(), "tie_embeddings", False)
        return bool(tie) and self.head_from() == "token"

    def diversity(self) -> dict | None:
        """The Phase 1 diversity objective that ran: {name, formula, summary}; None when not recorded
        (a name the registry does not know keeps its name, without a formula)."""
        name = self.first(("validate", "diversity"), ("phase1", "diversity"),
                          ("phase1_side", "config.phase1.diversity"))
        if name is None:
            return None
        entry = DIVERSITY.get(str(name))
        return {"name": str(name), "formula": entry.formula if entry else None,
                "summary": entry.summary if entry else None}

    def model_size(self) -> dict | None:
        """The CVFP model's parameter counts, a tied head's weight counted once (in the embedding):
        {total, from_config, layers, embedding, head, tied}. ``total`` is the figure Phase 2 recorded
        when it ran (the trained model's own count), else ``from_config``, the model config's."""
        mc = self.model_cfg()
        if not mc:
            return None
        tied = self.tied()
        sz = parameter_counts(mc, self.head_from(), tied)
        recorded = num(get(self.phase2, "parameters"))
        return {"total": int(recorded) if recorded is not None else sz["total"], "from_config": sz["total"],
                "layers": sz["layers"], "embedding": sz["embedding"], "head": sz["head"], "tied": tied}


def _read(p: Path, kind: str) -> dict:
    if kind == "json":
        obj = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        return obj
    obj = read_csv_columns(p)
    if not obj or not any(len(c) for c in obj.values()):
        raise ValueError("no rows")
    return obj
