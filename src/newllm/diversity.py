"""The registry of Phase 1's diversity objectives ``D(C)``: every name ``phase1.diversity``
accepts, the formula the report and the docs show, and how the objective reads a batch.

The function of each entry is the function of the same name in ``newllm.cvfp.objectives``. This
table has no torch in it, so the params check can read it in a stage that never imports torch.
Adding an objective: one function there, one entry here (docs/design.md shows an example).
Notation: ``c_t`` the batch's contexts, ``μ`` their EMA, ``m`` their mean, ``z_t = c_t/‖c_t‖``,
``s`` the singular values of the batch matrix ``C``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diversity:
    name: str
    formula: str               # D(C), as the report and the docs print it
    summary: str               # what it does, in a few words
    batch_level: bool = True   # a statistic of the batch (needs >= 2 tokens per batch)
    quadratic: bool = False    # holds a batch x batch (or batch x K) matrix
    low_precision: bool = False  # its matmuls follow a bf16/fp16 run's autocast


ENTRIES = (
    Diversity("ema_distance", "−mean_t ‖c_t − μ‖", "the original guide's term: away from the running mean",
              batch_level=False),
    Diversity("centroid_dispersion", "−‖C − m‖_F / b", "spread around the batch's own centroid (MCDL)"),
    Diversity("origin_anchored", "−‖C − m‖_F / b + λ ‖m‖²", "centroid_dispersion with the centroid held at 0 (OACD)"),
    Diversity("vicreg", "mean_j relu(γ − std_j) + β Σ_{i≠j} cov_ij² / d",
              "VICReg's variance and covariance terms"),
    Diversity("uniformity", "log mean_{(i,j)∈P} exp(−t ‖z_i − z_j‖²)", "Wang & Isola's uniformity on the sphere",
              quadratic=True, low_precision=True),
    Diversity("spectral_entropy", "Σ p log p, p = s/Σs", "minus the log of the batch's effective rank"),
    Diversity("nuclear", "−Σ s / (‖C‖_F √min(b, d))", "the scale-free nuclear norm"),
    Diversity("none", "0", "the fixed-point term alone", batch_level=False),
)
DIVERSITY: dict[str, Diversity] = {d.name: d for d in ENTRIES}
DEFAULT = "uniformity"
