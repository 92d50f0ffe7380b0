"""The context noise of a pass (``newllm.cvfp.noise``)."""
from __future__ import annotations

import torch


def test_pass_noise_by_schedule_position_in_blocks(monkeypatch):
    """Noise rows depend only on (seed, pass, global schedule position): any split of a
    range gives the same rows, across block boundaries; passes and seeds differ; sigma scales."""
    import newllm.cvfp.noise as p1
    monkeypatch.setattr(p1, "NOISE_BLOCK", 5)
    nz = p1.pass_noise(seed=2, k=1, d=3, std=0.5)
    full = nz.rows(0, 23)
    assert full.shape == (23, 3)
    assert torch.equal(torch.cat([nz.rows(a, b) for a, b in [(0, 4), (4, 11), (11, 12), (12, 23)]]), full)
    assert torch.equal(p1.pass_noise(2, 1, 3, 0.5).rows(7, 19), full[7:19])  # a fresh object, a mid range
    assert nz.rows(9, 9).shape == (0, 3)
    assert not torch.equal(p1.pass_noise(2, 2, 3, 0.5).rows(0, 23), full)
    assert not torch.equal(p1.pass_noise(3, 1, 3, 0.5).rows(0, 23), full)
    assert not torch.equal(full[:5], full[5:10])  # blocks are distinct draws
    assert torch.allclose(p1.pass_noise(2, 1, 3, 1.0).rows(0, 23) * 0.5, full)
    assert p1.pass_noise(2, 1, 3, 0.0) is None
    big = p1.pass_noise(0, 1, 64, 0.01).rows(0, 20)
    assert 0.008 < float(big.std()) < 0.012
