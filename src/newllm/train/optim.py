"""The optimizer and learning-rate schedule of every trainer (Phase 1, Phase 2, the transformer).

- Adam, or AdamW with decoupled weight decay on the matrices (embeddings included; biases and
  LayerNorms excluded) when ``weight_decay`` > 0, as small GPT-style models are trained;
- the learning rate at optimizer step ``s`` of ``total``: ``constant``, or ``cosine``: a linear
  warm-up over the first ``warmup_fraction`` of the steps, then a cosine from ``lr`` down to
  ``min_lr_ratio * lr`` at the last step. It is a function of the step count alone, so a resumed
  run takes exactly the rates of one that never stopped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class OptimSpec:
    lr: float
    weight_decay: float = 0.0
    clip: float = 1.0
    schedule: str = "constant"
    warmup_fraction: float = 0.0
    min_lr_ratio: float = 0.0

    @classmethod
    def of(cls, section) -> "OptimSpec":
        """The spec of a params section with ``learning_rate``, ``gradient_clip`` and, where it has
        them, ``weight_decay``, ``lr_schedule``, ``warmup_fraction``, ``min_lr_ratio``."""
        return cls(lr=section.learning_rate, weight_decay=getattr(section, "weight_decay", 0.0),
                   clip=section.gradient_clip, schedule=getattr(section, "lr_schedule", "constant"),
                   warmup_fraction=getattr(section, "warmup_fraction", 0.0),
                   min_lr_ratio=getattr(section, "min_lr_ratio", 0.0))

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based) of ``total``."""
        if self.schedule == "constant":
            return self.lr
        if self.schedule != "cosine":
            raise ValueError(f"unknown lr schedule {self.schedule!r}")
        total = max(int(total), 1)
        warm = int(math.ceil(self.warmup_fraction * total))
        if step < warm:
            return self.lr * (step + 1) / warm
        span = max(total - warm - 1, 1)
        progress = min(max(step - warm, 0) / span, 1.0)
        low = self.min_lr_ratio * self.lr
        return low + 0.5 * (self.lr - low) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(params: list[nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam; AdamW with decoupled ``weight_decay`` on the matrices when it is above 0. The fused
    kernel where this torch has it for the parameters' device (one pass over the parameters
    instead of several), else the default."""
    groups: list = params
    cls = torch.optim.Adam
    if weight_decay > 0:
        cls = torch.optim.AdamW
        groups = [g for g in ({"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}) if g["params"]]
    try:
        return cls(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return cls(groups, lr=lr)
