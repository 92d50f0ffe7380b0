"""The token schedule of the batched engine (``newllm.cvfp.engine``)."""
from __future__ import annotations

from helpers.reference import token_order
from helpers.toy import random_tokens
from newllm.cvfp.engine import Schedule, batch_ranges


def test_schedule_is_position_major_over_length_sorted_streams():
    """The schedule is the reference's order: streams sorted by length, position-major; batch
    ranges cover every position once, each step holding one time position of consecutive streams."""
    ts = random_tokens()
    for mode in ("sample", "corpus"):
        sched = Schedule.build(ts.offsets, mode)
        assert sched.order.tolist() == [i for i, _, _ in token_order(ts.offsets.tolist(), mode)]
        seen = []
        for p0, p1 in batch_ranges(sched.num_tokens, 4):
            for t, a, b, j0 in sched.steps(p0, p1):
                seen.extend(range(a, b))
                assert (sched.time_of[a:b] == t).all()
                assert sched.stream_of[a:b].tolist() == list(range(j0, j0 + b - a))
        assert seen == list(range(sched.num_tokens))
