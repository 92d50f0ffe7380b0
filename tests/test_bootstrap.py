"""The intervals behind every comparison: by-hand cases, the verdict words, the per-conversation
sums the stages write, and the seed level of the multi-run interval."""
from __future__ import annotations

import pytest
import torch

from newllm import bootstrap as bs
from newllm.errors import DataError

ALL_DRAWS_OF_TWO = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])  # every resample of 2 conversations


def t(*v):
    return torch.tensor(v, dtype=torch.float64)


def test_loss_interval_by_hand():
    # conversations with CE sums 1 and 3 over one pair each: the four resamples give losses 1, 2, 2, 3;
    # linear-interpolated quantiles at 2.5% and 97.5% of [1, 2, 2, 3]: 1 + 0.075 and 2 + 0.925
    iv = bs.loss_interval(t(1, 3), t(1, 1), ALL_DRAWS_OF_TWO)
    assert (iv.estimate, iv.lo, iv.hi) == pytest.approx((2.0, 1.075, 2.925))
    # the loss is a ratio of sums (pairs weigh, not conversations): (2 + 6) / (1 + 3) on the full set
    assert bs.loss_interval(t(2, 6), t(1, 3), ALL_DRAWS_OF_TWO).estimate == pytest.approx(2.0)


def test_paired_interval_and_verdicts_by_hand():
    # a - b per resample: (1-2), (2-2), (2-2), (3-2) -> [-1, 0, 0, 1]
    iv = bs.paired_interval(t(1, 3), t(2, 2), t(1, 1), ALL_DRAWS_OF_TWO)
    assert (iv.estimate, iv.lo, iv.hi) == pytest.approx((0.0, -0.925, 0.925))
    assert bs.verdict(iv) == "not distinguishable"
    assert bs.verdict(bs.paired_interval(t(1, 3), t(5, 6), t(1, 1), ALL_DRAWS_OF_TWO)) == "better"
    assert bs.verdict(bs.paired_interval(t(5, 6), t(1, 3), t(1, 1), ALL_DRAWS_OF_TWO)) == "worse"
    assert bs.verdict(bs.Interval(0.1, 0.0, 0.2)) == "not distinguishable"  # touching zero is not a claim


def test_draws_are_seeded_and_cover_the_conversations():
    a, b = bs.draws(7, 1000, seed=3), bs.draws(7, 1000, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, bs.draws(7, 1000, seed=4))
    assert a.shape == (1000, 7) and set(a.flatten().tolist()) == set(range(7))


def test_the_interval_narrows_with_more_conversations():
    g = torch.Generator().manual_seed(0)
    widths = []
    for r in (20, 2000):
        n = torch.randint(5, 50, (r,), generator=g).double()
        ce = n * (3 + torch.rand(r, generator=g, dtype=torch.float64))
        iv = bs.loss_interval(ce, n, bs.draws(r, 2000, seed=0))
        assert iv.lo < iv.estimate < iv.hi
        widths.append(iv.hi - iv.lo)
    assert widths[1] < widths[0] / 4  # about 1/sqrt(100)


def test_the_multi_run_interval_holds_the_spread_between_seeds():
    """Within each run the difference is the same on every conversation (no test-sampling
    spread), but the runs disagree: only the seed level of the bootstrap sees it."""
    n = torch.ones(10, dtype=torch.float64)
    runs = [(torch.full((10,), 1.0 + d, dtype=torch.float64), torch.ones(10, dtype=torch.float64), n)
            for d in (0.5, -0.5, 0.5)]
    iv = bs.paired_over_runs(runs, 2000, seed=0)
    assert iv.estimate == pytest.approx(1 / 6)
    assert iv.lo == pytest.approx(-0.5) and iv.hi == pytest.approx(0.5) and bs.verdict(iv) == "not distinguishable"
    agree = [(torch.full((10,), 1.0 + d, dtype=torch.float64), torch.ones(10, dtype=torch.float64), n)
             for d in (-0.4, -0.5, -0.6)]
    assert bs.verdict(bs.paired_over_runs(agree, 2000, seed=0)) == "better"


def test_row_sums_group_pairs_by_conversation_and_round_trip(tmp_path):
    rows = torch.tensor([0, 0, 2, 2, 2, 3])  # conversation 1 has no pair (a one-token sample)
    table = bs.row_sums(rows, {"m": t(1, 2, 3, 4, 5, 6)})
    assert table == {"row": [0, 2, 3], "targets": [2, 3, 1], "m": [3.0, 12.0, 6.0]}
    path = tmp_path / "rows.csv"
    path.write_text(bs.rows_csv(table))
    back = bs.read_rows(path)
    assert back["m"].tolist() == [3.0, 12.0, 6.0] and back["targets"].tolist() == [2, 3, 1]
    with pytest.raises(ValueError, match="pair losses"):
        bs.row_sums(rows, {"m": t(1, 2)})
    path.write_text("row,targets,m\n0,2,not-a-number\n")
    with pytest.raises(DataError, match="not a table"):
        bs.read_rows(path)
