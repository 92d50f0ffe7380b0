"""The run report's data, assembled: the dict ``newllm.html.run_report.build_report`` renders.

Keys, in the page's order: ``verdict`` (Phase 1's banner), ``phase2_line``, ``terms``, then one
entry per section: ``run``, ``criteria``, ``passes``, ``spectrum``, ``convergence``, ``phase2``,
``generation``, ``timings``. Every value is plain (strings, numbers, booleans, None, lists,
dicts); a section whose input is missing, or whose builder failed, is ``{"missing": why}``."""
from __future__ import annotations

import logging
from typing import Any, Callable

from newllm.report import header, phase1, phase2
from newllm.report.inputs import Inputs

log = logging.getLogger(__name__)

SECTIONS = ("run", "criteria", "passes", "spectrum", "convergence", "phase2", "generation", "timings")


def guarded(name: str, fn: Callable[[], Any]) -> Any:
    """A builder that fails still leaves its section, saying what went wrong."""
    try:
        return fn()
    except Exception as e:  # a broken input must not cost the whole report
        log.warning("report %s could not be built: %s: %s", name, type(e).__name__, e)
        return {"missing": f"this section could not be built ({type(e).__name__}: {e})"}


def report_data(inp: Inputs, comparison: dict, samples: dict, seed: int) -> dict:
    """Everything the report shows, from the loaded inputs, the test comparison
    (``newllm.compare``) and the text samples (``newllm.report.samples``)."""
    builders: dict[str, Callable[[], Any]] = {
        "verdict": lambda: phase1.verdict(inp),
        "phase2_line": lambda: phase2.phase2_line(inp, comparison),
        "terms": lambda: header.terms(inp, seed),
        "run": lambda: header.run(inp),
        "criteria": lambda: phase1.criteria(inp),
        "passes": lambda: phase1.passes(inp),
        "spectrum": lambda: phase1.spectrum(inp),
        "convergence": lambda: phase1.convergence(inp),
        "phase2": lambda: phase2.phase2(inp, comparison),
        "generation": lambda: samples,
        "timings": lambda: header.timings(inp),
    }
    return {name: guarded(name, fn) for name, fn in builders.items()}
