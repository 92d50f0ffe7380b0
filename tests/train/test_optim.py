"""The learning-rate schedule by hand, and the optimizer's parameter groups."""
from __future__ import annotations

import math

import pytest
import torch

from newllm.config import Phase2Config
from newllm.train.optim import OptimSpec, make_optimizer


def test_constant_schedule_is_the_learning_rate():
    spec = OptimSpec(lr=0.003)
    assert [spec.lr_at(s, 10) for s in (0, 5, 9, 50)] == [0.003] * 4


def test_warmup_then_cosine_by_hand():
    # 20 steps, 10% warm-up: steps 0 and 1 rise to lr; then 18 steps fall from lr (step 2) to 0.1 lr (step 19)
    spec = OptimSpec(lr=1.0, schedule="cosine", warmup_fraction=0.1, min_lr_ratio=0.1)
    assert spec.lr_at(0, 20) == pytest.approx(0.5) and spec.lr_at(1, 20) == pytest.approx(1.0)
    assert spec.lr_at(2, 20) == pytest.approx(1.0)
    mid = 2 + 17 / 2  # half-way through the cosine: 0.1 + 0.9 * (1 + cos(pi / 2)) / 2
    assert spec.lr_at(int(mid), 20) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 8 / 17)))
    assert spec.lr_at(19, 20) == pytest.approx(0.1) and spec.lr_at(40, 20) == pytest.approx(0.1)
    lrs = [spec.lr_at(s, 20) for s in range(2, 20)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # falls monotonically after the warm-up


def test_spec_reads_the_params_section():
    spec = OptimSpec.of(Phase2Config(learning_rate=0.01, lr_schedule="cosine", warmup_fraction=0.05,
                                     min_lr_ratio=0.2, weight_decay=0.1, gradient_clip=0.5))
    assert spec == OptimSpec(0.01, 0.1, 0.5, "cosine", 0.05, 0.2)


def test_weight_decay_only_on_the_matrices():
    lin, norm = torch.nn.Linear(3, 4), torch.nn.LayerNorm(4)
    params = [*lin.parameters(), *norm.parameters()]
    assert type(make_optimizer(params, 0.1)) is torch.optim.Adam
    opt = make_optimizer(params, 0.1, weight_decay=0.1)
    assert type(opt) is torch.optim.AdamW
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(lin.weight)}
